//! The thinpatch demo app: a counter that ticks while its code is hot-patched.
//!
//! Usage: demo-app SOCKET [TICK_MS]
//!
//! Subscribes to the thinpatch daemon at SOCKET (through the `thinpatch-client` crate) and
//! prints one line per tick:
//!   TICK <counter> | <title> | <formula> | <extra>
//! The three texts come from src/scene.rs, called through `HotFn`, so a saved edit shows up
//! on the next tick. Other lines: READY pid=N, SUBSCRIBED, PATCHED id=N entries=M,
//! PATCH-ERROR id=N ..., EVENT <type> id=N, SUBSCRIBE-ERROR ..., DISCONNECTED.
//! The app exits when the daemon goes away.

mod scene;

use std::io::Write;
use std::time::Duration;

use thinpatch_client::{Client, Event, HotFn};

/// What the demo reads from the app's output. The app lives only as long as the demo's own
/// daemon, so a killed demo leaves no process behind.
fn report(event: &Event) {
    match event {
        Event::Subscribed { .. } => println!("SUBSCRIBED"),
        Event::Patched { id, entries } => println!("PATCHED id={id} entries={entries}"),
        Event::PatchFailed { id, message } => println!("PATCH-ERROR id={id} {message}"),
        Event::Message { kind, id, .. }
            if matches!(kind.as_str(), "build-started" | "build-failed" | "patch-rejected" | "full-rebuild-required" | "session-reset") =>
        {
            println!("EVENT {kind} id={}", id.as_deref().unwrap_or(""))
        }
        Event::Unavailable { reason } | Event::Refused { reason } => {
            println!("SUBSCRIBE-ERROR {reason}");
            std::process::exit(1);
        }
        Event::Disconnected { .. } => {
            println!("DISCONNECTED");
            std::process::exit(0);
        }
        _ => {}
    }
    std::io::stdout().flush().ok();
}

fn main() {
    let mut args = std::env::args().skip(1);
    let socket = args.next();
    let tick_ms: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(300);

    println!("READY pid={}", std::process::id());
    match socket {
        Some(path) => {
            if let Err(e) = Client::new().socket(path).on_event(report).spawn() {
                println!("SUBSCRIBE-ERROR {e}");
                std::process::exit(1);
            }
        }
        None => println!("NOT-SUBSCRIBED (pass the daemon's socket path as the first argument)"),
    }

    // Hot entry points: each call runs the newest version of the function.
    let mut hot_title = HotFn::current(scene::title);
    let mut hot_formula = HotFn::current(scene::formula);
    let mut hot_extra = HotFn::current(scene::extra);

    // The counter is a local of this loop, which keeps running in the original code:
    // patched code would get fresh copies of this crate's statics, but never of this.
    let mut counter: u64 = 0;
    loop {
        counter += 1;
        let title = hot_title.call(());
        let formula = hot_formula.call((counter,));
        let extra = hot_extra.call((counter,));
        println!("TICK {counter} | {title} | {formula} | {extra}");
        std::thread::sleep(Duration::from_millis(tick_ms));
    }
}
