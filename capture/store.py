"""Where capture records live, and how they are written and read.

Standard library only: this module is imported by the shims, which run for every
rustc call.

Layout (``<target>`` is cargo's target dir)::

    <target>/thinpatch/                      capture root (0700)
        capture.log                          shim warnings (never stdout)
        captures/<scope>/rustc/<key>.json    one record per crate and kind (0600)
        captures/<scope>/link/<key>.json     one link line per output path (0600)
        objects/<scope>/<key>/               the program crate's own objects of that link
                                             (``*.rcgu.o``, which rustc deletes after linking)

``<scope>`` is ``<triple>-<profile>`` (``host-debug`` when no ``--target`` was given).

A small per-user registry (``$THINPATCH_STATE_DIR`` or ``$XDG_STATE_HOME/thinpatch`` or
``~/.local/state/thinpatch``) holds one file per captured workspace, so the daemon can
find workspaces without being told.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from capture import private_fs
from capture.trust import untrusted_reason

# Annotations only (never evaluated): importing `typing` would cost every rustc call.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from typing import Any

FORMAT_VERSION = 1

CAPTURE_DIRNAME = "thinpatch"
LOG_NAME = "capture.log"

# Environment variables that thinpatch itself passes between its processes.
ENV_CAPTURE_ROOT = "THINPATCH_CAPTURE_ROOT"  # <target>/thinpatch
ENV_WORKSPACE = "THINPATCH_WORKSPACE"  # workspace root
ENV_HOST_TRIPLE = "THINPATCH_HOST_TRIPLE"  # host triple, so the shim need not ask rustc
ENV_STATE_DIR = "THINPATCH_STATE_DIR"  # overrides the per-user registry location
ENV_CARGO_CONFIGS = "THINPATCH_CARGO_CONFIGS"  # the cargo configs that applied (JSON list of ConfigSeen)

_SAFE_PUNCTUATION = frozenset("_.+-")


def safe_name(text: str) -> str:
    """A file-name-safe rendering of ``text`` (crate names, triples, profiles)."""
    return "".join(c if (c.isascii() and c.isalnum()) or c in _SAFE_PUNCTUATION else "_" for c in text) or "_"


def scope_name(target: str | None, profile: str) -> str:
    return f"{safe_name(target or 'host')}-{safe_name(profile)}"


def link_key(output: str) -> str:
    """Record key for a link line: keyed by the (absolute) output path."""
    import hashlib

    digest = hashlib.sha256(output.encode()).hexdigest()[:12]
    return f"{safe_name(os.path.basename(output))}.{digest}"


# --------------------------------------------------------------------------- paths


def captures_dir(capture_root: Path) -> Path:
    return capture_root / "captures"


def rustc_record_path(capture_root: Path, scope: str, key: CrateKey) -> Path:
    return captures_dir(capture_root) / scope / "rustc" / f"{key.label}.json"


def link_record_path(capture_root: Path, scope: str, key: str) -> Path:
    return captures_dir(capture_root) / scope / "link" / f"{key}.json"


def link_objects_dir(capture_root: Path, scope: str, key: str) -> Path:
    """Where ``thinpatch-linker`` keeps the rustc objects of the link keyed ``key`` (its
    ``link_key``): the running program's own code, which rustc deletes right after the link."""
    return capture_root / "objects" / scope / key


def capture_lock_path(capture_root: Path) -> Path:
    """Locked (flock) by `thinpatch capture` while cargo runs: records and binaries are being
    rewritten, so a daemon waits for the lock's release before it reloads them."""
    return capture_root / "capture.lock"


def log_path(capture_root: Path) -> Path:
    return capture_root / LOG_NAME


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(ENV_STATE_DIR):
        return Path(env[ENV_STATE_DIR])
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "thinpatch"


def registry_dir(env: Mapping[str, str] | None = None) -> Path:
    return state_dir(env) / "workspaces"


# --------------------------------------------------------------------------- writing


def ensure_private_dir(path: Path, within: Path | None = None) -> None:
    """Make (or check) the private directory ``path``, walking down from the trusted directory
    ``within`` (default: its parent) without following links. An existing directory that is a
    link, someone else's or writable by others is refused (OSError), never chmod-ed."""
    private_fs.make_dirs(path, within)


def capture_base(capture_root: Path) -> Path:
    """Where walks into a capture root start: cargo's target dir, the capture root's parent."""
    return Path(capture_root).parent


def write_json_atomic(path: Path, data: object, mode: int = 0o600, within: Path | None = None) -> None:
    """Write JSON to ``path`` atomically (temp file in the same dir, fsync, then rename), never
    through a link: directories are walked down from ``within`` (default: the directory above
    ``path``'s, so that its own directory is never a link either).

    Concurrent writers of the same key never leave a torn file: the newest rename wins. A full
    disk leaves the previous file whole.
    """
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    private_fs.write_atomic(path, text.encode("utf-8", "surrogateescape"), within, mode)


