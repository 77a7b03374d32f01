"""Reach verdicts on real rustc objects: the demo program, one function edited at a time."""

from __future__ import annotations

import struct

import pytest

from daemon.analysis.code_prints import FUNCTION, Changes, Node, Reloc, changed
from daemon.analysis.reach import (
    NOT_REACHED,
    REACHED,
    UNKNOWN,
    analyse_reach,
    indirect_calls,
    reach_set,
)
from daemon.binary.elf_objects import EM_AARCH64
from tests.analysis.rust_program import named


def verdict_for(build, entry: str, **edit: str):
    old, new = build(), build(**edit)
    diff = changed(old, new)
    report = analyse_reach(new, [named(new, entry)], diff)
    return report, {v.name: v for v in report.verdicts}, new


def test_a_directly_called_function_is_reached(build):
    report, verdicts, new = verdict_for(build, "4tick", HELPER="2")
    verdict = verdicts[named(new, "6helper")]
    assert verdict.status == REACHED and verdict.path == (named(new, "4tick"), verdict.name)
    assert verdict.reason == "`demo::helper` is called from `demo::tick`"
    assert report.disassembled == 0  # nothing outside R: no disassembly needed


def test_a_generic_instantiation_is_reached(build):
    _, verdicts, new = verdict_for(build, "4tick", GENERIC="4")
    verdict = verdicts[named(new, "7generic")]
    assert verdict.status == REACHED


def test_a_trait_object_method_is_unknown(build):
    report, verdicts, new = verdict_for(build, "7use_dyn", AREA="8")
    verdict = verdicts[named(new, "4area")]
    assert verdict.status == UNKNOWN
    assert [c.function for c in verdict.indirect_calls] == [named(new, "7use_dyn")]
    assert "`demo::use_dyn` +0xe: `call qword ptr [rsi + 0x18]`" in verdict.reason
    assert report.disassembled == 1


def test_a_function_only_main_calls_is_not_reached(build):
    report, verdicts, new = verdict_for(build, "4tick", ONLY_MAIN="98")
    verdict = verdicts[named(new, "9only_main")]
    assert verdict.status == NOT_REACHED
    assert report.disassembled > 0 and report.indirect_calls == ()
    # from main it is reached
    assert analyse_reach(new, [named(new, "4demo4main")], changed(build(), new)).verdicts[0].status == REACHED


def test_indirect_calls_make_only_what_old_pointers_lead_to_unknown(build):
    # `show` formats: std's formatting code compiled into the patch calls through a vtable.
    # Still, neither `main` nor a function only `main` calls is behind any pointer.
    report, verdicts, new = verdict_for(build, "4show", ONLY_MAIN="98", MAIN="let _edited = 1;")
    assert report.indirect_calls, "the entry is meant to reach an indirect call"
    assert verdicts[named(new, "9only_main")].status == NOT_REACHED
    main = verdicts[named(new, "4demo4main")]
    assert main.status == NOT_REACHED and "no indirect call of reached code can reach it" in main.reason


def test_a_display_impl_used_by_format_is_reached_by_reference(build):
    _, verdicts, new = verdict_for(build, "4show", DISPLAY="Q")
    verdict = verdicts[named(new, "demo..P$u20$as$u20$core..fmt..Display")]
    assert verdict.status == REACHED
    assert "has its address taken by `demo::show`" in verdict.reason


def test_gotpcrel_calls_are_calls(build):
    # `mov f@GOTPCREL(%rip), %rax; call *%rax` and `call *f@GOTPCREL(%rip)` name their target
    prints = build()
    got_calls = [
        node for node in prints.nodes.values()
        if node.kind == FUNCTION and any(r.type in (9, 41, 42) for r in node.relocations)
    ]
    assert got_calls
    for node in got_calls:
        for call in indirect_calls(prints.machine, node):
            assert "rip" not in call.instruction, (node.name, call)


def test_missing_entries_are_listed(build):
    new = build(HELPER="2")
    report = analyse_reach(new, ["no_such_entry", named(new, "4tick")], changed(build(), new))
    assert report.missing_entries == ("no_such_entry",) and report.entries == (named(new, "4tick"),)


def _aarch64(*words: int) -> bytes:
    return struct.pack(f"<{len(words)}I", *words)


@pytest.mark.parametrize(
    "words, relocations, indirect",
    [
        # adrp x8, :got:f; ldr x8, [x8, :got_lo12:f]; blr x8: a call to f through the GOT
        ((0x90000008, 0xF9400108, 0xD63F0100), (Reloc(0, 311, "f", 0), Reloc(4, 312, "f", 0)), []),
        # ldr x8, [x0, #8]; blr x8: a call through a pointer loaded from memory (a vtable slot)
        ((0xF9400408, 0xD63F0100), (), [4]),
        # bl f: direct
        ((0x94000000,), (Reloc(0, 283, "f", 0),), []),
    ],
)
def test_aarch64_indirect_calls(words, relocations, indirect):
    code = _aarch64(*words)
    node = Node("caller", FUNCTION, code.hex(), relocations, code=code)
    assert [c.offset for c in indirect_calls(EM_AARCH64, node)] == indirect


def test_reach_follows_data_to_functions():
    vtable = Node("anon:v", "data", "", (Reloc(0, 1, "method", 0),), printed=False)
    caller = Node("entry", FUNCTION, "", (Reloc(3, 2, "anon:v", -4),), code=bytes(16))
    method = Node("method", FUNCTION, "", (), code=b"\xc3")
    from daemon.analysis.code_prints import Prints

    prints = Prints(62, {"anon:v": vtable, "entry": caller, "method": method})
    assert set(reach_set(prints, ["entry"])) == {"entry", "anon:v", "method"}
    report = analyse_reach(prints, ["entry"], Changes(("method",), (), (), {"method": FUNCTION}))
    assert report.verdicts[0].status == REACHED and "address taken by `entry`" in report.verdicts[0].reason


def test_one_patch_analysed_from_its_files(tmp_path):
    from daemon.analysis.code_prints import PrintCache
    from daemon.analysis.patch import analyse_patch
    from tests.analysis.rust_program import compile_objects, source

    running = compile_objects(tmp_path / "running", source())
    patch = compile_objects(tmp_path / "patch", source(HELPER="2", ONLY_MAIN="1", GREETING="hi"))
    cache = PrintCache()
    tick = next(n for n in cache.merged(patch).nodes if "4demo4tick" in n)
    analysis = analyse_patch(cache, running, patch, [tick])
    statuses = {v.name.split("4demo")[1][:10]: v.status for v in analysis.reach.verdicts}
    assert statuses == {"6helper17h": REACHED, "9only_main": NOT_REACHED}
    assert any("8GREETING" in n for n in analysis.changes.changed)
    assert set(analysis.timings) == {"prints_ms", "changed_ms", "reach_ms", "disassemble_ms"}
    data = analysis.to_json()
    assert data["reach"]["verdicts"][0]["demangled"] in ("demo::helper", "demo::only_main")
