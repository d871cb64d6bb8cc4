//! Whether a disk takes writes again: asked before a service reopens a store
//! that a failed write (a full disk) closed.
//!
//! Opening a redb file needs no new space, and neither does a small commit
//! into room the file already holds, so neither says whether the disk is
//! still full. Reserving real blocks does: this module reserves them in a
//! probe file beside the store and gives them back at once.

use std::io;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// Room a store's directory must have before the store is reopened: enough
/// for redb to grow its file a few times. Less would reopen a store whose
/// next write fails again at once.
pub const REOPEN_ROOM_BYTES: u64 = 4 << 20;

/// The probe file's name, in the store's directory. It exists only for the
/// moment of a check; one left by a killed process is replaced by the next.
pub const PROBE_FILE: &str = ".room-check";

/// Checks that a file in `dir` can grow by `bytes`: reserves them
/// (posix_fallocate, which allocates real blocks, not a sparse hole) in
/// [`PROBE_FILE`] and removes it. Fails as the store's write would: ENOSPC
/// on a full disk, EDQUOT over a quota, EFBIG past this process's file-size
/// limit.
pub fn check_room(dir: &Path, bytes: u64) -> io::Result<()> {
    let probe = dir.join(PROBE_FILE);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&probe)?;
    let len = i64::try_from(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let reserved = nix::fcntl::posix_fallocate(&file, 0, len).map_err(io::Error::from);
    drop(file);
    let removed = std::fs::remove_file(&probe);
    reserved.and(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_reserved_and_given_back() {
        let dir = tempfile::tempdir().unwrap();
        check_room(dir.path(), REOPEN_ROOM_BYTES).unwrap();
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "the probe file is removed"
        );
    }

    #[test]
    fn a_missing_directory_is_an_error_not_room() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_room(&dir.path().join("gone"), 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
