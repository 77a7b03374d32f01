"""Rust demangling: known names, every Rust name of real binaries against c++filt, and never
an exception."""

from __future__ import annotations

import random
import re
import shutil
import subprocess

import pytest

from daemon.binary.demangle import demangle
from daemon.binary.symbols import read_symbols
from tests.support.symbol_images import build_images


@pytest.mark.parametrize(
    "raw, readable",
    [
        ("_ZN4host3hot17h0123456789abcdefE", "host::hot"),
        ("_ZN4host3hot17h0123456789abcdefE.llvm.1234", "host::hot"),
        (
            "_ZN70_$LT$alloc..vec..Vec$LT$T$C$A$GT$$u20$as$u20$core..ops..drop..Drop$GT$4drop17h1f2e3d4c5b6a7980E",
            "<alloc::vec::Vec<T,A> as core::ops::drop::Drop>::drop",
        ),
        ("_ZN4core3ptr13drop_in_place17h0000000000000000E", "core::ptr::drop_in_place"),
        ("_RNvCs1234_4demo4main", "demo::main"),
        ("_RNvNtCsgEmfK2I1SDS_4core9panicking9panic_fmt", "core::panicking::panic_fmt"),
        ("_RINvNtCs1_4core3mem7replacejECs2_4demo", "core::mem::replace::<usize>"),
        ("_RNCNvCs1_4demo4main0B3_", "demo::main::{closure#0}"),
        ("_RINvCs1_4demo1fKj2a_EB2_", "demo::f::<42>"),
        ("_RINvCs1_4demo1fKan5_EB2_", "demo::f::<-5>"),
        ("_RINvCs1_4demo1fKb1_EB2_", "demo::f::<true>"),
        ("_RINvCs1_4demo1fFEuEB2_", "demo::f::<fn()>"),
        ("_RINvCs1_4demo1fDNtCs2_4core5DebugEL_EB2_", "demo::f::<dyn core::Debug>"),
        ("_RINvCs1_4demo1fTjhEEB2_", "demo::f::<(usize, u8)>"),
        ("_RNvMNtCs1_4demo1aNtB2_1S3new", "<demo::a::S>::new"),
        ("_RNvXCs1_4demoNtB2_1SNtCs2_4core7Default7default", "<demo::S as core::Default>::default"),
        ("_RNvCs1_4demo4main.cold", "demo::main.cold"),
        ("_RNvCs1_4demou6f_1gaa", "demo::f\u00f6\u00f6"),  # punycode identifier
    ],
)
def test_known_names(raw, readable):
    assert demangle(raw) == readable


def test_verbose_keeps_hashes():
    assert demangle("_ZN4host3hot17h0123456789abcdefE", verbose=True) == "host::hot::h0123456789abcdef"
    assert demangle("_RNvCs1234_4demo4main", verbose=True) == "demo[3c1c0]::main"  # "s1234_": base-62 1234, plus 2


@pytest.mark.parametrize("raw", ["main", "memcpy", "_ZNSt6vectorIiSaIiEE9push_backERKi", "_ZN", "_R", "_RNv",
                                 "_ZN3foo", "_RB_", "_RNvB0_1a", "_ZN4abc", "_RIC1aKa" + "n" * 50])
def test_non_rust_or_broken_names_come_back_unchanged(raw):
    assert demangle(raw) == raw


def test_never_raises_on_noise():
    rng = random.Random(4)
    alphabet = "_RZNICMXYBKLEFDGSTAPOQsupnv0123456789abcxyzh$."
    for _ in range(3000):
        raw = rng.choice(["_R", "_ZN"]) + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert isinstance(demangle(raw), str)


def test_deep_backref_chains_are_bounded():
    raw = "_R" + "".join("INtB0_1aE" for _ in range(200))
    assert isinstance(demangle(raw), str)


@pytest.mark.skipif(shutil.which("c++filt") is None, reason="c++filt not installed")
def test_every_rust_name_of_real_binaries_matches_cxxfilt():
    images = build_images()
    names = set()
    for path in (images.host, images.patch):
        names |= {s.normalised for s in read_symbols(path).symbols if s.name.startswith(("_R", "_ZN"))}
    names = sorted(n for n in names if not re.search(r"E?\.\w+$", n))  # c++filt drops suffixes
    assert len(names) > 500
    out = subprocess.run(["c++filt"], input="\n".join(names) + "\n", capture_output=True, text=True,
                         check=True).stdout.splitlines()
    # c++filt writes const generics as `10: usize`; rustc-demangle (and we) as `10usize`.
    expected = [re.sub(r"\b(\d+|true|false): ([iu](?:8|16|32|64|128|size)|bool)\b",
                       lambda m: m.group(1) + ("" if m.group(2) == "bool" else m.group(2)), e) for e in out]
    mismatches = [(n, demangle(n, verbose=True), e) for n, e in zip(names, expected) if demangle(n, verbose=True) != e]
    assert mismatches == []
