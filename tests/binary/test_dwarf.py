"""The DWARF reader against pyelftools on the same rustc objects (DWARF 4 and 5)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from daemon.binary import dwarf
from tests.support.rust_objects import build_rlib, objects

SOURCE = """
pub struct Player { pub x: u32, pub name: String, pub tags: Vec<u8> }
pub enum Shape { Circle(f32), Rect { w: u32, h: u32 }, Empty }
#[derive(Clone, Copy)] pub enum Mode { Idle = -1, Run = 300 }
pub fn frame(p: &Player, s: Shape, m: Mode) -> usize {
    let arr = [p.x; 3];
    let k = match s { Shape::Rect { w, .. } => w as usize, _ => 0 };
    p.name.len() + p.tags.len() + arr.len() + k + m as usize
}
"""


@pytest.mark.parametrize("version", [4, 5])
def test_every_die_and_attribute_matches_pyelftools(tmp_path: Path, version: int) -> None:
    rlib = build_rlib(tmp_path, "app", SOURCE, dwarf_version=version)
    checked = 0
    for obj in objects(rlib):
        sections = dwarf.Sections.from_elf(obj)
        assert sections is not None
        theirs = ELFFile(io.BytesIO(obj.data)).get_dwarf_info()
        their_units = list(theirs.iter_CUs())
        ours = sections.units()
        assert [u.offset for u in ours] == [cu.cu_offset for cu in their_units]
        fresh = sections.units()  # nothing decoded yet: attributes read one at a time
        for unit, single, cu in zip(ours, fresh, their_units):
            assert unit.version == version
            unit.scan()
            dies = [d for d in cu.iter_DIEs() if not d.is_null()]
            assert unit.offsets == [d.offset for d in dies]
            for die in dies:
                mine = unit.die(die.offset)
                assert mine.tag == dwarf.__dict__[die.tag]
                parent = die.get_parent()
                assert unit.parent(die.offset) == (parent.offset if parent is not None else None)
                assert unit.child_offsets(die.offset) == [c.offset for c in die.iter_children()]
                for name, attribute in die.attributes.items():
                    if not isinstance(name, str) or name not in dwarf.__dict__:
                        continue
                    value = mine.get(dwarf.__dict__[name])
                    if attribute.form in ("DW_FORM_strp", "DW_FORM_line_strp") or attribute.form.startswith(
                        "DW_FORM_strx"
                    ):
                        expected = attribute.value.decode()
                    elif attribute.form.startswith("DW_FORM_ref"):
                        expected = attribute.value + (unit.offset if attribute.form != "DW_FORM_ref_addr" else 0)
                    elif attribute.form.startswith(("DW_FORM_loclistx", "DW_FORM_rnglistx", "DW_FORM_addrx")):
                        expected = attribute.raw_value  # an index: pyelftools also resolves it
                    elif attribute.form in ("DW_FORM_exprloc", "DW_FORM_block1"):
                        expected = bytes(attribute.value)
                    else:
                        expected = attribute.value
                    assert value == expected, (name, attribute)
                    assert single.attribute(die.offset, dwarf.__dict__[name]) == expected
                    checked += 1
            their_files = cu.dwarfinfo.line_program_for_CU(cu)
            mine_files = unit.file_names()
            names = [entry.name.decode() for entry in their_files["file_entry"]]
            offset = 0 if version >= 5 else 1
            paths = mine_files[offset:]
            assert len(paths) == len(names)
            assert all(p is not None and (p == n or p.endswith("/" + n)) for p, n in zip(paths, names)), (paths, names)
    assert checked > 500


def test_leb128() -> None:
    assert dwarf.uleb(bytes([0xE5, 0x8E, 0x26]), 0) == (624485, 3)
    assert dwarf.sleb(bytes([0xC0, 0xBB, 0x78]), 0) == (-123456, 3)
    assert dwarf.sleb(bytes([0x7F]), 0) == (-1, 1)
    assert dwarf.member_offset(bytes([dwarf.DW_OP_plus_uconst, 0x90, 0x01])) == 144
    assert dwarf.member_offset(16) == 16


def test_an_object_without_debug_info_has_no_sections(tmp_path: Path) -> None:
    [obj, *_] = objects(build_rlib(tmp_path, "app", SOURCE, debuginfo="0"))
    assert dwarf.Sections.from_elf(obj) is None


def test_a_truncated_abbreviation_is_an_error_not_a_guess(tmp_path: Path) -> None:
    [obj, *_] = objects(build_rlib(tmp_path, "app", SOURCE))
    sections = dwarf.Sections.from_elf(obj)
    assert sections is not None
    broken = dwarf.Sections(info=sections.info, abbrev=b"\x00")
    with pytest.raises(dwarf.DwarfError):
        broken.units()[0].scan()
