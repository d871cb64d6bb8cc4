//! The subject-key file: one 32-byte XChaCha20-Poly1305 key per data subject,
//! in fixed-size slots of a small file this module manages itself.
//!
//! # Why not in redb
//! redb is copy-on-write: a page is never rewritten in place, and a freed page
//! keeps its old bytes until the page is reused. A key stored in redb (or any
//! copy-on-write store) would survive its deletion in freed pages for an
//! unbounded time, and could not be shown to be gone. So keys never enter
//! memory.redb; they live here, where erasing a key is an in-place overwrite
//! of its slot with zeros followed by `fdatasync`.
//!
//! # Layout (all integers little-endian)
//! ```text
//! offset 0     header slot (256 bytes)
//!   0..8       magic "SIOSKEY1"
//!   8..12      format version (1)
//!   12..16     slot size (256)
//!   16..24     next handle to assign (advisory; see `open`)
//!   224..256   SHA-256 of bytes 0..224
//! offset 256·(i+1)   slot i (256 bytes)
//!   0          state: 1 = live (a free slot is 256 zero bytes)
//!   8..16      handle: the subject's number in memory.redb (never reused while referenced)
//!   16..48     the subject's key
//!   48..50     length of the subject id
//!   50..178    the subject id (UTF-8, at most 128 bytes)
//!   224..256   SHA-256 of bytes 0..224
//! ```
//! A slot that is neither all zeros nor live with a valid checksum was torn by
//! a crash (a half-written new key, or a half-done erasure): `open` zeroes it.
//! A torn new key was never used (items are committed only after their key
//! is `fsync`ed); a torn erasure is finished by the zeroing.
//!
//! # Where key bytes can and cannot be
//! - On disk: only in a live slot of this file. Erasure overwrites the slot in
//!   place; compaction moves live slots down in place (copy, sync, zero the
//!   old slot, sync) and cuts off a tail of zeros, so no key is ever written
//!   to another file whose freed blocks an erasure could not reach.
//! - In memory: in [`SubjectKey`], which zeroes itself when dropped.
//! - Limits (outside what software can prove): a copy-on-write or
//!   log-structured file system (btrfs, ZFS, F2FS), an SSD's flash
//!   translation layer, snapshots and backups may keep old physical blocks.
//!   Put the data directory on a non-CoW file system over an encrypted
//!   volume whose key the operator controls. Swap can hold process memory:
//!   run with swap off or encrypted.

use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

/// The file's name inside the data directory.
pub const KEY_FILE: &str = "subject-keys";
const MAGIC: &[u8; 8] = b"SIOSKEY1";
const VERSION: u32 = 1;
const SLOT: usize = 256;
const CHECKED: usize = 224;
const MAX_SUBJECT: usize = 128;
/// Compaction rewrites the file once at least this many slots are free and
/// they are at least half of all slots.
const COMPACT_MIN_FREE: usize = 64;

/// One subject's key, as held in memory. Zeroed when the last reference drops.
pub struct SubjectKey {
    pub handle: u64,
    pub subject: String,
    pub key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SubjectKey({} → {})", self.subject, self.handle)
    }
}

/// Why the key file could not be used.
#[derive(thiserror::Error, Debug)]
pub enum KeyFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is not a sios subject-key file (bad magic or version); it must not be edited by hand. Without it no stored item can be decrypted"
    )]
    NotAKeyFile { path: PathBuf },
    #[error("random number generator failed: {0}")]
    Random(String),
}

/// The open key file and its contents.
#[derive(Debug)]
pub struct KeyFile {
    path: PathBuf,
    file: File,
    next_handle: u64,
    /// Slot i holds the handle in `slots[i]`, or is free.
    slots: Vec<Option<u64>>,
    by_handle: HashMap<u64, (usize, Arc<SubjectKey>)>,
    by_subject: HashMap<String, u64>,
    /// True if `open` found no key file and made an empty one.
    created: bool,
}

fn checksum(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(&bytes[..CHECKED]).into()
}

fn slot_offset(index: usize) -> u64 {
    (SLOT * (index + 1)) as u64
}

