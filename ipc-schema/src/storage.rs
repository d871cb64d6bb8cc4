//! Whether a disk takes writes again: asked before a service reopens a store
//! that a failed write (a full disk) closed.
//!
//! Opening a redb file needs no new space, and neither does a small commit
//! into room the file already holds, so neither says whether the disk is
//! still full. Reserving real blocks does: this module reserves them in a
//! probe file beside the store and gives them back at once.
//!
//! It also says what an operator must do about a store that is closed
//! ([`Remedy`]): a full disk, a damaged file and a failing disk each need
//! something else, and advice for the wrong one wastes the time of whoever
//! is woken at night to fix it.

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

/// The errors that mean "no room": a full disk, a quota, a file-size limit.
const NO_ROOM: [i32; 3] = [libc::ENOSPC, libc::EDQUOT, libc::EFBIG];

/// What must happen before a closed store can be written again, judged
/// from the error that closed it (or that keeps it closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remedy {
    /// The disk (or a quota, or a file-size limit) has no room.
    FreeSpace,
    /// The store's file cannot be read as its database: it was damaged, or
    /// replaced by something else, outside the service.
    RestoreFile,
    /// The disk has room and the file is not known to be damaged, yet the
    /// write failed: an I/O error, a read-only remount, a permission taken away.
    CheckDisk,
}

impl Remedy {
    /// For an I/O error from the store's file.
    pub fn of_io(err: &io::Error) -> Remedy {
        if err
            .raw_os_error()
            .is_some_and(|code| NO_ROOM.contains(&code))
        {
            return Remedy::FreeSpace;
        }
        match err.kind() {
            // How redb reports a file that is not (or no longer) one of its
            // databases: a wrong magic number, a file cut short.
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => Remedy::RestoreFile,
            _ => Remedy::CheckDisk,
        }
    }

    /// For a write into a store in `dir` that failed with `reason`, an
    /// error whose kind was lost on the way (redb hands some on only as
    /// text): full if the reason holds the system's words for a full disk,
    /// or if the disk cannot give [`REOPEN_ROOM_BYTES`] now.
    pub fn after_failed_write(reason: &str, dir: &Path) -> Remedy {
        let says_full = NO_ROOM
            .iter()
            .any(|&code| reason.contains(&io::Error::from_raw_os_error(code).to_string()));
        if says_full {
            return Remedy::FreeSpace;
        }
        match check_room(dir, REOPEN_ROOM_BYTES) {
            Ok(()) => Remedy::CheckDisk,
            Err(err) => Remedy::of_room_check(&err),
        }
    }

    /// For a failed [`check_room`]: the disk is full, or something else
    /// is wrong with it. Never [`Remedy::RestoreFile`]: the probe is a file
    /// of its own, so its failure says nothing about the store's file.
    pub fn of_room_check(err: &io::Error) -> Remedy {
        match Remedy::of_io(err) {
            Remedy::FreeSpace => Remedy::FreeSpace,
            _ => Remedy::CheckDisk,
        }
    }

    /// Whether what the store acknowledged is still in its file, to be
    /// served again once the remedy is applied.
    pub fn keeps_data(self) -> bool {
        !matches!(self, Remedy::RestoreFile)
    }

    /// The advice, in words, for the store kept in `file` (its directory
    /// is the disk to look at).
    pub fn advice(self, file: &Path) -> String {
        let dir = file.parent().unwrap_or(file).display();
        match self {
            Remedy::FreeSpace => format!("free space on the disk holding {dir}"),
            // The whole directory, never the file alone: memory.redb is
            // readable only with the subject-key file of the same moment,
            // and audit.redb only with the keys that sign it.
            Remedy::RestoreFile => format!(
                "{} cannot be read as its database (damaged, or replaced outside sios): stop \
                 the appliance, keep the file for investigation and put back the latest backup \
                 of it, with every file of {dir} from that same backup (README: Backup and \
                 restore)",
                file.display()
            ),
            Remedy::CheckDisk => format!(
                "the disk holding {dir} has room, yet refused the write: check it and the \
                 system log (`dmesg`) for I/O errors, a read-only remount or changed permissions"
            ),
        }
    }
}

