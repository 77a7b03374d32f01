"""Where capture records live, and how they are written and read.

Standard library only: this module is imported by the shims, which run for every
rustc call.

Layout (``<target>`` is cargo's target dir)::

    <target>/thinpatch/                      capture root (0700)
        capture.log                          shim warnings (never stdout)
        captures/<scope>/rustc/<key>.json    one record per crate and kind (0600)
        captures/<scope>/link/<key>.json     one link line per output path (0600)

``<scope>`` is ``<triple>-<profile>`` (``host-debug`` when no ``--target`` was given).

A small per-user registry (``$THINPATCH_STATE_DIR`` or ``$XDG_STATE_HOME/thinpatch`` or
``~/.local/state/thinpatch``) holds one file per captured workspace, so the daemon can
find workspaces without being told.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from capture.trust import untrusted_reason

# Annotations only (never evaluated): importing `typing` would cost every rustc call.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterator

FORMAT_VERSION = 1

CAPTURE_DIRNAME = "thinpatch"
LOG_NAME = "capture.log"

# Environment variables that thinpatch itself passes between its processes.
ENV_CAPTURE_ROOT = "THINPATCH_CAPTURE_ROOT"  # <target>/thinpatch
ENV_WORKSPACE = "THINPATCH_WORKSPACE"  # workspace root
ENV_HOST_TRIPLE = "THINPATCH_HOST_TRIPLE"  # host triple, so the shim need not ask rustc
ENV_STATE_DIR = "THINPATCH_STATE_DIR"  # overrides the per-user registry location

_SAFE_PUNCTUATION = frozenset("_.+-")


def safe_name(text: str) -> str:
    """A file-name-safe rendering of ``text`` (crate names, triples, profiles)."""
    return "".join(c if (c.isascii() and c.isalnum()) or c in _SAFE_PUNCTUATION else "_" for c in text) or "_"


def scope_name(target: str | None, profile: str) -> str:
    return f"{safe_name(target or 'host')}-{safe_name(profile)}"


def rustc_key(crate_name: str, kind: str) -> str:
    """Record key for a rustc invocation: one per crate and crate kind."""
    return f"{safe_name(crate_name)}.{safe_name(kind)}"


def link_key(output: str) -> str:
    """Record key for a link line: keyed by the (absolute) output path."""
    import hashlib

    digest = hashlib.sha256(output.encode()).hexdigest()[:12]
    return f"{safe_name(os.path.basename(output))}.{digest}"


# --------------------------------------------------------------------------- paths


def captures_dir(capture_root: Path) -> Path:
    return capture_root / "captures"


def rustc_record_path(capture_root: Path, scope: str, key: str) -> Path:
    return captures_dir(capture_root) / scope / "rustc" / f"{key}.json"


def link_record_path(capture_root: Path, scope: str, key: str) -> Path:
    return captures_dir(capture_root) / scope / "link" / f"{key}.json"


def capture_lock_path(capture_root: Path) -> Path:
    """Locked (flock) by `thinpatch capture` while cargo runs: records and binaries are being
    rewritten, so a daemon waits for the lock's release before it reloads them."""
    return capture_root / "capture.lock"


def log_path(capture_root: Path) -> Path:
    return capture_root / LOG_NAME


def state_dir(env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(ENV_STATE_DIR):
        return Path(env[ENV_STATE_DIR])
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "thinpatch"


def registry_dir(env: dict[str, str] | None = None) -> Path:
    return state_dir(env) / "workspaces"


# --------------------------------------------------------------------------- writing


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) with mode 0700 for every directory we create."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            pass
    # A directory made by another process keeps its mode; ours are 0700.
    try:
        if path.stat().st_uid == os.getuid():
            os.chmod(path, 0o700)
    except OSError:
        pass


def write_json_atomic(path: Path, data: Any, mode: int = 0o600) -> None:
    """Write JSON to ``path`` atomically (temp file in the same dir, then rename).

    Concurrent writers of the same key never leave a torn file: the newest rename wins.
    """
    ensure_private_dir(path.parent)
    # A unique sibling (not `tempfile`, which costs every rustc call its import).
    tmp = str(path.parent / f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def log_warning(capture_root: Path | None, message: str) -> None:
    """Append a warning to the capture log. Never raises, never writes to stdout."""
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} pid={os.getpid()} {message}\n"
    candidates = []
    if capture_root is not None:
        candidates.append(log_path(capture_root))
    candidates.append(state_dir() / LOG_NAME)
    for path in candidates:
        try:
            ensure_private_dir(path.parent)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode("utf-8", "replace"))
            finally:
                os.close(fd)
            return
        except OSError:
            continue


