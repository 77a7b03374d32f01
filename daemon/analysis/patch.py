"""One patch against the running program: what changed, and can the process reach it?

Strings ``baseline``, ``code_prints`` and ``reach`` together for the daemon: the files the
running program was linked from for the rebuilt crates (``baseline.captured_objects``), the
patch's objects of the same crates (``PatchBuild.crates[i].objects``), and the entry points'
symbol names. Reads object files through a ``PrintCache`` kept between patches, so a warm
patch parses only the units rustc rewrote.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from daemon.analysis.code_prints import Changes, PrintCache, changed
from daemon.analysis.reach import ReachReport, analyse_reach


@dataclass
class PatchAnalysis:
    changes: Changes
    reach: ReachReport
    timings: dict[str, float] = field(default_factory=dict)  # prints_ms, changed_ms, reach_ms, disassemble_ms

    def to_json(self) -> dict[str, object]:
        return {
            "changes": self.changes.to_json(),
            "reach": self.reach.to_json(),
            "timings": {k: round(v, 2) for k, v in self.timings.items()},
        }


def analyse_patch(
    cache: PrintCache, running: Iterable[str | Path], patch: Iterable[str | Path], entries: Iterable[str]
) -> PatchAnalysis:
    """Compare the ``patch`` objects with the ``running`` program's objects (or rlibs) of the
    same crates, then judge each changed function's reach from ``entries`` (reads files)."""
    started = time.perf_counter()
    old, new = cache.merged(running), cache.merged(patch)
    printed = time.perf_counter()
    changes = changed(old, new)
    compared = time.perf_counter()
    report = analyse_reach(new, entries, changes)
    return PatchAnalysis(
        changes,
        report,
        {
            "prints_ms": (printed - started) * 1000,
            "changed_ms": (compared - printed) * 1000,
            **report.timings,
        },
    )
