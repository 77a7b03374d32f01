"""Same code though the bytes differ: a generic called through another crate's copy."""

from daemon.analysis.code_prints import FUNCTION, Node, Reloc
from daemon.analysis.equivalence import same_code
from daemon.binary.elf_objects import EM_AARCH64, EM_X86_64

LOCAL = "_ZN4core3fmt9Arguments3new17h1111111111111111E"  # the program crate's own copy
UPSTREAM = "_ZN4core3fmt9Arguments3new17h2222222222222222E"  # a library's exported copy

# call LOCAL; ret
DIRECT = Node("f", FUNCTION, "d1", (Reloc(1, 4, LOCAL, -4),), bytes.fromhex("e800000000c3"))
# mov UPSTREAM@GOTPCREL(%rip), %rax; call *%rax; ret
THROUGH_GOT = Node("f", FUNCTION, "d2", (Reloc(3, 42, UPSTREAM, -4),), bytes.fromhex("488b0500000000ffd0c3"))


def callee(name: str, digest: str) -> Node:
    return Node(name, FUNCTION, digest, (), b"\xc3")


def test_the_same_generic_through_another_crates_copy_is_the_same_code() -> None:
    old, new = {LOCAL: callee(LOCAL, "same")}, {UPSTREAM: callee(UPSTREAM, "same")}
    assert same_code(EM_X86_64, DIRECT, THROUGH_GOT, old, new)


def test_a_copy_with_other_code_is_another_function() -> None:
    old, new = {LOCAL: callee(LOCAL, "one")}, {UPSTREAM: callee(UPSTREAM, "two")}
    assert not same_code(EM_X86_64, DIRECT, THROUGH_GOT, old, new)
    # a copy this side doesn't compile can't be compared: not the same
    assert not same_code(EM_X86_64, DIRECT, THROUGH_GOT, {LOCAL: callee(LOCAL, "same")}, {})


def test_another_function_or_another_instruction_is_a_change() -> None:
    other = Node("f", FUNCTION, "d3", (Reloc(3, 42, "_ZN3app5other17h4444444444444444E", -4),),
                 THROUGH_GOT.code)
    assert not same_code(EM_X86_64, DIRECT, other, {LOCAL: callee(LOCAL, "x")}, {})
    added = Node("f", FUNCTION, "d4", DIRECT.relocations, bytes.fromhex("e80000000090c3"))  # a nop more
    assert not same_code(EM_X86_64, DIRECT, added, {}, {})


def test_other_machines_claim_nothing() -> None:
    assert not same_code(EM_AARCH64, DIRECT, DIRECT, {}, {})
