"""Read rustc/cargo dep-info (``.d``) files and map source files to crates.

Pure functions over text and records: the daemon uses them to decide what to watch
and which crate an edited file belongs to.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from capture.store import CrateKey

# Files whose change means cargo must run again: a patch can't carry them.
MANIFEST_NAMES = frozenset({"Cargo.toml", "Cargo.lock", "build.rs", "rust-toolchain", "rust-toolchain.toml"})


def parse_depinfo(text: str, base_dir: str | None = None) -> list[str]:
    """Return the dependency paths listed in a Makefile-style dep-info text.

    rustc writes ``target: dep dep`` rules with spaces escaped as ``\\ ``, plus
    ``# env-dep:``/``# checksum:`` comment lines that we ignore. Order is preserved,
    duplicates removed. Relative paths are resolved against ``base_dir``.
    """
    deps: list[str] = []
    seen: set[str] = set()
    # Join continuation lines ("\\\n") first.
    logical = text.replace("\\\r\n", " ").replace("\\\n", " ")
    for line in logical.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        colon = _rule_colon(line)
        if colon < 0:
            continue
        for word in _split_escaped(line[colon + 1 :]):
            path = word
            if base_dir is not None and not os.path.isabs(path):
                path = os.path.normpath(os.path.join(base_dir, path))
            if path not in seen:
                seen.add(path)
                deps.append(path)
    return deps


def _rule_colon(line: str) -> int:
    """Index of the colon separating target from prerequisites (skipping ``\\:`` and ``C:``)."""
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\":
            i += 2
            continue
        if ch == ":" and (i + 1 == len(line) or line[i + 1] in " \t"):
            return i
        i += 1
    return -1


def _split_escaped(text: str) -> list[str]:
    words: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in " \\#:":
            current.append(text[i + 1])
            i += 2
            continue
        if ch in " \t":
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(ch)
        i += 1
    if current:
        words.append("".join(current))
    return words


@dataclass(frozen=True)
class CrateSources:
    """What one captured crate is built from."""

    crate: CrateKey
    sources: tuple[str, ...]  # every file rustc read (modules, include_str! inputs…)
    manifest_files: tuple[str, ...]  # Cargo.toml, build.rs, Cargo.lock: need a full rebuild


@dataclass
class SourceMap:
    """Which crates each watched file belongs to."""

    crates: list[CrateSources] = field(default_factory=list)
    by_file: dict[str, list[CrateKey]] = field(default_factory=dict)
    manifests: dict[str, list[CrateKey]] = field(default_factory=dict)

    def watched_files(self) -> set[str]:
        return set(self.by_file) | set(self.manifests)

    def crates_for(self, path: str) -> list[CrateKey]:
        return self.by_file.get(path, [])

    def is_manifest(self, path: str) -> bool:
        return path in self.manifests


def crate_sources(
    crate: CrateKey,
    depinfo_paths: Iterable[str],
    manifest_dir: str | None,
    workspace: str | None,
    target_dir: str | None = None,
) -> CrateSources:
    """Combine a crate's dep-info list with its manifest files.

    Files under the target dir (generated ``OUT_DIR`` files) are not sources a user
    edits; ``build.rs`` is listed as a manifest file because a change to it needs cargo.
    """
    sources: list[str] = []
    manifests: list[str] = []
    for path in depinfo_paths:
        if target_dir and _is_under(path, target_dir):
            continue
        if os.path.basename(path) in MANIFEST_NAMES:
            manifests.append(path)
        else:
            sources.append(path)
    if manifest_dir:
        manifests.append(os.path.join(manifest_dir, "Cargo.toml"))
        build_rs = os.path.join(manifest_dir, "build.rs")
        manifests.append(build_rs)
    if workspace:
        manifests.append(os.path.join(workspace, "Cargo.lock"))
        manifests.append(os.path.join(workspace, "Cargo.toml"))
    return CrateSources(crate, tuple(dict.fromkeys(sources)), tuple(dict.fromkeys(manifests)))


def build_source_map(crates: Iterable[CrateSources]) -> SourceMap:
    smap = SourceMap()
    for cs in crates:
        smap.crates.append(cs)
        for path in cs.sources:
            smap.by_file.setdefault(path, []).append(cs.crate)
        for path in cs.manifest_files:
            smap.manifests.setdefault(path, []).append(cs.crate)
    return smap


def _is_under(path: str, directory: str) -> bool:
    try:
        return os.path.commonpath([os.path.abspath(path), os.path.abspath(directory)]) == os.path.abspath(directory)
    except ValueError:
        return False


def read_depinfo_file(path: str | os.PathLike[str], base_dir: str | None = None) -> list[str]:
    """Effectful wrapper: read and parse one ``.d`` file (missing file → empty list)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return []
    return parse_depinfo(text, base_dir)


def changed_kinds(paths: Iterable[str], smap: SourceMap) -> tuple[dict[CrateKey, list[str]], list[str]]:
    """Split changed paths into (crate → source files) and manifest files."""
    by_crate: dict[CrateKey, list[str]] = {}
    manifests: list[str] = []
    for path in paths:
        if smap.is_manifest(path):
            manifests.append(path)
            continue
        for key in smap.crates_for(path):
            by_crate.setdefault(key, []).append(path)
    return by_crate, manifests

