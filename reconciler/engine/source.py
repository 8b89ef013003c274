"""Desired state from git: the committed `sites.d/*.toml` of one commit, read with pygit2, over
that commit's `sites.d/_defaults.toml` and `templates/*.toml` (core.layers).

Only committed content counts, so this reads the tree of a commit and never the work tree
(except `load_directory`, used by `validate` as a pre-commit check). Parsing and validation
are pure and live in `core.declarations`.
"""

from __future__ import annotations

from pathlib import Path

import pygit2

from reconciler.core.declaration_files import Parsed, assemble, collect, parse_layered, read_layers
from reconciler.core.declarations import SITES_DIR, Declarations
from reconciler.core.layers import DEFAULTS_NAME, TEMPLATES_DIR, Layers, Origin
from reconciler.core.site_env import MAX_ENV_BYTES, domain_of_env
from reconciler.errors import DeclarationError

# Bounds on one commit's sites.d/ (each file is also capped, core.declarations.MAX_FILE_BYTES):
# far above a real fleet (thousands of sites), low enough that a hostile commit cannot make a
# pass parse gigabytes. Past either, the commit is refused as a whole and nothing changes.
MAX_FILES = 20_000
MAX_TOTAL_BYTES = 64 * 1024 * 1024


def _check_bounds(count: int, total: int, where: str, folder: str = SITES_DIR) -> None:
    if count > MAX_FILES:
        raise DeclarationError(f"{where}: {folder}/ holds more than {MAX_FILES} files; not applied")
    if total > MAX_TOTAL_BYTES:
        raise DeclarationError(f"{where}: {folder}/ holds more than {MAX_TOTAL_BYTES} bytes; not applied")


def open_repository(path: str | Path) -> pygit2.Repository:
    try:
        # NO_SEARCH: a directory inside some other repository must not silently become it.
        return pygit2.Repository(str(path), pygit2.enums.RepositoryOpenFlag.NO_SEARCH)
    except (pygit2.GitError, KeyError) as exc:
        raise DeclarationError(f"{path}: not a git repository ({exc})") from exc


def branch_tip(repo: pygit2.Repository, branch: str) -> pygit2.Commit | None:
    """The committed tip of `branch`, re-resolved on every call (refs may be packed or re-created)."""
    ref = repo.references.get(f"refs/heads/{branch}")
    if ref is None:
        return None
    obj = repo.get(ref.resolve().target)
    return obj if isinstance(obj, pygit2.Commit) else None


def tip_commit(repo_path: str | Path, branch: str) -> str:
    """The id of the committed tip of `branch`, re-resolved now."""
    repo = open_repository(repo_path)
    tip = branch_tip(repo, branch)
    if tip is None:
        if repo.is_empty or repo.references.get(f"refs/heads/{branch}") is None:
            raise DeclarationError(f"{repo_path}: branch {branch!r} does not exist (nothing committed?)")
        raise DeclarationError(f"{repo_path}: branch {branch!r} does not point at a commit")
    return str(tip.id)


def descends(repo_path: str | Path, commit: str, ancestor: str) -> bool:
    """True when `commit` is `ancestor` or has it in its history (a fast-forward of it)."""
    if commit == ancestor:
        return True
    repo = open_repository(repo_path)
    try:
        return bool(repo.descendant_of(commit, ancestor))
    except (KeyError, ValueError, pygit2.GitError):
        return False  # either is unknown here (e.g. collected after a history rewrite)


def author_of(repo_path: str | Path, commit: str) -> str:
    """`Name <email>` of a declarations commit's author ("" when it cannot be read)."""
    obj = open_repository(repo_path).get(commit)
    if not isinstance(obj, pygit2.Commit):
        return ""
    return f"{obj.author.name} <{obj.author.email}>"


