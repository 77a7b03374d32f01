//! The daemon's address and the HTTP/1.1 upgrade that opens a WebSocket, as text, no I/O.
use crate::{base64, sha1::sha1};

/// RFC 6455's fixed GUID, appended to the key before hashing it into the accept value.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The daemon's endpoint when the address names no path.
pub(crate) const DEFAULT_PATH: &str = "/thinpatch";
/// No TLS here: a remote daemon is reached through a tunnel or a network you trust.
const NO_TLS: &str = "thinpatch-client speaks no TLS: use ws:// through a tunnel (`ssh -R PORT:localhost:PORT` \
                      from the host, or `adb reverse tcp:PORT tcp:PORT` for an Android device), or on a network you trust";

/// A parsed `ws://host:port/path` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    /// As written, without brackets for IPv6.
    pub host: String,
    pub port: u16,
    /// Starts with `/`; may carry a query.
    pub path: String,
}

impl Url {
    /// Read `ws://host:port[/path]`. Errors say what a right address looks like.
    pub fn parse(address: &str) -> Result<Url, String> {
        let address = address.trim();
        let shape = "the address must look like ws://HOST:PORT (the daemon's WebSocket endpoint)";
        let Some((scheme, rest)) = address.split_once("://") else {
            return Err(format!("{address:?} has no scheme: {shape}"));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "ws" => {}
            "wss" => return Err(format!("{address}: {NO_TLS}")),
            _ => return Err(format!("{address:?}: {shape}")),
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let path = match path {
            "" | "/" => DEFAULT_PATH.to_string(),
            query if query.starts_with('?') => format!("{DEFAULT_PATH}{query}"),
            path => path.to_string(),
        };
        if authority.contains('@') {
            return Err(format!("{address:?}: user names in the address are not used; pass the token in THINPATCH_TOKEN"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or_else(|| format!("{address:?}: an IPv6 host needs its closing ']'"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{address:?} names no host: {shape}"));
        }
        let port = match port {
            None => return Err(format!("{address:?} names no port: {shape}")),
            Some(port) => port.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| format!("{address:?}: {port:?} is not a port number"))?,
        };
        if path.bytes().any(|b| b.is_ascii_control() || b == b' ') || host.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(format!("{address:?} contains spaces or control characters"));
        }
        Ok(Url { host: host.to_string(), port, path })
    }

    /// `host:port` as the `Host` header and socket address want it (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ws://{}{}", self.authority(), self.path)
    }
}

/// A token fit for a header line: what `thinpatch token` prints, without spaces or line breaks.
pub(crate) fn check_token(token: &str) -> Result<&str, String> {
    let token = token.trim();
    if token.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err("THINPATCH_TOKEN has spaces or control characters inside; copy exactly what `thinpatch token` prints on the host".into());
    }
    Ok(token)
}

/// The upgrade request. `key` is the base64 of 16 random bytes; the token, when there is
/// one, goes in `Authorization`.
pub(crate) fn request(url: &Url, key: &str, token: Option<&str>) -> String {
    let authorization = match token {
        Some(token) if !token.is_empty() => format!("Authorization: Bearer {token}\r\n"),
        _ => String::new(),
    };
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n\
         Sec-WebSocket-Version: 13\r\n{authorization}User-Agent: thinpatch-client/{}\r\n\r\n",
        url.path,
        url.authority(),
        env!("CARGO_PKG_VERSION"),
    )
}

/// The `Sec-WebSocket-Accept` value a server must answer `key` with.
pub(crate) fn accept_value(key: &str) -> String {
    base64::encode(&sha1(format!("{key}{GUID}").as_bytes()))
}

/// Why the daemon's answer to the upgrade was not a WebSocket.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Nothing at that path, or not a WebSocket server at all: the address is wrong.
    NotThere(String),
    /// A server that answered, but not as RFC 6455 says.
    Broken(String),
}

