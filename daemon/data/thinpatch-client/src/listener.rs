//! The listener thread: find the daemon, check it is ours, subscribe, apply each patch meant
//! for this process, report back, and reconnect when the daemon goes away. Nothing in here
//! may panic: a dead listener would leave the program silently unpatched.
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::hot::{self, JumpTable};
use crate::json::{self, quote, Json};
use crate::patch_file::{self, PatchFile};
use crate::payload::{self, Payload};
use crate::websocket::{self, handshake, handshake::Url};
use crate::{entry, private_dir, sys, Event};

pub(crate) type PatchCallback = dyn Fn(&JumpTable) -> Result<(), String> + Send + Sync;
pub(crate) type EventCallback = dyn Fn(&Event) + Send + Sync;

const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(5);
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// The daemon pings a WebSocket every 20 s: three missed pings and the connection is dead
/// (a host that went to sleep, a tunnel that dropped), so reconnect.
const REMOTE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The protocol allows 1 MiB lines; anything far beyond is not our daemon.
const MAX_LINE_BYTES: usize = 16 << 20;

/// Where the daemon listens, found exactly as the daemon finds it.
pub fn default_socket_path() -> PathBuf {
    socket_path_from(|name| std::env::var_os(name), sys::effective_uid())
}

pub(crate) fn socket_path_from(env: impl Fn(&str) -> Option<std::ffi::OsString>, uid: u32) -> PathBuf {
    let set = |name: &str| env(name).filter(|value| !value.is_empty());
    if let Some(path) = set("THINPATCH_SOCKET") {
        return PathBuf::from(path);
    }
    if let Some(runtime) = set("XDG_RUNTIME_DIR") {
        return Path::new(&runtime).join("thinpatch").join("thinpatch.sock");
    }
    let tmp = set("TMPDIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    tmp.join(format!("thinpatch-{uid}")).join("thinpatch.sock")
}

/// The socket's directory must be ours and closed to others: anyone who can write there can
/// put their own socket in place of the daemon's and feed us libraries to load.
pub(crate) fn check_socket_dir(socket: &Path, uid: u32) -> Result<(), String> {
    let directory = match socket.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    private_dir::check(directory, uid)
}

/// Where the program asked to find the daemon, in code; the environment fills in the rest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum Target {
    /// `THINPATCH_ADDR` when set, else the default socket.
    #[default]
    Default,
    Socket(PathBuf),
    /// An address (`ws://host:port[/path]`) and its token.
    Remote(String, String),
}

/// Where to connect this time.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Socket(PathBuf),
    Remote { url: Url, token: Option<String> },
}

