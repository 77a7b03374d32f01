"""Which of cargo's environment a recorded rustc invocation keeps.

Standard library only: the rustc shim uses it on every compilation it records.

Cargo gives rustc variables that source code reads at compile time (``CARGO_PKG_*``,
``CARGO_MANIFEST_DIR``, ``CARGO_CRATE_NAME``, ``OUT_DIR``, …); a replay fails on ``env!()``
without them, so they are kept. Dropped are the variables that only made sense for cargo's
own process tree: jobserver descriptors that no longer exist when the invocation is replayed,
the wrapper variables that named the shim, and thinpatch's own ``THINPATCH_*`` settings.
The shim applies this rule when it records an invocation and the daemon again when it
replays one, so both always agree on it.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

DROPPED_ENV = frozenset({"CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER"})
DROPPED_ENV_PREFIXES = ("THINPATCH_",)


def replayable_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the variables that belonged to cargo's process tree."""
    return {k: v for k, v in env.items() if k not in DROPPED_ENV and not k.startswith(DROPPED_ENV_PREFIXES)}
