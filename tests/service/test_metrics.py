"""service/metrics.py exports `reconciler_health_check_seconds` (every health-check command the
daemon ran) and `reconciler_auto_rollbacks_total{domain}` (switches back after a failed check,
from the real state database's history)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from reconciler.engine.store import Store
from reconciler.service.metrics import PassStats, ReconcilerCollector, registry_for


def test_health_metrics_come_from_history_and_the_daemons_checks(tmp_path: Path) -> None:
    store = Store(tmp_path / "reconciler.db")
    for site in ("a.example.com", "a.example.com", "b.example.com"):
        store.record_activation(site, "01012030-000000", "02012030-000000", "2030-01-02T00:00:00Z",
                                "auto-rollback", "")
    store.record_activation("b.example.com", "01012030-000000", None, "2030-01-03T00:00:00Z", "rollback", "ops")
    stats = PassStats()
    for seconds in (0.02, 0.3, 1.7):
        stats.observe_health(seconds)
    text = generate_latest(registry_for(ReconcilerCollector(store, stats, dict))).decode()
    assert 'reconciler_auto_rollbacks_total{domain="a.example.com"} 2.0' in text
    assert 'reconciler_auto_rollbacks_total{domain="b.example.com"} 1.0' in text
    assert "reconciler_health_check_seconds_count 3.0" in text
    assert 'reconciler_health_check_seconds_bucket{le="0.5"} 2.0' in text
    store.close()
