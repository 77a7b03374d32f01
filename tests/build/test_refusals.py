"""Builds that can't give a working patch are recognised from their captured arguments and
the linker's words, and the message names the fix."""

from __future__ import annotations

import pytest

from daemon.build.refusals import link_error_advice, lto_refusal, no_symbol_table_refusal, strip_refusal

DEV = ["--crate-name", "app", "--crate-type", "bin", "-C", "debuginfo=2"]
RELEASE = ["--crate-name", "app", "--crate-type", "bin", "-C", "opt-level=3"]


@pytest.mark.parametrize(
    "spelling", [["-C", "lto"], ["-C", "lto=fat"], ["-Clto=thin"], ["--codegen", "lto=yes"], ["-C", "lto=true"]]
)
def test_lto_in_any_spelling_is_refused_naming_the_profile_setting(spelling):
    message = lto_refusal(RELEASE + spelling)
    assert message is not None
    assert "link-time optimisation" in message and "`lto = false`" in message and "[profile.release]" in message
    assert "thinpatch capture" in message


@pytest.mark.parametrize("args", [DEV, [*DEV, "-C", "lto=off"], [*DEV, "-C", "lto=no"], [*DEV, "-Clto=false"]])
def test_no_lto_or_lto_off_is_fine(args):
    assert lto_refusal(args) is None


def test_strip_symbols_is_refused_strip_debuginfo_is_left_to_the_binary_check():
    message = strip_refusal([*DEV, "-C", "strip=symbols"])
    assert message is not None and "`strip = false`" in message and "[profile.dev]" in message
    assert strip_refusal([*DEV, "-C", "strip=debuginfo"]) is None
    assert strip_refusal(DEV) is None


def test_no_symbol_table_names_the_program_and_the_fix():
    message = no_symbol_table_refusal("/ws/target/release/app")
    assert "/ws/target/release/app" in message and "no symbol table" in message
    assert "`strip = false`" in message and "mold" in message


# What rust-lld (rustc 1.95) printed for a bin crate's thread_local! in a patch link.
LLD_TLS = (
    "rust-lld: error: relocation R_X86_64_TPOFF32 against single_bin::SEEN::_$u7b$$u7b$constant$u7d$$u7d$::"
    "_$u7b$$u7b$closure$u7d$$u7d$::__RUST_STD_INTERNAL_VAL::h9a1696943254245a cannot be used with -shared\n"
    ">>> defined in /s/objects/bin/single_bin.o\n"
    "collect2: error: ld returned 1 exit status\n"
)
# GNU ld's wording for the same case.
BFD_TLS = (
    "/usr/bin/ld: /s/objects/bin/app.o: relocation R_X86_64_TPOFF32 against `_ZN3app4SEEN7__getit5__KEY17h0123E' "
    "can not be used when making a shared object; recompile with -fPIC\n"
)


def test_thread_local_in_the_bin_crate_gets_the_readme_advice_and_its_name():
    advice = link_error_advice(LLD_TLS)
    assert advice is not None
    assert "`single_bin::SEEN`" in advice and "library crate" in advice and "R_X86_64_TPOFF32" in advice
    bfd = link_error_advice(BFD_TLS)
    assert bfd is not None and "library crate" in bfd


def test_other_link_errors_get_no_advice():
    assert link_error_advice("rust-lld: error: undefined symbol: foo\n>>> referenced by a.o") is None
    assert link_error_advice("") is None