def register_workspace(workspace: Path, capture_root: Path, env: dict[str, str] | None = None) -> None:
    """Record in the per-user registry that ``workspace`` has captures at ``capture_root``."""
    write_json_atomic(
        registry_entry_path(workspace, env),
        {
            "format": FORMAT_VERSION,
            "workspace": str(workspace),
            "capture_root": str(capture_root),
            # Which directory was registered: a path deleted and made again is another workspace.
            "identity": directory_identity(workspace),
            "updated_at": time.time(),
        },
    )


def registry_entry_path(workspace: Path, env: dict[str, str] | None = None) -> Path:
    import hashlib

    digest = hashlib.sha256(str(workspace).encode()).hexdigest()[:16]
    return registry_dir(env) / f"{digest}.json"


def _owner(path: Path) -> int | None:
    try:
        return os.stat(path).st_uid
    except OSError:
        return None


def directory_identity(path: Path) -> list[int] | None:
    """(device, inode) of a directory, or ``None`` if it is gone."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return [info.st_dev, info.st_ino]


# --------------------------------------------------------------------------- reading


class _Record:
    """A record file's path and its JSON (``data``). Plain class: no `dataclasses` import
    in the shims."""

    __slots__ = ("path", "data")

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.path!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and (self.path, self.data) == (other.path, other.data)  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self.path))


class RustcRecord(_Record):
    """One captured rustc invocation. See ``capture.rustc_shim`` for how it is made."""

    __slots__ = ()

    # Convenience accessors; ``data`` holds the full JSON.
    @property
    def crate_name(self) -> str:
        return self.data["crate_name"]

    @property
    def kind(self) -> str:
        return self.data["kind"]

    @property
    def crate_types(self) -> list[str]:
        return list(self.data["crate_types"])

    @property
    def rustc(self) -> str:
        return self.data["rustc"]

    @property
    def args(self) -> list[str]:
        return list(self.data["args"])

    @property
    def cwd(self) -> str:
        return self.data["cwd"]

    @property
    def env(self) -> dict[str, str]:
        return dict(self.data["env"])

    @property
    def scope(self) -> str:
        return self.data["scope"]

    @property
    def recorded_at(self) -> float:
        return float(self.data["recorded_at"])


class LinkRecord(_Record):
    """One captured link line. See ``capture.linker_shim``."""

    __slots__ = ()

    @property
    def linker(self) -> str:
        return self.data["linker"]

    @property
    def args(self) -> list[str]:
        return list(self.data["args"])

    @property
    def output(self) -> str:
        return self.data["output"]

    @property
    def crate_name(self) -> str | None:
        return self.data.get("crate_name")

    @property
    def recorded_at(self) -> float:
        return float(self.data["recorded_at"])


class Captures:
    """Everything captured for one workspace and scope, newest record per key."""

    def __init__(
        self,
        capture_root: Path,
        scope: str,
        rustc: dict[str, RustcRecord],  # by rustc_key(crate, kind)
        links: dict[str, LinkRecord],  # by link_key(output)
        warnings: list[str],
    ) -> None:
        self.capture_root = capture_root
        self.scope = scope
        self.rustc = rustc
        self.links = links
        self.warnings = warnings

    def __repr__(self) -> str:
        return f"Captures(capture_root={self.capture_root!r}, scope={self.scope!r}, rustc={sorted(self.rustc)!r})"

    def crate(self, crate_name: str, kind: str | None = None) -> RustcRecord | None:
        name = crate_name.replace("-", "_")
        kinds = [kind] if kind else ["bin", "lib"]
        for k in kinds:
            rec = self.rustc.get(rustc_key(name, k))
            if rec is not None:
                return rec
        return None

    def top_crates(self) -> list[RustcRecord]:
        """Crates whose artifact patches load into (bin, cdylib, dylib), newest first."""
        tops = [r for r in self.rustc.values() if r.data.get("is_top")]
        return sorted(tops, key=lambda r: r.recorded_at, reverse=True)

    def link_for(self, crate_name: str) -> LinkRecord | None:
        """The newest link line recorded for ``crate_name``."""
        matches = [l for l in self.links.values() if l.crate_name == crate_name]
        return max(matches, key=lambda l: l.recorded_at, default=None)


# The type every required field must have: a record that names a compiler must name it as text.
_FIELD_TYPES: dict[str, Any] = {
    "crate_name": str,
    "kind": str,
    "crate_types": list,
    "rustc": str,
    "args": list,
    "cwd": str,
    "env": dict,
    "recorded_at": (int, float),
    "linker": str,
    "output": str,
}


def _load_json(path: Path, required: tuple[str, ...], warnings: list[str]) -> dict[str, Any] | None:
    reason = untrusted_reason(path)
    if reason is not None:
        warnings.append(f"skipped untrusted capture record {path}: {reason}")
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        warnings.append(f"skipped malformed capture record {path}: {exc}")
        return None
    if not isinstance(data, dict) or any(k not in data for k in required):
        warnings.append(f"skipped malformed capture record {path}: missing fields")
        return None
    if data.get("format") != FORMAT_VERSION:
        warnings.append(
            f"skipped capture record {path}: format {data.get('format')!r}, expected {FORMAT_VERSION}"
        )
        return None
    for name in required:
        expected = _FIELD_TYPES.get(name)
        value = data[name]
        if expected is not None and (not isinstance(value, expected) or isinstance(value, bool)):
            warnings.append(f"skipped malformed capture record {path}: field {name!r} has the wrong type")
            return None
        if isinstance(value, list) and not all(isinstance(item, str) for item in value):
            warnings.append(f"skipped malformed capture record {path}: field {name!r} must be a list of strings")
            return None
        if isinstance(value, dict) and not all(isinstance(v, str) for v in value.values()):
            warnings.append(f"skipped malformed capture record {path}: field {name!r} must map names to strings")
            return None
    return data


RUSTC_REQUIRED = ("format", "crate_name", "kind", "crate_types", "rustc", "args", "cwd", "env", "recorded_at")
LINK_REQUIRED = ("format", "linker", "args", "output", "recorded_at")


def list_scopes(capture_root: Path) -> list[str]:
    base = captures_dir(capture_root)
    try:
        return sorted(p.name for p in base.iterdir() if p.is_dir())
    except OSError:
        return []


def load_captures(capture_root: Path, scope: str | None = None) -> Captures:
    """Read the records of one scope (default: the most recently written scope).

    Malformed files are skipped and reported in ``Captures.warnings``.
    """
    capture_root = Path(capture_root)
    warnings: list[str] = []
    reason = untrusted_reason(capture_root)
    if reason is not None:
        warnings.append(f"skipped untrusted capture root {capture_root}: {reason}")
        return Captures(capture_root=capture_root, scope=scope or "", rustc={}, links={}, warnings=warnings)
    if scope is None:
        scopes = list_scopes(capture_root)
        scope = max(scopes, key=lambda s: _newest_mtime(captures_dir(capture_root) / s), default="")
    rustc: dict[str, RustcRecord] = {}
    links: dict[str, LinkRecord] = {}
    base = captures_dir(capture_root) / scope if scope else None
    if base is not None:
        for path in sorted((base / "rustc").glob("*.json")):
            data = _load_json(path, RUSTC_REQUIRED, warnings)
            if data is not None:
                rec = RustcRecord(path, data)
                # Build scripts all share one crate name; the shim keys them by package.
                key = data.get("key") or rustc_key(rec.crate_name, rec.kind)
                if key not in rustc or rustc[key].recorded_at < rec.recorded_at:
                    rustc[key] = rec
        for path in sorted((base / "link").glob("*.json")):
            data = _load_json(path, LINK_REQUIRED, warnings)
            if data is not None:
                links[link_key(data["output"])] = LinkRecord(path, data)
    return Captures(capture_root=capture_root, scope=scope or "", rustc=rustc, links=links, warnings=warnings)


def _newest_mtime(path: Path) -> float:
    newest = 0.0
    for p in path.rglob("*.json"):
        try:
            newest = max(newest, p.stat().st_mtime)
        except OSError:
            pass
    return newest


def iter_registered_workspaces(env: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """Yield trusted registry entries ({workspace, capture_root, updated_at}) whose workspace
    is still the directory that was registered.

    An entry whose workspace is gone, or was made again (another inode), is deleted: a
    re-created path is a new workspace that nobody has captured yet.
    """
    directory = registry_dir(env)
    if untrusted_reason(directory) is not None:
        return
    for path in sorted(directory.glob("*.json")):
        if untrusted_reason(path) is not None:
            continue
        try:
            with open(path, encoding="utf-8") as fh:
                entry = json.load(fh)
        except (OSError, ValueError):
            continue
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("workspace"), str)
            and isinstance(entry.get("capture_root"), str)
        ):
            continue
        workspace = Path(entry["workspace"])
        identity = directory_identity(workspace)
        # Entries written before identities were recorded are judged by their owner alone.
        recorded = entry.get("identity", identity)
        if identity is None or identity != recorded or _owner(workspace) != os.geteuid():
            try:
                os.unlink(path)
            except OSError:
                pass
            continue
        yield entry
