"""`make bench`: run every benchmark and print its table (about 7 minutes on 2 cores)."""

from bench import atomic, cli, deploy, fair, health, latency, memory, noop, passes, shard, skew

for benchmark in (passes.main, deploy.main, noop.main, latency.main, latency.remote, memory.main, atomic.main,
                  health.main, skew.main, fair.main, shard.main, cli.main):
    benchmark()
    print(flush=True)
