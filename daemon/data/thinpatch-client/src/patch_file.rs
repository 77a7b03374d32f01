//! Writing a remote patch's bytes to disk as they arrive, so memory stays at one chunk: into a
//! temporary file beside the final one (created new, never through a symlink), hashed on the
//! way, synced, checked against the announced size and sha256, then renamed into place.
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::payload::Payload;
use crate::sha256::Sha256;
use crate::{private_dir, sys};

/// What this process has written.
struct Written {
    /// Every library path: the dynamic loader hands back the library it already loaded for a
    /// path it has seen, so a later patch that reuses a name (a restarted daemon numbers its
    /// patches afresh) gets a new one.
    paths: Vec<PathBuf>,
    /// The newest library in each directory, with its sha256. Only it is kept on disk: an
    /// older one stays mapped while loaded, and patches are never unloaded, so its file is
    /// not needed.
    newest: Vec<(String, PathBuf)>,
}

static WRITTEN: Mutex<Written> = Mutex::new(Written { paths: Vec::new(), newest: Vec::new() });

fn written() -> std::sync::MutexGuard<'static, Written> {
    WRITTEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The newest library this process wrote, when it has these very bytes (a patch replayed after
/// a reconnect): loading it again by the same path gives the library already loaded, with its
/// statics, instead of a second copy.
pub(crate) fn already_written(dir: &Path, payload: &Payload) -> Option<PathBuf> {
    let written = written();
    let (_, path) = written.newest.iter().find(|(sha256, path)| path.parent() == Some(dir) && *sha256 == payload.sha256)?;
    path.is_file().then(|| path.clone())
}
/// The directory made for this process when `THINPATCH_CACHE_DIR` is not set.
static FRESH_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Where patch bytes go: `$THINPATCH_CACHE_DIR` (made 0700 if missing; it must be private),
/// else a fresh 0700 directory under the temp dir, made once per process.
pub(crate) fn patch_dir(env: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf, String> {
    let uid = sys::effective_uid();
    if let Some(dir) = env("THINPATCH_CACHE_DIR").filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        return private_dir::ensure(&dir, uid)
            .map(|()| dir)
            .map_err(|e| format!("cannot keep patches in THINPATCH_CACHE_DIR: {e}; point it at a directory of your own"));
    }
    let mut fresh = FRESH_DIR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(dir) = fresh.as_ref().filter(|dir| private_dir::check(dir, uid).is_ok()) {
        return Ok(dir.clone());
    }
    let dir = private_dir::make_fresh(&std::env::temp_dir(), "thinpatch-patches")
        .map_err(|e| format!("{e}; set THINPATCH_CACHE_DIR to a directory this program can write"))?;
    *fresh = Some(dir.clone());
    Ok(dir)
}

/// A patch library being written.
pub(crate) struct PatchFile {
    file: File,
    temporary: PathBuf,
    destination: PathBuf,
    hasher: Sha256,
    written: u64,
    done: bool,
}

impl PatchFile {
    /// Start writing `payload.file` in `dir` (a private directory).
    pub fn create(dir: &Path, payload: &Payload) -> Result<PatchFile, String> {
        let destination = unused_name(dir, &payload.file);
        let temporary = dir.join(format!(".{}.{:016x}.part", payload.file, crate::random::next_u64()));
        // create_new is O_CREAT|O_EXCL: it fails on an existing name, a symlink included.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(&temporary)
            .map_err(|e| format!("cannot write the patch to {}: {e}", dir.display()))?;
        Ok(PatchFile { file, temporary, destination, hasher: Sha256::new(), written: 0, done: false })
    }

    pub fn write(&mut self, data: &[u8]) -> Result<(), String> {
        self.file.write_all(data).map_err(|e| format!("cannot write the patch to {}: {e}", self.temporary.display()))?;
        self.hasher.update(data);
        self.written += data.len() as u64;
        Ok(())
    }

    /// Check the bytes against `payload`, then put the file in place; its path.
    pub fn finish(mut self, payload: &Payload) -> Result<PathBuf, String> {
        if self.written != payload.size {
            return Err(format!("received {} bytes of the patch, not the {} announced", self.written, payload.size));
        }
        let hasher = std::mem::replace(&mut self.hasher, Sha256::new());
        let digest = hasher.finish_hex();
        if digest != payload.sha256 {
            return Err(format!(
                "the patch's bytes do not match their sha256 (announced {}, received {digest}); they were damaged on the way",
                payload.sha256
            ));
        }
        self.file.sync_all().map_err(|e| format!("cannot write the patch to {}: {e}", self.temporary.display()))?;
        // rename replaces a name, never follows it.
        std::fs::rename(&self.temporary, &self.destination)
            .map_err(|e| format!("cannot put the patch in place at {}: {e}", self.destination.display()))?;
        self.done = true;
        let mut written = written();
        written.paths.push(self.destination.clone());
        let dir = self.destination.parent();
        if let Some(at) = written.newest.iter().position(|(_, path)| path.parent() == dir) {
            let (_, older) = written.newest.remove(at);
            let _ = std::fs::remove_file(older);
        }
        written.newest.push((payload.sha256.clone(), self.destination.clone()));
        Ok(self.destination.clone())
    }
}

impl Drop for PatchFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

/// `dir/name`, or `dir/N-name` when this process already wrote (and maybe loaded) that path.
fn unused_name(dir: &Path, name: &str) -> PathBuf {
    let written = written();
    let taken = |path: &PathBuf| written.paths.contains(path);
    let mut path = dir.join(name);
    let mut n = 2;
    while taken(&path) {
        path = dir.join(format!("{n}-{name}"));
        n += 1;
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn payload_of(bytes: &[u8], file: &str) -> Payload {
        let mut hasher = Sha256::new();
        hasher.update(bytes);
        Payload { size: bytes.len() as u64, sha256: hasher.finish_hex(), chunks: 1, file: file.into() }
    }

    fn scratch() -> PathBuf {
        private_dir::make_fresh(&std::env::temp_dir(), "tp-patch-file-test").unwrap()
    }

    #[test]
    fn writes_in_pieces_checks_and_renames_into_place_and_never_reuses_a_path() {
        let dir = scratch();
        let payload = payload_of(b"hello patch", "patch-1.so");
        let mut file = PatchFile::create(&dir, &payload).unwrap();
        file.write(b"hello ").unwrap();
        file.write(b"patch").unwrap();
        let path = file.finish(&payload).unwrap();
        assert_eq!(path, dir.join("patch-1.so"));
        assert_eq!(std::fs::read(&path).unwrap(), b"hello patch");
        assert_eq!(already_written(&dir, &payload), Some(path.clone()), "the same bytes again need no new file");
        // New bytes under the same name (a restarted daemon): a new path, so the loader loads
        // them anew; the older file goes.
        let newer = payload_of(b"hello again", "patch-1.so");
        assert_eq!(already_written(&dir, &newer), None);
        let mut again = PatchFile::create(&dir, &newer).unwrap();
        again.write(b"hello again").unwrap();
        assert_eq!(again.finish(&newer).unwrap(), dir.join("2-patch-1.so"));
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["2-patch-1.so"], "only the newest is kept, and no temporary file");
        assert_eq!(already_written(&dir, &payload), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_or_short_patch_is_refused_and_leaves_nothing() {
        let dir = scratch();
        let payload = payload_of(b"right bytes", "patch-2.so");
        let mut file = PatchFile::create(&dir, &payload).unwrap();
        file.write(b"wrong bytes").unwrap();
        let error = file.finish(&payload).unwrap_err();
        assert!(error.contains("do not match their sha256") && error.contains(&payload.sha256), "{error}");
        let mut short = PatchFile::create(&dir, &payload).unwrap();
        short.write(b"right").unwrap();
        assert!(short.finish(&payload).unwrap_err().contains("received 5 bytes of the patch, not the 11"));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn uses_the_cache_dir_made_private_or_a_fresh_one() {
        let parent = scratch();
        let cache = parent.join("cache");
        let env = |name: &str| (name == "THINPATCH_CACHE_DIR").then(|| cache.clone().into_os_string());
        assert_eq!(patch_dir(env).unwrap(), cache);
        assert_eq!(std::fs::metadata(&cache).unwrap().mode() & 0o777, 0o700);
        std::os::unix::fs::symlink("/tmp", parent.join("link")).unwrap();
        let shared = |name: &str| (name == "THINPATCH_CACHE_DIR").then(|| parent.join("link").into_os_string());
        let error = patch_dir(shared).unwrap_err();
        assert!(error.contains("writable by other users") || error.contains("belongs to uid"), "{error}");
        let fresh = patch_dir(|_| None).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o700);
        assert_eq!(patch_dir(|_| None).unwrap(), fresh, "one per process");
        let _ = std::fs::remove_dir_all(&parent);
        let _ = std::fs::remove_dir_all(&fresh);
    }
}
