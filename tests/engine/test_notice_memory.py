"""What `[[notify]]` already said, in the state database (reconciler.engine.notice_memory): a
claim is granted to exactly one of several processes racing for it, a release too, and a
site's rows are replaced rather than piled up. Real SQLite files, real processes."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from reconciler.engine import notice_memory
from reconciler.engine.store import Store

RACERS = 6


def _claim(db: str) -> bool:
    store = Store(Path(db))
    try:
        return notice_memory.claim(store, "server web-1", "unreachable", "down")
    finally:
        store.close()


def _release(db: str) -> bool:
    store = Store(Path(db))
    try:
        return notice_memory.release(store, "server web-1", "unreachable")
    finally:
        store.close()


def test_one_process_of_many_wins_a_claim_and_one_a_release(tmp_path: Path) -> None:
    """Processes that see the same outage at once: one of them sends `unreachable`; when it
    ends, one of them sends `recovered`."""
    db = tmp_path / "state.db"
    Store(db).close()
    with ProcessPoolExecutor(RACERS) as pool:
        claimed = list(pool.map(_claim, [str(db)] * RACERS))
        released = list(pool.map(_release, [str(db)] * RACERS))
    assert claimed.count(True) == 1, claimed
    assert released.count(True) == 1, released


def test_a_claim_is_news_only_when_the_key_changes(tmp_path: Path) -> None:
    """The same key again is not news; another key replaces the row (one per scope and event)."""
    store = Store(tmp_path / "state.db")
    try:
        assert notice_memory.claim(store, "shop.example.com", "deployed", "a" * 40)
        assert not notice_memory.claim(store, "shop.example.com", "deployed", "a" * 40)
        assert notice_memory.claim(store, "shop.example.com", "deployed", "b" * 40)
        assert notice_memory.claim(store, "server web-1", "unreachable", "down")
        assert notice_memory.recall(store, ["shop.example.com", "server web-1", "server web-9"]) == {
            ("shop.example.com", "deployed"): "b" * 40, ("server web-1", "unreachable"): "down"}
        assert store.db.execute("select count(*) from notices").fetchone()[0] == 2
        assert not notice_memory.release(store, "shop.example.com", "failed")  # nothing to forget
        assert notice_memory.recall(store, []) == {}
    finally:
        store.close()
