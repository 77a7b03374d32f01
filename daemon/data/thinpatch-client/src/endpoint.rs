//! Where the daemon is: the socket the program named, else `THINPATCH_ADDR` (a daemon on
//! another host), else the daemon's own socket, found as the daemon finds it.
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::sys;
use crate::websocket::handshake::{self, Url};

/// Where the daemon listens, found exactly as the daemon finds it.
pub fn default_socket_path() -> PathBuf {
    socket_path_from(|name| std::env::var_os(name), sys::effective_uid())
}

pub(crate) fn socket_path_from(env: impl Fn(&str) -> Option<OsString>, uid: u32) -> PathBuf {
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
pub(crate) fn endpoint_from(target: &Target, env: impl Fn(&str) -> Option<OsString>, uid: u32) -> Result<Endpoint, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
