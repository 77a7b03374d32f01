//! A remote patch's bytes as the wire describes them, no I/O: the `payload` of a
//! `patch-ready` event, and the binary chunk frames that follow it (`u32` big-endian header
//! length, a JSON header `{"id", "index", "offset"}`, then up to 1 MiB of library bytes).
use crate::json::{self, Json};

/// Library bytes in one chunk, at most.
pub(crate) const CHUNK_BYTES: u64 = 1 << 20;
/// A patch library larger than this is refused (debug patches of big programs stay far below).
pub(crate) const MAX_PATCH_BYTES: u64 = 1 << 30;
/// A chunk's JSON header is a few dozen bytes; anything near this is not one.
const MAX_CHUNK_HEADER: usize = 4096;

/// The `payload` object of a `patch-ready` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Payload {
    pub size: u64,
    /// 64 lowercase hex characters.
    pub sha256: String,
    pub chunks: u64,
    /// The library's file name, checked to be a plain name.
    pub file: String,
}

/// How many chunk frames follow the event, read on its own: even a payload that is otherwise
/// wrong (a library over this client's limit, too) must have its chunks read past to stay in
/// step with the daemon. Dropping the connection instead would only have the patch sent again.
pub(crate) fn chunk_count(payload: &Json) -> Option<u64> {
    payload.get("chunks").and_then(Json::as_u64)
}

impl Payload {
    pub fn from_json(payload: &Json) -> Result<Payload, String> {
        let size = payload.get("size").and_then(Json::as_u64).ok_or("the patch's payload has no `size`")?;
        if size > MAX_PATCH_BYTES {
            return Err(format!("the patch library is {size} bytes, over the {MAX_PATCH_BYTES} this client takes"));
        }
        let sha256 = payload.get("sha256").and_then(Json::as_str).ok_or("the patch's payload has no `sha256`")?;
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("the patch's payload has a malformed sha256 {sha256:?}"));
        }
        let chunks = chunk_count(payload).ok_or("the patch's payload has no usable `chunks`")?;
        let expected = size.div_ceil(CHUNK_BYTES).max(1);
        if chunks != expected {
            return Err(format!("the patch's payload says {chunks} chunks for {size} bytes; 1 MiB chunks make {expected}"));
        }
        let file = payload.get("file").and_then(Json::as_str).ok_or("the patch's payload has no `file`")?;
        check_file_name(file)?;
        Ok(Payload { size, sha256: sha256.to_ascii_lowercase(), chunks, file: file.to_string() })
    }
}

/// A plain file name: no directories, nothing hidden, nothing a shell or loader reads specially.
pub(crate) fn check_file_name(name: &str) -> Result<(), String> {
    let plain = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b));
    if plain {
        Ok(())
    } else {
        Err(format!("the patch's file name {name:?} is not a plain file name"))
    }
}

/// Follows the chunks of one payload as they come, in order.
pub(crate) struct Chunks<'a> {
    payload: &'a Payload,
    id: &'a Json,
    index: u64,
    offset: u64,
}

impl<'a> Chunks<'a> {
    /// For the chunks of `payload`, sent for the `patch-ready` event whose `id` is `id`.
    pub fn new(payload: &'a Payload, id: &'a Json) -> Chunks<'a> {
        Chunks { payload, id, index: 0, offset: 0 }
    }

    /// The library bytes in the next chunk frame, once its header is the one expected.
    pub fn next<'f>(&mut self, frame: &'f [u8]) -> Result<&'f [u8], String> {
        let which = format!("chunk {} of {}", self.index, self.payload.chunks);
        let bad = |why: &str| format!("{which} of the patch's bytes {why}");
        let length_bytes: [u8; 4] = frame.get(..4).and_then(|b| b.try_into().ok()).ok_or_else(|| bad("is too short for its header"))?;
        let header_length = u32::from_be_bytes(length_bytes) as usize;
        if header_length > MAX_CHUNK_HEADER || frame.len() < 4 + header_length {
            return Err(bad("has a header length that does not fit"));
        }
        let header = std::str::from_utf8(&frame[4..4 + header_length]).map_err(|_| bad("has a header that is not UTF-8"))?;
        let header = json::parse(header).map_err(|e| bad(&format!("has a header that is not JSON ({e})")))?;
        let data = &frame[4 + header_length..];
        if header.get("id") != Some(self.id) {
            return Err(bad(&format!("belongs to patch {}, not to patch {}", header.get("id").map(Json::to_json).unwrap_or_default(), self.id.to_json())));
        }
        if header.get("index").and_then(Json::as_u64) != Some(self.index) {
            return Err(bad("came out of order"));
        }
        if header.get("offset").and_then(Json::as_u64) != Some(self.offset) {
            return Err(bad(&format!("does not start at byte {}", self.offset)));
        }
        if self.index >= self.payload.chunks || data.len() as u64 > CHUNK_BYTES || self.offset + data.len() as u64 > self.payload.size {
            return Err(bad(&format!("runs past the {} bytes announced", self.payload.size)));
        }
        self.index += 1;
        self.offset += data.len() as u64;
        Ok(data)
    }

    /// All chunks came and they cover exactly the announced size.
    pub fn complete(&self) -> Result<(), String> {
        if self.index == self.payload.chunks && self.offset == self.payload.size {
            Ok(())
        } else {
            Err(format!("the patch's bytes stopped at byte {} of {}", self.offset, self.payload.size))
        }
    }
}

