//! A minimal WebSocket client (RFC 6455) over a plain TCP stream: the handshake, masked
//! frames out, whole messages in, pings answered, closes echoed. The byte-level rules are in
//! `frame` and `handshake`; this module only moves bytes.
pub(crate) mod frame;
pub(crate) mod handshake;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use frame::{Assembler, Limits, Message, Parsed};
use handshake::{Refusal, Url};

/// The response head to the upgrade is a few hundred bytes; this is far beyond.
const MAX_HEAD_BYTES: usize = 16 << 10;
/// A send that makes no progress for this long means the connection is dead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a connection could not be opened.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// Nobody there yet (refused, timed out, no such host): try again later.
    Unavailable(String),
    /// Something answered that is not the daemon's endpoint.
    Refused(String),
}

/// What the daemon sent, once pings and pongs are dealt with.
#[derive(Debug)]
pub(crate) enum Incoming {
    Text(String),
    Binary(Vec<u8>),
    /// The daemon closed the connection (the close was answered).
    Closed { code: Option<u16>, reason: String },
}

/// The sending half, shared by whoever sends (and by the reader, to answer pings).
#[derive(Clone)]
pub(crate) struct Writer(Arc<Mutex<WriterState>>);

struct WriterState {
    stream: TcpStream,
    /// A close frame went out: nothing may follow it.
    closed: bool,
}

impl Writer {
    fn lock(&self) -> MutexGuard<'_, WriterState> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn send(&self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut state = self.lock();
        if state.closed {
            return Err(std::io::Error::new(std::io::ErrorKind::NotConnected, "the WebSocket is closed"));
        }
        if opcode == frame::OP_CLOSE {
            state.closed = true;
        }
        state.stream.write_all(&frame::encode(opcode, payload, crate::random::bytes()))
    }

    /// One text message.
    pub fn send_text(&self, text: &str) -> std::io::Result<()> {
        self.send(frame::OP_TEXT, text.as_bytes())
    }

    /// Send a close frame (once) and stop both directions.
    pub fn close(&self, code: u16, reason: &str) {
        let _ = self.send(frame::OP_CLOSE, &frame::close_payload(code, reason));
        self.shut_down();
    }

    pub fn shut_down(&self) {
        let _ = self.lock().stream.shutdown(Shutdown::Both);
    }
}

/// The receiving half.
pub(crate) struct Reader {
    stream: BufReader<TcpStream>,
    assembler: Assembler,
    writer: Writer,
}

/// Open `url`, sending `token` as `Authorization: Bearer`; `timeout` bounds the connect and
/// the handshake.
pub(crate) fn connect(url: &Url, token: Option<&str>, timeout: Duration) -> Result<(Reader, Writer), ConnectError> {
    let unavailable = |e: std::io::Error| ConnectError::Unavailable(format!("cannot connect to {url}: {e}"));
    let addresses: Vec<_> = (url.host.as_str(), url.port).to_socket_addrs().map_err(unavailable)?.collect();
    let mut last_error = std::io::Error::new(std::io::ErrorKind::NotFound, "the host name has no address");
    let mut stream = None;
    for address in addresses {
        match TcpStream::connect_timeout(&address, timeout) {
            Ok(connected) => {
                stream = Some(connected);
                break;
            }
            Err(e) => last_error = e,
        }
    }
    let stream = stream.ok_or_else(|| unavailable(last_error))?;
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(timeout)).map_err(unavailable)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT)).map_err(unavailable)?;
    let key = crate::base64::encode(&crate::random::bytes::<16>());
    let mut sending = stream.try_clone().map_err(unavailable)?;
    sending.write_all(handshake::request(url, &key, token).as_bytes()).map_err(unavailable)?;
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader).map_err(|e| ConnectError::Unavailable(format!("no answer to the WebSocket upgrade from {url}: {e}")))?;
    handshake::check_response(&head, &key, url).map_err(|refusal| match refusal {
        Refusal::NotThere(why) | Refusal::Broken(why) => ConnectError::Refused(why),
    })?;
    let writer = Writer(Arc::new(Mutex::new(WriterState { stream: sending, closed: false })));
    Ok((Reader { stream: reader, assembler: Assembler::new(Limits::DEFAULT), writer: writer.clone() }, writer))
}

