"""``thinpatch-linker``: records the top crate's link line, then runs the real linker.

rustc runs it as its linker (``-C linker=``, set by ``thinpatch-rustc``) with the variables
from ``capture.fatbuild`` in its environment. The record is written BEFORE the link, because
rustc deletes its ``@response`` file and temp objects right after the link returns. The real
linker then replaces this process (exec), so its exit status, output and signals are the
link's own. Any failure to record goes to the capture log; the link always runs.
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
                    store.write_json_atomic(path, record.to_json())
                except OSError as exc:
                    store.log_warning(Path(root), f"thinpatch-linker: could not record link line: {exc}")
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