def resolve_commit(repo_path: str | Path, name: str) -> str:
    """The full id of the commit `name` (a full or abbreviated id, or a ref) names."""
    repo = open_repository(repo_path)
    try:
        obj = repo.revparse_single(name)
        commit = obj.peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError) as exc:
        raise DeclarationError(f"{repo_path}: {name!r} names no commit") from exc
    return str(commit.id)


def load(repo_path: str | Path, branch: str) -> Declarations:
    """Declarations at the committed tip of `branch`."""
    return load_commit(repo_path, tip_commit(repo_path, branch))


class BlobCache:
    """Each file's parse result by (file name, blob id), as of the last commit loaded: a commit
    that changes one file (a pin, say) parses one file, not the fleet's thousands (about 65 us a
    file). Content-addressed, so it is never stale: a result also records the blobs of the
    defaults and of the template the site names, and is reused only while both are the same (a
    changed template re-parses the sites that name it, no others). Only the last commit's entries
    are kept, so it holds at most one commit's results. The new map replaces the old in one
    assignment: two loads in two threads at once each see a whole map."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], Done] = {}


# A file's size, its result, each key's origin, and (defaults blob, template name, template blob).
Done = tuple[int, Parsed, dict[str, Origin], tuple[str | None, str | None, str | None]]


def _blob_data(repo: pygit2.Repository, entry: pygit2.Object) -> bytes | None:
    """A regular file's bytes; None for a symlink, a directory or a submodule (never followed)."""
    if entry.filemode in (pygit2.GIT_FILEMODE_BLOB, pygit2.GIT_FILEMODE_BLOB_EXECUTABLE):
        blob = repo.get(entry.id)
        return blob.data if isinstance(blob, pygit2.Blob) else None
    return None


def _version(entry: pygit2.Object) -> str:
    return f"{entry.filemode:o}:{entry.id}"


def _layers(repo: pygit2.Repository, tree: pygit2.Tree, sites: pygit2.Object | None
            ) -> tuple[Layers, dict[str, str], int]:
    """The commit's `_defaults.toml` and templates (core.layers), each file's blob version by
    name, and their bytes."""
    versions: dict[str, str] = {}
    defaults: bytes | bool | None = False
    if isinstance(sites, pygit2.Tree) and DEFAULTS_NAME in sites:
        file = sites[DEFAULTS_NAME]
        defaults, versions[DEFAULTS_NAME] = _blob_data(repo, file), _version(file)
    templates: list[tuple[str, bytes | None]] = []
    try:
        found: pygit2.Object | None = tree[TEMPLATES_DIR]
    except KeyError:
        found = None
    for entry in found if isinstance(found, pygit2.Tree) else ():
        if entry.name and entry.name.endswith(".toml"):
            templates.append((f"{TEMPLATES_DIR}/{entry.name}", _blob_data(repo, entry)))
            versions[f"{TEMPLATES_DIR}/{entry.name}"] = _version(entry)
            _check_bounds(len(templates), 0, "declarations", TEMPLATES_DIR)
    size = sum(len(data or b"") for _, data in templates) + (len(defaults) if isinstance(defaults, bytes) else 0)
    return read_layers(defaults, templates), versions, size


def layers_at(repo: pygit2.Repository, tree: pygit2.Tree) -> Layers:
    """The defaults and templates of one commit's tree (to judge one site file as the loader would)."""
    try:
        sites: pygit2.Object | None = tree[SITES_DIR]
    except KeyError:
        sites = None
    return _layers(repo, tree, sites)[0]


def _used(versions: dict[str, str], template: str | None) -> tuple[str | None, str | None, str | None]:
    """What a site's result depends on beside its own file: the defaults' blob, the template it
    names and that template's blob (None where there is none)."""
    return (versions.get(DEFAULTS_NAME), template,
            versions.get(f"{TEMPLATES_DIR}/{template}.toml") if template is not None else None)


