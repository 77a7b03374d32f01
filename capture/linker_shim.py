"""``thinpatch-linker``: records the top crate's link line, then runs the real linker.

rustc runs it as its linker (``-C linker=``, set by ``thinpatch-rustc``) with the variables
from ``capture.fatbuild`` in its environment. The record is written BEFORE the link, because
rustc deletes its ``@response`` file and temp objects right after the link returns. The real
linker then replaces this process (exec), so its exit status, output and signals are the
link's own. Any failure to record goes to the capture log; the link always runs.

It also keeps the link's rustc objects (``*.rcgu.o``: the program crate's own code, which rustc
deletes after linking) under ``store.link_objects_dir``, hard-linked (copied across file
systems), so that change analysis can later compare a patch with the code the running program
was linked from. The new set replaces the previous one only once it is complete, with a
manifest (``objects.json``) naming the link record it belongs to.
"""

from __future__ import annotations

import os
import sys
import time

from capture import fatbuild, link_line

# Annotations only (never evaluated): importing `typing` would cost every link.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from capture.store import LinkRecord

SHIM_VERSION = 1
_SELF_NAMES = frozenset({"thinpatch-linker"})
OBJECTS_MANIFEST = "objects.json"


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        return fh.read()


def real_linker(env: Mapping[str, str]) -> str:
    """The linker to chain to; never this shim itself."""
    chained = env.get(fatbuild.ENV_LINKER_CHAIN) or "cc"
    if os.path.basename(chained) in _SELF_NAMES:
        return "cc"
    return chained


def build_link_record(
    raw_args: list[str], expanded: list[str], linker: str, env: Mapping[str, str], cwd: str, edits: Sequence[str]
) -> LinkRecord | None:
    """The record of this link line, or None when it names no output."""
    from capture.store import LinkRecord

    output = link_line.link_output(expanded)
    if output is None:
        return None
    if not os.path.isabs(output):
        output = os.path.normpath(os.path.join(cwd, output))
    return LinkRecord(
        linker=linker,
        args=tuple(expanded),
        output=output,
        recorded_at=time.time(),
        cwd=cwd,
        crate_name=env.get(fatbuild.ENV_LINK_CRATE) or None,
        scope=env.get(fatbuild.ENV_LINK_SCOPE),
        raw_args=tuple(raw_args),
        response_files=tuple(link_line.response_file_args(raw_args)),
        temporaries=tuple(link_line.rustc_temporaries(raw_args + expanded)),
        link_edits=tuple(edits),
        shim_version=SHIM_VERSION,
    )


def rustc_objects(args: Sequence[str], cwd: str) -> list[str]:
    """The link line's rustc object inputs (``*.rcgu.o``), absolute; not rustc's temporaries
    (``symbols.o`` and the like in its ``rustcXXXXXX`` temp dir)."""
    temporaries = set(link_line.rustc_temporaries(list(args)))
    found: list[str] = []
    for arg in args:
        if arg.startswith("-") or not arg.endswith(".rcgu.o") or arg in temporaries:
            continue
        path = arg if os.path.isabs(arg) else os.path.normpath(os.path.join(cwd, arg))
        if path not in found:
            found.append(path)
    return found


