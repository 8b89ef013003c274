"""`make bench`: run every benchmark and print its table (about 7 minutes on 2 cores)."""

from bench import atomic, cli, deploy, health, latency, memory, noop, passes, skew

for benchmark in (passes.main, deploy.main, noop.main, latency.main, latency.remote, memory.main, atomic.main,
                  health.main, skew.main, cli.main):
    benchmark()
    print(flush=True)
