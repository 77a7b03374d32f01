"""Do two builds of a function run the same code, though their bytes differ?

With shared generics, a crate calls an instance of a generic function (``core::fmt::Arguments
::new::<2, 1>``) that an upstream crate exports, or compiles its own copy when none does. A
library edit changes which instances the library exports, so an untouched function of the
program can call the same generic through another crate's copy: another symbol hash, a call
through the GOT (``call *f@GOTPCREL(%rip)``, 6 bytes) instead of a direct one (``call f``,
5 bytes), and every later byte shifted. That is not a change of the function's code.

``same_code`` decodes both (x86_64) and compares them instruction by instruction: relocated
operands by their target with the legacy symbol hash left out, branches inside the function by
the instruction they land on, everything else byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from daemon.analysis.code_prints import Node, Reloc
from daemon.binary.elf_objects import EM_X86_64

_HASH = re.compile(r"17h[0-9a-f]{16}E")  # legacy mangling's hash: it names the instantiating crate
_PC_RELATIVE = {2, 4, 9, 41, 42}  # PC32, PLT32, GOTPCREL, GOTPCRELX, REX_GOTPCRELX
_BRANCHES = re.compile(r"^(j[a-z]+|call|loop[a-z]*|jmp)$")

_disassembler: Any = None


def _decoder() -> Any:
    global _disassembler
    if _disassembler is None:
        import capstone

        _disassembler = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    return _disassembler


def _target(rel: Reloc) -> tuple[str, int, int]:
    kind = -1 if rel.type in _PC_RELATIVE else rel.type
    return (rel.target, kind, rel.addend if kind != -1 else 0)


def _instructions(node: Node) -> list[tuple[int, int, str, str]]:
    return list(_decoder().disasm_lite(node.code, 0))


def _tokens(node: Node) -> list[tuple[object, ...]] | None:
    """The function as a sequence of comparable steps: calls by target (however they are
    made: ``call f``, ``call *f@GOTPCREL(%rip)``, or ``mov f@GOTPCREL(%rip), %reg`` then
    ``call *%reg``), branches by the step they land on, other instructions by their text and
    relocated targets. None when the bytes don't decode whole."""
    instructions = _instructions(node)
    if sum(i[1] for i in instructions) != len(node.code):
        return None
    relocs = {r.offset: r for r in node.relocations}
    raw: list[tuple[int, tuple[object, ...]]] = []  # (address, token)
    loaded: dict[str, tuple[str, int, int]] = {}  # register -> the function whose GOT slot it holds
    for address, size, mnemonic, ops in instructions:
        targets = [_target(relocs[o]) for o in range(address, address + size) if o in relocs]
        if mnemonic == "mov" and len(targets) == 1 and targets[0][1] == -1 and ops.endswith("qword ptr [rip]"):
            register = ops.split(",", 1)[0].strip()
            loaded[register] = targets[0]
            raw.append((address, ()))  # folded into the call that uses it
            continue
        if mnemonic == "call":
            if targets:
                raw.append((address, ("call", targets[0][0])))
                continue
            if ops in loaded:
                raw.append((address, ("call", loaded.pop(ops)[0])))
                continue
        if _BRANCHES.match(mnemonic) and not targets and ops.startswith("0x"):
            raw.append((address, ("branch", mnemonic, int(ops, 16))))
            continue
        raw.append((address, (mnemonic, ops, *targets)))
    index: dict[int, int] = {}
    tokens: list[tuple[object, ...]] = []
    for address, token in raw:
        index[address] = len(tokens)
        if token:
            tokens.append(token)
    return [
        ("branch", t[1], index.get(int(str(t[2])), -1)) if t and t[0] == "branch" else t
        for t in tokens
    ]


def same_code(machine: int, old: Node, new: Node, old_nodes: Mapping[str, Node], new_nodes: Mapping[str, Node]) -> bool:
    """Whether ``old`` and ``new`` are one function's code up to which crate's copy of a
    generic it calls (x86_64; other machines: only identical prints are the same). Two call
    targets that differ are the same generic only when their names differ in rustc's hash
    alone and both copies are compiled here with the same print (``*_nodes``)."""
    if machine != EM_X86_64 or not old.code or not new.code:
        return False
    try:
        a, b = _tokens(old), _tokens(new)
    except Exception:  # capstone missing or undecodable bytes: no claim of sameness
        return False
    if a is None or b is None or len(a) != len(b):
        return False

    def same_target(x: object, y: object) -> bool:
        if x == y:
            return True
        if not (isinstance(x, str) and isinstance(y, str)) or _HASH.sub("E", x) != _HASH.sub("E", y):
            return False
        before, after = old_nodes.get(x), new_nodes.get(y)
        return before is not None and after is not None and before.digest == after.digest

    for x, y in zip(a, b, strict=True):
        if x == y:
            continue
        if len(x) != len(y) or x[0] != y[0]:
            return False
        for part_x, part_y in zip(x, y, strict=True):
            if part_x == part_y:
                continue
            if isinstance(part_x, tuple) and isinstance(part_y, tuple) and part_x[1:] == part_y[1:]:
                if same_target(part_x[0], part_y[0]):
                    continue
            if not same_target(part_x, part_y):
                return False
    return True
