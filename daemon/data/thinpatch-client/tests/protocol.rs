//! The listener against a small fake daemon on real Unix sockets: reconnecting after a
//! restart, refusing a daemon it must not trust, and reporting a patch that fails to load.
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use thinpatch_client::{Client, Event};

const NOBODY: u32 = 65534;
const WAIT: Duration = Duration::from_secs(15);

/// A fresh private directory (0700) for one test's socket.
fn private_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("tpc-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst)));
    let _ = fs::remove_dir_all(&dir);
    fs::DirBuilder::new().mode(0o700).create(&dir).expect("create a temp dir");
    dir
}

fn is_root() -> bool {
    fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

fn start_client(socket: &Path) -> Receiver<Event> {
    let (sender, events) = channel();
    Client::new()
        .socket(socket)
        .on_event(move |event| {
            let _ = sender.send(event.clone());
        })
        .spawn()
        .expect("spawn the listener");
    events
}

fn wait_for(events: &Receiver<Event>, what: &str, wanted: impl Fn(&Event) -> bool) -> Event {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match events.recv_timeout(left) {
            Ok(event) if wanted(&event) => return event,
            Ok(event) => seen.push(event),
            Err(_) => break,
        }
    }
    panic!("no {what} event within {WAIT:?}; saw {seen:?}");
}

