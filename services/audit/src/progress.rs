//! Progress of long work (an export, a verification), for whoever shows it.
//!
//! A log grows by millions of records a day on a busy appliance, so an
//! export or a verification can take minutes. The library reports how far
//! it got through a [`Progress`]; the CLI draws it on a terminal.

use std::fmt;
use std::io::Read;
use std::sync::Arc;

/// Told `(done, total)` as long work goes: records for an export, bytes
/// for a verification. Called from the working thread, often: a receiver
/// that draws should throttle itself.
#[derive(Clone)]
pub struct Progress(Arc<dyn Fn(u64, u64) + Send + Sync>);

impl Progress {
    pub fn new(report: impl Fn(u64, u64) + Send + Sync + 'static) -> Progress {
        Progress(Arc::new(report))
    }

    pub fn report(&self, done: u64, total: u64) {
        (self.0)(done, total)
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Progress")
    }
}

/// Bytes read between two reports.
const REPORT_EVERY: u64 = 1 << 20;

/// A reader that reports the bytes read from it, of `total`.
pub(crate) struct Counting<R> {
    inner: R,
    read: u64,
    reported: u64,
    total: u64,
    progress: Progress,
}

impl<R: Read> Counting<R> {
    pub(crate) fn new(inner: R, total: u64, progress: Progress) -> Counting<R> {
        progress.report(0, total);
        Counting {
            inner,
            read: 0,
            reported: 0,
            total,
            progress,
        }
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if n == 0 || self.read - self.reported >= REPORT_EVERY {
            self.reported = self.read;
            self.progress.report(self.read, self.total.max(self.read));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn a_counting_reader_reports_every_mebibyte_and_the_end() {
        let seen: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
        let log = seen.clone();
        let data = vec![7u8; 3 * (1 << 20) + 5];
        let mut reader = Counting::new(
            &data[..],
            data.len() as u64,
            Progress::new(move |done, total| log.lock().unwrap().push((done, total))),
        );
        let mut sink = Vec::new();
        // Small reads, as a buffered reader above it might make.
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            sink.extend_from_slice(&buf[..n]);
        }
        assert_eq!(sink, data);
        let seen = seen.lock().unwrap();
        let total = data.len() as u64;
        assert_eq!(seen.first(), Some(&(0, total)));
        assert_eq!(seen.last(), Some(&(total, total)));
        assert_eq!(seen.len(), 5, "start, three mebibytes, the end: {seen:?}");
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));
    }
}