def _remove_tree(parent: int, name: str) -> None:
    """Remove a directory this shim made (files only inside); never follows a symlink."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    except FileNotFoundError:
        return
    try:
        for entry in os.listdir(fd):
            os.unlink(entry, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)


def _keep_file(source: str, staging: int, name: str) -> None:
    """A hard link to ``source`` in ``staging``, or a copy across file systems."""
    try:
        os.link(source, name, dst_dir_fd=staging, follow_symlinks=False)
        return
    except OSError:  # another file system (EXDEV), or links not allowed there
        pass
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with open(source, "rb") as src, open(os.open(name, flags, 0o600, dir_fd=staging), "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)


def keep_objects(
    final: str, objects: Sequence[str], recorded_at: float, output: str, within: str | None = None
) -> None:
    """Put hard links to (or copies of) ``objects`` into the directory ``final``, replacing
    what was there once the new set is complete. Raises OSError; never follows a symlink below
    the trusted directory ``within`` (default: ``final``'s grandparent)."""
    from capture import private_fs

    parent_path, name = os.path.split(os.path.abspath(final))
    parent = private_fs.open_dir(parent_path, within or os.path.dirname(parent_path))
    try:
        _replace_objects(parent, name, final, objects, recorded_at, output)
    finally:
        os.close(parent)


def _replace_objects(
    parent: int, name: str, final: str, objects: Sequence[str], recorded_at: float, output: str
) -> None:
    import json
    import stat

    stem = f".{name}.{os.getpid()}.{os.urandom(4).hex()}"
    staging_name = stem + ".tmp"
    os.mkdir(staging_name, 0o700, dir_fd=parent)
    retired = None
    try:
        staging = os.open(staging_name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        try:
            entries = []
            names: set[str] = set()
            for index, source in enumerate(objects):
                info = os.lstat(source)
                if not stat.S_ISREG(info.st_mode):
                    raise OSError(f"{source} is not a regular file")
                kept = os.path.basename(source)
                if kept in names or kept == OBJECTS_MANIFEST:
                    kept = f"{index}.{kept}"
                names.add(kept)
                _keep_file(source, staging, kept)
                info = os.stat(kept, dir_fd=staging, follow_symlinks=False)
                entries.append({"source": source, "file": kept, "size": info.st_size, "mtime_ns": info.st_mtime_ns})
            manifest = {"output": output, "recorded_at": recorded_at, "objects": entries}
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(OBJECTS_MANIFEST, flags, 0o600, dir_fd=staging)
            with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as fh:
                json.dump(manifest, fh)
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            os.close(staging)
        try:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISLNK(info.st_mode):
                raise OSError(f"{final} is a symbolic link; remove it (rm {final})")
            if not stat.S_ISDIR(info.st_mode):
                raise OSError(f"{final} is not a directory; remove it (rm {final})")
            retired = stem + ".old"
            os.rename(name, retired, src_dir_fd=parent, dst_dir_fd=parent)
        try:
            os.rename(staging_name, name, src_dir_fd=parent, dst_dir_fd=parent)
        except OSError:
            if retired is not None:
                os.rename(retired, name, src_dir_fd=parent, dst_dir_fd=parent)  # the previous set stays
                retired = None
            raise
    except BaseException:
        _remove_tree(parent, staging_name)
        raise
    if retired is not None:
        _remove_tree(parent, retired)


def _write_response_file(raw_args: list[str], args: list[str]) -> list[str]:
    """Put an edited line back into a response file next to rustc's (rustc cleans its temp dir)."""
    files = link_line.response_file_args(raw_args)
    if not files:
        return args
    path = files[0] + ".thinpatch"
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as fh:
        for arg in args:
            fh.write(link_line.quote_response_arg(arg) + "\n")
    return ["@" + path]


def main() -> None:
    raw_args = sys.argv[1:]
    env = os.environ
    linker = real_linker(env)
    run_args = raw_args
    root = env.get(fatbuild.ENV_LINK_ROOT)
    try:
        cwd = os.getcwd()
        expanded = link_line.expand_response_files(raw_args, _read_text, cwd)
        edits = fatbuild.parse_link_edits(env.get(fatbuild.ENV_FAT_LINK))
        if root:
            from pathlib import Path

            from capture import store

            record = build_link_record(raw_args, expanded, linker, env, cwd, edits)
            if record is not None:
                scope = record.scope or "unknown"
                path = store.link_record_path(Path(root), scope, store.link_key(record.output))
                try:
                    store.write_json_atomic(path, record.to_json(), within=store.capture_base(Path(root)))
                except OSError as exc:
                    store.log_warning(Path(root), f"thinpatch-linker: could not record link line: {exc}")
                objects = rustc_objects(expanded, cwd)
                if objects:
                    kept = store.link_objects_dir(Path(root), scope, store.link_key(record.output))
                    try:
                        keep_objects(str(kept), objects, record.recorded_at, record.output, str(Path(root).parent))
                    except OSError as exc:
                        store.log_warning(Path(root), f"thinpatch-linker: could not keep the program's objects: {exc}")
        if edits:
            run_args = _write_response_file(raw_args, fatbuild.apply_link_edits(expanded, edits))
    except Exception as exc:  # recording must never break the link
        try:
            from pathlib import Path

            from capture import store

            store.log_warning(Path(root) if root else None, f"thinpatch-linker: {type(exc).__name__}: {exc}")
        except Exception:
            pass
        run_args = raw_args
    argv = [linker, *run_args]
    try:
        if os.sep in linker:
            os.execv(linker, argv)
        os.execvp(linker, argv)
    except OSError as exc:
        sys.stderr.write(f"thinpatch-linker: cannot run linker {linker!r}: {exc}\n")
        sys.exit(127)


if __name__ == "__main__":
    main()