/// The response's status line and headers, without the blank line that ends them. Bytes after
/// it stay in the reader: they are the first frame.
fn read_head(reader: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut head = String::new();
    loop {
        let mut line = Vec::new();
        let mut limited = (&mut *reader).take((MAX_HEAD_BYTES - head.len()) as u64);
        match limited.read_until(b'\n', &mut line) {
            Ok(0) => return Err("the connection closed".into()),
            Ok(_) if !line.ends_with(b"\n") => return Err("the answer is too long or cut short".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return Ok(head.trim_end_matches("\r\n").to_string());
        }
        head.push_str(line);
        head.push_str("\r\n");
    }
}

/// A broken rule: close with its code, and say why.
fn refuse(error: frame::ProtocolError) -> (Option<u16>, String) {
    (Some(error.close_code), error.message)
}

impl Reader {
    /// How long a read may wait for the next frame (None: forever).
    pub fn set_timeout(&self, timeout: Option<Duration>) {
        let _ = self.stream.get_ref().set_read_timeout(timeout);
    }

    /// The next text or binary message, or the daemon's close. Pings are answered on the way.
    /// Err: the connection is broken (it is shut down), and why.
    pub fn next(&mut self) -> Result<Incoming, String> {
        loop {
            let message = match self.next_frame() {
                Ok(Some(message)) => message,
                Ok(None) => continue,
                Err((code, why)) => {
                    match code {
                        Some(code) => self.writer.close(code, &why),
                        None => self.writer.shut_down(),
                    }
                    return Err(why);
                }
            };
            match message {
                Message::Text(text) => return Ok(Incoming::Text(text)),
                Message::Binary(bytes) => return Ok(Incoming::Binary(bytes)),
                Message::Ping(payload) => {
                    if let Err(e) = self.writer.send(frame::OP_PONG, &payload) {
                        self.writer.shut_down();
                        return Err(format!("cannot answer the daemon's ping: {e}"));
                    }
                }
                Message::Pong => {}
                Message::Close(code, reason) => {
                    // Echo the code, as RFC 6455 asks; an empty close is answered with an empty one.
                    let _ = match code {
                        Some(code) => self.writer.send(frame::OP_CLOSE, &code.to_be_bytes()),
                        None => self.writer.send(frame::OP_CLOSE, &[]),
                    };
                    self.writer.shut_down();
                    return Ok(Incoming::Closed { code, reason });
                }
            }
        }
    }

    /// One frame: a message when it completes one. Err carries the close code to send, if the
    /// daemon broke the protocol (None: the connection itself failed).
    fn next_frame(&mut self) -> Result<Option<Message>, (Option<u16>, String)> {
        let mut head = [0u8; 14];
        let mut have = 0;
        let (header, _) = loop {
            match frame::parse_header(&head[..have]).map_err(refuse)? {
                Parsed::NeedBytes(wanted) => {
                    self.read_exact(&mut head[have..wanted], have == 0)?;
                    have = wanted;
                }
                Parsed::Header(header, used) => break (header, used),
            }
        };
        self.assembler.admit(&header).map_err(refuse)?;
        // admit bounded the length, so this allocation is bounded too.
        let mut payload = vec![0u8; header.length as usize];
        self.read_exact(&mut payload, false)?;
        self.assembler.push(&header, payload).map_err(refuse)
    }

    fn read_exact(&mut self, buffer: &mut [u8], between_frames: bool) -> Result<(), (Option<u16>, String)> {
        self.stream.read_exact(buffer).map_err(|e| {
            let why = match e.kind() {
                std::io::ErrorKind::UnexpectedEof if between_frames => "the daemon closed the connection".to_string(),
                std::io::ErrorKind::UnexpectedEof => "the daemon closed the connection in the middle of a frame".to_string(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    "no word from the daemon for too long (it pings every 20 s); the connection is taken for dead".to_string()
                }
                _ => format!("reading from the daemon: {e}"),
            };
            (None, why)
        })
    }
}

#[cfg(test)]
mod tests {
    //! The client against a scripted server on a real TCP socket.
    use super::*;
    use frame::server_frame;
    use std::net::TcpListener;

    /// A server that checks the upgrade, answers it, writes `frames`, then hands back
    /// everything the client sent after the upgrade.
    fn serve(frames: Vec<Vec<u8>>) -> (Url, std::thread::JoinHandle<(String, Vec<u8>)>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::parse(&format!("ws://{}", listener.local_addr().unwrap())).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            while !request.ends_with("\r\n\r\n") {
                reader.read_line(&mut request).unwrap();
            }
            let key = request.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")).unwrap().trim().to_string();
            let mut out = stream;
            let mut answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                handshake::accept_value(&key)
            )
            .into_bytes();
            // The first frames ride in the same packet as the answer.
            answer.extend(frames.concat());
            out.write_all(&answer).unwrap();
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
            (request, rest)
        });
        (url, server)
    }

    /// Unmask the client's frames: (opcode, payload) each.
    fn client_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while bytes.len() >= 2 {
            assert_eq!(bytes[1] & 0x80, 0x80, "client frames are masked");
            let (length, at) = match bytes[1] & 0x7F {
                126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
                n => (n as usize, 2),
            };
            let mask = &bytes[at..at + 4];
            let payload = bytes[at + 4..at + 4 + length].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
            frames.push((bytes[0] & 0x0F, payload));
            bytes = &bytes[at + 4 + length..];
        }
        frames
    }

    #[test]
    fn handshakes_reassembles_answers_pings_and_echoes_the_close() {
        let (url, server) = serve(vec![
            server_frame(false, frame::OP_TEXT, b"{\"type\":"),
            server_frame(true, frame::OP_PING, b"are you there"),
            server_frame(true, frame::OP_CONTINUATION, b"\"hello\"}"),
            server_frame(true, frame::OP_BINARY, &[0, 1, 2]),
            server_frame(true, frame::OP_CLOSE, &frame::close_payload(1008, "wrong token: try again")),
        ]);
        let (mut reader, writer) = connect(&url, Some("t0ken"), Duration::from_secs(5)).unwrap();
        writer.send_text("{\"type\":\"subscribe\"}").unwrap();
        assert!(matches!(reader.next().unwrap(), Incoming::Text(t) if t == "{\"type\":\"hello\"}"));
        assert!(matches!(reader.next().unwrap(), Incoming::Binary(b) if b == [0, 1, 2]));
        assert!(matches!(reader.next().unwrap(), Incoming::Closed { code: Some(1008), reason } if reason == "wrong token: try again"));
        assert!(writer.send_text("late").is_err(), "nothing is sent after the close");
        let (request, sent) = server.join().unwrap();
        assert!(request.starts_with("GET /thinpatch HTTP/1.1\r\n") && request.contains("Authorization: Bearer t0ken\r\n"), "{request}");
        let frames = client_frames(&sent);
        assert_eq!(
            frames,
            [
                (frame::OP_TEXT, b"{\"type\":\"subscribe\"}".to_vec()),
                (frame::OP_PONG, b"are you there".to_vec()),
                (frame::OP_CLOSE, 1008u16.to_be_bytes().to_vec()),
            ]
        );
    }

    #[test]
    fn a_protocol_violation_is_closed_with_1002_and_said() {
        let (url, server) = serve(vec![server_frame(true, frame::OP_CONTINUATION, b"orphan")]);
        let (mut reader, _writer) = connect(&url, None, Duration::from_secs(5)).unwrap();
        assert!(reader.next().unwrap_err().contains("never started"));
        let (request, sent) = server.join().unwrap();
        assert!(!request.contains("Authorization"), "{request}");
        let frames = client_frames(&sent);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].0, frame::OP_CLOSE);
        assert_eq!(&frames[0].1[..2], 1002u16.to_be_bytes());
    }

    #[test]
    fn an_over_long_message_is_refused_with_1009_before_it_is_read() {
        // A text frame that announces 5 MiB, and none of it.
        let (url, server) = serve(vec![vec![0x81, 127, 0, 0, 0, 0, 0, 0x50, 0, 0]]);
        let (mut reader, _writer) = connect(&url, None, Duration::from_secs(5)).unwrap();
        let error = reader.next().unwrap_err();
        assert!(error.contains("text message over 4194304 bytes"), "{error}");
        let (_, sent) = server.join().unwrap();
        let frames = client_frames(&sent);
        assert_eq!((frames[0].0, &frames[0].1[..2]), (frame::OP_CLOSE, &1009u16.to_be_bytes()[..]));
    }

    #[test]
    fn nobody_listening_is_unavailable_and_a_404_is_refused() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = Url::parse(&format!("ws://127.0.0.1:{port}")).unwrap();
        assert!(matches!(connect(&url, None, Duration::from_secs(2)), Err(ConnectError::Unavailable(m)) if m.contains("cannot connect")));

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::parse(&format!("ws://{}/elsewhere", listener.local_addr().unwrap())).unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            std::thread::sleep(Duration::from_millis(200));
        });
        let refused = connect(&url, None, Duration::from_secs(5));
        assert!(matches!(refused, Err(ConnectError::Refused(m)) if m.contains("/elsewhere") && m.contains("404")));
    }
}