def open_capture_lock(capture_root: Path) -> int:
    """Open (making it if need be) the capture lock file, never through a link."""
    return private_fs.open_file(capture_lock_path(capture_root), os.O_RDWR | os.O_CREAT, capture_base(capture_root))


def log_warning(capture_root: Path | None, message: str) -> None:
    """Append a warning to the capture log. Never raises, never writes to stdout or through a link."""
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} pid={os.getpid()} {message}\n"
    candidates = []
    if capture_root is not None:
        candidates.append((log_path(capture_root), capture_base(capture_root)))
    state = state_dir()
    candidates.append((state / LOG_NAME, state.parent))
    for path, within in candidates:
        try:
            fd = private_fs.open_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, within)
            try:
                os.write(fd, line.encode("utf-8", "replace"))
            finally:
                os.close(fd)
            return
        except (OSError, ValueError):
            continue


def register_workspace(workspace: Path, capture_root: Path, env: Mapping[str, str] | None = None) -> None:
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
        within=state_dir(env).parent,
    )


def registry_entry_path(workspace: Path, env: Mapping[str, str] | None = None) -> Path:
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


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, order=True)
class CrateKey:
    """One captured crate: its name as rustc knows it and its kind (``bin``, ``lib``,
    ``proc-macro``, ``build-script``). A package may have a ``lib`` and a ``bin`` crate of the
    same name; build scripts are all named ``build_script_build``, so theirs is the package's."""

    name: str
    kind: str

    @property
    def label(self) -> str:
        """``name.kind``: the record file's stem, and how events and users name the crate."""
        return f"{safe_name(self.name)}.{safe_name(self.kind)}"

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class LinkerChain:
    """How the program's link was routed through ``thinpatch-linker`` (top crates only)."""

    shim: str  # thinpatch-linker's path
    chained: str | None = None  # the linker it runs
    source: str | None = None  # where that linker was configured
    replaced_arg: str | None = None  # the `-C linker=` the shim took the place of
    link_edits: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConfigSeen:
    """A cargo config file that applied to the captured build, as it was then: a changed
    owner or inode later means the tools it may have named are no longer the ones captured."""

    file: str
    device: int
    inode: int
    owner: int
    names_tools: bool = True  # it sets a compiler, linker, flags or environment for rustc


def configs_from_env(env: Mapping[str, str]) -> tuple[ConfigSeen, ...]:
    """The configs ``thinpatch capture`` passed to the shim; none when absent or unreadable."""
    text = env.get(ENV_CARGO_CONFIGS)
    if not text:
        return ()
    try:
        return tuple(ConfigSeen(**_checked(item, _CONFIG_FIELDS, ("file", "device", "inode", "owner")))
                     for item in json.loads(text))
    except (ValueError, TypeError):
        return ()


class RecordError(ValueError):
    """A record file that can't be used. ``str()`` says which field is wrong."""


@dataclass(frozen=True)
class CaptureRecord:
    """One captured rustc invocation: written by ``thinpatch-rustc``, read by everyone.

    ``args`` are what rustc ran with (the shim's additions included), ``cargo_args`` what cargo
    asked for; ``env`` is the recorded environment, without cargo's jobserver and the wrappers.
    """

    crate_name: str
    kind: str
    crate_types: tuple[str, ...]
    rustc: str
    args: tuple[str, ...]
    cwd: str
    env: Mapping[str, str] = field(repr=False, hash=False)
    recorded_at: float
    package: str | None = None
    cargo_args: tuple[str, ...] = ()
    shim_args: tuple[str, ...] = ()
    manifest_dir: str | None = None
    src: str | None = None
    target: str | None = None
    profile: str | None = None
    scope: str | None = None
    out_dir: str | None = None
    extra_filename: str | None = None
    dep_info: str | None = None
    workspace: str | None = None
    is_top: bool = False
    linker_chain: LinkerChain | None = None
    wrapper_mode: str | None = None
    shim_version: int | None = None
    cargo_configs: tuple[ConfigSeen, ...] = ()
    path: Path | None = field(default=None, compare=False)  # the file it was read from

    @property
    def key(self) -> CrateKey:
        # Every build script is named build_script_build: the package tells them apart.
        name = (self.package or self.crate_name) if self.kind == "build-script" else self.crate_name
        return CrateKey(name, self.kind)

    def to_json(self) -> dict[str, Any]:
        """The record file's JSON: what :meth:`from_json` reads back."""
        data = _plain(self)
        data["env"] = dict(self.env)
        data["linker_chain"] = None if self.linker_chain is None else _plain(self.linker_chain)
        data["cargo_configs"] = [_plain(config) for config in self.cargo_configs]
        return {"format": FORMAT_VERSION, "key": self.key.label, **data}

    @classmethod
    def from_json(cls, data: object, path: Path | None = None) -> CaptureRecord:
        """Validate a record file's JSON. Raises :class:`RecordError` naming what is wrong."""
        required = ("crate_name", "kind", "crate_types", "rustc", "args", "cwd", "env", "recorded_at")
        checked = _checked(data, _RUSTC_FIELDS, required)
        chain = checked.pop("linker_chain", None)
        if chain is not None:
            chain = LinkerChain(**_checked(chain, _CHAIN_FIELDS, ("shim",), "linker_chain."))
        configs = tuple(
            ConfigSeen(**_checked(item, _CONFIG_FIELDS, ("file", "device", "inode", "owner"), "cargo_configs."))
            for item in checked.pop("cargo_configs", ())
        )
        return cls(**checked, linker_chain=chain, cargo_configs=configs, path=path)


