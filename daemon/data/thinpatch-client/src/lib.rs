//! The app side of [thinpatch](https://github.com/thinpatch/thinpatch): subscribe to the
//! daemon and run the newest version of your hot functions, with the standard library only.
//!
//! Two lines in your program: start the listener, and route the code you edit through
//! [`call`] (or [`HotFn`] when it takes arguments).
//!
//! ```no_run
//! fn tick(frame: u64) -> String {
//!     format!("frame {frame}")
//! }
//!
//! fn main() {
//!     thinpatch_client::connect();
//!     let mut hot_tick = thinpatch_client::HotFn::current(tick);
//!     for frame in 0.. {
//!         println!("{}", hot_tick.call((frame,)));
//!         std::thread::sleep(std::time::Duration::from_millis(100));
//!     }
//! }
//! ```
//!
//! The listener thread finds the daemon's socket as the daemon does (`$THINPATCH_SOCKET`,
//! else `$XDG_RUNTIME_DIR/thinpatch/thinpatch.sock`, else
//! `<tmpdir>/thinpatch-<uid>/thinpatch.sock`), and trusts it only if the socket's directory
//! belongs to this program's user and is closed to others, and the process at the other end
//! runs as the same user. It subscribes with this process's pid and build ID, applies each
//! patch built for exactly this process, tells the daemon whether it applied, and reconnects
//! when the daemon restarts. It never panics. It also tells the daemon the program's hot entry
//! points: each callable passed to [`call`]/[`HotFn`] is recorded on its first call (later
//! calls only look it up, without locking or allocating) and sent from a thread of the
//! listener's, never from the caller's.
//!
//! Patches follow subsecond's rules: each patch replaces the previous table (it carries every
//! edit so far); only the function you pass to [`call`]/[`HotFn`] is looked up, and calls made
//! from patched code go to the patch's own versions. A closure the size of one pointer (for
//! example `|| f(&x)`, one captured reference) is taken for a function pointer, as subsecond
//! does, and is never redirected: pass arguments through [`HotFn::call`] instead. An
//! `async fn` called this way returns its future, whose code is the old one: build a boxed
//! future inside the hot function instead.
//!
//! Using subsecond? Hand each table to it with [`on_patch`] instead of [`connect`].
//!
//! A program on another host (a phone, a board, a VM) reaches the daemon's WebSocket endpoint
//! instead: set `THINPATCH_ADDR=ws://HOST:PORT` (the path `/thinpatch` is implied) and
//! `THINPATCH_TOKEN` to what `thinpatch token` prints on the host, or use
//! [`Client::remote`]. With `THINPATCH_ADDR` set, the Unix socket is not used (unless the
//! program chose one with [`Client::socket`]). The listener subscribes with the program's
//! build ID and receives each patch's bytes over the connection; it writes them to
//! `$THINPATCH_CACHE_DIR` (created with mode 0700 if missing, refused if other users can
//! write it) or else to a fresh 0700 temporary directory, checks their size and SHA-256, and
//! loads that copy (only the newest file is kept; a patch replayed after a reconnect, with the
//! same bytes, reuses it). A patch whose bytes do not match is reported as not applied. When the
//! daemon closes the connection with a reason (a wrong token), the reason is printed to
//! stderr once and passed to [`Client::on_event`]. There is no TLS (`wss://` is refused),
//! and whoever answers at that address can send code to load: reach the host through
//! `ssh -R PORT:localhost:PORT`, `adb reverse tcp:PORT tcp:PORT`, or a network you trust.

#![warn(missing_docs)]

mod base64;
mod build_id;
mod endpoint;
mod entry;
mod hot;
mod json;
mod listener;
mod patch_file;
mod payload;
mod private_dir;
mod random;
mod remote;
mod sha1;
mod sha256;
mod sys;
mod transport;
mod websocket;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use hot::{call, HotFn, HotFunction, JumpTable};
pub use endpoint::default_socket_path;

/// What the listener saw, for [`Client::on_event`]. `id`s are the daemon's build ids, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)] // the fields are named for what they hold
pub enum Event {
    /// Subscribed to the daemon at `socket` (its `ws://` address for a remote daemon).
    Subscribed { socket: PathBuf },
    /// A patch was applied (or accepted by the [`on_patch`] callback); `entries` functions
    /// are redirected.
    Patched { id: String, entries: usize },
    /// A patch was not applied, and why (also reported to the daemon and printed to stderr).
    PatchFailed { id: String, message: String },
    /// Any event from the daemon (`build-started`, `build-failed`, ...), with its JSON text.
    Message { kind: String, id: Option<String>, json: String },
    /// No daemon to talk to yet; the listener retries with backoff.
    Unavailable { reason: String },
    /// The socket or the process behind it failed the trust checks, or a remote daemon turned
    /// this program away (a wrong token: `reason` is the daemon's); nothing was loaded.
    Refused { reason: String },
    /// The connection ended; the listener reconnects with backoff.
    Disconnected { reason: String },
}

