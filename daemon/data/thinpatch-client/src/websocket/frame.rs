//! RFC 6455 frames on byte slices, no I/O: encoding a client frame (always masked), reading a
//! server frame's header, and putting fragmented messages back together.

pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// A server frame's header, read from its first 2 to 14 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub fin: bool,
    pub opcode: u8,
    pub length: u64,
}

/// What the first bytes of a frame say.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// The header is this long in all; read that many bytes, then parse again.
    NeedBytes(usize),
    /// The header, and how many bytes it took.
    Header(Header, usize),
}

/// A frame or message the peer had no right to send: the connection is closed with this code
/// (RFC 6455, section 7.4.1) and message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ProtocolError {
    pub close_code: u16,
    pub message: String,
}

/// 1002: protocol error.
fn violation(message: impl Into<String>) -> ProtocolError {
    ProtocolError { close_code: 1002, message: message.into() }
}

/// Read a server frame's header from the start of `bytes` (at least 2 bytes).
pub(crate) fn parse_header(bytes: &[u8]) -> Result<Parsed, ProtocolError> {
    if bytes.len() < 2 {
        return Ok(Parsed::NeedBytes(2));
    }
    let (first, second) = (bytes[0], bytes[1]);
    if first & 0x70 != 0 {
        return Err(violation("the daemon set reserved bits in a frame (no extension was agreed)"));
    }
    if second & 0x80 != 0 {
        return Err(violation("the daemon sent a masked frame; servers must not mask"));
    }
    let (fin, opcode) = (first & 0x80 != 0, first & 0x0F);
    let short = second & 0x7F;
    let header_length = match short {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    if bytes.len() < header_length {
        return Ok(Parsed::NeedBytes(header_length));
    }
    let length = match short {
        126 => u16::from_be_bytes([bytes[2], bytes[3]]) as u64,
        127 => {
            let length = u64::from_be_bytes(bytes[2..10].try_into().expect("eight bytes"));
            if length >> 63 != 0 {
                return Err(violation("the daemon sent a frame length with the top bit set"));
            }
            length
        }
        n => n as u64,
    };
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin || length > 125 {
                return Err(violation("the daemon sent a fragmented or over-long control frame"));
            }
        }
        other => return Err(violation(format!("the daemon sent a frame with the unknown opcode {other:#x}"))),
    }
    Ok(Parsed::Header(Header { fin, opcode, length }, header_length))
}

/// A frame's first bytes: FIN and opcode, the mask bit and the payload length (7, 16 or 64 bits).
fn header(fin: bool, opcode: u8, masked: bool, length: usize, capacity: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(capacity + 14);
    frame.push(if fin { 0x80 } else { 0 } | opcode);
    let mask_bit = if masked { 0x80 } else { 0 };
    match length {
        n if n < 126 => frame.push(mask_bit | n as u8),
        n if n <= u16::MAX as usize => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame
}

/// A whole client frame: header, the mask key, and `payload` masked with it.
pub(crate) fn encode(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut frame = header(true, opcode, true, payload.len(), payload.len());
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
    frame
}

/// A server frame (unmasked), as the daemon sends it: for tests that play the daemon.
#[cfg(test)]
pub(crate) fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = header(fin, opcode, false, payload.len(), payload.len());
    frame.extend_from_slice(payload);
    frame
}

/// A close frame's payload: the status code and the reason, if any.
pub(crate) fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    // A control frame carries at most 125 bytes; cut the reason at a character boundary.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    payload
}

/// Read a close frame's payload: `(code, reason)`, both absent when the payload is empty.
pub(crate) fn parse_close(payload: &[u8]) -> Result<(Option<u16>, String), ProtocolError> {
    match payload {
        [] => Ok((None, String::new())),
        [_] => Err(violation("the daemon sent a one-byte close frame")),
        [high, low, reason @ ..] => Ok((Some(u16::from_be_bytes([*high, *low])), String::from_utf8_lossy(reason).into_owned())),
    }
}

/// A whole message from the daemon.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close(Option<u16>, String),
}

/// The largest messages taken, by kind: a JSON event, and a patch chunk (1 MiB of library
/// bytes and its small header).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub text: u64,
    pub binary: u64,
}

impl Limits {
    pub const DEFAULT: Limits = Limits { text: 4 << 20, binary: (1 << 20) + (64 << 10) };
}

/// Puts fragmented messages back together; control frames may come between the fragments.
pub(crate) struct Assembler {
    limits: Limits,
    /// The opcode and the bytes so far of a message whose last fragment has not come yet.
    open: Option<(u8, Vec<u8>)>,
}

impl Assembler {
    pub fn new(limits: Limits) -> Assembler {
        Assembler { limits, open: None }
    }

