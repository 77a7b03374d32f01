"""The save's verdict from what the analyses found (data in, data out)."""

from __future__ import annotations

from daemon.analysis.code_prints import FUNCTION, Changes
from daemon.analysis.reach import NOT_REACHED, REACHED, UNKNOWN, ReachReport, Verdict
from daemon.analysis.verdicts import (
    CARRIED,
    NEEDS_RESTART,
    UNSURE,
    Entry,
    LayoutFinding,
    judge,
    plain_name,
)

FRAME = "_ZN3app5frame17h0123456789abcdefE"
MAIN = "_ZN3app4main17h0123456789abcdefE"
DRAW = "_ZN3app4draw17h0123456789abcdefE"
COUNTER = "_ZN3app7COUNTER17h0123456789abcdefE"
HOT = Entry(FRAME, "closure", "app::frame", "alloc::string::String")


def changes(*names: str, kinds: dict[str, str] | None = None, added: tuple[str, ...] = ()) -> Changes:
    return Changes(tuple(names), added, (), kinds or dict.fromkeys((*names, *added), FUNCTION))


def reach(**status: str) -> ReachReport:
    return ReachReport((), (), [Verdict(n, "changed", s, f"{n} {s}") for n, s in status.items()], 0)


def test_plain_names_drop_rustcs_hash() -> None:
    assert plain_name(FRAME) == "app::frame"
    assert plain_name("main") == "main"


def test_reached_changes_are_carried_and_nothing_changed_is_carried_too() -> None:
    verdict = judge(changes(FRAME), reach(**{FRAME: REACHED}), entries=[HOT])
    assert verdict.verdict == CARRIED and verdict.reason is None
    assert [c.function for c in verdict.changes] == ["app::frame"]
    assert judge(changes(), reach(), entries=[HOT]).verdict == CARRIED


def test_a_change_no_entry_point_reaches_needs_a_restart_and_says_which() -> None:
    verdict = judge(changes(FRAME, MAIN), reach(**{FRAME: REACHED, MAIN: NOT_REACHED}), entries=[HOT],
                    places={MAIN: ("src/main.rs", 30)})
    assert verdict.verdict == NEEDS_RESTART
    assert verdict.reason == "main() is not reached from a hot entry point"
    main = next(c for c in verdict.changes if c.function == "app::main")
    assert (main.verdict, main.file, main.line) == (NEEDS_RESTART, "src/main.rs", 30)
    assert main.to_json()["why"].endswith("only a restart runs it")


def test_unknown_reach_is_never_carried() -> None:
    verdict = judge(changes(DRAW), reach(**{DRAW: UNKNOWN}), entries=[HOT])
    assert verdict.verdict == UNSURE and "may be called through a pointer" in (verdict.reason or "")


def test_without_reported_entry_points_nothing_is_claimed() -> None:
    verdict = judge(changes(FRAME), None, entries=[])
    assert verdict.verdict == UNSURE and "entry points" in (verdict.reason or "")


def test_a_layout_change_outranks_reach() -> None:
    found = {FRAME: [LayoutFinding("app::World", "size 8 → 16 bytes; field `lives` added")]}
    verdict = judge(changes(FRAME), reach(**{FRAME: REACHED}), entries=[HOT], layout=found)
    assert verdict.verdict == NEEDS_RESTART
    assert verdict.reason == "app::World's layout changed (size 8 → 16 bytes; field `lives` added)"


def test_layouts_that_could_not_be_compared_make_carried_changes_unknown() -> None:
    verdict = judge(changes(FRAME), reach(**{FRAME: REACHED}), entries=[HOT], layout_unknown="no debug info")
    assert verdict.verdict == UNSURE and verdict.reason == "no debug info"


def test_a_changed_static_initializer_needs_a_restart() -> None:
    verdict = judge(changes(COUNTER, kinds={COUNTER: "data"}), reach(), entries=[HOT])
    assert verdict.verdict == NEEDS_RESTART and "initial value of `app::COUNTER`" in (verdict.reason or "")
    # an added static is new code's own: nothing runs with an old value
    assert judge(changes(added=(COUNTER,), kinds={COUNTER: "data"}), reach(), entries=[HOT]).verdict == CARRIED


def test_code_only_a_pointer_sized_closure_reaches_names_the_closure() -> None:
    closure = Entry("_ZN3app4main28_$u7b$$u7b$closure$u7d$$u7d$17h0123456789abcdefE", "pointer-sized-closure",
                    "app::main::{{closure}}", "alloc::string::String")
    verdict = judge(changes(DRAW), reach(**{DRAW: NOT_REACHED}), entries=[closure],
                    unredirected_reach=reach(**{DRAW: REACHED}))
    assert verdict.verdict == NEEDS_RESTART
    assert verdict.reason == "draw() runs only through a pointer-sized closure, which is never patched"
    assert "`app::main::{{closure}}`" in (verdict.changes[0].why or "")


def test_the_body_of_an_async_entry_point_needs_a_restart_and_says_why() -> None:
    handler = Entry("_ZN3app6handle17h0123456789abcdefE", "closure", "app::handle", "app::handle::{{closure}}")
    body = "_ZN3app6handle28_$u7b$$u7b$closure$u7d$$u7d$17h0123456789abcdefE"
    verdict = judge(changes(body), reach(**{body: NOT_REACHED}), entries=[handler])
    assert verdict.verdict == NEEDS_RESTART and "async" in (verdict.reason or "")


def test_changes_are_marked_new_only_when_they_differ_from_the_previous_patch() -> None:
    verdict = judge(changes(FRAME, DRAW), reach(**{FRAME: REACHED, DRAW: REACHED}), entries=[HOT],
                    previous={FRAME: "a", DRAW: "b"}, current={FRAME: "a", DRAW: "c"})
    assert {c.function: c.new for c in verdict.changes} == {"app::frame": False, "app::draw": True}


def test_a_layout_change_is_the_reason_given_even_beside_unreached_code() -> None:
    found = {FRAME: [LayoutFinding("app::World", "field `lives` added")]}
    verdict = judge(changes(MAIN, FRAME), reach(**{MAIN: NOT_REACHED, FRAME: REACHED}), entries=[HOT], layout=found)
    assert verdict.reason == "app::World's layout changed (field `lives` added)"


def test_in_an_optimised_program_unreached_code_is_only_unknown() -> None:
    # inlining copies the hot function's fallback call into main: main differs, yet the
    # redirected entry point runs the new code
    verdict = judge(changes(MAIN), reach(**{MAIN: NOT_REACHED}), entries=[HOT], optimised=True)
    assert verdict.verdict == UNSURE and "optimised" in (verdict.reason or "")


def test_code_of_other_crates_is_marked_foreign() -> None:
    generic = "_ZN4core3fmt9Arguments3new17h0123456789abcdefE"
    verdict = judge(changes(FRAME, added=(generic,)), reach(**{FRAME: REACHED, generic: REACHED}), entries=[HOT],
                    workspace_crates={"app"})
    assert {c.function: c.foreign for c in verdict.changes} == {"app::frame": False, "core::fmt::Arguments::new": True}
