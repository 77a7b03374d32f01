"""Can the running process reach a changed function from its hot entry points?

A hot-patch runtime redirects only the entry points (subsecond looks up the function passed
to ``call``/``HotFn``); every call inside the new code is an ordinary call into the patch.
So a changed function runs in the process only if the patch's code reaches it from an entry.

The graph is the patch's code and data: call edges (direct calls and tail jumps, including
calls through the GOT: ``call *foo@GOTPCREL(%rip)``, ``mov foo@GOTPCREL(%rip),%rax; call
*%rax``, aarch64 ``bl``/``b`` and ``adrp``+``ldr`` GOT pairs) and reference edges (code
taking a function's or data's address, data such as vtables pointing at functions). Both kinds
count: a function whose address reached code takes is reached, since a call through that
pointer came from new code. The reach set R is everything reachable from the entries.

For each changed or added function F:

- ``reached``: F is in R;
- ``unknown``: F is not in R, but a function in R makes an indirect call (through a register
  or memory, no relocation: ``call *0x18(%rax)``, ``blr x9``), which may call F through a
  pointer made by old code (a trait object built before the patch);
- ``not-reached``: neither. The process keeps running the old F (a function only ``main``
  calls, for instance).

Indirect calls are found with capstone, and only when some changed function is outside R.
Functions the patch does not define (std, dependencies, crates not rebuilt) are leaves: an
indirect call inside them is not seen, and a pointer they call was handed to them by code
that is, or by old code.

``analyse_reach(prints, entries, changes)`` is pure apart from its timings.
"""

from __future__ import annotations

import bisect
import struct
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from daemon.analysis.code_prints import ANONYMOUS_PREFIX, FUNCTION, Changes, Node, Prints
from daemon.binary.demangle import demangle
from daemon.binary.elf_objects import EM_AARCH64, EM_X86_64
from daemon.binary.symbols import normalise_name

REACHED = "reached"
UNKNOWN = "unknown"
NOT_REACHED = "not-reached"

CALL = "call"
REFERENCE = "reference"

# x86_64 relocation types whose field is a call's or jump's operand when the opcode before it
# says so (E8 call, E9 jmp, FF 15 call *mem, FF 25 jmp *mem).
_X86_CODE_RELOCATIONS = {2, 4, 9, 41, 42}
_X86_GOT = {9, 41, 42}  # GOTPCREL, GOTPCRELX, REX_GOTPCRELX
_AARCH64_BRANCHES = {282, 283}  # JUMP26, CALL26
_AARCH64_GOT = {311, 312}  # ADR_GOT_PAGE, LD64_GOT_LO12_NC


@dataclass(frozen=True)
class IndirectCall:
    """A call instruction in a reached function whose target no relocation names."""

    function: str  # the (normalised) name of the function making it
    offset: int  # within that function
    instruction: str  # as capstone prints it: "call qword ptr [rsi + 0x18]"

    def describe(self) -> str:
        return f"`{demangle(self.function)}` +{self.offset:#x}: `{self.instruction}`"


@dataclass(frozen=True)
class Verdict:
    name: str  # normalised symbol name of the changed function
    change: str  # "changed" or "added"
    status: str  # REACHED / UNKNOWN / NOT_REACHED
    reason: str  # one sentence for people
    path: tuple[str, ...] = ()  # reached: entry, ..., name
    indirect_calls: tuple[IndirectCall, ...] = ()  # unknown: the calls that could reach it

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "demangled": demangle(self.name),
            "change": self.change,
            "status": self.status,
            "reason": self.reason,
            "path": list(self.path),
        }


@dataclass
class ReachReport:
    entries: tuple[str, ...]  # entries the patch defines
    missing_entries: tuple[str, ...]  # entries given that the patch does not define
    verdicts: list[Verdict]
    reach_size: int  # nodes in R (functions and data, defined in the patch or not)
    indirect_calls: tuple[IndirectCall, ...] = ()  # in R, found when disassembly was needed
    disassembled: int = 0  # reached functions examined for indirect calls (0: not needed)
    timings: dict[str, float] = field(default_factory=dict)  # reach_ms, disassemble_ms

    def by_status(self, status: str) -> list[str]:
        return [v.name for v in self.verdicts if v.status == status]

    def to_json(self) -> dict[str, object]:
        return {
            "entries": list(self.entries),
            "missing_entries": list(self.missing_entries),
            "verdicts": [v.to_json() for v in self.verdicts],
            "reach_size": self.reach_size,
            "indirect_calls": [
                {"function": c.function, "offset": c.offset, "instruction": c.instruction} for c in self.indirect_calls
            ],
            "disassembled": self.disassembled,
            "timings": {k: round(v, 2) for k, v in self.timings.items()},
        }