/// A listener with options: another socket, a patch callback, an event callback.
///
/// ```no_run
/// thinpatch_client::Client::new()
///     .socket("/tmp/my-daemon/thinpatch.sock")
///     .on_event(|event| eprintln!("{event:?}"))
///     .spawn()
///     .expect("a thread for the thinpatch listener");
/// ```
#[derive(Default)]
pub struct Client {
    target: endpoint::Target,
    on_patch: Option<Arc<listener::PatchCallback>>,
    on_event: Option<Arc<listener::EventCallback>>,
}

impl Client {
    /// A listener on the default socket that applies patches itself.
    pub fn new() -> Client {
        Client::default()
    }

    /// Use this socket instead of the default one (and not `THINPATCH_ADDR`).
    pub fn socket(mut self, path: impl Into<PathBuf>) -> Client {
        self.target = endpoint::Target::Socket(path.into());
        self
    }

    /// Subscribe to a daemon on another host, over a WebSocket, instead of the local socket:
    /// `address` is `ws://HOST:PORT` (the path `/thinpatch` is implied) and `token` is what
    /// `thinpatch token` prints on that host. Each patch's bytes come over the connection,
    /// are checked against their SHA-256 and written to `$THINPATCH_CACHE_DIR` (else a fresh
    /// private temporary directory), and loaded from there.
    ///
    /// There is no TLS (`wss://` is refused): reach the daemon through a tunnel (`ssh -R`,
    /// `adb reverse`) or on a network you trust. Without this call, the environment variables
    /// `THINPATCH_ADDR` and `THINPATCH_TOKEN` do the same.
    ///
    /// ```no_run
    /// thinpatch_client::Client::new()
    ///     .remote("ws://127.0.0.1:7421", std::env::var("MY_TOKEN").unwrap_or_default())
    ///     .spawn()
    ///     .expect("a thread for the thinpatch listener");
    /// ```
    pub fn remote(mut self, address: impl Into<String>, token: impl Into<String>) -> Client {
        self.target = endpoint::Target::Remote(address.into(), token.into());
        self
    }

    /// Hand each patch meant for this process to `callback` instead of applying it. Its
    /// result is reported to the daemon (`Err(message)`: not applied).
    pub fn on_patch(mut self, callback: impl Fn(&JumpTable) -> Result<(), String> + Send + Sync + 'static) -> Client {
        self.on_patch = Some(Arc::new(callback));
        self
    }

    /// Called on the listener thread for everything it sees.
    pub fn on_event(mut self, callback: impl Fn(&Event) + Send + Sync + 'static) -> Client {
        self.on_event = Some(Arc::new(callback));
        self
    }

    /// Start the listener thread; it runs for the life of the process.
    pub fn spawn(self) -> std::io::Result<()> {
        let listener = listener::Listener::new(self.target, self.on_patch, self.on_event);
        std::thread::Builder::new().name("thinpatch".into()).spawn(move || listener.run())?;
        Ok(())
    }
}

/// Start listening for patches and apply them, on a background thread. Calling it again
/// (or after [`on_patch`]) does nothing: one listener per process.
pub fn connect() {
    start(Client::new());
}

/// Start listening for patches and hand each one to `callback` instead of applying it, for
/// programs that apply patches themselves (for example with `subsecond::apply_patch`).
/// Once per process, like [`connect`].
///
/// ```no_run
/// thinpatch_client::on_patch(|table| {
///     eprintln!("patch library {} with {} functions", table.lib, table.map.len());
///     Ok(())
/// });
/// ```
pub fn on_patch(callback: impl Fn(&JumpTable) -> Result<(), String> + Send + Sync + 'static) {
    start(Client::new().on_patch(callback));
}

/// Apply a patch handed over some other way than the daemon's socket: the JSON that
/// `thinpatch patch --json` prints, a `patch-ready` event, or a bare jump table. Replaces the
/// current table, as a patch from the daemon does. Returns the number of redirected functions.
pub fn apply_json(text: &str) -> Result<usize, String> {
    let value = json::parse(text)?;
    let table = value.get("jump_table").unwrap_or(&value);
    hot::apply(&JumpTable::from_json(table)?)
}

fn start(client: Client) {
    static STARTED: AtomicBool = AtomicBool::new(false);
    if STARTED.swap(true, Ordering::SeqCst) {
        return;
    }
    if let Err(e) = client.spawn() {
        eprintln!("thinpatch: cannot start the listener thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn apply_json_reads_a_patch_result_or_a_bare_table_and_says_what_is_wrong() {
        assert!(super::apply_json("not json").is_err());
        assert_eq!(super::apply_json("{}").unwrap_err(), "the jump table has no `lib`");
        let missing = r#"{"jump_table": {"lib": "/nonexistent/libpatch.so", "map": {}, "aslr_reference": 1, "new_base_address": 2, "ifunc_count": 0}}"#;
        let error = super::apply_json(missing).unwrap_err();
        assert!(error.contains("/nonexistent/libpatch.so"), "{error}");
    }
}
