//! A small JSON reader and writer, enough for the daemon's protocol: objects, arrays,
//! strings, numbers. Numbers are kept as text and converted on use, so 64-bit addresses stay
//! exact.

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(String),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    pub fn get(&self, key: &str) -> Option<&Json> {
        self.entries()?.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Replace `key`'s value in an object (or add it); does nothing to other values.
    pub fn set(&mut self, key: &str, value: Json) {
        if let Json::Object(fields) = self {
            match fields.iter_mut().find(|(k, _)| k == key) {
                Some((_, old)) => *old = value,
                None => fields.push((key.to_string(), value)),
            }
        }
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Json> {
        match self {
            Json::Object(fields) => fields.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn entries(&self) -> Option<&[(String, Json)]> {
        match self {
            Json::Object(fields) => Some(fields),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Number(n) => n.parse().ok(),
            _ => None,
        }
    }

    /// The value as JSON text (used to echo a patch's `id` back to the daemon).
    pub fn to_json(&self) -> String {
        match self {
            Json::Null => "null".into(),
            Json::Bool(b) => b.to_string(),
            Json::Number(n) => n.clone(),
            Json::Str(s) => quote(s),
            Json::Array(items) => {
                let items: Vec<String> = items.iter().map(Json::to_json).collect();
                format!("[{}]", items.join(","))
            }
            Json::Object(fields) => {
                let fields: Vec<String> = fields.iter().map(|(k, v)| format!("{}:{}", quote(k), v.to_json())).collect();
                format!("{{{}}}", fields.join(","))
            }
        }
    }

    /// Numbers and strings as a person reads them (`7`, `abc`), for logs and callbacks.
    pub fn display(&self) -> String {
        match self {
            Json::Str(s) => s.clone(),
            other => other.to_json(),
        }
    }
}

/// `text` as a JSON string literal.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const MAX_DEPTH: usize = 64;

pub fn parse(text: &str) -> Result<Json, String> {
    let mut parser = Parser { bytes: text.as_bytes(), pos: 0 };
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.pos != parser.bytes.len() {
        return Err(format!("unexpected text at byte {}", parser.pos));
    }
    Ok(value)
}

struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Result<u8, String> {
        let byte = self.peek().ok_or("unexpected end of input")?;
        self.pos += 1;
        Ok(byte)
    }

    fn expect(&mut self, wanted: u8) -> Result<(), String> {
        self.skip_whitespace();
        match self.next()? {
            b if b == wanted => Ok(()),
            b => Err(format!("expected '{}' at byte {}, found '{}'", wanted as char, self.pos - 1, b as char)),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > MAX_DEPTH {
            return Err("nested too deeply".into());
        }
        self.skip_whitespace();
        match self.peek().ok_or("unexpected end of input")? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => Ok(Json::Str(self.string()?)),
            b't' => self.literal("true", Json::Bool(true)),
            b'f' => self.literal("false", Json::Bool(false)),
            b'n' => self.literal("null", Json::Null),
            b'-' | b'0'..=b'9' => self.number(),
            b => Err(format!("unexpected '{}' at byte {}", b as char, self.pos)),
        }
    }

    fn literal(&mut self, word: &str, value: Json) -> Result<Json, String> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(format!("bad literal at byte {}", self.pos))
        }
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')) {
            self.pos += 1;
        }
        let text = String::from_utf8_lossy(&self.bytes[start..self.pos]).into_owned();
        // Echoed back verbatim in replies, so it must be a number and nothing else.
        if text.parse::<f64>().is_err() {
            return Err(format!("bad number '{text}' at byte {start}"));
        }
        Ok(Json::Number(text))
    }

    fn object(&mut self, depth: usize) -> Result<Json, String> {
        self.expect(b'{')?;
        let mut fields = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Json::Object(fields));
        }
        loop {
            self.skip_whitespace();
            let key = self.string()?;
            self.expect(b':')?;
            fields.push((key, self.value(depth + 1)?));
            self.skip_whitespace();
            match self.next()? {
                b',' => continue,
                b'}' => return Ok(Json::Object(fields)),
                b => return Err(format!("expected ',' or '}}' at byte {}, found '{}'", self.pos - 1, b as char)),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json, String> {
        self.expect(b'[')?;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Json::Array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.skip_whitespace();
            match self.next()? {
                b',' => continue,
                b']' => return Ok(Json::Array(items)),
                b => return Err(format!("expected ',' or ']' at byte {}, found '{}'", self.pos - 1, b as char)),
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        if self.next()? != b'"' {
            return Err(format!("expected a string at byte {}", self.pos - 1));
        }
        let mut out: Vec<u8> = Vec::new();
        loop {
            match self.next()? {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let escaped = match self.next()? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        b => return Err(format!("bad escape '\\{}'", b as char)),
                    };
                    let mut buffer = [0u8; 4];
                    out.extend_from_slice(escaped.encode_utf8(&mut buffer).as_bytes());
                }
                b => out.push(b),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self.bytes.get(self.pos..self.pos + 4).ok_or("short \\u escape")?;
        let text = std::str::from_utf8(digits).map_err(|e| e.to_string())?;
        let value = u32::from_str_radix(text, 16).map_err(|_| format!("bad \\u escape '{text}'"))?;
        self.pos += 4;
        Ok(value)
    }

    fn unicode_escape(&mut self) -> Result<char, String> {
        let first = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&first) {
            // A surrogate pair: JSON writes characters outside the BMP as two escapes.
            if self.next()? != b'\\' || self.next()? != b'u' {
                return Err("unpaired surrogate".into());
            }
            let second = self.hex4()?;
            0x10000 + ((first - 0xD800) << 10) + (second.wrapping_sub(0xDC00) & 0x3FF)
        } else {
            first
        };
        char::from_u32(code).ok_or_else(|| format!("bad character U+{code:X}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_patch_ready_event() {
        let event = parse(
            r#"{"type":"patch-ready","id":8,"jump_table":{"lib":"/tmp/a b/p\u00e9.so","map":{"4198400":8192},
               "aslr_reference":18446744073709551615,"new_base_address":4096,"ifunc_count":0},"t":[1.5,true,null]}"#,
        )
        .unwrap();
        assert_eq!(event.get("type").and_then(Json::as_str), Some("patch-ready"));
        let table = event.get("jump_table").unwrap();
        assert_eq!(table.get("lib").and_then(Json::as_str), Some("/tmp/a b/pé.so"));
        assert_eq!(table.get("aslr_reference").and_then(Json::as_u64), Some(u64::MAX));
        let map = table.get("map").and_then(Json::entries).unwrap();
        assert_eq!(map[0].0, "4198400");
        assert_eq!(map[0].1.as_u64(), Some(8192));
    }

    #[test]
    fn rejects_broken_input() {
        assert!(parse(r#"{"a":1"#).is_err());
        assert!(parse(r#"{"a":1} x"#).is_err());
        assert!(parse(r#"{"a":1-2}"#).is_err());
        assert!(parse("[1,]").is_err());
        assert!(parse(&"[".repeat(1000)).is_err());
        assert_eq!(parse(r#""\ud83d\ude00""#).unwrap(), Json::Str("😀".into()));
    }

    #[test]
    fn writes_what_it_reads() {
        let text = r#"{"id":"b-7","n":-12.5e3,"s":"a\"b\\c\n\u0001é","l":[true,null,{}]}"#;
        let value = parse(text).unwrap();
        assert_eq!(parse(&value.to_json()).unwrap(), value);
        assert_eq!(value.to_json(), r#"{"id":"b-7","n":-12.5e3,"s":"a\"b\\c\n\u0001é","l":[true,null,{}]}"#);
        assert_eq!(value.get("id").map(Json::display).as_deref(), Some("b-7"));
        assert_eq!(quote("tab\tend"), r#""tab\tend""#);
    }
}
