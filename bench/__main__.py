"""`make bench`: run every benchmark and print its table."""

from bench import atomic, latency, passes

passes.main()
print()
atomic.main()
print()
latency.main()