def load_commit(repo_path: str | Path, commit_id: str, cache: BlobCache | None = None) -> Declarations:
    """Declarations as of one commit (the tip, or the last verified one). With `cache`, files
    whose blob was parsed for the last commit (with the same defaults and template) are not read
    or parsed again."""
    repo = open_repository(repo_path)
    try:
        commit = repo.get(commit_id)
    except ValueError as exc:
        raise DeclarationError(f"{repo_path}: {commit_id} is not an object id") from exc
    if not isinstance(commit, pygit2.Commit):
        raise DeclarationError(f"{repo_path}: commit {commit_id} not found")
    try:
        sites_tree = commit.tree[SITES_DIR]
    except KeyError:
        return Declarations(commit=str(commit.id))
    layers, versions, total = _layers(repo, commit.tree, sites_tree)
    known = cache.entries if cache is not None else {}
    seen: dict[tuple[str, str], Done] = {}
    sealed: dict[str, bytes] = {}
    if isinstance(sites_tree, pygit2.Tree):
        for entry in sites_tree:
            if entry.name and (domain := domain_of_env(entry.name)) is not None:
                sealed[domain] = _sealed_blob(repo, entry)
                continue
            if not entry.name or not entry.name.endswith(".toml") or entry.name == DEFAULTS_NAME:
                continue
            name = f"{SITES_DIR}/{entry.name}"
            key = (name, _version(entry))
            done = known.get(key)
            if done is None or done[3] != _used(versions, done[3][1]):
                data = _blob_data(repo, entry)
                parsed, effective = parse_layered(name, data, layers)
                done = (len(data or b""), parsed, effective.origins, _used(versions, effective.template))
            seen[key] = done
            total += done[0]
            _check_bounds(len(seen), total, f"commit {str(commit.id)[:12]}")
    if cache is not None:
        cache.entries = seen
    decls = assemble(((name, done[1]) for (name, _), done in seen.items()), str(commit.id),
                     {done[1][0].domain: done[2] for done in seen.values()})
    decls.sealed = {domain: data for domain, data in sealed.items() if domain in decls.sites}
    return decls


def _sealed_blob(repo: pygit2.Repository, entry: pygit2.Object) -> bytes:
    """A site's encrypted env file of this commit (b"" when it is no regular file or too big: it
    then fails to decrypt, which is that site's error)."""
    if entry.filemode not in (pygit2.GIT_FILEMODE_BLOB, pygit2.GIT_FILEMODE_BLOB_EXECUTABLE):
        return b""
    blob = repo.get(entry.id)
    if not isinstance(blob, pygit2.Blob) or blob.size > 2 * MAX_ENV_BYTES:
        return b""
    return bytes(blob.data)


def _directory_layers(root: Path, sites_dir: Path) -> Layers:
    def read(file: Path) -> bytes | None:
        return None if file.is_symlink() or not file.is_file() else file.read_bytes()

    defaults_file = sites_dir / DEFAULTS_NAME
    defaults = read(defaults_file) if defaults_file.exists() or defaults_file.is_symlink() else False
    templates = [(f"{TEMPLATES_DIR}/{file.name}", read(file)) for file in sorted((root / TEMPLATES_DIR).glob("*.toml"))]
    return read_layers(defaults, templates)


def load_directory(path: str | Path) -> Declarations:
    """Declarations as files on disk (`validate` before committing). `path` holds sites.d/ (and
    templates/ beside it), or is sites.d/ itself."""
    root = Path(path)
    sites_dir = root / SITES_DIR if (root / SITES_DIR).is_dir() else root
    files: list[tuple[str, bytes | None]] = []
    total = 0
    for file in sorted(sites_dir.glob("*.toml")):
        if file.name == DEFAULTS_NAME:
            continue
        name = f"{SITES_DIR}/{file.name}"
        data = None if file.is_symlink() or not file.is_file() else file.read_bytes()
        total += len(data or b"")
        files.append((name, data))
        _check_bounds(len(files), total, str(sites_dir))
    return collect(files, None, _directory_layers(sites_dir.parent, sites_dir))