/// Where builds before in-place compaction wrote the compacted key file.
const OLD_COMPACTION_FILE: &str = "subject-keys.tmp";

/// A compaction file a crash left behind holds copies of keys that may since
/// have been erased: zero it, sync, and delete it.
fn remove_old_compaction_file(dir: &Path) -> io::Result<()> {
    let path = dir.join(OLD_COMPACTION_FILE);
    let file = match OpenOptions::new().write(true).open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    let len = file.metadata()?.len();
    file.write_all_at(&vec![0u8; len as usize], 0)?;
    file.sync_all()?;
    drop(file);
    std::fs::remove_file(&path)?;
    tracing::warn!(file = %path.display(), "zeroed and removed a key file copy left by an interrupted compaction");
    sync_dir(dir)
}

/// `fsync`s a directory, so a file created or renamed in it stays.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl KeyFile {
    /// Opens (or creates, 0600) the key file in `dir`, zeroes torn slots and
    /// loads every live key.
    pub fn open(dir: &Path) -> Result<KeyFile, KeyFileError> {
        let path = dir.join(KEY_FILE);
        let io_err = |source| KeyFileError::Io {
            path: path.clone(),
            source,
        };
        remove_old_compaction_file(dir).map_err(|source| KeyFileError::Io {
            path: dir.join(OLD_COMPACTION_FILE),
            source,
        })?;
        let created = !path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err)?;
        // A file made by an older build or restored from a backup may be wider.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(io_err)?;
        let mut keys = KeyFile {
            path: path.clone(),
            file,
            next_handle: 1,
            slots: Vec::new(),
            by_handle: HashMap::new(),
            by_subject: HashMap::new(),
            created: false,
        };
        if created || keys.file.metadata().map_err(io_err)?.len() == 0 {
            keys.write_header().map_err(io_err)?;
            keys.file.sync_all().map_err(io_err)?;
            sync_dir(dir).map_err(io_err)?;
            keys.created = true;
            return Ok(keys);
        }
        let bytes = std::fs::read(&path).map_err(io_err)?;
        if bytes.len() < SLOT
            || &bytes[..8] != MAGIC
            || bytes[8..12] != VERSION.to_le_bytes()
            || bytes[12..16] != (SLOT as u32).to_le_bytes()
        {
            return Err(KeyFileError::NotAKeyFile { path });
        }
        let header = &bytes[..SLOT];
        if checksum(header) == header[CHECKED..SLOT] {
            keys.next_handle = u64::from_le_bytes(header[16..24].try_into().unwrap_or_default());
        } else {
            tracing::warn!(
                "{}: torn header; next handle recomputed from the slots",
                path.display()
            );
        }
        let mut dirty = false;
        let whole = (bytes.len() - SLOT) / SLOT;
        for index in 0..whole {
            let slot = &bytes[SLOT * (index + 1)..SLOT * (index + 2)];
            match parse_slot(slot) {
                // The second copy of a key whose move a crash interrupted
                // (see `compact`): the first copy stays.
                Some(key) if keys.by_handle.contains_key(&key.handle) => {
                    tracing::warn!(
                        slot = index,
                        "zeroing the second copy of a key left by an interrupted compaction"
                    );
                    keys.file
                        .write_all_at(&[0u8; SLOT], slot_offset(index))
                        .map_err(io_err)?;
                    keys.slots.push(None);
                    dirty = true;
                }
                Some(key) => {
                    keys.next_handle = keys.next_handle.max(key.handle + 1);
                    keys.by_subject.insert(key.subject.clone(), key.handle);
                    keys.slots.push(Some(key.handle));
                    keys.by_handle.insert(key.handle, (index, Arc::new(key)));
                }
                None => {
                    if slot.iter().any(|b| *b != 0) {
                        tracing::warn!(slot = index, "zeroing a slot torn by a crash");
                        keys.file
                            .write_all_at(&[0u8; SLOT], slot_offset(index))
                            .map_err(io_err)?;
                        dirty = true;
                    }
                    keys.slots.push(None);
                }
            }
        }
        if !(bytes.len() - SLOT).is_multiple_of(SLOT) {
            // A slot append torn by a crash: zero its bytes, then drop them.
            let tail = slot_offset(whole);
            let zeros = vec![0u8; bytes.len() - tail as usize];
            keys.file.write_all_at(&zeros, tail).map_err(io_err)?;
            keys.file.sync_data().map_err(io_err)?;
            keys.file.set_len(tail).map_err(io_err)?;
            dirty = true;
        }
        if dirty {
            keys.file.sync_all().map_err(io_err)?;
        }
        Ok(keys)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `open` had to create the file (it did not exist or was empty).
    pub fn was_created(&self) -> bool {
        self.created
    }

    /// The key of `subject`, if it has one.
    pub fn by_subject(&self, subject: &str) -> Option<Arc<SubjectKey>> {
        let handle = self.by_subject.get(subject)?;
        self.by_handle(*handle)
    }

    /// The key with `handle`, if it is live.
    pub fn by_handle(&self, handle: u64) -> Option<Arc<SubjectKey>> {
        self.by_handle.get(&handle).map(|(_, key)| Arc::clone(key))
    }

    /// The slot index holding `handle`, if live.
    pub fn slot_of(&self, handle: u64) -> Option<usize> {
        self.by_handle.get(&handle).map(|(slot, _)| *slot)
    }

    /// Every live handle.
    pub fn handles(&self) -> Vec<u64> {
        self.by_handle.keys().copied().collect()
    }

    /// Makes sure the next handle assigned is above `floor` (handles found in
    /// memory.redb, in case the header lagged behind).
    pub fn raise_next_handle(&mut self, floor: u64) {
        self.next_handle = self.next_handle.max(floor);
    }

    /// Creates a fresh random key for `subject` and makes it durable (written
    /// and `fdatasync`ed) before returning.
    pub fn create(&mut self, subject: &str) -> Result<Arc<SubjectKey>, KeyFileError> {
        assert!(
            subject.len() <= MAX_SUBJECT,
            "subject ids are validated before they reach the key file"
        );
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut()).map_err(|e| KeyFileError::Random(e.to_string()))?;
        let handle = self.next_handle;
        self.next_handle += 1;
        let index = match self.slots.iter().position(Option::is_none) {
            Some(index) => index,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        let mut slot = Zeroizing::new([0u8; SLOT]);
        slot[0] = 1;
        slot[8..16].copy_from_slice(&handle.to_le_bytes());
        slot[16..48].copy_from_slice(key.as_ref());
        slot[48..50].copy_from_slice(&(subject.len() as u16).to_le_bytes());
        slot[50..50 + subject.len()].copy_from_slice(subject.as_bytes());
        let sum = checksum(slot.as_ref());
        slot[CHECKED..].copy_from_slice(&sum);
        let io_err = |source| KeyFileError::Io {
            path: self.path.clone(),
            source,
        };
        self.file
            .write_all_at(slot.as_ref(), slot_offset(index))
            .map_err(io_err)?;
        self.write_header().map_err(io_err)?;
        self.file.sync_data().map_err(io_err)?;
        let entry = Arc::new(SubjectKey {
            handle,
            subject: subject.to_owned(),
            key,
        });
        self.slots[index] = Some(handle);
        self.by_subject.insert(subject.to_owned(), handle);
        self.by_handle.insert(handle, (index, Arc::clone(&entry)));
        Ok(entry)
    }

    /// Destroys the key with `handle`: its slot is overwritten with zeros in
    /// place and `fdatasync`ed before this returns, and the in-memory copy is
    /// dropped (and zeroed once no reader holds it). Idempotent.
    ///
    /// The slot is zeroed before the key leaves the maps: if the write fails,
    /// the key is still known, and a retry (or the next start's recovery)
    /// destroys it, instead of finding nothing to do.
    pub fn destroy(&mut self, handle: u64) -> Result<(), KeyFileError> {
        let Some(&(index, _)) = self.by_handle.get(&handle) else {
            return Ok(());
        };
        self.file
            .write_all_at(&[0u8; SLOT], slot_offset(index))
            .and_then(|()| self.file.sync_data())
            .map_err(|source| KeyFileError::Io {
                path: self.path.clone(),
                source,
            })?;
        if let Some((_, key)) = self.by_handle.remove(&handle) {
            self.by_subject.remove(&key.subject);
        }
        self.slots[index] = None;
        Ok(())
    }

    /// Bytes of the file.
    pub fn file_bytes(&self) -> u64 {
        (SLOT * (self.slots.len() + 1)) as u64
    }

    /// Whether enough slots are free for [`KeyFile::compact`] to be worth it.
    pub fn compaction_worthwhile(&self) -> bool {
        let free = self.slots.iter().filter(|s| s.is_none()).count();
        free >= COMPACT_MIN_FREE && free * 2 >= self.slots.len()
    }

    /// Packs the live slots to the front of the file, in place, and cuts off
    /// the rest. Each move copies a slot down (synced), then zeroes where it
    /// was (synced), so no key ever exists outside this one file: a copy in
    /// a temporary file, renamed over this one, would leave every live key in
    /// the freed blocks of the old file, and a later erasure could not reach
    /// them. A crash between the two steps leaves a key in two slots; `open`
    /// keeps the first and zeroes the other. The cut-off tail holds only
    /// zeros.
    pub fn compact(&mut self) -> Result<(), KeyFileError> {
        let io_err = |source| KeyFileError::Io {
            path: self.path.clone(),
            source,
        };
        let mut slot = Zeroizing::new([0u8; SLOT]);
        let mut packed = 0;
        for from in 0..self.slots.len() {
            let Some(handle) = self.slots[from] else {
                continue;
            };
            let to = packed;
            packed += 1;
            if to == from {
                continue;
            }
            self.file
                .read_exact_at(slot.as_mut(), slot_offset(from))
                .and_then(|()| self.file.write_all_at(slot.as_ref(), slot_offset(to)))
                .and_then(|()| self.file.sync_data())
                .map_err(io_err)?;
            self.slots[to] = Some(handle);
            if let Some((index, _)) = self.by_handle.get_mut(&handle) {
                *index = to;
            }
            self.file
                .write_all_at(&[0u8; SLOT], slot_offset(from))
                .and_then(|()| self.file.sync_data())
                .map_err(io_err)?;
            self.slots[from] = None;
        }
        self.file
            .set_len(slot_offset(packed))
            .and_then(|()| self.file.sync_all())
            .map_err(io_err)?;
        self.slots.truncate(packed);
        Ok(())
    }

    fn write_header(&self) -> io::Result<()> {
        let mut header = [0u8; SLOT];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&VERSION.to_le_bytes());
        header[12..16].copy_from_slice(&(SLOT as u32).to_le_bytes());
        header[16..24].copy_from_slice(&self.next_handle.to_le_bytes());
        let sum = checksum(&header);
        header[CHECKED..].copy_from_slice(&sum);
        self.file.write_all_at(&header, 0)
    }
}

