//! The listener thread: find the daemon, check it is ours, subscribe, apply each patch meant
//! for this process, report back, and reconnect when the daemon goes away. Nothing in here
//! may panic: a dead listener would leave the program silently unpatched.
use std::collections::HashSet;
use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::endpoint::{endpoint_from, Endpoint, Target};
use crate::hot::{self, JumpTable};
use crate::json::{quote, Json};
use crate::remote::RemoteIncoming;
use crate::transport::{Ended, Incoming, LineIncoming, Received, Sink};
use crate::websocket::{self, handshake::Url};
use crate::{entry, private_dir, sys, Event};

pub(crate) type PatchCallback = dyn Fn(&JumpTable) -> Result<(), String> + Send + Sync;
pub(crate) type EventCallback = dyn Fn(&Event) + Send + Sync;

const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(5);
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// The socket's directory must be ours and closed to others: anyone who can write there can
/// put their own socket in place of the daemon's and feed us libraries to load.
pub(crate) fn check_socket_dir(socket: &Path, uid: u32) -> Result<(), String> {
    let directory = match socket.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    private_dir::check(directory, uid)
}

pub(crate) struct Listener {
    pub target: Target,
    pub on_patch: Option<Arc<PatchCallback>>,
    pub on_event: Option<Arc<EventCallback>>,
    pub pid: u32,
    pub build_id: Option<String>,
    /// Runtime address of this program's `main`, which entry points are reported relative to;
    /// None when the program does not export it (it cannot be patched then either).
    pub program_main: Option<u64>,
    said: HashSet<String>,
}

enum Failure {
    /// The daemon is not there (yet): retry quietly.
    Unavailable(String),
    /// Something is there that we must not trust, or that turned us away.
    Refused(String),
}

impl Listener {
    pub fn new(target: Target, on_patch: Option<Arc<PatchCallback>>, on_event: Option<Arc<EventCallback>>) -> Self {
        Listener {
            target,
            on_patch,
            on_event,
            pid: std::process::id(),
            build_id: crate::build_id::current(),
            program_main: sys::program_main().map(|address| address as u64),
            said: HashSet::new(),
        }
    }

