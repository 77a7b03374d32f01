//! Directories only this program's user can write: the daemon's socket lives in one, and the
//! bytes of remote patches are written to one before they are loaded. Anyone else who could
//! write there could swap in their own socket or library.
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// `directory` must belong to `uid` and be closed to writes by others.
pub(crate) fn check(directory: &Path, uid: u32) -> Result<(), String> {
    let info = std::fs::metadata(directory).map_err(|e| format!("cannot inspect {}: {e}", directory.display()))?;
    if !info.is_dir() {
        return Err(format!("{} is not a directory", directory.display()));
    }
    if info.uid() != uid {
        return Err(format!(
            "its directory {} belongs to uid {}, not to this program's uid {uid}",
            directory.display(),
            info.uid()
        ));
    }
    if info.mode() & 0o022 != 0 {
        return Err(format!(
            "its directory {} is writable by other users (mode {:o}); `chmod 700` it",
            directory.display(),
            info.mode() & 0o777
        ));
    }
    Ok(())
}

/// Create `directory` (and missing parents) with mode 0700 if it is missing, then check it.
pub(crate) fn ensure(directory: &Path, uid: u32) -> Result<(), String> {
    if !directory.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(directory)
            .map_err(|e| format!("cannot create {}: {e}", directory.display()))?;
    }
    check(directory, uid)
}

/// A fresh directory with mode 0700 under `parent`, named `<prefix>-<random>`, as mkdtemp
/// makes: creating it fails if the name is taken, so nobody can have prepared it.
pub(crate) fn make_fresh(parent: &Path, prefix: &str) -> Result<PathBuf, String> {
    let mut last_error = None;
    for _ in 0..16 {
        let candidate = parent.join(format!("{prefix}-{:016x}", crate::random::next_u64()));
        match std::fs::DirBuilder::new().mode(0o700).create(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(format!("cannot create a directory in {}: {e}", parent.display())),
        }
    }
    Err(format!("cannot create a directory in {}: {}", parent.display(), last_error.map(|e| e.to_string()).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch() -> PathBuf {
        make_fresh(&std::env::temp_dir(), "tp-private-test").unwrap()
    }

    #[test]
    fn fresh_directories_are_0700_and_new() {
        let parent = scratch();
        let (a, b) = (make_fresh(&parent, "x").unwrap(), make_fresh(&parent, "x").unwrap());
        assert_ne!(a, b);
        assert_eq!(std::fs::metadata(&a).unwrap().mode() & 0o777, 0o700);
        check(&a, crate::sys::effective_uid()).unwrap();
        let _ = std::fs::remove_dir_all(&parent);
    }

    #[test]
    fn ensure_creates_missing_directories_0700_and_refuses_open_ones() {
        let parent = scratch();
        let uid = crate::sys::effective_uid();
        let nested = parent.join("a").join("cache");
        ensure(&nested, uid).unwrap();
        assert_eq!(std::fs::metadata(&nested).unwrap().mode() & 0o777, 0o700);
        std::fs::set_permissions(&nested, std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = ensure(&nested, uid).unwrap_err();
        assert!(error.contains("writable by other users") && error.contains("chmod 700"), "{error}");
        assert!(check(&nested, uid + 1).unwrap_err().contains("belongs to uid"));
        let file = parent.join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(check(&file, uid).unwrap_err().contains("not a directory"));
        let _ = std::fs::remove_dir_all(&parent);
    }
}