/// Why a store is closed, and what the operator must do about it.
#[derive(Clone, Debug)]
pub struct Closure {
    /// The failed write that closed it (the first cause stands).
    pub cause: String,
    /// Why the latest attempt to reopen it failed, if one did.
    pub reopen_failure: Option<String>,
    /// Judged from the latest error.
    pub remedy: Remedy,
}

impl Closure {
    /// A store in `dir` closed because a write failed with `cause`.
    pub fn after_failed_write(cause: String, dir: &Path) -> Closure {
        let remedy = Remedy::after_failed_write(&cause, dir);
        Closure {
            cause,
            reopen_failure: None,
            remedy,
        }
    }

    /// An attempt to reopen the store failed.
    pub fn reopen_failed(&mut self, failure: String, remedy: Remedy) {
        self.reopen_failure = Some(failure);
        self.remedy = remedy;
    }

    /// The room check before a reopen failed with `err`. A disk still
    /// full leaves the words as they were (a refusal reads the same until
    /// something changes); anything else is told.
    pub fn room_check_failed(&mut self, err: &io::Error) {
        let remedy = Remedy::of_room_check(err);
        if self.reopen_failure.is_some() || remedy != self.remedy {
            self.reopen_failed(format!("its disk refused room for it ({err})"), remedy);
        }
    }

    /// The words every refused caller gets while the store is closed, in
    /// order: what happened; `closed` (that the store is closed, and what is
    /// refused); the remedy, for the store kept in `file`; `reopens` (how it
    /// comes back once that is done); and, unless the file itself is lost,
    /// `kept` (that nothing acknowledged is).
    pub fn refusal(&self, file: &Path, closed: &str, reopens: &str, kept: &str) -> String {
        let kept = if self.remedy.keeps_data() {
            format!(", and {kept}")
        } else {
            String::new()
        };
        format!(
            "{}; {closed}: {}; {reopens}{kept}",
            self.what_happened(),
            self.remedy.advice(file)
        )
    }

    /// What happened, in words: the failed write, then the failed reopen.
    pub fn what_happened(&self) -> String {
        match &self.reopen_failure {
            Some(failure) => format!("{}; reopening it failed: {failure}", self.cause),
            None => self.cause.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_gets_the_remedy_that_fits_it() {
        let full = io::Error::from_raw_os_error(libc::ENOSPC);
        let quota = io::Error::from_raw_os_error(libc::EDQUOT);
        let not_a_db = io::Error::new(io::ErrorKind::InvalidData, "magic number mismatch");
        let cut_short = io::Error::from(io::ErrorKind::UnexpectedEof);
        let failing = io::Error::from_raw_os_error(libc::EIO);
        assert_eq!(Remedy::of_io(&full), Remedy::FreeSpace);
        assert_eq!(Remedy::of_io(&quota), Remedy::FreeSpace);
        assert_eq!(Remedy::of_io(&not_a_db), Remedy::RestoreFile);
        assert_eq!(Remedy::of_io(&cut_short), Remedy::RestoreFile);
        assert_eq!(Remedy::of_io(&failing), Remedy::CheckDisk);
    }

    #[test]
    fn a_failed_write_on_a_disk_with_room_is_not_blamed_on_space() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Remedy::after_failed_write("I/O error: Input/output error (os error 5)", dir.path()),
            Remedy::CheckDisk
        );
        let full = format!("I/O error: {}", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(
            Remedy::after_failed_write(&full, dir.path()),
            Remedy::FreeSpace,
            "the system's words for a full disk decide, whatever room there is now"
        );
        let advice = Remedy::CheckDisk.advice(&dir.path().join("x.redb"));
        assert!(
            advice.contains("dmesg") && !advice.contains("free space"),
            "{advice}"
        );
        // A damaged file goes back with the rest of its directory, from the
        // same backup: the file alone is unreadable without its keys.
        let advice = Remedy::RestoreFile.advice(&dir.path().join("memory.redb"));
        assert!(
            advice.contains(&format!(
                "with every file of {} from that same backup",
                dir.path().display()
            )),
            "{advice}"
        );
    }

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
