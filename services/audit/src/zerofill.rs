//! The file under `audit.redb`: redb's own file backend, except that the
//! space redb adds to the file is written with zeros shortly before redb
//! first writes into it.
//!
//! Why: redb grows its file with `set_len`, which leaves a hole. The first
//! write into a hole makes the file system allocate blocks, and the next
//! `fdatasync` must then also write that allocation (the inode and extent
//! metadata) before it returns. On this appliance's ext4 that costs about
//! 100 µs per commit (measured: two scattered 4 KiB pages and `fdatasync`,
//! 150 µs over written blocks, 280 µs when one lands in a hole), and nearly
//! every audit commit writes a page it has never written before (the log
//! only grows). Writing the zeros ahead, [`ZERO_AHEAD`] at a time, makes
//! those blocks ordinary overwrites; the zeros go to disk with the next
//! commit, one larger write every few hundred commits instead of a
//! metadata write in most of them.
//!
//! Only bytes redb has never written are zeroed: everything below the file's
//! length at open counts as written (a hole left there by an earlier run
//! costs what it did before), and the zeroed prefix only grows past a write
//! once that write is done.

use redb::StorageBackend;
use redb::backends::FileBackend;
use std::fs::File;
use std::ops::Bound;
use std::sync::Mutex;

/// How far past redb's highest write the file is zero-filled (never past the
/// length redb set).
pub const ZERO_AHEAD: u64 = 1 << 20;

/// See the module doc.
#[derive(Debug)]
pub struct ZeroFilledFile {
    inner: FileBackend,
    /// Every byte below this is written (by redb or with zeros); no byte at
    /// or above it has been written by redb.
    filled: Mutex<u64>,
}

impl ZeroFilledFile {
    pub fn new(file: File) -> Result<ZeroFilledFile, redb::DatabaseError> {
        let len = file.metadata()?.len();
        Ok(ZeroFilledFile {
            inner: FileBackend::new(file)?,
            filled: Mutex::new(len),
        })
    }

    /// Writes zeros over `[from, to)`.
    fn zero(&self, mut from: u64, to: u64) -> std::io::Result<()> {
        const CHUNK: usize = 64 << 10;
        static ZEROS: [u8; CHUNK] = [0; CHUNK];
        while from < to {
            let n = (to - from).min(CHUNK as u64) as usize;
            self.inner.write(from, &ZEROS[..n])?;
            from += n as u64;
        }
        Ok(())
    }
}

impl StorageBackend for ZeroFilledFile {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let mut filled = self.filled.lock().expect("zero-fill lock");
        self.inner.set_len(len)?;
        // Shrunk: what grows back later is a hole again.
        *filled = (*filled).min(len);
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut filled = self.filled.lock().expect("zero-fill lock");
        let end = offset + data.len() as u64;
        if end > *filled {
            // Nothing at or above `filled` was written by redb, so these
            // zeros overwrite nothing but a hole.
            let ahead = (end + ZERO_AHEAD).min(self.inner.len()?).max(end);
            self.zero(*filled, offset)?;
            self.inner.write(offset, data)?;
            self.zero(end, ahead)?;
            *filled = ahead;
            return Ok(());
        }
        self.inner.write(offset, data)
    }

    fn close(&self) -> std::io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Zero-filling never overwrites a byte redb wrote and never changes the
    /// length: after random growth, shrinking and writes the file reads
    /// exactly like a plain model of it (new space reads as zeros).
    #[test]
    fn reads_like_a_plain_file_through_growth_shrinking_and_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        std::fs::write(&path, vec![7u8; 10_000]).unwrap();
        let mut model = vec![7u8; 10_000];
        for round in 0..2 {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            let f = ZeroFilledFile::new(file).unwrap();
            for step in 0..300 {
                match next(10) {
                    0 => {
                        let len = next(6 << 20);
                        f.set_len(len).unwrap();
                        model.resize(len as usize, 0);
                    }
                    _ if !model.is_empty() => {
                        let off = next(model.len() as u64) as usize;
                        let n = (1 + next(9000) as usize).min(model.len() - off);
                        let byte = (round * 300 + step) as u8 | 1;
                        f.write(off as u64, &vec![byte; n]).unwrap();
                        model[off..off + n].fill(byte);
                    }
                    _ => {}
                }
                assert_eq!(f.len().unwrap(), model.len() as u64);
            }
            let mut back = vec![0u8; model.len()];
            f.read(0, &mut back).unwrap();
            assert!(
                back == model,
                "round {round}: contents differ from the model"
            );
            f.close().unwrap();
        }
    }
}
