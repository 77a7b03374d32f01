"""The macOS link plan, linked for real: a Mach-O program and a patch library made on Linux
with clang and rust-lld's ld64 flavour (see tests/support/macho_images.py).

Pins what the macOS patch report rests on: the patch's calls reach its own new functions,
its references to data it defines are bound to its own copy at link time (no directive can
send them to the running program's copy), and data it does not define is left to the loader,
which binds it to the program's copy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pytest

from daemon.binary.symbols import MACHO, read_symbols
from tests.support.macho_images import COUNTER, DESCRIBE, KEPT, TICK, bound_symbols, build_macho_patch, disassembly


@pytest.fixture(scope="module")
def images():
    built = build_macho_patch()
    if isinstance(built, str):
        pytest.skip(f"no Mach-O toolchain: {built}")
    return built


def _address(image, name: str) -> int:
    (symbol,) = read_symbols(image).lookup(name)
    return symbol.address


def _targets(instructions: Iterable[str]) -> list[tuple[int, str]]:
    """(address, symbol) of every ``<symbol>`` an instruction names, as llvm-objdump prints it."""
    return [(int(a, 16), s) for line in instructions for a, s in re.findall(r"\b(?:0x)?([0-9a-f]+) <([^>+]+)>", line)]


def test_the_plan_links_a_patch_dylib_and_drops_the_flat_namespace(images):
    table = read_symbols(images.patch)
    assert table.format == MACHO and table.shared
    assert "-Wl,-flat_namespace" in images.captured_link.args
    assert table.lookup(TICK) and table.lookup(DESCRIBE) and table.lookup(COUNTER)


def test_the_patch_calls_its_own_new_function_directly(images):
    tick = disassembly(images.tools, images.patch, TICK)
    calls = [line for line in tick if line.startswith("call")]
    assert _targets(calls) == [(_address(images.patch, DESCRIBE), DESCRIBE)], tick
    assert DESCRIBE not in bound_symbols(images.tools, images.patch)


def test_the_patch_addresses_the_static_it_defines_directly_in_its_own_copy(images):
    tick = disassembly(images.tools, images.patch, TICK)
    own = _address(images.patch, COUNTER)
    assert (own, COUNTER) in _targets(line for line in tick if "(%rip)" in line), tick
    assert COUNTER not in bound_symbols(images.tools, images.patch)


def test_a_static_the_patch_does_not_define_is_bound_by_the_loader_to_the_programs_copy(images):
    assert not read_symbols(images.patch).lookup(KEPT)
    assert bound_symbols(images.tools, images.patch).get(KEPT) == "bind"  # a GOT entry, bound at load
    assert read_symbols(images.program).lookup(KEPT)


def test_a_flat_namespace_would_bind_calls_to_the_program_and_still_not_the_static(images):
    # Why the plan insists on the two-level namespace, and why no namespace option helps data.
    bound = bound_symbols(images.tools, images.flat_patch)
    assert bound.get(DESCRIBE) == "lazy-bind"  # the program's exported old copy would win
    tick = disassembly(images.tools, images.flat_patch, TICK)
    assert (_address(images.flat_patch, COUNTER), COUNTER) in _targets(line for line in tick if "(%rip)" in line)
    assert COUNTER not in bound