/// One accepted connection of the fake daemon.
struct Connection {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Connection {
    fn accept(listener: &UnixListener) -> Connection {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + WAIT;
        let stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("the client did not connect: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let writer = stream.try_clone().unwrap();
        let mut connection = Connection { reader: BufReader::new(stream), writer };
        connection.send(r#"{"type":"hello","protocol":1,"version":"0.1.0","pid":1,"seq":1}"#);
        connection
    }

    fn send(&mut self, line: &str) {
        self.writer.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    fn receive(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a line from the client");
        assert!(line.ends_with('\n'), "the client closed the connection (got {line:?})");
        line.trim_end().to_string()
    }

    /// Accept, greet, and take the subscribe request; answers `subscribed`.
    fn subscribed(listener: &UnixListener) -> (Connection, String) {
        let mut connection = Connection::accept(listener);
        let request = connection.receive();
        connection.send(r#"{"type":"subscribed","re":1,"seq":2}"#);
        (connection, request)
    }
}

#[test]
fn subscribes_with_its_pid_and_build_id_and_reconnects_after_the_daemon_restarts() {
    let dir = private_dir();
    let socket = dir.join("thinpatch.sock");
    let daemon = UnixListener::bind(&socket).unwrap();
    let events = start_client(&socket);

    let (connection, request) = Connection::subscribed(&daemon);
    let pid = std::process::id();
    assert!(request.starts_with(&format!(r#"{{"type":"subscribe","seq":1,"pid":{pid}"#)), "{request}");
    if let Some(at) = request.find(r#""build_id":""#) {
        let id = &request[at + 12..request.len() - 2];
        assert!(id.len() >= 16 && id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{request}");
    }
    wait_for(&events, "Subscribed", |e| matches!(e, Event::Subscribed { .. }));

    // The daemon goes away; a new one starts on the same path a little later.
    drop(connection);
    drop(daemon);
    fs::remove_file(&socket).unwrap();
    wait_for(&events, "Disconnected", |e| matches!(e, Event::Disconnected { .. }));
    std::thread::sleep(Duration::from_millis(300));
    let restarted = UnixListener::bind(&socket).unwrap();
    let (_connection, again) = Connection::subscribed(&restarted);
    assert_eq!(again, request);
    wait_for(&events, "Subscribed", |e| matches!(e, Event::Subscribed { .. }));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_patch_that_cannot_load_is_reported_as_not_applied_and_the_listener_carries_on() {
    let dir = private_dir();
    let socket = dir.join("thinpatch.sock");
    let daemon = UnixListener::bind(&socket).unwrap();
    let events = start_client(&socket);
    let (mut connection, _) = Connection::subscribed(&daemon);
    let pid = std::process::id();
    let missing = dir.join("libpatch-7.so");
    let patch = |id: &str, for_pid: u32| {
        format!(
            r#"{{"type":"patch-ready","id":{id},"for_pid":{for_pid},"seq":5,"jump_table":{{"lib":"{}","map":{{"4096":64}},"aslr_reference":4000,"new_base_address":32,"ifunc_count":0}}}}"#,
            missing.display()
        )
    };

    connection.send(&patch("7", pid));
    let report = connection.receive();
    let head = format!(r#"{{"type":"patch-result","seq":2,"id":7,"pid":{pid},"applied":false,"message":""#);
    assert!(report.starts_with(&head), "{report}");
    assert!(report.contains(&missing.display().to_string()), "the message names the library: {report}");
    wait_for(&events, "PatchFailed", |e| matches!(e, Event::PatchFailed { id, .. } if id == "7"));

    // A daemon that does not know `patch-result` answers with an error: ignored.
    connection.send(r#"{"type":"error","re":2,"message":"unknown request type 'patch-result'","seq":6}"#);
    connection.send(&patch("\"b-8\"", pid + 1));
    let report = connection.receive();
    assert!(report.starts_with(r#"{"type":"patch-result","seq":3,"id":"b-8","#), "{report}");
    assert!(report.contains(&format!(r#""applied":false,"message":"built for process {}, not for this process {pid}""#, pid + 1)), "{report}");

    connection.send(r#"{"type":"build-started","id":9,"seq":7}"#);
    wait_for(&events, "Message", |e| matches!(e, Event::Message { kind, id, .. } if kind == "build-started" && id.as_deref() == Some("9")));
    let _ = fs::remove_dir_all(&dir);
}

/// The client must not even connect: the test's daemon sees no connection.
fn assert_refused_without_connecting(socket: &Path, daemon: &UnixListener, reason: &str) {
    let events = start_client(socket);
    let refused = wait_for(&events, "Refused", |e| matches!(e, Event::Refused { .. }));
    let Event::Refused { reason: said } = refused else { unreachable!() };
    assert!(said.contains(reason), "{said:?} should say {reason:?}");
    daemon.set_nonblocking(true).unwrap();
    assert!(daemon.accept().is_err(), "the client connected to a daemon it refused");
}

#[test]
fn refuses_a_socket_directory_other_users_can_write() {
    let dir = private_dir();
    let socket = dir.join("thinpatch.sock");
    let daemon = UnixListener::bind(&socket).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    assert_refused_without_connecting(&socket, &daemon, "is writable by other users (mode 777)");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn refuses_a_socket_directory_of_another_user() {
    if !is_root() {
        eprintln!("not root: cannot give a directory to another user here");
        return;
    }
    let dir = private_dir();
    let socket = dir.join("thinpatch.sock");
    let daemon = UnixListener::bind(&socket).unwrap();
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    assert_refused_without_connecting(&socket, &daemon, &format!("belongs to uid {NOBODY}"));
    let _ = fs::remove_dir_all(&dir);
}

const CHILD_DIR: &str = "THINPATCH_CLIENT_TEST_FAKE_DAEMON_DIR";

/// Run by `refuses_a_daemon_run_by_another_user` as uid nobody: listen, greet whoever
/// connects, and print what it sends.
#[test]
#[ignore = "a fake daemon that another test runs under another uid"]
fn fake_daemon_of_another_user() {
    let Some(dir) = std::env::var_os(CHILD_DIR).map(PathBuf::from) else {
        eprintln!("nothing to do: refuses_a_daemon_run_by_another_user runs this as its fake daemon");
        return;
    };
    let listener = UnixListener::bind(dir.join("thinpatch.sock")).unwrap();
    let (mut stream, _) = listener.accept().unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    // The client may already have hung up: a failed write is part of the test.
    let _ = stream.write_all(b"{\"type\":\"hello\",\"protocol\":1,\"version\":\"0.1.0\",\"pid\":1,\"seq\":1}\n");
    let mut line = String::new();
    let _ = BufReader::new(stream).read_line(&mut line);
    println!("FAKE-DAEMON-GOT {line:?}");
}

#[test]
fn refuses_a_daemon_run_by_another_user() {
    if !is_root() {
        eprintln!("not root: cannot run a daemon as another user here");
        return;
    }
    // The other user's daemon binds in a directory it can write, and the socket is then moved
    // into a private directory of ours: only the peer check can catch it.
    let staging = private_dir();
    let exe = staging.join("fake-daemon");
    fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&staging, fs::Permissions::from_mode(0o755)).unwrap();
    let bind_dir = staging.join("bind");
    fs::DirBuilder::new().mode(0o700).create(&bind_dir).unwrap();
    std::os::unix::fs::chown(&bind_dir, Some(NOBODY), Some(NOBODY)).unwrap();
    let child = std::process::Command::new(&exe)
        .args(["--ignored", "--exact", "fake_daemon_of_another_user", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, &bind_dir)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let bound = bind_dir.join("thinpatch.sock");
    let deadline = Instant::now() + WAIT;
    while !bound.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let private = private_dir();
    let socket = private.join("thinpatch.sock");
    fs::rename(&bound, &socket).expect("the fake daemon did not bind");

    let events = start_client(&socket);
    let refused = wait_for(&events, "Refused", |e| matches!(e, Event::Refused { .. }));
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Event::Refused { reason } = refused else { unreachable!() };
    assert!(reason.contains(&format!("run by uid {NOBODY}, not by this program's uid 0")), "{reason}");
    // It connected (that is how it learnt the peer's uid) and hung up without subscribing.
    assert!(stdout.contains("FAKE-DAEMON-GOT \"\""), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let _ = fs::remove_dir_all(&staging);
    let _ = fs::remove_dir_all(&private);
}