@dataclass(frozen=True)
class LinkRecord:
    """One captured link line, written by ``thinpatch-linker``: ``args`` with every ``@file``
    expanded, ``raw_args`` as the linker got them."""

    linker: str
    args: tuple[str, ...]
    output: str
    recorded_at: float
    cwd: str | None = None
    crate_name: str | None = None
    scope: str | None = None
    raw_args: tuple[str, ...] = ()
    response_files: tuple[str, ...] = ()
    temporaries: tuple[str, ...] = ()
    link_edits: tuple[str, ...] = ()
    shim_version: int | None = None
    path: Path | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, **_plain(self)}

    @classmethod
    def from_json(cls, data: object, path: Path | None = None) -> LinkRecord:
        return cls(**_checked(data, _LINK_FIELDS, ("linker", "args", "output", "recorded_at")), path=path)


def _plain(record: CaptureRecord | LinkRecord | LinkerChain | ConfigSeen) -> dict[str, Any]:
    """A record's fields as JSON values (tuples as lists), without the file it came from."""
    out: dict[str, Any] = {}
    for f in fields(record):
        if f.name != "path":
            value = getattr(record, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


# What each field of a record file must hold: text, a list of texts, a map of texts, a number,
# a flag, or objects checked on their own (the linker chain, the cargo configs seen).
_TEXT, _TEXTS, _TEXT_MAP, _NUMBER, _FLAG, _INT, _OBJECT = "text", "texts", "text map", "number", "flag", "int", "object"
_OBJECTS = "objects"
_RUSTC_FIELDS = {
    "crate_name": _TEXT, "kind": _TEXT, "crate_types": _TEXTS, "rustc": _TEXT, "args": _TEXTS, "cwd": _TEXT,
    "env": _TEXT_MAP, "recorded_at": _NUMBER, "package": _TEXT, "cargo_args": _TEXTS, "shim_args": _TEXTS,
    "manifest_dir": _TEXT, "src": _TEXT, "target": _TEXT, "profile": _TEXT, "scope": _TEXT, "out_dir": _TEXT,
    "extra_filename": _TEXT, "dep_info": _TEXT, "workspace": _TEXT, "is_top": _FLAG, "linker_chain": _OBJECT,
    "wrapper_mode": _TEXT, "shim_version": _INT, "cargo_configs": _OBJECTS,
}
_CONFIG_FIELDS = {"file": _TEXT, "device": _INT, "inode": _INT, "owner": _INT, "names_tools": _FLAG}
_CHAIN_FIELDS = {"shim": _TEXT, "chained": _TEXT, "source": _TEXT, "replaced_arg": _TEXT, "link_edits": _TEXTS}
_LINK_FIELDS = {
    "linker": _TEXT, "args": _TEXTS, "output": _TEXT, "recorded_at": _NUMBER, "cwd": _TEXT, "crate_name": _TEXT,
    "scope": _TEXT, "raw_args": _TEXTS, "response_files": _TEXTS, "temporaries": _TEXTS, "link_edits": _TEXTS,
    "shim_version": _INT,
}


def _checked(data: object, kinds: dict[str, str], required: tuple[str, ...], prefix: str = "") -> dict[str, Any]:
    """The known fields of ``data`` (unknown ones are ignored), each of the right type; lists
    become tuples. ``None`` stands for an absent optional field."""
    if not isinstance(data, dict):
        raise RecordError(f"{prefix.rstrip('.') or 'the record'} is not a JSON object")
    missing = [name for name in required if name not in data]
    if missing:
        raise RecordError(f"missing fields: {', '.join(repr(prefix + m) for m in missing)}")
    out: dict[str, Any] = {}
    for name, kind in kinds.items():
        value = data.get(name)
        if value is None and name not in required:
            continue
        if value is None or not _has_kind(value, kind):
            raise RecordError(f"field {prefix + name!r} must be {_KIND_WORDS[kind]}")
        out[name] = tuple(value) if kind == _TEXTS else (float(value) if kind == _NUMBER else value)
    return out


_KIND_WORDS = {
    _TEXT: "text", _TEXTS: "a list of strings", _TEXT_MAP: "a map of names to strings", _NUMBER: "a number",
    _FLAG: "true or false", _INT: "an integer", _OBJECT: "an object", _OBJECTS: "a list of objects",
}


def _has_kind(value: object, kind: str) -> bool:
    if kind == _TEXT:
        return isinstance(value, str)
    if kind == _TEXTS:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == _TEXT_MAP:
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    if kind == _FLAG:
        return isinstance(value, bool)
    if kind == _OBJECT:
        return isinstance(value, dict)
    if kind == _OBJECTS:
        return isinstance(value, list) and all(isinstance(v, dict) for v in value)
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return numeric and (kind == _NUMBER or isinstance(value, int))


# --------------------------------------------------------------------------- reading


class Captures:
    """Everything captured for one workspace and scope, newest record per crate."""

    def __init__(
        self,
        capture_root: Path,
        scope: str,
        rustc: dict[CrateKey, CaptureRecord],
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

    def crate(self, crate_name: str, kind: str | None = None) -> CaptureRecord | None:
        """A crate by its name (``-`` or ``_``), the ``bin`` before the ``lib`` unless ``kind`` says."""
        name = crate_name.replace("-", "_")
        for k in [kind] if kind else ["bin", "lib"]:
            record = self.rustc.get(CrateKey(name, k))
            if record is not None:
                return record
        return None

    def named(self, text: str) -> CaptureRecord | None:
        """A crate as a user names it: ``app``, or ``app.lib`` when a package has both kinds."""
        for record in self.rustc.values():
            if record.key.label == text:
                return record
        return self.crate(text)

    def top_crates(self) -> list[CaptureRecord]:
        """Crates whose artifact patches load into (bin, cdylib, dylib), newest first."""
        tops = [r for r in self.rustc.values() if r.is_top]
        return sorted(tops, key=lambda r: r.recorded_at, reverse=True)

    def link_for(self, crate_name: str) -> LinkRecord | None:
        """The newest link line recorded for ``crate_name``."""
        matches = [link for link in self.links.values() if link.crate_name == crate_name]
        return max(matches, key=lambda link: link.recorded_at, default=None)


def _read_record(path: Path, warnings: list[str]) -> object | None:
    """A record file's JSON if it is trusted, readable and of this format; else None and a warning."""
    reason = untrusted_reason(path)
    if reason is not None:
        warnings.append(f"skipped untrusted capture record {path}: {reason}")
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            data: object = json.load(fh)
    except (OSError, ValueError) as exc:
        warnings.append(f"skipped malformed capture record {path}: {exc}")
        return None
    if isinstance(data, dict) and data.get("format") != FORMAT_VERSION:
        warnings.append(f"skipped capture record {path}: format {data.get('format')!r}, expected {FORMAT_VERSION}")
        return None
    return data


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
    rustc: dict[CrateKey, CaptureRecord] = {}
    links: dict[str, LinkRecord] = {}
    base = captures_dir(capture_root) / scope if scope else None
    if base is not None:
        for path in sorted((base / "rustc").glob("*.json")):
            record = _load(CaptureRecord, path, warnings)
            if isinstance(record, CaptureRecord) and (
                record.key not in rustc or rustc[record.key].recorded_at < record.recorded_at
            ):
                rustc[record.key] = record
        for path in sorted((base / "link").glob("*.json")):
            link = _load(LinkRecord, path, warnings)
            if isinstance(link, LinkRecord):
                links[link_key(link.output)] = link
    return Captures(capture_root=capture_root, scope=scope or "", rustc=rustc, links=links, warnings=warnings)


def _load(
    kind: type[CaptureRecord] | type[LinkRecord], path: Path, warnings: list[str]
) -> CaptureRecord | LinkRecord | None:
    data = _read_record(path, warnings)
    if data is None:
        return None
    try:
        return kind.from_json(data, path)
    except RecordError as exc:
        warnings.append(f"skipped malformed capture record {path}: {exc}")
        return None


def _newest_mtime(path: Path) -> float:
    newest = 0.0
    for p in path.rglob("*.json"):
        try:
            newest = max(newest, p.stat().st_mtime)
        except OSError:
            pass
    return newest


@dataclass(frozen=True)
class RegisteredWorkspace:
    """A registry entry: a workspace and where its captures are."""

    workspace: Path
    capture_root: Path


def iter_registered_workspaces(env: Mapping[str, str] | None = None) -> Iterator[RegisteredWorkspace]:
    """Yield the trusted registry entries whose workspace is still the directory that was
    registered.

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
        yield RegisteredWorkspace(workspace, Path(entry["capture_root"]))
