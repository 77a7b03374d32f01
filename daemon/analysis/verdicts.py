"""Can this patch carry each change of the save into the running process? (pure)

Takes what the other analyses found (changed functions and statics, reach from the hot entry
points, types whose layout changed) and gives each change one verdict:

- ``carried``: the process runs the new code on its next hot call;
- ``needs-restart``: it never will (not reached from any redirected entry point, a type's
  layout changed, a static's initial value changed, reached only through an entry point the
  runtime can't redirect); only a restart runs it;
- ``unknown``: it may or may not (an indirect call could reach it; no debug info to compare
  layouts; the program has not said which entry points it has).

The save's verdict is the worst of its changes'. A patch with a ``needs-restart`` change is
never sent: a layout change would corrupt the running program's data.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from daemon.analysis.code_prints import FUNCTION, Changes
from daemon.analysis.names import short_name
from daemon.analysis.reach import NOT_REACHED, REACHED, UNKNOWN, ReachReport
from daemon.binary.demangle import demangle

CARRIED = "carried"
NEEDS_RESTART = "needs-restart"
UNSURE = "unknown"

_RANK = {CARRIED: 0, UNSURE: 1, NEEDS_RESTART: 2}

POINTER_SIZED = "pointer-sized-closure"


def plain_name(symbol: str) -> str:
    """The demangled path without rustc's hash: ``app::frame``."""
    text = demangle(symbol)
    head, sep, tail = text.rpartition("::h")
    if sep and len(tail) == 16 and all(c in "0123456789abcdef" for c in tail):
        return head
    return text


@dataclass(frozen=True)
class Entry:
    """A hot entry point the process reported, resolved to the patch's symbol name."""

    symbol: str
    kind: str  # "fn", "closure" or "pointer-sized-closure"
    name: str  # Rust's type name of the callable
    returns: str  # Rust's type name of what it returns

    @property
    def redirected(self) -> bool:
        """Whether the runtime looks this entry up at all (a pointer-sized closure is taken for
        a function pointer, and its captured pointer is never in the table)."""
        return self.kind != POINTER_SIZED

    @property
    def future(self) -> str | None:
        """The future type's path when the entry is an ``async fn`` (rustc names its future
        ``<path of the fn>::{{closure}}``)."""
        if self.returns.endswith("::{{closure}}") and self.returns.startswith(self.name.split("<")[0] + "::"):
            return self.returns
        return None


@dataclass(frozen=True)
class LayoutFinding:
    type_name: str
    why: str  # "size 16 → 24 bytes; field `score` added"


@dataclass(frozen=True)
class ChangeVerdict:
    symbol: str
    function: str  # plain_name(symbol)
    change: str  # "changed", "added", or "static" (a static's or thread-local's initial value)
    verdict: str
    why: str | None = None
    file: str | None = None
    line: int | None = None
    new: bool = True  # differs from the previous patch (False: carried over from an earlier save)
    decisive: bool = False  # the change the save's reason is about
    foreign: bool = False  # code of a crate outside the workspace (a generic instance compiled anew)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"function": self.function, "change": self.change, "verdict": self.verdict}
        if self.why:
            out["why"] = self.why
        if self.file:
            out["file"] = self.file
            out["line"] = self.line
        out["new"] = self.new
        if self.decisive:
            out["decisive"] = True
        if self.foreign:
            out["foreign"] = True
        return out


@dataclass(frozen=True)
class SaveVerdict:
    verdict: str
    reason: str | None  # one line for the verdict that decided it (None when carried)
    changes: tuple[ChangeVerdict, ...] = ()
    timings: Mapping[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"verdict": self.verdict}
        if self.reason:
            out["reason"] = self.reason
        out["changes"] = [c.to_json() for c in self.changes]
        return out


def _worst(verdicts: Iterable[str]) -> str:
    return max(verdicts, key=_RANK.__getitem__, default=CARRIED)


def unknown_save(reason: str) -> SaveVerdict:
    """The whole save could not be judged (its objects or the program's could not be read)."""
    return SaveVerdict(UNSURE, reason)