    pub fn run(mut self) {
        let mut wait = FIRST_RETRY;
        loop {
            let outcome = match endpoint_from(&self.target, |name| std::env::var_os(name), sys::effective_uid()) {
                Ok(Endpoint::Socket(socket)) => self.unix_session(&socket),
                Ok(Endpoint::Remote { url, token }) => self.remote_session(&url, token.as_deref()),
                Err(reason) => {
                    // A setting that cannot work; it will not change while the program runs.
                    self.say_once(&reason);
                    self.emit(&Event::Refused { reason });
                    return;
                }
            };
            match outcome {
                Ok(reason) => {
                    self.emit(&Event::Disconnected { reason });
                    wait = FIRST_RETRY;
                }
                Err(Failure::Unavailable(reason)) => self.emit(&Event::Unavailable { reason }),
                Err(Failure::Refused(reason)) => {
                    self.say_once(&reason);
                    self.emit(&Event::Refused { reason });
                }
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(LONGEST_RETRY);
        }
    }

    fn emit(&self, event: &Event) {
        if let Some(callback) = &self.on_event {
            // A panicking callback must not take the listener down with it.
            let _ = catch_unwind(AssertUnwindSafe(|| callback(event)));
        }
    }

    /// Print a message to stderr the first time it comes up.
    fn say_once(&mut self, message: &str) {
        if self.said.insert(message.to_string()) {
            let _ = writeln!(std::io::stderr(), "thinpatch: {message}");
        }
    }

    /// One connection to the local daemon, from the trust checks to its end (Ok: why it ended).
    fn unix_session(&mut self, socket: &Path) -> Result<String, Failure> {
        let refused = |reason: String| Failure::Refused(format!("not using the daemon at {}: {reason}", socket.display()));
        let uid = sys::effective_uid();
        check_socket_dir(socket, uid).map_err(|reason| {
            if socket.parent().is_some_and(|dir| !dir.exists()) {
                Failure::Unavailable(format!("no daemon at {} yet", socket.display()))
            } else {
                refused(reason)
            }
        })?;
        let stream = UnixStream::connect(socket)
            .map_err(|e| Failure::Unavailable(format!("cannot connect to {}: {e}", socket.display())))?;
        let peer = sys::peer_uid(&stream).map_err(refused)?;
        if peer != uid {
            return Err(refused(format!("it is run by uid {peer}, not by this program's uid {uid}")));
        }
        let writer = stream.try_clone().map_err(|e| Failure::Unavailable(e.to_string()))?;
        let mut incoming = LineIncoming(BufReader::new(stream));
        self.converse(&mut incoming, Box::new(writer), &socket.display().to_string(), socket).map_err(|failure| match failure {
            Failure::Refused(reason) => refused(reason),
            other => other,
        })
    }

    /// One connection to a daemon on another host, over a WebSocket (Ok: why it ended).
    fn remote_session(&mut self, url: &Url, token: Option<&str>) -> Result<String, Failure> {
        let (reader, writer) = websocket::connect(url, token, HELLO_TIMEOUT).map_err(|e| match e {
            websocket::ConnectError::Unavailable(reason) => Failure::Unavailable(reason),
            websocket::ConnectError::Refused(reason) => Failure::Refused(reason),
        })?;
        let label = url.to_string();
        let mut incoming = RemoteIncoming { reader };
        self.converse(&mut incoming, Box::new(writer), &label, Path::new(&label)).map_err(|failure| match failure {
            Failure::Refused(reason) => Failure::Refused(format!("{label}: {reason}")),
            other => other,
        })
    }

    /// The protocol itself, the same on any transport: greeting, subscribe, then events until
    /// the connection ends. `label` names the daemon in messages; `endpoint` goes in events.
    fn converse(&mut self, incoming: &mut dyn Incoming, sink: Box<dyn Sink>, label: &str, endpoint: &Path) -> Result<String, Failure> {
        incoming.set_timeout(Some(HELLO_TIMEOUT));
        let hello = match incoming.next() {
            Ok(received) => received.event,
            Err(Ended::Lost(e)) => return Err(Failure::Unavailable(format!("no greeting from {label}: {e}"))),
            // 1008: turned away (a wrong token), which the user must hear about; other codes
            // (1013: too many clients) mean try again later.
            Err(Ended::Closed { code: Some(1008), reason }) => return Err(Failure::Refused(closed_text(Some(1008), &reason))),
            Err(Ended::Closed { code, reason }) => return Err(Failure::Unavailable(format!("{label}: {}", closed_text(code, &reason)))),
        };
        match hello.get("type").and_then(Json::as_str) {
            Some("hello") => {}
            Some("error") => {
                let message = hello.get("message").and_then(Json::as_str).unwrap_or("no reason given");
                return Err(Failure::Unavailable(format!("the daemon turned the connection down: {message}")));
            }
            _ => return Err(Failure::Refused("it did not greet like a thinpatch daemon".into())),
        }
        incoming.set_timeout(None);
        // Protocol 2 daemons take the program's entry points; older ones would answer `error`.
        let takes_entry_points = hello.get("protocol").and_then(Json::as_u64).is_some_and(|v| v >= 2);
        let writer = Outgoing::new(sink);
        writer
            .send(|seq| self.subscribe_request(seq))
            .map_err(|e| Failure::Unavailable(format!("subscribe: {e}")))?;
        // Sends the entry points while the session lasts; dropping it stops it.
        let mut reporter: Option<EntryReporter> = None;
        loop {
            let Received { event, undelivered } = match incoming.next() {
                Ok(received) => received,
                Err(Ended::Lost(reason)) => return Ok(reason),
                Err(Ended::Closed { code, reason }) => {
                    let text = format!("{label}: {}", closed_text(code, &reason));
                    // A policy close (1008: a client that stopped reading, a token that changed)
                    // needs the user; a daemon going away does not.
                    if code == Some(1008) {
                        self.say_once(&text);
                    }
                    return Ok(text);
                }
            };
            if reporter.is_none() && takes_entry_points && event.get("type").and_then(Json::as_str) == Some("subscribed") {
                if let Some(main) = self.program_main {
                    reporter = EntryReporter::start(writer.clone(), main);
                }
            }
            if let Some(report) = self.handle(&event, endpoint, undelivered) {
                if let Err(e) = writer.send(|seq| report.line(seq, self.pid)) {
                    return Ok(format!("cannot report a patch: {e}"));
                }
            }
        }
    }

    pub(crate) fn subscribe_request(&self, seq: u64) -> String {
        let build_id = match &self.build_id {
            Some(id) => format!(",\"build_id\":{}", quote(id)),
            None => String::new(),
        };
        format!("{{\"type\":\"subscribe\",\"seq\":{seq},\"pid\":{}{build_id}}}\n", self.pid)
    }

    /// React to one event; a patch gives the report to send back. `undelivered`: why a remote
    /// patch's bytes could not be used.
    fn handle(&mut self, event: &Json, endpoint: &Path, undelivered: Option<String>) -> Option<PatchReport> {
        let kind = event.get("type").and_then(Json::as_str).unwrap_or("");
        let id = event.get("id");
        match kind {
            "subscribed" => self.emit(&Event::Subscribed { socket: endpoint.to_path_buf() }),
            "patch-ready" => {
                let id_text = id.map(Json::display).unwrap_or_default();
                let outcome = self.patch(event, undelivered);
                match &outcome {
                    Ok(entries) => self.emit(&Event::Patched { id: id_text, entries: *entries }),
                    Err(message) => {
                        let _ = writeln!(std::io::stderr(), "thinpatch: patch {id_text} not applied: {message}");
                        self.emit(&Event::PatchFailed { id: id_text, message: message.clone() });
                    }
                }
                return Some(PatchReport { id: id.map(Json::to_json).unwrap_or_else(|| "null".into()), outcome });
            }
            "not-patchable" => {
                let message = event.get("message").and_then(Json::as_str).unwrap_or("this program cannot be patched");
                self.say_once(message);
            }
            _ => {}
        }
        if !kind.is_empty() {
            self.emit(&Event::Message { kind: kind.to_string(), id: id.map(Json::display), json: event.to_json() });
        }
        None
    }

    /// Apply a `patch-ready` event if it was built for this very process.
    fn patch(&self, event: &Json, undelivered: Option<String>) -> Result<usize, String> {
        if let Some(for_pid) = event.get("for_pid").and_then(Json::as_u64) {
            if for_pid != self.pid as u64 {
                return Err(format!("built for process {for_pid}, not for this process {}", self.pid));
            }
        }
        if let Some(wanted) = event.get("for_build_id").and_then(Json::as_str) {
            if self.build_id.as_deref() != Some(wanted) {
                let ours = self.build_id.as_deref().unwrap_or("none");
                return Err(format!("built for the binary with build ID {wanted}, this program's is {ours}"));
            }
        }
        if let Some(why) = undelivered {
            return Err(why);
        }
        let table = JumpTable::from_json(event.get("jump_table").ok_or("the event has no jump_table")?)?;
        match &self.on_patch {
            Some(callback) => match catch_unwind(AssertUnwindSafe(|| callback(&table))) {
                Ok(result) => result.map(|()| table.map.len()),
                Err(_) => Err("the patch callback panicked".into()),
            },
            None => hot::apply(&table),
        }
    }
}

/// A close frame as a person reads it.
fn closed_text(code: Option<u16>, reason: &str) -> String {
    match (code, reason.is_empty()) {
        (_, false) => format!("the daemon closed the connection: {reason}"),
        (Some(code), true) => format!("the daemon closed the connection (code {code})"),
        (None, true) => "the daemon closed the connection".to_string(),
    }
}

/// The sending half of a connection, shared by the listener and the entry reporter: whole
/// lines, numbered from one counter.
#[derive(Clone)]
struct Outgoing(Arc<Mutex<(Box<dyn Sink>, u64)>>);

impl Outgoing {
    fn new(sink: Box<dyn Sink>) -> Outgoing {
        Outgoing(Arc::new(Mutex::new((sink, 0))))
    }

