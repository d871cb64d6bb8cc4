//! The export bundle (OAR.md §7): one file holding everything a verifier
//! needs, in the order it needs it.
//!
//! ```text
//! "sios-oar-bundle/1\n"                       18-byte magic
//! item*                                       tag (1 byte) | length (u32, big-endian) | payload
//!   'K'  a verifier key line (no newline)     the log's keys, oldest first (informative)
//!   'R'  a record's canonical CBOR bytes      in sequence order, from record 0
//!   'P'  a policy text (UTF-8)                right after the record that activates it
//!   'C'  a signed checkpoint note             right after the record that makes its tree size
//!   'E'  16 bytes: records, checkpoints       (both u64 big-endian); last item, once
//! ```

use std::io::{self, BufReader, BufWriter, Read, Write};

pub const MAGIC: &[u8; 18] = b"sios-oar-bundle/1\n";
/// Largest item payload a reader accepts.
pub const MAX_ITEM: u32 = 16 << 20;

pub const TAG_KEY: u8 = b'K';
pub const TAG_RECORD: u8 = b'R';
pub const TAG_POLICY: u8 = b'P';
pub const TAG_CHECKPOINT: u8 = b'C';
pub const TAG_END: u8 = b'E';

/// One item of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Key(String),
    Record(Vec<u8>),
    Policy(String),
    Checkpoint(String),
    End { records: u64, checkpoints: u64 },
}

/// Reads every item of the bundle at `path`, the end item included.
pub fn read_items(path: &std::path::Path) -> Result<Vec<Item>, BundleError> {
    let mut reader = BundleReader::new(std::fs::File::open(path)?)?;
    let mut items = Vec::new();
    while let Some(item) = reader.next_item()? {
        items.push(item);
    }
    Ok(items)
}

/// Writes `items` as a bundle at `path` with an end item that counts them
/// (an `End` among `items` is skipped): how a bundle is cut back to an
/// earlier checkpoint, and how tests make the damage a forger would, whose
/// end item always agrees with the rest.
pub fn write_items(path: &std::path::Path, items: &[Item]) -> io::Result<()> {
    let mut w = BundleWriter::new(std::fs::File::create(path)?)?;
    for item in items {
        match item {
            Item::Key(k) => w.key(k)?,
            Item::Record(r) => w.record(r)?,
            Item::Policy(p) => w.policy(p)?,
            Item::Checkpoint(c) => w.checkpoint(c)?,
            Item::End { .. } => {}
        }
    }
    w.finish().map(drop)
}

/// Writes a bundle; counts what it wrote for the end item.
#[derive(Debug)]
pub struct BundleWriter<W: Write> {
    out: BufWriter<W>,
    records: u64,
    checkpoints: u64,
}

impl<W: Write> BundleWriter<W> {
    pub fn new(out: W) -> io::Result<BundleWriter<W>> {
        let mut out = BufWriter::with_capacity(1 << 20, out);
        out.write_all(MAGIC)?;
        Ok(BundleWriter {
            out,
            records: 0,
            checkpoints: 0,
        })
    }

    fn item(&mut self, tag: u8, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l <= MAX_ITEM)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bundle item too large"))?;
        self.out.write_all(&[tag])?;
        self.out.write_all(&len.to_be_bytes())?;
        self.out.write_all(payload)
    }

    pub fn key(&mut self, vkey: &str) -> io::Result<()> {
        self.item(TAG_KEY, vkey.as_bytes())
    }

    pub fn record(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.records += 1;
        self.item(TAG_RECORD, bytes)
    }

    pub fn policy(&mut self, text: &str) -> io::Result<()> {
        self.item(TAG_POLICY, text.as_bytes())
    }

    pub fn checkpoint(&mut self, note: &str) -> io::Result<()> {
        self.checkpoints += 1;
        self.item(TAG_CHECKPOINT, note.as_bytes())
    }

    pub fn records_written(&self) -> u64 {
        self.records
    }

    /// Writes the end item and flushes; returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        let mut end = [0u8; 16];
        end[..8].copy_from_slice(&self.records.to_be_bytes());
        end[8..].copy_from_slice(&self.checkpoints.to_be_bytes());
        self.item(TAG_END, &end)?;
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