    /// Check a frame before its payload is read, so an over-long message is refused without
    /// reading (or allocating) it.
    pub fn admit(&self, header: &Header) -> Result<(), ProtocolError> {
        let (opcode, so_far) = match (header.opcode, &self.open) {
            (OP_CLOSE | OP_PING | OP_PONG, _) => return Ok(()),
            (OP_CONTINUATION, None) => return Err(violation("the daemon continued a message it never started")),
            (OP_CONTINUATION, Some((opcode, bytes))) => (*opcode, bytes.len() as u64),
            (_, Some(_)) => return Err(violation("the daemon started a new message inside a fragmented one")),
            (opcode, None) => (opcode, 0),
        };
        let (limit, kind) = if opcode == OP_TEXT { (self.limits.text, "text") } else { (self.limits.binary, "binary") };
        if so_far.saturating_add(header.length) > limit {
            // 1009: message too big.
            return Err(ProtocolError { close_code: 1009, message: format!("the daemon sent a {kind} message over {limit} bytes") });
        }
        Ok(())
    }

    /// Take a frame [`Assembler::admit`] let in, with its (unmasked) payload; a message when it is whole.
    pub fn push(&mut self, header: &Header, payload: Vec<u8>) -> Result<Option<Message>, ProtocolError> {
        self.admit(header)?;
        let (opcode, bytes) = match header.opcode {
            OP_PING => return Ok(Some(Message::Ping(payload))),
            OP_PONG => return Ok(Some(Message::Pong)),
            OP_CLOSE => {
                let (code, reason) = parse_close(&payload)?;
                return Ok(Some(Message::Close(code, reason)));
            }
            OP_CONTINUATION => {
                let (opcode, mut bytes) = self.open.take().expect("admit checked a message is open");
                bytes.extend_from_slice(&payload);
                (opcode, bytes)
            }
            opcode => (opcode, payload),
        };
        if !header.fin {
            self.open = Some((opcode, bytes));
            return Ok(None);
        }
        if opcode == OP_TEXT {
            let text = String::from_utf8(bytes).map_err(|_| violation("the daemon sent a text message that is not UTF-8"))?;
            return Ok(Some(Message::Text(text)));
        }
        Ok(Some(Message::Binary(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse one whole frame from `bytes` the way the reader does: header, then payload.
    fn read(bytes: &[u8]) -> (Header, &[u8]) {
        let mut wanted = 2;
        loop {
            match parse_header(&bytes[..wanted]).unwrap() {
                Parsed::NeedBytes(n) => wanted = n,
                Parsed::Header(header, used) => return (header, &bytes[used..used + header.length as usize]),
            }
        }
    }

    #[test]
    fn client_frames_are_masked_with_7_16_and_64_bit_lengths() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        // RFC 6455 section 5.7: a masked "Hello".
        assert_eq!(encode(OP_TEXT, b"Hello", mask), [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
        for (length, header) in [(125usize, 2usize), (126, 4), (65535, 4), (65536, 10)] {
            let payload: Vec<u8> = (0..length).map(|i| i as u8).collect();
            let frame = encode(OP_BINARY, &payload, mask);
            assert_eq!(frame.len(), header + 4 + length, "{length}");
            assert_eq!(frame[0], 0x82);
            assert_eq!(frame[1] & 0x80, 0x80, "the mask bit is set");
            let unmasked: Vec<u8> = frame[header + 4..].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
            assert_eq!(unmasked, payload);
        }
        assert_eq!(&encode(OP_PONG, b"", mask)[..2], [0x8A, 0x80]);
    }

    #[test]
    fn server_headers_with_each_length_form() {
        for length in [0usize, 125, 126, 65535, 65536, 70000] {
            let payload = vec![7u8; length];
            let frame = server_frame(true, OP_BINARY, &payload);
            let (header, body) = read(&frame);
            assert_eq!(header, Header { fin: true, opcode: OP_BINARY, length: length as u64 });
            assert_eq!(body, &payload[..]);
        }
        // RFC 6455 section 5.7: an unmasked "Hello", and a 256-byte binary frame.
        assert_eq!(parse_header(&[0x81, 0x05]).unwrap(), Parsed::Header(Header { fin: true, opcode: OP_TEXT, length: 5 }, 2));
        assert_eq!(parse_header(&[0x82, 0x7E]).unwrap(), Parsed::NeedBytes(4));
        assert_eq!(parse_header(&[0x82, 0x7E, 0x01, 0x00]).unwrap(), Parsed::Header(Header { fin: true, opcode: OP_BINARY, length: 256 }, 4));
        assert_eq!(parse_header(&[0x82, 0x7F, 0, 0]).unwrap(), Parsed::NeedBytes(10));
    }

    #[test]
    fn refuses_frames_a_server_must_not_send() {
        let refused = |bytes: &[u8]| parse_header(bytes).unwrap_err().message;
        assert!(refused(&[0x81, 0x85, 1, 2, 3, 4]).contains("masked"));
        assert!(refused(&[0xC1, 0x00]).contains("reserved bits"));
        assert!(refused(&[0x83, 0x00]).contains("unknown opcode"));
        assert!(refused(&[0x09, 0x00]).contains("control frame"), "a fragmented ping");
        assert!(refused(&[0x89, 0x7E, 0x00, 0x7E]).contains("control frame"), "a 126-byte ping");
        assert!(refused(&[0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 1]).contains("top bit"));
    }

    #[test]
    fn reassembles_fragments_with_control_frames_between_them() {
        let mut assembler = Assembler::new(Limits::DEFAULT);
        let frames = [
            server_frame(false, OP_TEXT, b"{\"type\":"),
            server_frame(true, OP_PING, b"p1"),
            server_frame(false, OP_CONTINUATION, "\"h\u{e9}".as_bytes()),
            server_frame(true, OP_PONG, b""),
            server_frame(true, OP_CONTINUATION, b"llo\"}"),
            server_frame(true, OP_BINARY, &[1, 2, 3]),
        ];
        let mut messages = Vec::new();
        for frame in &frames {
            let (header, payload) = read(frame);
            assembler.admit(&header).unwrap();
            messages.extend(assembler.push(&header, payload.to_vec()).unwrap());
        }
        assert_eq!(
            messages,
            [
                Message::Ping(b"p1".to_vec()),
                Message::Pong,
                Message::Text("{\"type\":\"h\u{e9}llo\"}".into()),
                Message::Binary(vec![1, 2, 3])
            ]
        );
        // A character split across two fragments is put back together before the UTF-8 check.
        let e_acute = "\u{e9}".as_bytes();
        let mut assembler = Assembler::new(Limits::DEFAULT);
        let first = Header { fin: false, opcode: OP_TEXT, length: 1 };
        assert_eq!(assembler.push(&first, e_acute[..1].to_vec()).unwrap(), None);
        let last = Header { fin: true, opcode: OP_CONTINUATION, length: 1 };
        assert_eq!(assembler.push(&last, e_acute[1..].to_vec()).unwrap(), Some(Message::Text("\u{e9}".into())));
    }

    #[test]
    fn refuses_out_of_order_fragments_over_long_messages_and_bad_text() {
        let header = |fin, opcode, length| Header { fin, opcode, length };
        let mut assembler = Assembler::new(Limits { text: 10, binary: 20 });
        assert!(assembler.admit(&header(true, OP_CONTINUATION, 1)).unwrap_err().message.contains("never started"));
        let too_big = assembler.admit(&header(true, OP_TEXT, 11)).unwrap_err();
        assert!(too_big.message.contains("text message over 10 bytes") && too_big.close_code == 1009, "{too_big:?}");
        assert!(assembler.admit(&header(true, OP_BINARY, 20)).is_ok());
        assert_eq!(assembler.push(&header(false, OP_TEXT, 6), b"123456".to_vec()).unwrap(), None);
        assert!(assembler.admit(&header(true, OP_CONTINUATION, 5)).unwrap_err().message.contains("over 10 bytes"));
        assert!(assembler.admit(&header(true, OP_BINARY, 1)).unwrap_err().message.contains("inside a fragmented"));
        assert!(assembler.admit(&header(true, OP_PING, 4)).is_ok(), "control frames still come through");
        let bad_utf8 = assembler.push(&header(true, OP_CONTINUATION, 1), vec![0xFF]).unwrap_err();
        assert!(bad_utf8.message.contains("not UTF-8"), "{bad_utf8:?}");
    }

    #[test]
    fn close_frames_carry_a_code_and_a_reason() {
        assert_eq!(parse_close(&[]).unwrap(), (None, String::new()));
        assert!(parse_close(&[3]).is_err());
        let payload = close_payload(1008, "wrong token: use the token that `thinpatch token` prints on the host");
        assert_eq!(&payload[..2], [0x03, 0xF0]);
        let (code, reason) = parse_close(&payload).unwrap();
        assert_eq!((code, reason.as_str()), (Some(1008), "wrong token: use the token that `thinpatch token` prints on the host"));
        // The reason is cut to fit a control frame, at a character boundary.
        let long = close_payload(1000, &"\u{e9}".repeat(100));
        assert!(long.len() <= 125 && std::str::from_utf8(&long[2..]).is_ok());
        let mut assembler = Assembler::new(Limits::DEFAULT);
        let close = Header { fin: true, opcode: OP_CLOSE, length: payload.len() as u64 };
        assert_eq!(assembler.push(&close, payload).unwrap(), Some(Message::Close(Some(1008), reason)));
    }
}