/// Check the response head (status line and headers, up to the blank line).
pub(crate) fn check_response(head: &str, key: &str, url: &Url) -> Result<(), Refusal> {
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let mut parts = status.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") {
        return Err(Refusal::NotThere(format!("{url} did not answer in HTTP; is THINPATCH_ADDR the daemon's WebSocket address?")));
    }
    match code {
        "101" => {}
        "404" => {
            return Err(Refusal::NotThere(format!(
                "{url}: nothing at {} (HTTP 404); the daemon's endpoint is {DEFAULT_PATH}",
                url.path
            )))
        }
        _ => return Err(Refusal::NotThere(format!("{url} refused the WebSocket upgrade: {status}"))),
    }
    let header = |name: &str| {
        head.split("\r\n")
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .find(|(key, _)| key.trim().eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim())
    };
    if !header("Upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err(Refusal::Broken(format!("{url} answered 101 without `Upgrade: websocket`")));
    }
    if !header("Connection").is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))) {
        return Err(Refusal::Broken(format!("{url} answered 101 without `Connection: Upgrade`")));
    }
    if header("Sec-WebSocket-Accept") != Some(accept_value(key).as_str()) {
        return Err(Refusal::Broken(format!("{url} answered with a wrong Sec-WebSocket-Accept")));
    }
    // None was offered, so none may be in use.
    if header("Sec-WebSocket-Extensions").is_some_and(|v| !v.is_empty()) {
        return Err(Refusal::Broken(format!("{url} turned on a WebSocket extension that was not offered")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn reads_addresses_with_the_endpoint_path_implied() {
        assert_eq!(url("ws://192.168.7.2:7421"), Url { host: "192.168.7.2".into(), port: 7421, path: "/thinpatch".into() });
        assert_eq!(url(" ws://localhost:7421/ ").path, "/thinpatch");
        assert_eq!(url("WS://h:1/thinpatch").to_string(), "ws://h:1/thinpatch");
        assert_eq!(url("ws://h:1/other/path").path, "/other/path");
        assert_eq!(url("ws://h:1?x=1").path, "/thinpatch?x=1");
        let v6 = url("ws://[::1]:9000");
        assert_eq!((v6.host.as_str(), v6.port, v6.authority()), ("::1", 9000, "[::1]:9000".to_string()));
        assert_eq!(v6.to_string(), "ws://[::1]:9000/thinpatch");
    }

    #[test]
    fn refuses_tls_and_addresses_it_cannot_use_and_says_what_to_do() {
        let tls = Url::parse("wss://host:443").unwrap_err();
        assert!(tls.contains("no TLS") && tls.contains("ssh -R") && tls.contains("adb reverse"), "{tls}");
        for (address, says) in [
            ("host:7421", "no scheme"),
            ("http://host:7421", "ws://HOST:PORT"),
            ("ws://host", "no port"),
            ("ws://:7421", "no host"),
            ("ws://host:0", "not a port"),
            ("ws://host:99999", "not a port"),
            ("ws://[::1:80", "closing ']'"),
            ("ws://me@host:80", "THINPATCH_TOKEN"),
            ("ws://host:80/a b", "spaces"),
        ] {
            let error = Url::parse(address).unwrap_err();
            assert!(error.contains(says), "{address}: {error}");
        }
    }

    #[test]
    fn accept_value_matches_rfc_6455s_example() {
        assert_eq!(accept_value("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn the_request_carries_the_key_version_and_token() {
        let text = request(&url("ws://[::1]:9000"), "dGhlIHNhbXBsZSBub25jZQ==", Some("ab12"));
        assert!(text.starts_with("GET /thinpatch HTTP/1.1\r\nHost: [::1]:9000\r\n"), "{text}");
        for line in ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13", "Authorization: Bearer ab12"] {
            assert!(text.contains(&format!("\r\n{line}\r\n")), "{line} in {text}");
        }
        assert!(text.ends_with("\r\n\r\n"));
        assert!(!request(&url("ws://h:1"), "k", None).contains("Authorization"));
        assert!(!request(&url("ws://h:1"), "k", Some("")).contains("Authorization"));
        assert_eq!(check_token(" ab12\n").unwrap(), "ab12");
        assert!(check_token("ab\r\nX-Evil: 1").unwrap_err().contains("thinpatch token"));
    }

    #[test]
    fn checks_the_servers_answer() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let u = url("ws://h:1");
        let good = "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        assert_eq!(check_response(good, key, &u), Ok(()));
        let wrong_accept = good.replace("s3pP", "AAAA");
        assert!(matches!(check_response(&wrong_accept, key, &u), Err(Refusal::Broken(m)) if m.contains("Sec-WebSocket-Accept")));
        let extension = format!("{good}\r\nSec-WebSocket-Extensions: permessage-deflate");
        assert!(matches!(check_response(&extension, key, &u), Err(Refusal::Broken(m)) if m.contains("extension")));
        let no_upgrade = good.replace("upgrade: WebSocket\r\n", "");
        assert!(matches!(check_response(&no_upgrade, key, &u), Err(Refusal::Broken(_))));
        let missing = check_response("HTTP/1.1 404 Not Found\r\nContent-Length: 0", key, &u);
        assert!(matches!(missing, Err(Refusal::NotThere(m)) if m.contains("HTTP 404") && m.contains("/thinpatch")));
        assert!(matches!(check_response("SSH-2.0-OpenSSH_9.2", key, &u), Err(Refusal::NotThere(m)) if m.contains("HTTP")));
    }
}