fn parse_slot(slot: &[u8]) -> Option<SubjectKey> {
    if slot[0] != 1 || checksum(slot) != slot[CHECKED..SLOT] {
        return None;
    }
    let handle = u64::from_le_bytes(slot[8..16].try_into().ok()?);
    let len = usize::from(u16::from_le_bytes(slot[48..50].try_into().ok()?));
    if len == 0 || len > MAX_SUBJECT {
        return None;
    }
    let subject = std::str::from_utf8(&slot[50..50 + len]).ok()?.to_owned();
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&slot[16..48]);
    Some(SubjectKey {
        handle,
        subject,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn keys_survive_reopen_and_destroyed_keys_leave_no_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = {
            let mut keys = KeyFile::open(dir.path()).unwrap();
            let a = keys.create("alice").unwrap();
            let b = keys.create("bob").unwrap();
            (a, b)
        };
        let a_key = *a.key;
        let mut keys = KeyFile::open(dir.path()).unwrap();
        assert_eq!(*keys.by_subject("alice").unwrap().key, a_key);
        assert_eq!(keys.by_subject("bob").unwrap().handle, b.handle);
        keys.destroy(a.handle).unwrap();
        keys.destroy(a.handle).unwrap();
        let bytes = std::fs::read(dir.path().join(KEY_FILE)).unwrap();
        assert!(!contains(&bytes, &a_key));
        assert!(!contains(&bytes, b"alice"));
        assert!(contains(&bytes, b.key.as_ref()));
        let keys = KeyFile::open(dir.path()).unwrap();
        assert!(keys.by_subject("alice").is_none());
        // A new key never reuses a handle.
        let mut keys = keys;
        assert!(keys.create("carol").unwrap().handle > b.handle);
    }

    #[test]
    fn torn_slots_are_zeroed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let key = {
            let mut keys = KeyFile::open(dir.path()).unwrap();
            *keys.create("alice").unwrap().key
        };
        let path = dir.path().join(KEY_FILE);
        // A crash half-way through zeroing alice's slot: the first half is zero.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0u8; 32], slot_offset(0)).unwrap();
        // And a torn append after it.
        file.write_all_at(&[0xAB; 100], slot_offset(1)).unwrap();
        drop(file);
        let keys = KeyFile::open(dir.path()).unwrap();
        assert!(keys.by_subject("alice").is_none());
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 2 * SLOT);
        assert!(!contains(&bytes, &key));
        assert!(bytes[SLOT..].iter().all(|b| *b == 0));
    }

    #[test]
    fn compaction_keeps_live_keys_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut keys = KeyFile::open(dir.path()).unwrap();
        let all: Vec<_> = (0..200)
            .map(|i| keys.create(&format!("s{i}")).unwrap())
            .collect();
        for k in &all[..150] {
            keys.destroy(k.handle).unwrap();
        }
        assert!(keys.compaction_worthwhile());
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let before = inode(&dir.path().join(KEY_FILE));
        keys.compact().unwrap();
        assert_eq!(
            inode(&dir.path().join(KEY_FILE)),
            before,
            "compacted in place: no other file ever held the keys"
        );
        assert_eq!(keys.file_bytes(), (51 * SLOT) as u64);
        // Keys still work, and new ones go after the packed slots.
        let later = keys.create("later").unwrap();
        assert_eq!(keys.slot_of(later.handle), Some(50));
        let reopened = KeyFile::open(dir.path()).unwrap();
        for k in &all[150..] {
            assert_eq!(*reopened.by_subject(&k.subject).unwrap().key, *k.key);
        }
        let bytes = std::fs::read(dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(bytes.len(), 52 * SLOT);
        for k in &all[..150] {
            assert!(!contains(&bytes, k.key.as_ref()));
        }
        let perms = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(perms & 0o777, 0o600);
    }

    #[test]
    fn a_key_copied_twice_by_an_interrupted_compaction_keeps_one_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let (a, b) = {
            let mut keys = KeyFile::open(dir.path()).unwrap();
            let a = keys.create("alice").unwrap();
            let b = keys.create("bob").unwrap();
            keys.destroy(a.handle).unwrap();
            (a, b)
        };
        // The crash: bob's slot copied down into slot 0, not yet zeroed at 1.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut slot = [0u8; SLOT];
        file.read_exact_at(&mut slot, slot_offset(1)).unwrap();
        file.write_all_at(&slot, slot_offset(0)).unwrap();
        drop(file);
        let mut keys = KeyFile::open(dir.path()).unwrap();
        assert_eq!(keys.slot_of(b.handle), Some(0));
        assert_eq!(*keys.by_subject("bob").unwrap().key, *b.key);
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes[slot_offset(1) as usize..].iter().all(|b| *b == 0));
        assert!(!contains(&bytes, &*a.key));
        // Erasing bob now leaves no copy of his key anywhere.
        keys.destroy(b.handle).unwrap();
        assert!(!contains(&std::fs::read(&path).unwrap(), b.key.as_ref()));
    }

    #[test]
    fn a_compaction_file_left_by_an_older_build_is_zeroed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let leftover = dir.path().join(OLD_COMPACTION_FILE);
        std::fs::write(&leftover, [0x5Au8; 3 * SLOT]).unwrap();
        KeyFile::open(dir.path()).unwrap();
        assert!(!leftover.exists());
    }
}