def edge_kind(machine: int, node: Node, offset: int, rel_type: int, to_function: bool = True) -> str:
    """Whether the relocation at ``offset`` of ``node`` is a call (a call or jump instruction's
    operand, or a load of a function's GOT slot, which rustc makes to call it) or a reference."""
    if node.kind != FUNCTION:
        return REFERENCE
    if machine == EM_X86_64 and rel_type in _X86_CODE_RELOCATIONS:
        code = node.code
        if offset >= 1 and code[offset - 1] in (0xE8, 0xE9):
            return CALL
        if offset >= 2 and code[offset - 2] == 0xFF and code[offset - 1] in (0x15, 0x25):
            return CALL
        if rel_type in _X86_GOT and to_function:
            return CALL
    if machine == EM_AARCH64 and (rel_type in _AARCH64_BRANCHES or (rel_type in _AARCH64_GOT and to_function)):
        return CALL
    return REFERENCE


def reach_set(prints: Prints, entries: Iterable[str]) -> dict[str, tuple[str, str] | None]:
    """Everything reachable from ``entries`` over call and reference edges: name → (the name
    it was first reached from, CALL or REFERENCE), or None for an entry."""
    parents: dict[str, tuple[str, str] | None] = {}
    queue: deque[str] = deque()
    for entry in entries:
        if entry not in parents:
            parents[entry] = None
            queue.append(entry)
    while queue:
        name = queue.popleft()
        node = prints.nodes.get(name)
        if node is None:
            continue  # defined elsewhere: a leaf
        for rel in node.relocations:
            if rel.target and rel.target not in parents:
                target = prints.nodes.get(rel.target)
                to_function = target is None or target.kind == FUNCTION
                parents[rel.target] = (name, edge_kind(prints.machine, node, rel.offset, rel.type, to_function))
                queue.append(rel.target)
    return parents


PROGRAM_ENTRY = "main"  # the C entry: it hands the Rust `main` to std once, at start-up


def pointer_reach(prints: Prints, reached: Iterable[str]) -> set[str]:
    """What an indirect call could still reach besides ``reached``: every function whose
    address code or data outside ``reached`` takes (a vtable entry, a function pointer made by
    old code), and what those reach. The C ``main``'s reference to the Rust ``main`` doesn't
    count: std calls it once, at start-up."""
    inside = set(reached)
    seeds: list[str] = []
    for node in prints.nodes.values():
        if node.name in inside or node.name == PROGRAM_ENTRY:
            continue
        for rel in node.relocations:
            target = prints.nodes.get(rel.target) if rel.target else None
            if target is None or target.kind != FUNCTION:
                continue
            if edge_kind(prints.machine, node, rel.offset, rel.type) == REFERENCE:
                seeds.append(rel.target)
    return set(reach_set(prints, seeds))


def _path(parents: dict[str, tuple[str, str] | None], name: str) -> tuple[tuple[str, ...], str]:
    """The chain entry → … → name, and how its last step was taken."""
    chain = [name]
    last = CALL
    step = parents.get(name)
    if step is not None:
        last = step[1]
    while step is not None:
        chain.append(step[0])
        step = parents.get(step[0])
    return tuple(reversed(chain)), last


def _named(chain: Sequence[str]) -> str:
    shown = [demangle(n) for n in chain if not n.startswith(ANONYMOUS_PREFIX)]
    return " → ".join(f"`{n}`" for n in shown)


def _explained_x86_call(code: bytes, at: int, relocated: frozenset[int]) -> bool:
    """Whether the ``FF /2`` at ``at`` is one of the two forms rustc uses for direct calls:
    ``call *f@GOTPCREL(%rip)`` (FF 15, relocated displacement) or ``call *%reg`` right after
    ``mov f@GOTPCREL(%rip), %reg`` (REX.W 8B /r with a relocated displacement)."""
    modrm = code[at + 1]
    if modrm == 0x15:
        return at + 2 in relocated
    if modrm & 0xF8 != 0xD0:
        return False
    register = modrm & 7
    start = at - 7
    if at >= 1 and code[at - 1] == 0x41:  # call *%r8..%r15
        register |= 8
        start -= 1
    if start < 0 or start + 3 not in relocated or code[start + 1] != 0x8B:
        return False
    rex, load = code[start], code[start + 2]
    if rex & 0xF0 != 0x40 or load & 0xC7 != 0x05:
        return False
    return ((load >> 3) & 7) | ((rex & 4) << 1) == register


