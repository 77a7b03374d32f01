//! The seam between the protocol and the connection it runs over: lines on the local Unix
//! socket, messages on a WebSocket (see `remote`). The listener speaks the same protocol
//! through either.
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::json::{self, Json};

/// The protocol allows 1 MiB lines; anything far beyond is not our daemon.
const MAX_LINE_BYTES: usize = 16 << 20;

/// How a connection ended.
pub(crate) enum Ended {
    /// It broke or went quiet, and why.
    Lost(String),
    /// The daemon closed it with a WebSocket close frame.
    Closed { code: Option<u16>, reason: String },
}

/// What came in: an event, and for a remote patch, why its bytes could not be used (they were
/// damaged, or could not be written). The event's `lib` is the local copy when they could.
pub(crate) struct Received {
    pub event: Json,
    pub undelivered: Option<String>,
}

/// The receiving half of a connection: lines on the Unix socket, text messages (and patch
/// bytes in binary ones) on a WebSocket.
pub(crate) trait Incoming {
    fn next(&mut self) -> Result<Received, Ended>;
    /// Wait at most this long for the greeting; None: for as long as the connection is healthy.
    fn set_timeout(&mut self, timeout: Option<Duration>);
}

/// The sending half: one protocol line at a time (the trailing newline is the Unix socket's
/// framing; a WebSocket sends the line as one text message).
pub(crate) trait Sink: Send {
    fn send_line(&mut self, line: &str) -> std::io::Result<()>;
    fn shut_down(&mut self);
}

/// The Unix socket's incoming half: one JSON event per line.
pub(crate) struct LineIncoming(pub BufReader<UnixStream>);

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

    #[test]
    fn reads_lines_skipping_blank_and_broken_ones() {
        let mut input: &[u8] = b"\n  \nnot json\n{\"type\":\"hello\"}\n";
        assert_eq!(read_line(&mut input).unwrap().get("type").and_then(Json::as_str), Some("hello"));
        assert_eq!(read_line(&mut input).unwrap_err(), "the daemon closed the connection");
    }
}
