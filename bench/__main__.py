"""`make bench`: run every benchmark and print its table (about 6 minutes on 2 cores)."""

from bench import atomic, deploy, health, latency, memory, noop, passes

for benchmark in (passes.main, deploy.main, noop.main, latency.main, latency.remote, memory.main, atomic.main,
                  health.main):
    benchmark()
    print(flush=True)