/// Why a bundle cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not a sios audit bundle (the file does not start with `sios-oar-bundle/1`)")]
    Magic,
    #[error("the bundle ends in the middle of an item at byte {0}: it is truncated")]
    Truncated(u64),
    #[error("the bundle ends at byte {0} without its end item: it is truncated")]
    NoEnd(u64),
    #[error("byte {at}: unknown item tag 0x{tag:02x}")]
    Tag { at: u64, tag: u8 },
    #[error("byte {at}: an item of {len} bytes is larger than the {MAX_ITEM}-byte limit")]
    TooLarge { at: u64, len: u32 },
    #[error("byte {at}: a {what} is not valid UTF-8")]
    Utf8 { at: u64, what: &'static str },
    #[error("byte {at}: the end item is malformed or not last")]
    End { at: u64 },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads a bundle item by item.
#[derive(Debug)]
pub struct BundleReader<R: Read> {
    input: BufReader<R>,
    offset: u64,
    ended: bool,
}

impl<R: Read> BundleReader<R> {
    pub fn new(input: R) -> Result<BundleReader<R>, BundleError> {
        let mut input = BufReader::with_capacity(1 << 20, input);
        let mut magic = [0u8; 18];
        read_exact_or(&mut input, &mut magic).map_err(|_| BundleError::Magic)?;
        if &magic != MAGIC {
            return Err(BundleError::Magic);
        }
        Ok(BundleReader {
            input,
            offset: MAGIC.len() as u64,
            ended: false,
        })
    }

    /// The next item; `Ok(None)` after the end item (and only if nothing follows it).
    pub fn next_item(&mut self) -> Result<Option<Item>, BundleError> {
        let at = self.offset;
        let mut head = [0u8; 5];
        match read_exact_or(&mut self.input, &mut head)? {
            0 if self.ended => return Ok(None),
            0 => return Err(BundleError::NoEnd(at)),
            5 => {}
            _ => return Err(BundleError::Truncated(at)),
        }
        if self.ended {
            return Err(BundleError::End { at });
        }
        let tag = head[0];
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        if len > MAX_ITEM {
            return Err(BundleError::TooLarge { at, len });
        }
        let mut payload = vec![0u8; len as usize];
        if read_exact_or(&mut self.input, &mut payload)? != payload.len() {
            return Err(BundleError::Truncated(at));
        }
        self.offset += 5 + u64::from(len);
        let text = |payload: Vec<u8>, what| {
            String::from_utf8(payload).map_err(|_| BundleError::Utf8 { at, what })
        };
        Ok(Some(match tag {
            TAG_KEY => Item::Key(text(payload, "key")?),
            TAG_RECORD => Item::Record(payload),
            TAG_POLICY => Item::Policy(text(payload, "policy")?),
            TAG_CHECKPOINT => Item::Checkpoint(text(payload, "checkpoint")?),
            TAG_END => {
                if payload.len() != 16 {
                    return Err(BundleError::End { at });
                }
                self.ended = true;
                let mut a = [0u8; 8];
                a.copy_from_slice(&payload[..8]);
                let records = u64::from_be_bytes(a);
                a.copy_from_slice(&payload[8..]);
                Item::End {
                    records,
                    checkpoints: u64::from_be_bytes(a),
                }
            }
            tag => return Err(BundleError::Tag { at, tag }),
        }))
    }

    /// Byte offset of the next item.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether the end item has been read (anything after it is an error).
    pub fn ended(&self) -> bool {
        self.ended
    }
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_exact_or(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut w = BundleWriter::new(Vec::new()).unwrap();
        w.key("k+00000000+AA==").unwrap();
        w.record(&[0xa0]).unwrap();
        w.policy("permit(principal, action, resource);").unwrap();
        w.checkpoint("note\n\n— k AAAA\n").unwrap();
        let bytes = w.finish().unwrap();
        let mut r = BundleReader::new(bytes.as_slice()).unwrap();
        let mut items = Vec::new();
        while let Some(item) = r.next_item().unwrap() {
            items.push(item);
        }
        assert_eq!(items.len(), 5);
        assert_eq!(
            items[4],
            Item::End {
                records: 1,
                checkpoints: 1
            }
        );
        for cut in 18..bytes.len() {
            let mut r = BundleReader::new(&bytes[..cut]).unwrap();
            let err = loop {
                match r.next_item() {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("a bundle cut at {cut} read to its end"),
                    Err(e) => break e,
                }
            };
            assert!(
                matches!(err, BundleError::Truncated(_) | BundleError::NoEnd(_)),
                "{cut}: {err}"
            );
        }
        assert!(matches!(
            BundleReader::new(&b"not a bundle at all"[..]),
            Err(BundleError::Magic)
        ));
    }
}