    fn lock(&self) -> MutexGuard<'_, (Box<dyn Sink>, u64)> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Write the line `make` gives for the next `seq`.
    fn send(&self, make: impl FnOnce(u64) -> String) -> std::io::Result<()> {
        let mut guard = self.lock();
        let (sink, seq) = &mut *guard;
        *seq += 1;
        sink.send_line(&make(*seq))
    }

    /// Write one or more `entry-points` lines for `entries`.
    fn send_entries(&self, entries: &[entry::EntryPoint], program_main: u64) -> std::io::Result<()> {
        let mut guard = self.lock();
        let (sink, seq) = &mut *guard;
        let lines = entry::request_lines(entries, program_main, || {
            *seq += 1;
            *seq
        });
        lines.iter().try_for_each(|line| sink.send_line(line))
    }

    fn shut_down(&self) {
        self.lock().0.shut_down();
    }
}

/// A thread that sends every recorded entry point once the session is subscribed, then each
/// new one as it is first called. Dropping it (the session ended) stops the thread.
struct EntryReporter {
    stop: Arc<AtomicBool>,
}

impl EntryReporter {
    fn start(writer: Outgoing, program_main: u64) -> Option<EntryReporter> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("thinpatch-entries".into()).spawn(move || {
            let mut sent = 0;
            while let Some(new) = entry::wait_for_new(sent, &stopped) {
                sent += new.len();
                if writer.send_entries(&new, program_main).is_err() {
                    // The listener's read ends too, and it reconnects.
                    writer.shut_down();
                    return;
                }
            }
        });
        match thread {
            Ok(_) => Some(EntryReporter { stop }),
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "thinpatch: cannot start a thread to report entry points: {e}");
                None
            }
        }
    }
}

