"""`make bench`: run every benchmark and print its table."""

from bench import atomic, latency

atomic.main()
print()
latency.main()
