//! What the demo app prints on every tick.
//!
//! Edit this file while the app runs: each save is rebuilt into a patch, and the running
//! app switches to the new code without restarting, so its counter keeps going.

#[inline(never)]
pub fn title() -> String {
    String::from("Hello from a running process")
}

#[inline(never)]
pub fn formula(n: u64) -> String {
    format!("n + n = {}", n + n)
}

#[inline(never)]
pub fn extra(_n: u64) -> String {
    String::from("no extras yet")
}
