"""Prometheus metrics of the daemon, collected at scrape time from the state database (sites,
deployments) and from the daemon's pass statistics. Exposed at GET /metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from reconciler.core.reasons import SwitchReason
from reconciler.core.status import DeployStatus, Health, Sync
from reconciler.engine.store import Store
from reconciler.engine.views import server_in_step

DEPLOY_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
PASS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
HEALTH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class PassStats:
    """Durations of reconcile rounds (one probe of a server and its sites' convergence)."""

    counts: list[int] = field(default_factory=lambda: [0] * len(PASS_BUCKETS))
    total: int = 0
    seconds: float = 0.0
    last_success: float | None = None
    health_counts: list[int] = field(default_factory=lambda: [0] * len(HEALTH_BUCKETS))
    health_total: int = 0
    health_seconds: float = 0.0

    def observe_health(self, duration: float) -> None:
        """One health-check command (after a switch, or a server's checks at a poll)."""
        for i, bound in enumerate(HEALTH_BUCKETS):
            if duration <= bound:
                self.health_counts[i] += 1
        self.health_total += 1
        self.health_seconds += duration

    def observe(self, duration: float, ok: bool) -> None:
        for i, bound in enumerate(PASS_BUCKETS):
            if duration <= bound:
                self.counts[i] += 1
        self.total += 1
        self.seconds += duration
        if ok:
            self.last_success = time.time()


def _histogram(name: str, doc: str, bounds: tuple[float, ...], counts: list[int], total: int,
               seconds: float) -> HistogramMetricFamily:
    buckets = [(str(b), c) for b, c in zip(bounds, counts, strict=True)] + [("+Inf", total)]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=seconds)


class ReconcilerCollector(Collector):
    def __init__(self, store: Store, stats: PassStats, declared: Callable[[], Mapping[str, Sequence[str]]],
                 shard: Callable[[], tuple[str, int]] = lambda: ("1/1", 0)) -> None:
        self.store = store
        self.stats = stats
        self.declared = declared  # domain -> servers of every declared site this instance looks after
        self.shard = shard  # this instance's shard ("i/n") and how many declared sites it skips

    def collect(self) -> Iterator[Metric]:
        declared = sorted(self.declared().items())
        yield from self._sites(declared)

        shard, skipped = self.shard()
        owned = GaugeMetricFamily("reconciler_shard_info", "This instance's shard (i/n): it owns the servers "
                                  "hashing to shard i of n.", labels=["shard"])
        owned.add_metric([shard], 1)
        yield owned
        others = GaugeMetricFamily("reconciler_sites_skipped", "Declared sites left to the instances of other "
                                   "shards.")
        others.add_metric([], skipped)
        yield others

        results = CounterMetricFamily("reconciler_deploys", "Deployments by result and server (a site on many "
                                      "servers builds each release on each).", labels=["result", "server"])
        # Every declared server from the first scrape, at 0: a counter that appears later loses its first rise.
        counts = {(result, server): 0 for _, servers in declared for server in servers
                  for result in (DeployStatus.SUCCESS, DeployStatus.FAILED)}
        durations = [0] * len(DEPLOY_BUCKETS)
        total, seconds = 0, 0.0
        for row in self.store.db.query("select status, coalesce(server, '') as server, duration_ms from deployments "
                                       "where status in ('success', 'failed')"):
            key = (row["status"], row["server"])
            counts[key] = counts.get(key, 0) + 1
            if row["duration_ms"] is not None:
                value = row["duration_ms"] / 1000
                total += 1
                seconds += value
                for i, bound in enumerate(DEPLOY_BUCKETS):
                    if value <= bound:
                        durations[i] += 1
        for (result, server), count in sorted(counts.items()):
            results.add_metric([result, server], count)
        yield results
        yield _histogram("reconciler_deploy_duration_seconds", "Duration of deployments.", DEPLOY_BUCKETS,
                         durations, total, seconds)
        yield _histogram("reconciler_pass_duration_seconds", "Duration of reconcile rounds (probe and converge).",
                         PASS_BUCKETS, self.stats.counts, self.stats.total, self.stats.seconds)
        yield _histogram("reconciler_health_check_seconds", "Duration of health-check commands.", HEALTH_BUCKETS,
                         self.stats.health_counts, self.stats.health_total, self.stats.health_seconds)
        rollbacks = CounterMetricFamily("reconciler_auto_rollbacks", "Switches back after a failed health check.",
                                        labels=["domain"])
        for row in self.store.db.query("select site, count(*) as n from activations "
                                       "where trigger = ? group by site order by site", [SwitchReason.AUTO_ROLLBACK]):
            rollbacks.add_metric([row["site"]], row["n"])
        yield rollbacks
        last = GaugeMetricFamily("reconciler_last_successful_pass_timestamp_seconds",
                                 "Unix time of the last round that reached its server.")
        last.add_metric([], self.stats.last_success or 0.0)
        yield last


    def _sites(self, declared: list[tuple[str, Sequence[str]]]) -> Iterator[Metric]:
        """A series per server of each site: the site's state, and whether that server is in step."""
        info = GaugeMetricFamily("reconciler_site_info", "Declared sites with their sync and health state, one "
                                 "series per server of the site.", labels=["domain", "server", "sync", "health"])
        in_step = GaugeMetricFamily("reconciler_site_server_in_step", "1 when the server serves the site's live "
                                    "release with nothing to report (status: 2/2 synced), else 0.",
                                    labels=["domain", "server"])
        rows = self.store.sites()
        for domain, servers in declared:
            row: Mapping[str, Any] = rows.get(domain) or {}
            sync = row.get("sync") or Sync.UNKNOWN
            each = {r["server"]: r for r in self.store.site_servers(domain)}  # a site on many servers
            for server in servers:
                info.add_metric([domain, server, sync, row.get("health") or Health.UNKNOWN], 1)
                there = each.get(server)
                ok = server_in_step(there, row.get("active_release")) if there is not None else \
                    not each and sync == Sync.SYNCED
                in_step.add_metric([domain, server], int(ok))
        yield info
        yield in_step


def registry_for(collector: ReconcilerCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
