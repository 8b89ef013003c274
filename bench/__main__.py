"""`make bench`: run every benchmark and print its table (about 15 minutes on 2 cores: the fleet
rows of noop and memory, 5,000 sites on 50 sshds, and masschange, 500 deploys twice, are most of it)."""

from bench import atomic, deploy, health, latency, masschange, memory, noop, passes, skew

for benchmark in (passes.main, deploy.main, noop.main, latency.main, latency.remote, memory.main, masschange.main,
                  atomic.main, health.main, skew.main):
    benchmark()
    print(flush=True)
