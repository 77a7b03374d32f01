//! The WebSocket side of the transport seam: events as text messages, and each patch's bytes
//! in the binary messages after its `patch-ready`, written to a private directory and checked
//! before the event is handed on with `lib` pointing at the local copy.
use std::time::Duration;

use crate::json::{self, Json};
use crate::patch_file::{self, PatchFile};
use crate::payload::{self, Payload};
use crate::transport::{Ended, Incoming, Received, Sink};
use crate::websocket;

/// The daemon pings a WebSocket every 20 s: three missed pings and the connection is dead
/// (a host that went to sleep, a tunnel that dropped), so reconnect.
const REMOTE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A WebSocket's incoming half: one JSON event per text message; a patch's bytes follow its
/// `patch-ready` in binary messages, and are written to disk before the event is handed on.
pub(crate) struct RemoteIncoming {
    pub reader: websocket::Reader,
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
        let mut landing = match &described {
            Err(why) => Landing::Failed(why.clone()),
            Ok(payload) => match patch_file::patch_dir(|name| std::env::var_os(name)) {
                Err(why) => Landing::Failed(why),
                Ok(dir) => match patch_file::already_written(&dir, payload) {
                    Some(path) => Landing::Known(path),
                    None => match PatchFile::create(&dir, payload) {
                        Ok(file) => Landing::Writing(file, payload::Chunks::new(payload, &id)),
                        Err(why) => Landing::Failed(why),
                    },
                },
            },
        };
        for index in 0..count {
            let frame = match self.reader.next().map_err(Ended::Lost)? {
                websocket::Incoming::Binary(frame) => frame,
                websocket::Incoming::Text(_) => {
                    return Err(Ended::Lost(format!("the daemon sent a message where chunk {index} of {count} of a patch belonged")))
                }
                websocket::Incoming::Closed { code, reason } => return Err(Ended::Closed { code, reason }),
            };
            // Known bytes, or a first error: the rest is read past, to stay in step.
            if let Landing::Writing(file, chunks) = &mut landing {
                if let Err(why) = chunks.next(&frame).and_then(|data| file.write(data)) {
                    landing = Landing::Failed(why);
                }
            }
        }
        let path = match (landing, &described) {
            (Landing::Writing(file, chunks), Ok(payload)) => chunks.complete().and_then(|()| file.finish(payload)),
            (Landing::Known(path), _) => Ok(path),
            (Landing::Failed(why), _) => Err(why),
            (Landing::Writing(..), Err(why)) => Err(why.clone()),
        };
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

/// Where a patch's bytes go as they arrive.
enum Landing<'a> {
    Writing(PatchFile, payload::Chunks<'a>),
    /// This process already has these bytes, in the newest patch it wrote.
    Known(std::path::PathBuf),
    /// They cannot be used, and why; the chunks are still read past.
    Failed(String),
}

impl Sink for websocket::Writer {
    fn send_line(&mut self, line: &str) -> std::io::Result<()> {
        self.send_text(line.trim_end_matches('\n'))
    }

    fn shut_down(&mut self) {
        websocket::Writer::shut_down(self);
    }
}

