"""What the look-only commands remember between runs, so `status`, `history` and `logs` start
without pydantic and pygit2 (each about a tenth of a second to import).

Two facts are remembered under `{state_dir}/cli-memo/`, each keyed by exactly what it was
derived from, so a hit is the answer the slow path would give:

- `settings.json`: a config (the mapping `settings_file` read: file contents, paths and flags)
  that `config.Settings` accepted, with the few values looking needs (`Looks`). Any change to
  the file or the flags is another key: it is validated again, and a bad one exits 2 as before.
- `declared-<commit>-<allow_local>.json`: what status shows of the declarations of one commit
  (`engine.views.Declared`). A commit id names its content, so this never goes stale. The
  daemon writes it for every commit it applies, so the first `status` after one is quick too.
  A change to `sites.d/_defaults.toml` or a template is a new commit like any other, so every
  site that uses it is read again (core.layers); nothing is remembered per file.

Both also carry a fingerprint of the code that validated them: after an upgrade nothing old is
believed. The directory is the state directory's (owner-only); writing is best effort, since a
reader may not own the state directory, and failing to remember only costs the next run time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.config import Settings
    from reconciler.engine.views import Declared

MEMO_DIR = "cli-memo"
KEEP_DECLARED = 4  # commits remembered; older summaries are removed when a new one is written
KEEP_SETTINGS = 8  # configurations remembered (a host rarely has more than one or two)

_PACKAGE = Path(__file__).resolve().parent.parent
# The code whose verdicts are remembered: what validates settings and declarations, and what
# turns them into the remembered shapes.
_VALIDATING = ("__init__.py", "config.py", "settings_file.py", "core/declarations.py", "core/health.py",
               "core/layout.py", "core/siteref.py", "engine/views.py", "engine/source.py", "engine/memo.py",
               "core/declaration_files.py", "core/layers.py")


@dataclass(frozen=True)
class Looks:
    """The settings a look-only command uses, from validated `Settings`."""

    local_repo: str
    branch: str
    state_dir: str
    allow_local: bool
    require_signed: str
    shard: str = "1/1"

    @classmethod
    def of(cls, settings: Settings) -> Looks:
        return cls(str(settings.local_repo), settings.branch, str(settings.state_dir), settings.allow_local,
                   settings.require_signed, settings.shard)

    @property
    def db_path(self) -> Path:
        return Path(self.state_dir) / "reconciler.db"


def _code_fingerprint() -> str:
    digest = hashlib.sha256()
    for name in _VALIDATING:
        try:
            content = (_PACKAGE / name).read_bytes()
        except OSError:
            content = b"(missing)"  # renamed or removed: still a fingerprint, never a crash
        digest.update(name.encode() + b"\0" + content + b"\0")
    return digest.hexdigest()


def _encode(value: object) -> object:
    if isinstance(value, Path):
        return {"path": str(value)}
    raise TypeError(type(value).__name__)  # e.g. a TOML date: not remembered, always validated


def settings_key(raw: dict[str, Any]) -> str | None:
    """The key of one settings mapping, None when it holds values we do not encode."""
    try:
        text = json.dumps(raw, sort_keys=True, default=_encode)
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(text.encode()).hexdigest()


class Memo:
    """The memo of one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / MEMO_DIR
        self._code: str | None = None

    @property
    def code(self) -> str:
        if self._code is None:
            self._code = _code_fingerprint()
        return self._code

    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.dir / name).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("code") == self.code else None

    def _write(self, name: str, data: dict[str, Any]) -> None:
        """Atomically (a reader sees the old file or the new one), best effort."""
        temporary = self.dir / f".{name}.{os.getpid()}"
        with contextlib.suppress(OSError):
            self.dir.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(temporary, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as file:
                json.dump({"code": self.code, **data}, file)
            os.replace(temporary, self.dir / name)
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)

    # -- settings ---------------------------------------------------------------------------

    def looks(self, key: str) -> Looks | None:
        entry = (self._read("settings.json") or {}).get("accepted", {}).get(key)
        try:
            return Looks(**entry) if isinstance(entry, dict) else None
        except TypeError:
            return None

    def remember_settings(self, key: str, looks: Looks) -> None:
        accepted = dict((self._read("settings.json") or {}).get("accepted", {}))
        if accepted.get(key) == asdict(looks):
            return
        accepted.pop(key, None)
        accepted[key] = asdict(looks)  # newest last; the oldest go first
        self._write("settings.json", {"accepted": dict(list(accepted.items())[-KEEP_SETTINGS:])})

    # -- declarations -----------------------------------------------------------------------

    @staticmethod
    def _declared_name(commit: str, allow_local: bool) -> str:
        return f"declared-{commit}-{int(allow_local)}.json"

    def declared(self, commit: str, allow_local: bool) -> dict[str, Declared] | None:
        data = self._read(self._declared_name(commit, allow_local))
        if data is None or not isinstance(data.get("sites"), dict):
            return None
        from reconciler.engine.views import Declared

        try:
            return {domain: Declared(*fields) for domain, fields in data["sites"].items()}
        except TypeError:
            return None

    def remember_declared(self, commit: str, allow_local: bool, sites: dict[str, Declared]) -> None:
        name = self._declared_name(commit, allow_local)
        self._write(name, {"sites": {domain: [entry.shown_server, entry.server, entry.pin, entry.ref, entry.invalid]
                                     for domain, entry in sites.items()}})
        with contextlib.suppress(OSError):
            older = sorted(self.dir.glob("declared-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
            for stale in older[KEEP_DECLARED:]:
                stale.unlink(missing_ok=True)