def judge(
    changes: Changes,
    reach: ReachReport | None,
    *,
    entries: Sequence[Entry],
    unredirected_reach: ReachReport | None = None,
    layout: Mapping[str, Sequence[LayoutFinding]] | None = None,
    layout_unknown: str | None = None,
    places: Mapping[str, tuple[str, int]] | None = None,
    previous: Mapping[str, str] | None = None,
    current: Mapping[str, str] | None = None,
    timings: Mapping[str, float] | None = None,
    optimised: bool = False,
    workspace_crates: Collection[str] = (),
) -> SaveVerdict:
    """One verdict per change and one for the save.

    ``reach``: from the redirected entries (None: the process reported none).
    ``unredirected_reach``: from the pointer-sized-closure entries only.
    ``layout``: per changed function's symbol, the types it uses whose layout changed;
    ``layout_unknown`` says why layouts could not be compared. ``places``: file and line per
    symbol. ``previous``/``current``: the previous patch's and this patch's prints, to mark
    which changes are new in this save. ``optimised``: the program was built with
    optimisations, so the compiler may have copied changed code into functions no entry point
    reaches (``main`` inlining the hot function's fallback call): "not reached" is only
    ``unknown`` there. ``workspace_crates``: code of other crates (a generic instance the patch
    compiled anew) is listed but not shown as what the save changed.
    """
    layout = layout or {}
    places = places or {}
    reached = {v.name: v for v in reach.verdicts} if reach is not None else {}
    through_closure = (
        {v.name for v in unredirected_reach.verdicts if v.status == REACHED} if unredirected_reach else set()
    )
    closures = [e for e in entries if not e.redirected]
    futures = [e for e in entries if e.redirected and e.future]
    out: list[ChangeVerdict] = []
    deciding: dict[str, tuple[int, str, int]] = {}  # verdict -> rank, one-line reason, index of its change

    def add(symbol: str, change: str, verdict: str, why: str | None, short: str | None, rank: int = 9) -> None:
        place = places.get(symbol)
        is_new = previous is None or current is None or previous.get(symbol) != current.get(symbol)
        plain = plain_name(symbol)
        crate = plain.lstrip("<").split("::", 1)[0]
        out.append(
            ChangeVerdict(
                symbol,
                plain,
                change,
                verdict,
                why,
                place[0] if place else None,
                place[1] if place else None,
                is_new,
                foreign=bool(workspace_crates) and crate not in workspace_crates,
            )
        )
        if short and verdict != CARRIED and (verdict not in deciding or rank < deciding[verdict][0]):
            deciding[verdict] = (rank, short, len(out) - 1)  # a layout explains a restart better than reach

    for symbol in (*changes.changed, *changes.added):
        kind = changes.kinds.get(symbol)
        name = plain_name(symbol)
        change = "changed" if symbol in changes.changed else "added"
        if kind != FUNCTION:
            if change == "changed":
                what = "thread-local" if kind == "tls" else "static"
                add(
                    symbol,
                    "static",
                    NEEDS_RESTART,
                    f"the initial value of the {what} `{name}` changed: the running program keeps the value it has, "
                    "so only a restart starts from the new one",
                    f"the initial value of `{name}` changed",
                    1,
                )
            continue
        found = layout.get(symbol) or ()
        if found:
            first = found[0]
            why = "; ".join(f"`{f.type_name}`: {f.why}" for f in found)
            add(
                symbol,
                change,
                NEEDS_RESTART,
                f"it uses a type whose layout changed ({why}): the running program's data has the old layout",
                f"{first.type_name}'s layout changed ({first.why})",
                0,
            )
            continue
        verdict = reached.get(symbol)
        if change == "added" and (verdict is None or verdict.status != REACHED):
            continue  # new code nothing reaches yet runs nowhere: no old version keeps running
        if reach is None:
            add(
                symbol,
                change,
                UNSURE,
                "the program has not reported its hot entry points yet (none called so far, or a thinpatch-client "
                "older than protocol 2), so whether it runs this code is not known",
                "the program has not reported its hot entry points",
            )
        elif verdict is None or verdict.status == REACHED:
            add(symbol, change, CARRIED, verdict.reason if verdict else None, None)
        elif symbol in through_closure and closures:
            closure = next(e.name for e in closures)
            add(
                symbol,
                change,
                NEEDS_RESTART,
                f"it runs only through the closure `{closure}`, which is the size of one pointer (it captures one "
                "reference): the runtime takes it for a function pointer and never redirects it. Pass the "
                "reference through `HotFn::call` instead",
                f"{short_name(name)} runs only through a pointer-sized closure, which is never patched",
                2,
            )
        elif any(name.startswith(f.future or "\0") for f in futures):
            entry = next(f for f in futures if name.startswith(f.future or "\0"))
            add(
                symbol,
                change,
                NEEDS_RESTART,
                f"it is the body of `{entry.name}`, an async fn used as a hot entry point: the hot call only makes "
                "its future, and the future runs the code it had. Build a boxed future inside the hot function",
                f"{short_name(name)} is the body of an async entry point",
                2,
            )
        elif verdict.status == NOT_REACHED and optimised:
            add(
                symbol,
                change,
                UNSURE,
                f"{verdict.reason}; but the program is optimised, and the compiler may have copied changed code "
                "into it from a function that is reached (inlining), so whether the process runs the new code "
                "there is not known",
                f"{short_name(name)} is not reached from a hot entry point (optimised build: inlining may explain it)",
                4,
            )
        elif verdict.status == NOT_REACHED:
            add(
                symbol,
                change,
                NEEDS_RESTART,
                f"{verdict.reason}; only a restart runs it",
                f"{short_name(name)} is not reached from a hot entry point",
            )
        else:  # UNKNOWN
            assert verdict.status == UNKNOWN
            add(symbol, change, UNSURE, verdict.reason, f"{short_name(name)} may be called through a pointer")
    if layout_unknown and any(c.change != "static" for c in out):
        deciding.setdefault(UNSURE, (5, layout_unknown, -1))
        out = [
            c if c.verdict != CARRIED else replace(c, verdict=UNSURE, why=layout_unknown)
            for c in out
        ]
    overall = _worst(c.verdict for c in out)
    reason = deciding.get(overall)
    if reason is not None and reason[2] >= 0:
        out[reason[2]] = replace(out[reason[2]], decisive=True)
    return SaveVerdict(overall, reason[1] if reason else None, tuple(out), dict(timings or {}))
