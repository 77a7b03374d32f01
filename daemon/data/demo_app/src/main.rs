//! The thinpatch demo app: a counter that ticks while its code is hot-patched.
//!
//! Usage: demo-app SOCKET [TICK_MS]
//!
//! Subscribes to the thinpatch daemon at SOCKET and prints one line per tick:
//!   TICK <counter> | <title> | <formula> | <extra>
//! The three texts come from src/scene.rs, called through the patch table, so a saved
//! edit shows up on the next tick. Other lines: READY pid=N, SUBSCRIBED,
//! PATCHED id=N entries=M, PATCH-ERROR ..., EVENT <type>, DISCONNECTED.
//! The app exits when the daemon goes away.

mod hotpatch;
mod json;
mod scene;

use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let socket = args.next();
    let tick_ms: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(300);

    println!("READY pid={}", std::process::id());
    match socket {
        Some(path) => {
            if let Err(e) = hotpatch::subscribe(&path) {
                println!("SUBSCRIBE-ERROR {e}");
                std::process::exit(1);
            }
        }
        None => println!("NOT-SUBSCRIBED (pass the daemon's socket path as the first argument)"),
    }

    // The counter is a local of this loop, which keeps running in the original code:
    // patched code would get fresh copies of this crate's statics, but never of this.
    let mut counter: u64 = 0;
    loop {
        counter += 1;
        let title = hotpatch::call0(scene::title);
        let formula = hotpatch::call(scene::formula, counter);
        let extra = hotpatch::call(scene::extra, counter);
        println!("TICK {counter} | {title} | {formula} | {extra}");
        std::thread::sleep(Duration::from_millis(tick_ms));
    }
}
