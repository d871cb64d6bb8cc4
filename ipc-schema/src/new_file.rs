//! Output files that appear complete or not at all.
//!
//! An export written straight to its final path leaves a shorter file there
//! when the writer fails or is killed half way. A memory export has no
//! trailer, so a file cut at a line boundary reads as a complete export with
//! fewer items, and an operator can hand it on without knowing. So exports
//! are written under a hidden name beside the target
//! (`.NAME.PID-N.partial`), synced, and only then linked to their real name:
//! - the real name never exists unless the file is complete and durable;
//! - it is never overwritten (`link` fails if the name exists, with no
//!   window in which a check and a create could race);
//! - a failed or abandoned write removes its partial file; one killed with
//!   SIGKILL leaves only the hidden `.partial` file, whose name says what it
//!   is.
//!
//! [`replace`] is the same for files that are meant to be overwritten (state
//! files, a public key exported again): the new content replaces the old by
//! `rename`, so a crash leaves the old file or the new, never a mix.
//! [`replace_own`] is [`replace`] for a path an operator typed: it replaces
//! only a file of the kind it writes, so that a slip of the keyboard (a
//! public key exported onto `signing.key`, a proof written onto
//! `audit.redb`) is refused instead of destroying what was there.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Numbers this process's partial files.
static NEXT_PARTIAL: AtomicU64 = AtomicU64::new(0);

/// A file being written for `path`; see the module doc.
#[derive(Debug)]
pub struct NewFile {
    path: PathBuf,
    partial: PathBuf,
    file: File,
    /// Whether `commit` replaces a file already at `path`.
    replacing: bool,
    done: bool,
}

impl NewFile {
    /// Starts a new file for `path`, created with permission bits `mode`
    /// (before the umask). Fails with `AlreadyExists` if `path` exists.
    pub fn create(path: &Path, mode: u32) -> io::Result<NewFile> {
        if path.symlink_metadata().is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the file exists; sios does not overwrite it (choose another name or remove it)",
            ));
        }
        NewFile::open(path, mode, false)
    }

    fn open(path: &Path, mode: u32, replacing: bool) -> io::Result<NewFile> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
        // Unique among this process's writes, so that two at once never
        // share a partial file. A partial file already there under this name
        // was left by an earlier process with the same pid that died
        // mid-write: it is garbage, and taking its place is safe.
        let serial = NEXT_PARTIAL.fetch_add(1, Ordering::Relaxed);
        let mut hidden = std::ffi::OsString::from(".");
        hidden.push(name);
        hidden.push(format!(".{}-{serial}.partial", std::process::id()));
        let partial = path.with_file_name(hidden);
        let create = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&partial)
        };
        let file = match create() {
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                std::fs::remove_file(&partial)?;
                create()?
            }
            other => other?,
        };
        Ok(NewFile {
            path: path.to_owned(),
            partial,
            file,
            replacing,
            done: false,
        })
    }

    /// The open file, to write to.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Makes the file durable and gives it its name. Fails with
    /// `AlreadyExists` if something took the name meanwhile (the partial
    /// file is then removed and the other file left alone).
    pub fn commit(mut self) -> io::Result<()> {
        self.file.sync_all()?;
        if self.replacing {
            std::fs::rename(&self.partial, &self.path)?;
            self.done = true;
        } else {
            std::fs::hard_link(&self.partial, &self.path)?;
            self.done = true;
            std::fs::remove_file(&self.partial)?;
        }
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()
    }
}

/// Writes `content` to `path`, replacing any file there, so that a crash
/// leaves the old content or the new, never a mix (see the module doc).
/// A new file gets permission bits `mode` (before the umask).
pub fn replace(path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write as _;
    let new = NewFile::open(path, mode, true)?;
    new.file().write_all(content)?;
    new.commit()
}

/// Existing files larger than this are never taken for one of the small
/// files [`replace_own`] writes (keys, proofs, checkpoints: kilobytes).
const OWN_KIND_MAX_BYTES: u64 = 1 << 20;

