"""`make bench`: run every benchmark and print its table (about 10 minutes on 2 cores, of which the
fleet parts take about 3: noop's and memory's 5,000 sites on 50 sshds, masschange's 500 deploys twice)."""

from bench import atomic, deploy, health, latency, masschange, memory, noop, passes, skew

for benchmark in (passes.main, deploy.main, noop.main, latency.main, latency.remote, memory.main, masschange.main,
                  atomic.main, health.main, skew.main):
    benchmark()
    print(flush=True)
