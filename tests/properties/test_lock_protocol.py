"""The lock protocol end to end (remote/protocol/locking.py writes it, remote/lock.py reads it):
for any owner a lock can name, a real /bin/sh in a temporary layout answers the first taker
LOCK_ACQUIRED, the next one LOCK_HELD with the lock's age and exactly the first owner read back
(Owner.from_text), and only that owner's release removes the lock (the one release rule)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from reconciler.core.layout import SitePaths
from reconciler.remote import lock
from reconciler.remote.protocol import locking, seam

# What an owner of ours writes: printable text (the reader escapes anything else for display, by
# design: tests/properties/test_server_records.py covers hostile owner files).
field = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40).filter(str.isprintable)
owners = st.builds(lock.Owner, instance=field, run=field, host=field, pid=st.integers(1, lock.MAX_PID),
                   purpose=field, since=st.floats(0, 2.0**31, allow_nan=False))


def _sh(command: seam.Command, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(seam.local_argv(command.text), input=command.stdin, capture_output=True, text=True,
                          cwd=cwd, timeout=30, check=False)


@settings(max_examples=25, deadline=None)
@given(first=owners, second=owners)
def test_the_first_taker_holds_it_the_next_reads_its_owner_and_only_the_owner_releases(
        first: lock.Owner, second: lock.Owner) -> None:
    assume(first.to_json() != second.to_json())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = SitePaths(str(root), "shop.example.com")
        taken = _sh(locking.lock_acquire(paths, first.to_json()), root)
        assert taken.returncode == 0 and taken.stdout.partition("\n")[0] == locking.LOCK_ACQUIRED, taken
        refused = _sh(locking.lock_acquire(paths, second.to_json()), root)
        head, _, rest = refused.stdout.partition("\n")
        assert refused.returncode == 0 and head.startswith(locking.LOCK_HELD), refused
        assert 0 <= locking.held_age(head) < 60
        assert lock.Owner.from_text(rest.partition("\n")[0]) == first
        assert not locking.still_beating(rest)
        # Another owner's release leaves the lock; the owner's removes it (exit 0 both times).
        assert _sh(locking.lock_release(paths, second.to_json()), root).returncode == 0
        assert Path(paths.lock).is_dir()
        released = _sh(locking.lock_release(paths, first.to_json()), root)
        assert released.returncode == 0 and lock.release_problem(released.returncode, "", paths.lock) == ""
        assert not Path(paths.lock).exists()