/// [`replace`], for a path an operator named: writes `content` if nothing
/// is at `path`, or if what is there is a regular file that `is_own` accepts
/// (a file of the kind being written, `kind` in words, e.g. "a public key
/// file"). Anything else fails with `AlreadyExists`, naming what would have
/// been lost, and leaves it untouched.
pub fn replace_own(
    path: &Path,
    content: &[u8],
    mode: u32,
    kind: &str,
    is_own: impl Fn(&[u8]) -> bool,
) -> io::Result<()> {
    let refuse = |what: &str| {
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{what}; sios replaces only {kind} there, so that a mistyped name cannot \
                 destroy another file (choose another name, or remove it first)"
            ),
        ))
    };
    match std::fs::metadata(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
        Ok(meta) if !meta.is_file() => return refuse("it exists and is not a regular file"),
        Ok(meta) if meta.len() > OWN_KIND_MAX_BYTES => {
            return refuse(&format!(
                "it exists and is not {kind} ({} bytes)",
                meta.len()
            ));
        }
        Ok(_) => {
            if !is_own(&std::fs::read(path)?) {
                return refuse(&format!("it exists and is not {kind}"));
            }
        }
    }
    replace(path, content, mode)
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_name_appears_only_once_the_file_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let new = NewFile::create(&path, 0o600).unwrap();
        new.file().write_all(b"line\n").unwrap();
        assert!(!path.exists(), "visible before commit");
        let hidden = entries(dir.path());
        assert_eq!(hidden.len(), 1);
        let prefix = format!(".out.jsonl.{}-", std::process::id());
        assert!(
            hidden[0].starts_with(&prefix) && hidden[0].ends_with(".partial"),
            "{hidden:?}"
        );
        new.commit().unwrap();
        assert_eq!(entries(dir.path()), vec!["out.jsonl".to_owned()]);
        assert_eq!(std::fs::read(&path).unwrap(), b"line\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_abandoned_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.oar");
        let new = NewFile::create(&path, 0o644).unwrap();
        new.file().write_all(b"half").unwrap();
        drop(new);
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn replace_own_replaces_its_own_kind_and_refuses_anything_else() {
        let dir = tempfile::tempdir().unwrap();
        let is_note = |bytes: &[u8]| bytes.starts_with(b"note ");
        let own = dir.path().join("own");
        replace_own(&own, b"note 1", 0o644, "a note", is_note).unwrap();
        replace_own(&own, b"note 2", 0o644, "a note", is_note).unwrap();
        assert_eq!(std::fs::read(&own).unwrap(), b"note 2");

        let precious = dir.path().join("precious");
        std::fs::write(&precious, b"the only copy").unwrap();
        let err = replace_own(&precious, b"note 3", 0o644, "a note", is_note).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("is not a note"), "{err}");
        assert_eq!(std::fs::read(&precious).unwrap(), b"the only copy");

        let err = replace_own(dir.path(), b"note 4", 0o644, "a note", is_note).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert_eq!(
            entries(dir.path()),
            ["own", "precious"],
            "no partial file left"
        );
    }

    #[test]
    fn replace_overwrites_whole_and_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        replace(&path, b"[\"one\"]", 0o644).unwrap();
        replace(&path, b"[]", 0o644).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"[]");
        assert_eq!(entries(dir.path()), vec!["state.json"]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        // A directory in the way: the error names it, nothing is left over.
        std::fs::create_dir(dir.path().join("taken")).unwrap();
        assert!(replace(&dir.path().join("taken"), b"x", 0o644).is_err());
        assert_eq!(entries(dir.path()), vec!["state.json", "taken"]);
    }

    #[test]
    fn writers_at_once_never_share_a_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let first = NewFile::open(&path, 0o644, true).unwrap();
        let second = NewFile::open(&path, 0o644, true).unwrap();
        first.file().write_all(b"first").unwrap();
        second.file().write_all(b"second").unwrap();
        first.commit().unwrap();
        second.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(entries(dir.path()), vec!["state.json"]);
    }

    #[test]
    fn a_partial_file_left_by_a_dead_process_with_our_pid_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        // What a writer killed mid-write leaves, for every name this process
        // could pick next.
        let next = NEXT_PARTIAL.load(Ordering::Relaxed);
        for serial in next..next + 64 {
            let stale = format!(".state.json.{}-{serial}.partial", std::process::id());
            std::fs::write(dir.path().join(stale), b"torn").unwrap();
        }
        replace(&path, b"whole", 0o644).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"whole");
    }

    #[test]
    fn an_existing_file_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        std::fs::write(&path, b"keep").unwrap();
        let err = NewFile::create(&path, 0o600).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        // Taken between create and commit: the commit fails, the other
        // file stays, and the partial one goes.
        let later = dir.path().join("later");
        let new = NewFile::create(&later, 0o600).unwrap();
        new.file().write_all(b"mine").unwrap();
        std::fs::write(&later, b"theirs").unwrap();
        let err = new.commit().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&later).unwrap(), b"theirs");
        assert_eq!(std::fs::read(&path).unwrap(), b"keep");
        assert_eq!(entries(dir.path()), vec!["later", "out"]);
    }
}
