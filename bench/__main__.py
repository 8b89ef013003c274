"""`make bench`: run every benchmark and print its table (about 5 minutes on 2 cores)."""

from bench import atomic, deploy, health, latency, memory, noop, passes

for benchmark in (passes, deploy, noop, latency, memory, atomic, health):
    benchmark.main()
    print(flush=True)
