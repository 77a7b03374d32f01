"""Watch exactly the captured crates' source files and report real content changes.

The watch set comes from cargo's dep-info files, so it covers modules and
``include_str!`` inputs and nothing under ``target/``. Directories are watched
non-recursively: a workspace root also holds ``target/``, and recursively watching it
would flood the watcher during every cargo build.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import anyio
import structlog
import watchfiles

log = structlog.get_logger("thinpatch.watcher")

# watchfiles yields a batch one to two quiet periods after its last event: a save reached the
# build 30-36 ms later at 20 ms, 9 ms later at 5 (bench/README), for 0.2-0.3% more idle CPU
# (wake-ups). A save seen half-written still ends well: the next event restarts the build on
# the final content.
DEFAULT_DEBOUNCE_MS = 5

# Quiet period watchfiles waits for before yielding; `debounce` is only its upper bound
# on grouping, so a short step is what makes saves feel instant.
_MAX_GROUPING_MS = 1600

# How long the OS watcher waits for events before it reports a timeout. The first timeout
# after arming tells us the watch is in place; later ones cost one wake-up each.
_ARM_CHECK_MS = 500

_EDITOR_TEMP_SUFFIXES = ("~", ".swp", ".swo", ".swx", ".tmp", ".bak", ".orig")


def is_editor_temp(path: str) -> bool:
    name = os.path.basename(path)
    return (
        name.endswith(_EDITOR_TEMP_SUFFIXES)
        or name.startswith((".#", ".goutputstream-"))
        or name == "4913"  # vim's probe file when checking directory writability
        or (name.startswith("#") and name.endswith("#"))
    )


def is_ignored_dir_component(path: str, target_dirs: Iterable[str] = ()) -> bool:
    parts = Path(path).parts
    if ".git" in parts:
        return True
    for target in target_dirs:
        if path == target or path.startswith(target.rstrip(os.sep) + os.sep):
            return True
    return False


def filter_watch_set(files: Iterable[str], target_dirs: Iterable[str] = (), ignored: Iterable[str] = ()) -> set[str]:
    """Drop paths in target dirs, ``.git``, editor temp files and git-ignored paths."""
    target_dirs = list(target_dirs)
    ignored_set = set(ignored)
    return {
        f
        for f in files
        if f not in ignored_set and not is_ignored_dir_component(f, target_dirs) and not is_editor_temp(f)
    }


def git_ignored(paths: Iterable[str], cwd: str) -> set[str]:
    """Paths that ``.gitignore`` excludes, asked of git itself (empty when git is absent)."""
    paths = list(paths)
    if not paths:
        return set()
    try:
        proc = subprocess.run(
            ["git", "check-ignore", "--no-index", "--stdin", "-z"],
            input="\0".join(paths).encode(),
            cwd=cwd,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return set()
    if proc.returncode not in (0, 1):  # 128: not a git repository
        return set()
    return {p.decode(errors="surrogateescape") for p in proc.stdout.split(b"\0") if p}


def content_digest(path: str) -> str | None:
    """A digest of the file's bytes; None when it does not exist or can't be read."""
    try:
        with open(path, "rb") as fh:
            return hashlib.blake2b(fh.read(), digest_size=16).hexdigest()
    except OSError:
        return None


def watch_roots(files: Iterable[str]) -> set[str]:
    """The directories to watch (non-recursively) so that every file's changes are seen.

    A missing directory is replaced by its nearest existing ancestor, so that its
    re-creation (a branch switch, a restored folder) is noticed and the watch re-armed.
    """
    roots: set[str] = set()
    for f in files:
        d = os.path.dirname(f) or "."
        while not os.path.isdir(d):
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
        roots.add(d)
    return roots


class SourceWatcher:
    """Yields sets of watched files whose content really changed.

    - A save that leaves the bytes unchanged yields nothing.
    - Atomic saves (write temp + rename over) are seen as a change of the target path.
    - A deleted watched file is reported as changed (the build will say it is missing).
    - New or re-created directories re-arm the watch and trigger a full rescan, because
      files written straight into a fresh directory can be missed by the OS watcher.
    """

    def __init__(
        self, files: Iterable[str], *, debounce_ms: int = DEFAULT_DEBOUNCE_MS, force_polling: bool | None = None
    ):
        self.debounce_ms = debounce_ms
        self.force_polling = force_polling
        self._files: set[str] = set(files)
        self._digests: dict[str, str | None] = {f: content_digest(f) for f in self._files}
        self._stop = anyio.Event()
        self._rearm = anyio.Event()
        self.restarts = 0
        self.armed = anyio.Event()  # set once the first OS watch is certainly in place

    @property
    def files(self) -> frozenset[str]:
        return frozenset(self._files)

    def stop(self) -> None:
        self._stop.set()
        self._rearm.set()

    def _changed(self, candidates: Iterable[str]) -> set[str]:
        changed = set()
        for f in candidates:
            if f not in self._files:
                continue
            digest = content_digest(f)
            if digest != self._digests.get(f):
                self._digests[f] = digest
                changed.add(f)
        return changed

    def watch_more(self, files: Iterable[str]) -> set[str]:
        """Add files to the watch (a module rustc read for the first time); their content now
        is the baseline. Re-arms the OS watch when one lives in a directory not watched yet."""
        new = set(files) - self._files
        if not new:
            return new
        watched_dirs = watch_roots(self._files)
        for path in new:
            self._files.add(path)
            self._digests[path] = content_digest(path)
        if not watch_roots(new) <= watched_dirs:
            self._rearm.set()
        return new

    async def changes(self) -> AsyncIterator[set[str]]:
        while not self._stop.is_set():
            roots = sorted(watch_roots(self._files))
            self._rearm = anyio.Event()
            if not roots:
                await self._rearm.wait()
                continue
            rescan = False
            settled = False
            try:
                async for batch in watchfiles.awatch(
                    *roots,
                    watch_filter=None,
                    debounce=max(_MAX_GROUPING_MS, self.debounce_ms),
                    step=self.debounce_ms,
                    stop_event=self._rearm,
                    recursive=False,
                    force_polling=self.force_polling,
                    ignore_permission_denied=True,
                    rust_timeout=_ARM_CHECK_MS,
                    yield_on_timeout=True,
                ):
                    if not batch:
                        # A timeout: the OS watch is armed now. Edits made between reading
                        # the digests and arming were not seen as events: rescan once.
                        if not settled:
                            settled = True
                            self.armed.set()
                            changed = self._changed(self._files)
                            if changed:
                                yield changed
                        continue
                    paths = {p for _, p in batch}
                    if any(os.path.isdir(p) for p in paths) or any(not os.path.isdir(r) for r in roots):
                        rescan = True  # new or vanished directories: re-arm and rescan everything
                    changed = self._changed(p for p in paths if not is_editor_temp(p))
                    if rescan:
                        changed |= self._changed(self._files)
                    if changed:
                        yield changed
                    if rescan:
                        break
            except FileNotFoundError:
                rescan = True  # a root vanished between computing and arming
            if rescan and not self._stop.is_set():
                self.restarts += 1
                log.debug("watch re-armed", roots=len(roots))
                changed = self._changed(self._files)
                if changed:
                    yield changed
            elif not self._stop.is_set() and not self._rearm.is_set():
                # awatch ended on its own (should not happen): don't spin.
                await anyio.sleep(self.debounce_ms / 1000)