impl Drop for EntryReporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        entry::wake_all();
    }
}

pub(crate) struct PatchReport {
    /// The event's `id`, as JSON.
    id: String,
    outcome: Result<usize, String>,
}

impl PatchReport {
    fn line(&self, seq: u64, pid: u32) -> String {
        let tail = match &self.outcome {
            Ok(_) => "\"applied\":true".to_string(),
            Err(message) => format!("\"applied\":false,\"message\":{}", quote(message)),
        };
        format!("{{\"type\":\"patch-result\",\"seq\":{seq},\"id\":{},\"pid\":{pid},{tail}}}\n", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json;

    fn listener(pid: u32, build_id: Option<&str>) -> Listener {
        let mut l = Listener::new(Target::Default, Some(Arc::new(|_: &JumpTable| Ok(()))), None);
        l.pid = pid;
        l.build_id = build_id.map(str::to_string);
        l
    }

    fn patch_event(extra: &str) -> Json {
        json::parse(&format!(
            r#"{{"type":"patch-ready","id":"b-3","jump_table":{{"lib":"/p.so","map":{{"16":32}},"aslr_reference":1,"new_base_address":2,"ifunc_count":0}}{extra}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn applies_only_patches_built_for_this_process_and_binary() {
        let mut l = listener(40, Some("abcd"));
        let socket = Path::new("/s");
        let report = |l: &mut Listener, extra: &str| l.handle(&patch_event(extra), socket, None).unwrap().line(2, 40);
        assert_eq!(report(&mut l, ""), "{\"type\":\"patch-result\",\"seq\":2,\"id\":\"b-3\",\"pid\":40,\"applied\":true}\n");
        assert!(report(&mut l, r#","for_pid":40,"for_build_id":"abcd""#).contains("\"applied\":true"));
        let other_pid = report(&mut l, r#","for_pid":41"#);
        assert!(other_pid.contains("\"applied\":false,\"message\":\"built for process 41, not for this process 40\""), "{other_pid}");
        let other_binary = report(&mut l, r#","for_build_id":"ef01""#);
        assert!(other_binary.contains("\"applied\":false") && other_binary.contains("ef01"), "{other_binary}");
        let mut no_build_id = listener(40, None);
        assert!(report(&mut no_build_id, r#","for_build_id":"abcd""#).contains("\"applied\":false"));
    }

    #[test]
    fn a_panicking_callback_is_a_failed_patch() {
        let mut l = listener(5, None);
        l.on_patch = Some(Arc::new(|_: &JumpTable| panic!("boom")));
        let line = l.handle(&patch_event(""), Path::new("/s"), None).unwrap().line(3, 5);
        assert!(line.contains("\"applied\":false,\"message\":\"the patch callback panicked\""), "{line}");
    }

    #[test]
    fn subscribes_with_pid_and_build_id() {
        assert_eq!(listener(12, Some("00ff")).subscribe_request(1), "{\"type\":\"subscribe\",\"seq\":1,\"pid\":12,\"build_id\":\"00ff\"}\n");
        assert_eq!(listener(12, None).subscribe_request(1), "{\"type\":\"subscribe\",\"seq\":1,\"pid\":12}\n");
    }

    /// A fake daemon on a real socket, for the entry point tests.
    mod fake_daemon {
        use super::super::*;
        use crate::json;
        use std::io::{BufRead, BufReader};
        use std::path::PathBuf;
        use std::os::unix::fs::DirBuilderExt;
        use std::os::unix::net::UnixListener;
        use std::sync::atomic::AtomicUsize;
        use std::time::Instant;

        pub const WAIT: Duration = Duration::from_secs(15);

        pub fn private_dir() -> PathBuf {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!("tpl-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst)));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::DirBuilder::new().mode(0o700).create(&dir).expect("create a temp dir");
            dir
        }

        /// A listener on `socket` that reports entry points relative to a made-up `main`.
        pub fn spawn_listener(socket: &Path, program_main: u64) {
            let mut listener = Listener::new(Target::Socket(socket.to_path_buf()), Some(Arc::new(|_: &JumpTable| Ok(()))), None);
            listener.program_main = Some(program_main);
            std::thread::spawn(move || listener.run());
        }

        pub struct Connection {
            reader: BufReader<UnixStream>,
            writer: UnixStream,
        }

        impl Connection {
            /// Accept, greet with `protocol`, read the subscribe request and answer it.
            pub fn subscribed(daemon: &UnixListener, protocol: u32) -> Connection {
                daemon.set_nonblocking(true).unwrap();
                let deadline = Instant::now() + WAIT;
                let stream = loop {
                    match daemon.accept() {
                        Ok((stream, _)) => break stream,
                        Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                        Err(e) => panic!("the listener did not connect: {e}"),
                    }
                };
                stream.set_nonblocking(false).unwrap();
                stream.set_read_timeout(Some(WAIT)).unwrap();
                let mut connection = Connection { writer: stream.try_clone().unwrap(), reader: BufReader::new(stream) };
                connection.send(&format!(r#"{{"type":"hello","protocol":{protocol},"version":"0.2.0","pid":1,"seq":1}}"#));
                let subscribe = connection.receive().expect("a subscribe request");
                assert!(subscribe.contains(r#""type":"subscribe""#), "{subscribe}");
                connection.send(r#"{"type":"subscribed","re":1,"seq":2}"#);
                connection
            }

            pub fn send(&mut self, line: &str) {
                self.writer.write_all(format!("{line}\n").as_bytes()).unwrap();
            }

            /// The next line, or None when none came within `timeout`.
            pub fn receive_within(&mut self, timeout: Duration) -> Option<String> {
                self.reader.get_ref().set_read_timeout(Some(timeout)).unwrap();
                let mut line = String::new();
                match self.reader.read_line(&mut line) {
                    Ok(n) if n > 0 => Some(line.trim_end().to_string()),
                    _ => None,
                }
            }

            pub fn receive(&mut self) -> Option<String> {
                self.receive_within(WAIT)
            }

            /// Read `entry-points` lines until entries at all of `offsets` came; those entries.
            pub fn entries_at(&mut self, offsets: &[i64]) -> Vec<Json> {
                let mut found: Vec<Json> = Vec::new();
                while !offsets.iter().all(|o| found.iter().any(|e| super::offset(e) == *o)) {
                    let line = self.receive().unwrap_or_else(|| panic!("no entry points at {offsets:?}; got {found:?}"));
                    let request = json::parse(&line).unwrap();
                    assert_eq!(request.get("type").and_then(Json::as_str), Some("entry-points"), "{line}");
                    assert!(request.get("seq").and_then(Json::as_u64).is_some(), "{line}");
                    let Some(Json::Array(entries)) = request.get("entries") else { panic!("{line}") };
                    found.extend(entries.iter().filter(|e| offsets.contains(&super::offset(e))).cloned());
                }
                found
            }
        }
    }

    fn call_it_of<A, M, F: hot::HotFunction<A, M>>(_: &F) -> u64 {
        <F as hot::HotFunction<A, M>>::call_it as fn(&mut F, A) -> F::Return as usize as u64
    }

    fn offset(entry: &Json) -> i64 {
        match entry.get("offset") {
            Some(Json::Number(text)) => text.parse().unwrap(),
            other => panic!("no offset: {other:?}"),
        }
    }

    #[test]
    fn reports_entry_points_after_subscribing_new_ones_at_once_and_all_again_after_a_reconnect() {
        use fake_daemon::*;
        const MAIN: u64 = 0x10_0000;
        let dir = private_dir();
        let socket = dir.join("thinpatch.sock");
        let daemon = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let (a, b) = (1u64, 2u64);
        let early = move || a + b;
        hot::call(early);
        let early_offset = call_it_of::<(), hot::Fn0, _>(&early) as i64 - MAIN as i64;
        spawn_listener(&socket, MAIN);

        let mut connection = Connection::subscribed(&daemon, 2);
        let reported = connection.entries_at(&[early_offset]);
        assert_eq!(reported.len(), 1, "{reported:?}");
        assert_eq!(reported[0].get("kind").and_then(Json::as_str), Some("closure"));
        assert_eq!(reported[0].get("name").and_then(Json::as_str), Some(std::any::type_name_of_val(&early)));
        assert_eq!(reported[0].get("returns").and_then(Json::as_str), Some("u64"));

        // A new entry goes out while connected, without waiting for anything from the daemon.
        let late = move || a * b;
        let late_offset = call_it_of::<(), hot::Fn0, _>(&late) as i64 - MAIN as i64;
        let started = std::time::Instant::now();
        hot::call(late);
        assert_eq!(connection.entries_at(&[late_offset]).len(), 1);
        let took = started.elapsed();
        assert!(took < Duration::from_millis(500), "took {took:?}");
        // Calling them again sends neither again (other tests may record entries meanwhile).
        hot::call(late);
        hot::call(early);
        while let Some(line) = connection.receive_within(Duration::from_millis(300)) {
            let entries = json::parse(&line).unwrap();
            let Some(Json::Array(entries)) = entries.get("entries") else { panic!("{line}") };
            assert!(!entries.iter().any(|e| [early_offset, late_offset].contains(&offset(e))), "sent again: {line}");
        }

        // After a reconnect, everything is sent again.
        drop(connection);
        let mut again = Connection::subscribed(&daemon, 2);
        assert_eq!(again.entries_at(&[early_offset, late_offset]).len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_protocol_1_daemon_is_sent_no_entry_points() {
        use fake_daemon::*;
        let dir = private_dir();
        let socket = dir.join("thinpatch.sock");
        let daemon = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let (a, b) = (3u64, 4u64);
        hot::call(move || a + b);
        spawn_listener(&socket, 0x10_0000);
        let mut connection = Connection::subscribed(&daemon, 1);
        hot::call(move || a * b);
        assert_eq!(connection.receive_within(Duration::from_millis(500)), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A fake remote daemon: a WebSocket server on a real TCP socket, one connection.
    mod fake_remote {
        use super::super::*;
        use crate::json;
        use std::io::{BufRead, BufReader, Read, Write};
        use std::net::{TcpListener, TcpStream};

        pub struct Connection {
            reader: BufReader<TcpStream>,
            writer: TcpStream,
        }

        impl Connection {
            /// Accept and complete the upgrade; the request head too.
            pub fn accept(listener: &TcpListener) -> (Connection, String) {
                let (stream, _) = listener.accept().unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                while !request.ends_with("\r\n\r\n") {
                    assert!(reader.read_line(&mut request).unwrap() > 0, "{request}");
                }
                let key = request.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")).unwrap().trim().to_string();
                let mut writer = stream;
                let accept = websocket::handshake::accept_value(&key);
                let answer = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n");
                writer.write_all(answer.as_bytes()).unwrap();
                (Connection { reader, writer }, request)
            }

            pub fn send(&mut self, opcode: u8, payload: &[u8]) {
                self.writer.write_all(&websocket::frame::server_frame(true, opcode, payload)).unwrap();
            }

            pub fn send_text(&mut self, text: &str) {
                self.send(websocket::frame::OP_TEXT, text.as_bytes());
            }

            /// The next text message from the client (pongs are skipped).
            pub fn receive_text(&mut self) -> String {
                loop {
                    let mut head = [0u8; 2];
                    self.reader.read_exact(&mut head).unwrap();
                    let length = match head[1] & 0x7F {
                        126 => {
                            let mut b = [0u8; 2];
                            self.reader.read_exact(&mut b).unwrap();
                            u16::from_be_bytes(b) as usize
                        }
                        127 => panic!("no message this long is expected"),
                        n => n as usize,
                    };
                    let mut mask = [0u8; 4];
                    self.reader.read_exact(&mut mask).unwrap();
                    let mut payload = vec![0u8; length];
                    self.reader.read_exact(&mut payload).unwrap();
                    payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= mask[i % 4]);
                    if head[0] & 0x0F == websocket::frame::OP_TEXT {
                        return String::from_utf8(payload).unwrap();
                    }
                }
            }

            /// The next message of this `type`.
            pub fn receive(&mut self, kind: &str) -> Json {
                loop {
                    let message = json::parse(&self.receive_text()).unwrap();
                    if message.get("type").and_then(Json::as_str) == Some(kind) {
                        return message;
                    }
                }
            }
        }
    }

    fn patch_ready(id: u64, size: usize, sha256: &str, chunks: u64) -> String {
        let table = r#"{"lib":"/host/patch.so","map":{"16":32},"aslr_reference":1,"new_base_address":2,"ifunc_count":0}"#;
        let payload = format!(r#"{{"size":{size},"sha256":"{sha256}","chunks":{chunks},"file":"patch-{id}.so"}}"#);
        format!(r#"{{"type":"patch-ready","id":{id},"lib":"/host/patch.so","jump_table":{table},"payload":{payload}}}"#)
    }

    #[test]
    fn a_remote_patch_is_written_locally_and_a_bad_one_is_reported_without_losing_step() {
        use fake_remote::Connection;
        use std::sync::mpsc::channel;
        let daemon = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("ws://{}", daemon.local_addr().unwrap());
        let (loaded, libraries) = channel();
        let (events, seen) = channel();
        let on_patch = move |table: &JumpTable| {
            let _ = loaded.send((table.lib.clone(), std::fs::read(&table.lib).unwrap_or_default(), table.json().to_string()));
            Ok(())
        };
        let on_event = move |event: &Event| {
            let _ = events.send(event.clone());
        };
        let listener = Listener::new(Target::Remote(address.clone(), "t0k".into()), Some(Arc::new(on_patch)), Some(Arc::new(on_event)));
        std::thread::spawn(move || listener.run());

        // A daemon with too many clients: try again later, quietly.
        let (mut busy, _) = Connection::accept(&daemon);
        busy.send(websocket::frame::OP_CLOSE, &websocket::frame::close_payload(1013, "too many clients (limit 1); try again later"));
        let wanted = format!("{address}/thinpatch: the daemon closed the connection: too many clients (limit 1); try again later");
        assert_eq!(seen.recv_timeout(Duration::from_secs(15)).unwrap(), Event::Unavailable { reason: wanted });

        let (mut connection, request) = Connection::accept(&daemon);
        assert!(request.starts_with("GET /thinpatch HTTP/1.1\r\n") && request.contains("\r\nAuthorization: Bearer t0k\r\n"), "{request}");
        connection.send_text(r#"{"type":"hello","protocol":2,"version":"0.1.0","pid":1,"remote":true,"seq":1}"#);
        let subscribe = connection.receive("subscribe");
        assert_eq!(subscribe.get("pid").and_then(Json::as_u64), Some(std::process::id() as u64));
        connection.send_text("{\"type\":\"subscribed\",\"re\":1,\"seq\":2}\n");

        // A patch of 70,000 bytes in one chunk (a frame with a 64-bit length).
        let bytes: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut hasher = crate::sha256::Sha256::new();
        hasher.update(&bytes);
        connection.send_text(&patch_ready(1, bytes.len(), &hasher.finish_hex(), 1));
        connection.send(websocket::frame::OP_BINARY, &crate::payload::chunk_frame("1", 0, 0, &bytes));
        let (lib, contents, table_json) = libraries.recv_timeout(Duration::from_secs(15)).unwrap();
        assert!(lib.ends_with("/patch-1.so") && !lib.starts_with("/host"), "{lib}");
        assert_eq!(contents, bytes);
        assert!(table_json.contains(&quote(&lib)), "the table handed on names the local copy: {table_json}");
        let result = connection.receive("patch-result");
        assert_eq!(result.get("applied"), Some(&Json::Bool(true)), "{result:?}");

        // A chunk out of order: not applied, and the connection is still in step.
        let hash = "0".repeat(64);
        connection.send_text(&patch_ready(2, 5, &hash, 1));
        connection.send(websocket::frame::OP_BINARY, &crate::payload::chunk_frame("2", 1, 0, b"12345"));
        let result = connection.receive("patch-result");
        assert_eq!(result.get("applied"), Some(&Json::Bool(false)), "{result:?}");
        assert!(result.get("message").and_then(Json::as_str).unwrap().contains("out of order"), "{result:?}");
        // A patch without its bytes is not loaded from the daemon's path.
        connection.send_text(r#"{"type":"patch-ready","id":3,"jump_table":{"lib":"/host/patch.so","map":{},"aslr_reference":1,"new_base_address":2}}"#);
        let result = connection.receive("patch-result");
        assert!(result.get("message").and_then(Json::as_str).unwrap().contains("without its bytes"), "{result:?}");
        // A library over this client's limit (2 GiB in 2,048 chunks): refused, its chunks read
        // past, and the connection kept (dropping it would only have the patch sent again).
        connection.send_text(&patch_ready(4, 2 << 30, &hash, 2048));
        for index in 0..2048u64 {
            connection.send(websocket::frame::OP_BINARY, &crate::payload::chunk_frame("4", index, index << 20, b"x"));
        }
        let result = connection.receive("patch-result");
        assert_eq!(result.get("applied"), Some(&Json::Bool(false)), "{result:?}");
        assert!(result.get("message").and_then(Json::as_str).unwrap().contains("over the"), "{result:?}");
        assert!(libraries.try_recv().is_err(), "none reached the patch callback");

        connection.send(websocket::frame::OP_CLOSE, &websocket::frame::close_payload(1001, "the daemon is shutting down"));
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match seen.recv_timeout(left).expect("a Disconnected event") {
                Event::Disconnected { reason } => {
                    assert_eq!(reason, format!("{address}/thinpatch: the daemon closed the connection: the daemon is shutting down"));
                    break;
                }
                _ => continue,
            }
        }
        let _ = std::fs::remove_file(&lib);
        let dir = Path::new(&lib).parent().unwrap();
        if dir.file_name().is_some_and(|name| name.to_string_lossy().starts_with("thinpatch-patches-")) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