#[cfg(test)]
pub(crate) fn chunk_frame(id: &str, index: u64, offset: u64, data: &[u8]) -> Vec<u8> {
    let header = format!(r#"{{"id":{id},"index":{index},"offset":{offset}}}"#);
    let mut frame = (header.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(header.as_bytes());
    frame.extend_from_slice(data);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn payload(size: u64, chunks: u64, file: &str) -> Result<Payload, String> {
        Payload::from_json(&json::parse(&format!(r#"{{"size":{size},"sha256":"{HASH}","chunks":{chunks},"file":"{file}"}}"#)).unwrap())
    }

    #[test]
    fn reads_a_payload_and_refuses_one_that_does_not_add_up() {
        let p = payload(3 << 20, 3, "patch-8.so").unwrap();
        assert_eq!((p.size, p.chunks, p.file.as_str(), p.sha256.as_str()), (3 << 20, 3, "patch-8.so", HASH));
        assert_eq!(payload(0, 1, "p.so").unwrap().chunks, 1);
        assert_eq!(payload((1 << 20) + 1, 2, "p.so").unwrap().chunks, 2);
        assert!(payload(10, 2, "p.so").unwrap_err().contains("1 MiB chunks make 1"));
        assert!(payload(MAX_PATCH_BYTES + 1, 1025, "p.so").unwrap_err().contains("over the"));
        for name in ["../x.so", "/etc/x.so", ".hidden.so", "a/b.so", "", "x\n.so"] {
            let error = payload(1, 1, &name.replace('\n', "\\n")).unwrap_err();
            assert!(error.contains("not a plain file name"), "{name:?}: {error}");
        }
        let bad_hash = json::parse(r#"{"size":1,"sha256":"abc","chunks":1,"file":"p.so"}"#).unwrap();
        assert!(Payload::from_json(&bad_hash).unwrap_err().contains("malformed sha256"));
        assert_eq!(chunk_count(&bad_hash), Some(1), "the chunks are read past even so");
    }

    #[test]
    fn takes_chunks_in_order_and_refuses_anything_else() {
        let p = payload((1 << 20) + 5, 2, "p.so").unwrap();
        let id = Json::Number("8".into());
        let full = vec![7u8; 1 << 20];
        let mut chunks = Chunks::new(&p, &id);
        assert_eq!(chunks.next(&chunk_frame("8", 0, 0, &full)).unwrap().len(), 1 << 20);
        assert!(chunks.complete().unwrap_err().contains("stopped at byte 1048576"));
        assert_eq!(chunks.next(&chunk_frame("8", 1, 1 << 20, b"tail!")).unwrap(), b"tail!");
        chunks.complete().unwrap();

        let refused = |frame: Vec<u8>| Chunks::new(&p, &id).next(&frame).unwrap_err();
        assert!(refused(chunk_frame("9", 0, 0, b"x")).contains("belongs to patch 9"));
        assert!(refused(chunk_frame("\"8\"", 0, 0, b"x")).contains("not to patch 8"));
        assert!(refused(chunk_frame("8", 1, 0, b"x")).contains("out of order"));
        assert!(refused(chunk_frame("8", 0, 4, b"x")).contains("start at byte 0"));
        assert!(refused(chunk_frame("8", 0, 0, &vec![0u8; (1 << 20) + 1])).contains("runs past"));
        assert!(refused(vec![0, 0]).contains("too short"));
        assert!(refused(vec![0, 0, 0, 50, b'{']).contains("does not fit"));
        assert!(refused(vec![0, 0, 0, 1, b'{']).contains("not JSON"));
        let small = payload(4, 1, "p.so").unwrap();
        assert!(Chunks::new(&small, &id).next(&chunk_frame("8", 0, 0, b"12345")).unwrap_err().contains("runs past the 4 bytes"));
    }
}
