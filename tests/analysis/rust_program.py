"""A tiny Rust program, compiled as cargo's dev profile would, with parts of it edited: the
change-analysis tests compare its objects before and after an edit."""

from __future__ import annotations

import subprocess
from pathlib import Path

from daemon.analysis.code_prints import Prints

TEMPLATE = r"""
use std::cell::Cell;
use std::fmt;
pub trait Shape { fn area(&self) -> u32; }
pub struct Sq(pub u32);
impl Shape for Sq { fn area(&self) -> u32 { self.0 * self.0 + @AREA@ } }
pub struct P { pub x: u32 }
impl fmt::Display for P { fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result { write!(f, "@DISPLAY@ {}", self.x) } }
static GREETING: &str = "@GREETING@";
static mut COUNT: u32 = @COUNT@;
thread_local! {
    static LAZY: Cell<u32> = Cell::new(@LAZY@);
    static FIXED: Cell<u32> = const { Cell::new(@FIXED@) };
}
@EXTRA@
#[inline(never)] pub fn helper(x: u32) -> u32 { x + @HELPER@ }
#[inline(never)] pub fn neighbour(x: u32) -> u32 { x * @NEIGHBOUR@ }
#[inline(never)] pub fn generic<T: Into<u64>>(t: T) -> u64 { t.into() * @GENERIC@ }
#[inline(never)] pub fn only_main() -> u32 { @ONLY_MAIN@ }
#[inline(never)] pub fn tick(n: u32) -> u64 { generic(helper(n)) + neighbour(n) as u64 }
#[inline(never)] pub fn use_dyn(s: &dyn Shape) -> u32 { s.area() }
#[inline(never)] pub fn show(n: u32) -> String { format!("{} {}", P { x: n }, "@LITERAL@") }
#[inline(never)] pub fn state() -> u32 {
    let count = unsafe { COUNT };
    count + GREETING.len() as u32 + LAZY.with(|c| c.get()) + FIXED.with(|c| c.get())
}
fn main() { @MAIN@ println!("{} {} {} {} {}", tick(1), use_dyn(&Sq(2)), show(3), only_main(), state()); }
"""

DEFAULTS = {
    "AREA": "7",
    "DISPLAY": "P",
    "GREETING": "hello",
    "COUNT": "5",
    "LAZY": "41",
    "FIXED": "7",
    "EXTRA": "",
    "MAIN": "",
    "HELPER": "1",
    "NEIGHBOUR": "3",
    "GENERIC": "3",
    "ONLY_MAIN": "99",
    "LITERAL": "shown",
}

# cargo's dev profile: no optimisation, debug info, debug assertions and overflow checks
DEV_PROFILE = ["-C", "opt-level=0", "-g", "-C", "debug-assertions=on", "-C", "overflow-checks=on"]


def source(**edits: str) -> str:
    text = TEMPLATE
    for key, value in {**DEFAULTS, **edits}.items():
        text = text.replace(f"@{key}@", value)
    return text


def compile_objects(directory: Path, text: str, units: int = 4, extra: tuple[str, ...] = ()) -> list[Path]:
    """The objects rustc writes for ``text`` as a bin crate named ``demo``, one per unit."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "main.rs").write_text(text)
    done = subprocess.run(
        ["rustc", "--edition", "2021", "--crate-name", "demo", "--crate-type", "bin", "-C", "metadata=fixed",
         *DEV_PROFILE, *extra, "-C", f"codegen-units={units}", "--emit=obj", "--out-dir", "out", "main.rs"],
        cwd=directory, capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    return sorted((directory / "out").glob("*.o"))


def named(prints: Prints, fragment: str) -> str:
    """The one symbol name of ``prints`` containing ``fragment``."""
    found = [n for n in prints.nodes if fragment in n]
    assert len(found) == 1, (fragment, found)
    return found[0]