def _may_call_indirectly(machine: int, node: Node) -> bool:
    """Whether ``node`` may hold an indirect call: a cheap scan that rules out most functions
    before capstone decodes them (x86_64: an FF byte whose next byte reads as /2, ``call r/m``,
    not in one of the forms of :func:`_explained_x86_call`; aarch64: a ``blr`` word)."""
    code = node.code
    if machine == EM_X86_64:
        relocated = frozenset(r.offset for r in node.relocations)
        at = code.find(0xFF)
        while 0 <= at < len(code) - 1:
            if (code[at + 1] >> 3) & 7 == 2 and not _explained_x86_call(code, at, relocated):
                return True
            at = code.find(0xFF, at + 1)
        return False
    if machine == EM_AARCH64:
        usable = len(code) - len(code) % 4
        return any(word & 0xFFFFFC1F == 0xD63F0000 for (word,) in struct.iter_unpack("<I", code[:usable]))
    return False


_DISASSEMBLERS: dict[int, Any] = {}
_FOUND: dict[tuple[str, str, int], tuple[IndirectCall, ...]] = {}  # (name, print, machine) -> calls

_X86_REGISTER_FAMILIES = {
    name: family
    for family, names in {
        "rax": "eax ax al ah", "rbx": "ebx bx bl bh", "rcx": "ecx cx cl ch", "rdx": "edx dx dl dh",
        "rsi": "esi si sil", "rdi": "edi di dil", "rbp": "ebp bp bpl", "rsp": "esp sp spl",
    }.items()
    for name in [family, *names.split()]
}
# Instructions that write registers they don't name first: forget every known register.
_X86_IMPLICIT_WRITERS = ("mul", "div", "idiv", "cqo", "cdq", "cwd", "cpuid", "rdtsc", "syscall", "xchg", "xadd",
                         "cmpxchg", "rep", "lods", "stos", "movs", "scas", "cmps", "rdrand", "pop", "leave")


def _register(machine: int, text: str) -> str | None:
    """The full register an operand names (``eax`` → ``rax``, ``w8`` → ``x8``), or None."""
    text = text.strip()
    if machine == EM_X86_64:
        if text in _X86_REGISTER_FAMILIES:
            return _X86_REGISTER_FAMILIES[text]
        if text.startswith("r") and text[1:].rstrip("dwb").isdigit():
            return text.rstrip("dwb")
        return None
    if len(text) > 1 and text[0] in "xw" and text[1:].isdigit():
        return "x" + text[1:]
    return text if text in ("lr", "fp", "sp", "xzr") else None


def _disassembler(machine: int) -> Any:
    md = _DISASSEMBLERS.get(machine)
    if md is None:
        import capstone

        if machine == EM_X86_64:
            md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        else:
            md = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
        _DISASSEMBLERS[machine] = md
    return md


def indirect_calls(machine: int, node: Node) -> tuple[IndirectCall, ...]:
    """The call instructions in ``node``'s code whose target no relocation names: through
    memory without a relocation (a vtable slot: ``call qword ptr [rsi + 0x18]``), or through a
    register not loaded from a relocated address (``mov f@GOTPCREL(%rip), %rax``, ``adrp`` +
    ``ldr`` of a GOT slot) since the last branch target or call. Remembered by the function's
    print: an unchanged function is decoded once."""
    if machine not in (EM_X86_64, EM_AARCH64) or not _may_call_indirectly(machine, node):
        return ()
    key = (node.name, node.digest, machine)
    found = _FOUND.get(key)
    if found is None:
        found = tuple(_decode_indirect_calls(machine, node))
        if len(_FOUND) > 65536:
            _FOUND.clear()
        _FOUND[key] = found
    return found