/// The endpoint for `target`: the one given in code, else `THINPATCH_ADDR` (with
/// `THINPATCH_TOKEN`), else the daemon's socket. Err: an address this client cannot use.
pub(crate) fn endpoint_from(target: &Target, env: impl Fn(&str) -> Option<std::ffi::OsString>, uid: u32) -> Result<Endpoint, String> {
    let set = |name: &str| env(name).filter(|value| !value.is_empty()).map(|v| v.to_string_lossy().into_owned());
    let remote = |address: &str, token: Option<String>, from: &str| {
        let url = Url::parse(address).map_err(|e| format!("{from}: {e}"))?;
        let token = match token {
            Some(token) => Some(handshake::check_token(&token)?.to_string()),
            None => None,
        };
        Ok(Endpoint::Remote { url, token })
    };
    match target {
        Target::Socket(path) => Ok(Endpoint::Socket(path.clone())),
        Target::Remote(address, token) => remote(address, Some(token.clone()).filter(|t| !t.is_empty()), "Client::remote"),
        Target::Default => match set("THINPATCH_ADDR") {
            Some(address) => remote(&address, set("THINPATCH_TOKEN"), "THINPATCH_ADDR"),
            None => Ok(Endpoint::Socket(socket_path_from(env, uid))),
        },
    }
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

/// How a connection ended.
enum Ended {
    /// It broke or went quiet, and why.
    Lost(String),
    /// The daemon closed it with a WebSocket close frame.
    Closed { code: Option<u16>, reason: String },
}

/// What came in: an event, and for a remote patch, why its bytes could not be used (they were
/// damaged, or could not be written). The event's `lib` is the local copy when they could.
struct Received {
    event: Json,
    undelivered: Option<String>,
}

/// The receiving half of a connection: lines on the Unix socket, text messages (and patch
/// bytes in binary ones) on a WebSocket.
trait Incoming {
    fn next(&mut self) -> Result<Received, Ended>;
    /// Wait at most this long for the greeting; None: for as long as the connection is healthy.
    fn set_timeout(&mut self, timeout: Option<Duration>);
}

/// The sending half: one protocol line at a time (the trailing newline is the Unix socket's
/// framing; a WebSocket sends the line as one text message).
trait Sink: Send {
    fn send_line(&mut self, line: &str) -> std::io::Result<()>;
    fn shut_down(&mut self);
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

/// The Unix socket's incoming half: one JSON event per line.
struct LineIncoming(BufReader<UnixStream>);

impl Incoming for LineIncoming {
    fn next(&mut self) -> Result<Received, Ended> {
        read_line(&mut self.0).map(|event| Received { event, undelivered: None }).map_err(Ended::Lost)
    }

    fn set_timeout(&mut self, timeout: Option<Duration>) {
        let _ = self.0.get_ref().set_read_timeout(timeout);
    }
}

impl Sink for UnixStream {
    fn send_line(&mut self, line: &str) -> std::io::Result<()> {
        self.write_all(line.as_bytes())
    }

    fn shut_down(&mut self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
}

/// A WebSocket's incoming half: one JSON event per text message; a patch's bytes follow its
/// `patch-ready` in binary messages, and are written to disk before the event is handed on.
struct RemoteIncoming {
    reader: websocket::Reader,
}

impl Incoming for RemoteIncoming {
    fn next(&mut self) -> Result<Received, Ended> {
        loop {
            let text = match self.reader.next().map_err(Ended::Lost)? {
                websocket::Incoming::Text(text) => text,
                // Binary messages belong to a patch; one outside a patch is skipped.
                websocket::Incoming::Binary(_) => continue,
                websocket::Incoming::Closed { code, reason } => return Err(Ended::Closed { code, reason }),
            };
            // A message we cannot read is skipped, as the protocol asks of unknown content.
            let Ok(mut event) = json::parse(text.trim()) else { continue };
            if event.get("type").and_then(Json::as_str) != Some("patch-ready") {
                return Ok(Received { event, undelivered: None });
            }
            let undelivered = match event.get("payload").cloned() {
                Some(payload) => self.receive_patch(&mut event, &payload)?,
                None => Some("the patch came without its bytes (no `payload`); this daemon cannot patch programs on other hosts".into()),
            };
            return Ok(Received { event, undelivered });
        }
    }

    fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.reader.set_timeout(Some(timeout.unwrap_or(REMOTE_IDLE_TIMEOUT)));
    }
}

impl RemoteIncoming {
    /// Read the chunks that follow `event` into a local file and point the event's `lib` at
    /// it. Ok(Some(why)): the patch cannot be used (the connection is still in step).
    fn receive_patch(&mut self, event: &mut Json, payload: &Json) -> Result<Option<String>, Ended> {
        let Some(count) = payload::chunk_count(payload) else {
            return Err(Ended::Lost("the daemon sent a patch without a readable chunk count".into()));
        };
        let id = event.get("id").cloned().unwrap_or(Json::Null);
        let described = Payload::from_json(payload);
        let mut file = described.as_ref().map_err(String::clone).and_then(|p| {
            let dir = patch_file::patch_dir(|name| std::env::var_os(name))?;
            PatchFile::create(&dir, p)
        });
        let mut chunks = described.as_ref().ok().map(|p| payload::Chunks::new(p, &id));
        for index in 0..count {
            let frame = match self.reader.next().map_err(Ended::Lost)? {
                websocket::Incoming::Binary(frame) => frame,
                websocket::Incoming::Text(_) => {
                    return Err(Ended::Lost(format!("the daemon sent a message where chunk {index} of {count} of a patch belonged")))
                }
                websocket::Incoming::Closed { code, reason } => return Err(Ended::Closed { code, reason }),
            };
            // After a first error the rest is read past, to stay in step.
            if let (Ok(writing), Some(chunks)) = (&mut file, &mut chunks) {
                if let Err(e) = chunks.next(&frame).and_then(|data| writing.write(data)) {
                    file = Err(e);
                }
            }
        }
        let path = file.and_then(|file| {
            let (payload, chunks) = (described.as_ref().map_err(String::clone)?, chunks.as_ref().ok_or("no chunks")?);
            chunks.complete()?;
            file.finish(payload)
        });
        match path {
            Ok(path) => {
                let local = Json::Str(path.to_string_lossy().into_owned());
                if let Some(table) = event.get_mut("jump_table") {
                    table.set("lib", local.clone());
                }
                if event.get("lib").is_some() {
                    event.set("lib", local);
                }
                Ok(None)
            }
            Err(why) => Ok(Some(why)),
        }
    }
}

impl Sink for websocket::Writer {
    fn send_line(&mut self, line: &str) -> std::io::Result<()> {
        self.send_text(line.trim_end_matches('\n'))
    }

    fn shut_down(&mut self) {
        websocket::Writer::shut_down(self);
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

/// The next non-blank line as JSON; Err says why the connection is over.
fn read_line<R: BufRead>(reader: &mut R) -> Result<Json, String> {
    loop {
        let mut line = Vec::new();
        let mut limited = std::io::Read::take(&mut *reader, MAX_LINE_BYTES as u64 + 1);
        match limited.read_until(b'\n', &mut line) {
            Ok(0) => return Err("the daemon closed the connection".into()),
            Ok(_) if line.len() > MAX_LINE_BYTES => return Err("the daemon sent an over-long line".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("reading from the daemon: {e}")),
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        // A line we cannot read is skipped, as the protocol asks of unknown content.
        if let Ok(value) = json::parse(text.trim()) {
            return Ok(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| OsString::from(v))
    }

    #[test]
    fn finds_the_socket_as_the_daemon_does() {
        let all = [("THINPATCH_SOCKET", "/s/x.sock"), ("XDG_RUNTIME_DIR", "/run/user/7"), ("TMPDIR", "/t")];
        assert_eq!(socket_path_from(env(&all), 7), PathBuf::from("/s/x.sock"));
        assert_eq!(socket_path_from(env(&all[1..]), 7), PathBuf::from("/run/user/7/thinpatch/thinpatch.sock"));
        assert_eq!(socket_path_from(env(&all[2..]), 7), PathBuf::from("/t/thinpatch-7/thinpatch.sock"));
        assert_eq!(socket_path_from(env(&[("XDG_RUNTIME_DIR", "")]), 9), PathBuf::from("/tmp/thinpatch-9/thinpatch.sock"));
    }

    #[test]
    fn the_endpoint_is_the_one_in_code_else_thinpatch_addr_else_the_socket() {
        let remote_env = [("THINPATCH_ADDR", "ws://10.0.2.2:7421"), ("THINPATCH_TOKEN", "ab12"), ("THINPATCH_SOCKET", "/s/x.sock")];
        let url = Url::parse("ws://10.0.2.2:7421/thinpatch").unwrap();
        assert_eq!(endpoint_from(&Target::Default, env(&remote_env), 7), Ok(Endpoint::Remote { url: url.clone(), token: Some("ab12".into()) }));
        assert_eq!(endpoint_from(&Target::Default, env(&remote_env[..1]), 7), Ok(Endpoint::Remote { url, token: None }));
        assert_eq!(endpoint_from(&Target::Default, env(&remote_env[2..]), 7), Ok(Endpoint::Socket("/s/x.sock".into())));
        let empty = [("THINPATCH_ADDR", ""), ("THINPATCH_SOCKET", "/s/x.sock")];
        assert_eq!(endpoint_from(&Target::Default, env(&empty), 7), Ok(Endpoint::Socket("/s/x.sock".into())));
        // What the program chose in code comes first.
        assert_eq!(endpoint_from(&Target::Socket("/mine.sock".into()), env(&remote_env), 7), Ok(Endpoint::Socket("/mine.sock".into())));
        let chosen = endpoint_from(&Target::Remote("ws://[::1]:9".into(), "cd34".into()), env(&remote_env), 7);
        assert_eq!(chosen, Ok(Endpoint::Remote { url: Url::parse("ws://[::1]:9").unwrap(), token: Some("cd34".into()) }));
        let tls = endpoint_from(&Target::Default, env(&[("THINPATCH_ADDR", "wss://host:443")]), 7).unwrap_err();
        assert!(tls.starts_with("THINPATCH_ADDR: wss://host:443: ") && tls.contains("ssh -R"), "{tls}");
        let bad_token = endpoint_from(&Target::Remote("ws://h:1".into(), "a b".into()), env(&[]), 7).unwrap_err();
        assert!(bad_token.contains("thinpatch token"), "{bad_token}");
    }

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

    #[test]
    fn reads_lines_skipping_blank_and_broken_ones() {
        let mut input: &[u8] = b"\n  \nnot json\n{\"type\":\"hello\"}\n";
        assert_eq!(read_line(&mut input).unwrap().get("type").and_then(Json::as_str), Some("hello"));
        assert_eq!(read_line(&mut input).unwrap_err(), "the daemon closed the connection");
    }

    /// A fake daemon on a real socket, for the entry point tests.
    mod fake_daemon {
        use super::super::*;
        use std::io::BufReader;
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
                let mut frame = vec![0x80 | opcode];
                match payload.len() {
                    n if n < 126 => frame.push(n as u8),
                    n if n <= 0xFFFF => {
                        frame.push(126);
                        frame.extend_from_slice(&(n as u16).to_be_bytes());
                    }
                    n => {
                        frame.push(127);
                        frame.extend_from_slice(&(n as u64).to_be_bytes());
                    }
                }
                frame.extend_from_slice(payload);
                self.writer.write_all(&frame).unwrap();
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
        assert!(libraries.try_recv().is_err(), "neither reached the patch callback");

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
