"""`make bench`: run every benchmark and print its table (about 6 minutes on 2 cores, of which the
fleet parts take about 3: noop's and memory's 5,000 sites on 50 sshds, masschange's 500 deploys twice)."""

from bench import (
    atomic,
    cli,
    copy_from_previous,
    deploy,
    fair,
    health,
    latency,
    masschange,
    memory,
    noop,
    parse,
    passes,
    rollback,
    shard,
    skew,
)

for benchmark in (passes.main, deploy.main, noop.main, latency.main, latency.remote, rollback.main, memory.main,
                  masschange.main, atomic.main, health.main, skew.main, fair.main, shard.main, cli.main, parse.main,
                  copy_from_previous.main):
    benchmark()
    print(flush=True)