def _decode_indirect_calls(machine: int, node: Node) -> list[IndirectCall]:
    x86 = machine == EM_X86_64
    relocated = sorted(r.offset for r in node.relocations)
    instructions = list(_disassembler(machine).disasm_lite(node.code, 0))
    branch_targets: set[int] = set()
    for _, _, mnemonic, operands in instructions:
        branch = mnemonic.startswith("j") if x86 else mnemonic in ("b", "cbz", "cbnz", "tbz", "tbnz") or (
            mnemonic.startswith("b.")
        )
        if branch:
            target = operands.rsplit(",", 1)[-1].strip().lstrip("#")
            if target.startswith("0x"):
                branch_targets.add(int(target, 16))
    found: list[IndirectCall] = []
    known: set[str] = set()  # registers holding a relocated address (a GOT slot's or a symbol's)
    for address, size, mnemonic, operands in instructions:
        if address in branch_targets:
            known.clear()
        first = bisect.bisect_left(relocated, address)
        has_relocation = first < len(relocated) and relocated[first] < address + size
        if mnemonic in (("call",) if x86 else ("blr", "bl")):
            target = operands.strip()
            if target.startswith(("0x", "#")) or ("[" in target and has_relocation):
                direct = True
            else:
                register = _register(machine, target)
                direct = register is not None and register in known
            if not direct:
                found.append(IndirectCall(node.name, address, f"{mnemonic} {operands}"))
            known.clear()  # the callee may change any caller-saved register
            continue
        if x86 and mnemonic.startswith(_X86_IMPLICIT_WRITERS):
            known.clear()
            continue
        written = _register(machine, operands.split(",", 1)[0]) if operands else None
        if written is None:
            continue
        if has_relocation and mnemonic in (("mov", "lea") if x86 else ("adrp", "ldr", "add", "adr")):
            known.add(written)
        else:
            known.discard(written)
    return found


def analyse_reach(prints: Prints, entries: Iterable[str], changes: Changes) -> ReachReport:
    """Verdicts for every changed or added function of ``changes`` (the patch's ``prints``,
    the entry points' symbol names)."""
    started = time.perf_counter()
    given = tuple(dict.fromkeys(normalise_name(e) for e in entries))
    present = tuple(e for e in given if e in prints.nodes)
    missing = tuple(e for e in given if e not in prints.nodes)
    parents = reach_set(prints, present)
    reach_ms = (time.perf_counter() - started) * 1000
    targets = [(n, "changed") for n in changes.changed] + [(n, "added") for n in changes.added]
    targets = [(n, c) for n, c in targets if changes.kinds.get(n) == FUNCTION]

    calls: list[IndirectCall] = []
    disassembled = 0  # functions scanned for indirect calls
    disassemble_ms = 0.0
    if any(n not in parents for n, _ in targets):
        begun = time.perf_counter()
        for name in parents:
            node = prints.nodes.get(name)
            if node is not None and node.kind == FUNCTION and node.code:
                disassembled += 1
                calls.extend(indirect_calls(prints.machine, node))
        disassemble_ms = (time.perf_counter() - begun) * 1000

    pointers = pointer_reach(prints, parents) if calls else set()
    verdicts: list[Verdict] = []
    for name, change in targets:
        if name in parents:
            chain, last = _path(parents, name)
            if len(chain) == 1:
                how = "is an entry point"
            elif last == CALL:
                how = f"is called from {_named(chain[:-1])}"
            else:
                how = f"has its address taken by {_named(chain[:-1])}"
            verdicts.append(Verdict(name, change, REACHED, f"`{demangle(name)}` {how}", chain))
        elif calls and name in pointers:
            shown = "; ".join(c.describe() for c in calls[:3])
            if len(calls) > 3:
                shown += f"; and {len(calls) - 3} more"
            verdicts.append(
                Verdict(
                    name,
                    change,
                    UNKNOWN,
                    f"no entry point's code calls `{demangle(name)}` or takes its address, but reached code makes "
                    f"indirect calls that may call it through a pointer old code made: {shown}",
                    indirect_calls=tuple(calls),
                )
            )
        else:
            verdicts.append(
                Verdict(
                    name,
                    change,
                    NOT_REACHED,
                    f"no entry point's code calls `{demangle(name)}` or takes its address"
                    + (", and no indirect call of reached code can reach it" if calls else
                       ", and reached code makes no indirect call")
                    + (": the process keeps running its old code" if change == "changed" else
                       ": the process won't run it"),
                )
            )
    return ReachReport(
        entries=present,
        missing_entries=missing,
        verdicts=verdicts,
        reach_size=len(parents),
        indirect_calls=tuple(calls),
        disassembled=disassembled,
        timings={"reach_ms": reach_ms, "disassemble_ms": disassemble_ms},
    )
