//! Rows of memory.redb: what is stored in clear and what is sealed with the
//! subject's key.
//!
//! In clear (needed to find, order and erase items): the (namespace, key)
//! the row is stored under, the subject's *handle* (a number; the subject id
//! itself lives only in the key file), and the timestamps. Sealed with
//! XChaCha20-Poly1305 under the subject's key, each with a fresh random
//! 24-byte nonce: the metadata and embedding together ("attrs", so search can
//! load embeddings without touching values) and the value.
//!
//! Row bytes (integers little-endian):
//! ```text
//! 0        row version (1)
//! 1        flags: bit 0 = has an embedding
//! 2..10    subject handle
//! 10..18   created_ms
//! 18..26   updated_ms
//! 26..30   length A of the sealed attrs
//! 30..30+A sealed attrs: nonce (24) ‖ ciphertext ‖ tag (16)
//! 30+A..   sealed value: nonce (24) ‖ ciphertext ‖ tag (16)
//! ```
//! Associated data binds each ciphertext to its place, owner and part:
//! `"sios-memory/v1\0" ‖ part ("attrs" | "value") ‖ lp(namespace) ‖ lp(key) ‖
//! lp(subject id) ‖ handle ‖ created_ms ‖ updated_ms`, where `lp` is a u32
//! length then the bytes. A sealed blob moved to another item, subject or
//! part, or a timestamp edited, fails to open.
//!
//! Plaintexts: attrs = u32 count, then per pair lp(key) ‖ lp(value), then u32
//! dimensions (0 = none) and that many f32; value = one kind byte (0 text, 1
//! bytes) then the bytes.

use crate::keys::SubjectKey;
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sios_ipc::{Metadata, Value};
use zeroize::Zeroizing;

const ROW_VERSION: u8 = 1;
const HEADER: usize = 30;
const NONCE: usize = 24;
const TAG: usize = 16;

/// A row's clear part, and its sealed parts still sealed.
#[derive(Debug, Clone)]
pub struct Row {
    pub handle: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub has_embedding: bool,
    attrs: Vec<u8>,
    value: Vec<u8>,
}

/// Where a sealed blob belongs; all of it is authenticated.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    pub namespace: &'a str,
    pub key: &'a str,
}

/// Why a row could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("row is malformed: {0}")]
    Malformed(&'static str),
    #[error("row fails authentication (wrong key, moved, or altered)")]
    Inauthentic,
    #[error("random number generator failed: {0}")]
    Random(String),
    #[error("encryption failed")]
    Encrypt,
}

fn lp(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn aad(part: &[u8], place: Place<'_>, key: &SubjectKey, created: u64, updated: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + place.namespace.len() + place.key.len());
    out.extend_from_slice(b"sios-memory/v1\0");
    out.extend_from_slice(part);
    lp(&mut out, place.namespace.as_bytes());
    lp(&mut out, place.key.as_bytes());
    lp(&mut out, key.subject.as_bytes());
    out.extend_from_slice(&key.handle.to_le_bytes());
    out.extend_from_slice(&created.to_le_bytes());
    out.extend_from_slice(&updated.to_le_bytes());
    out
}

fn cipher(key: &SubjectKey) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(&chacha20poly1305::Key::from(*key.key))
}

fn seal_part(key: &SubjectKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut nonce = [0u8; NONCE];
    getrandom::fill(&mut nonce).map_err(|e| SealError::Random(e.to_string()))?;
    let ciphertext = cipher(key)
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| SealError::Encrypt)?;
    let mut out = Vec::with_capacity(NONCE + ciphertext.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

fn open_part(key: &SubjectKey, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if sealed.len() < NONCE + TAG {
        return Err(SealError::Malformed("sealed part too short"));
    }
    let nonce: [u8; NONCE] = sealed[..NONCE]
        .try_into()
        .map_err(|_| SealError::Malformed("nonce"))?;
    cipher(key)
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &sealed[NONCE..],
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| SealError::Inauthentic)
}

impl Row {
    /// Seals an item's content for `key` at `place`.
    pub fn seal(
        key: &SubjectKey,
        place: Place<'_>,
        created_ms: u64,
        updated_ms: u64,
        value: &Value,
        metadata: &Metadata,
        embedding: Option<&[f32]>,
    ) -> Result<Row, SealError> {
        let mut attrs = Zeroizing::new(Vec::new());
        attrs.extend_from_slice(&(metadata.len() as u32).to_le_bytes());
        for (k, v) in metadata {
            lp(&mut attrs, k.as_bytes());
            lp(&mut attrs, v.as_bytes());
        }
        let dims = embedding.map_or(0, <[f32]>::len);
        attrs.extend_from_slice(&(dims as u32).to_le_bytes());
        for x in embedding.unwrap_or_default() {
            attrs.extend_from_slice(&x.to_le_bytes());
        }
        let mut plain_value = Zeroizing::new(Vec::with_capacity(1 + value.len()));
        plain_value.push(match value {
            Value::Text(_) => 0,
            Value::Bytes(_) => 1,
        });
        plain_value.extend_from_slice(value.as_bytes());
        Ok(Row {
            handle: key.handle,
            created_ms,
            updated_ms,
            has_embedding: dims > 0,
            attrs: seal_part(
                key,
                &aad(b"attrs", place, key, created_ms, updated_ms),
                &attrs,
            )?,
            value: seal_part(
                key,
                &aad(b"value", place, key, created_ms, updated_ms),
                &plain_value,
            )?,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.attrs.len() + self.value.len());
        out.push(ROW_VERSION);
        out.push(u8::from(self.has_embedding));
        out.extend_from_slice(&self.handle.to_le_bytes());
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        out.extend_from_slice(&self.updated_ms.to_le_bytes());
        out.extend_from_slice(&(self.attrs.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.attrs);
        out.extend_from_slice(&self.value);
        out
    }

    /// The clear header only (cheap: no copy of the sealed parts).
    pub fn peek(bytes: &[u8]) -> Result<(u64, u64, u64), SealError> {
        if bytes.len() < HEADER || bytes[0] != ROW_VERSION {
            return Err(SealError::Malformed("unknown row version or short row"));
        }
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or_default());
        Ok((u64_at(2), u64_at(10), u64_at(18)))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Row, SealError> {
        let (handle, created_ms, updated_ms) = Row::peek(bytes)?;
        let attrs_len = u32::from_le_bytes(bytes[26..30].try_into().unwrap_or_default()) as usize;
        if bytes.len() < HEADER + attrs_len {
            return Err(SealError::Malformed("sealed attrs overrun the row"));
        }
        Ok(Row {
            handle,
            created_ms,
            updated_ms,
            has_embedding: bytes[1] & 1 == 1,
            attrs: bytes[HEADER..HEADER + attrs_len].to_vec(),
            value: bytes[HEADER + attrs_len..].to_vec(),
        })
    }

    /// Opens the metadata and embedding.
    pub fn open_attrs(
        &self,
        key: &SubjectKey,
        place: Place<'_>,
    ) -> Result<(Metadata, Option<Vec<f32>>), SealError> {
        let plain = open_part(
            key,
            &aad(b"attrs", place, key, self.created_ms, self.updated_ms),
            &self.attrs,
        )?;
        let mut reader = Reader(&plain);
        let count = reader.u32()?;
        let mut metadata = Metadata::new();
        for _ in 0..count {
            let k = reader.string()?;
            let v = reader.string()?;
            metadata.insert(k, v);
        }
        let dims = reader.u32()? as usize;
        let embedding = if dims == 0 {
            None
        } else {
            let bytes = reader.take(dims * 4)?;
            Some(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )
        };
        Ok((metadata, embedding))
    }

    /// Opens the value.
    pub fn open_value(&self, key: &SubjectKey, place: Place<'_>) -> Result<Value, SealError> {
        let plain = open_part(
            key,
            &aad(b"value", place, key, self.created_ms, self.updated_ms),
            &self.value,
        )?;
        match plain.first() {
            Some(0) => String::from_utf8(plain[1..].to_vec())
                .map(Value::Text)
                .map_err(|_| SealError::Malformed("text value is not UTF-8")),
            Some(1) => Ok(Value::Bytes(plain[1..].to_vec())),
            _ => Err(SealError::Malformed("unknown value kind")),
        }
    }

    /// Bytes of the sealed value (for page budgets before opening).
    pub fn sealed_value_len(&self) -> usize {
        self.value.len()
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SealError> {
        if self.0.len() < n {
            return Err(SealError::Malformed("sealed attrs truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, SealError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<String, SealError> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| SealError::Malformed("metadata is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(handle: u64, subject: &str, byte: u8) -> SubjectKey {
        SubjectKey {
            handle,
            subject: subject.into(),
            key: Zeroizing::new([byte; 32]),
        }
    }

    #[test]
    fn rows_round_trip_and_are_bound_to_place_subject_and_time() {
        let alice = key(1, "alice", 7);
        let place = Place {
            namespace: "ns",
            key: "k",
        };
        let metadata: Metadata = [("lang".to_owned(), "en".to_owned())].into();
        let value = Value::Text("a secret sentence".into());
        let row = Row::seal(&alice, place, 5, 6, &value, &metadata, Some(&[1.0, -2.0])).unwrap();
        let bytes = row.to_bytes();
        assert!(!bytes.windows(6).any(|w| w == b"secret"));
        let row = Row::from_bytes(&bytes).unwrap();
        assert_eq!(row.open_value(&alice, place).unwrap(), value);
        assert_eq!(
            row.open_attrs(&alice, place).unwrap(),
            (metadata, Some(vec![1.0, -2.0]))
        );
        let other = Place {
            namespace: "ns",
            key: "other",
        };
        assert!(matches!(
            row.open_value(&alice, other),
            Err(SealError::Inauthentic)
        ));
        assert!(row.open_value(&key(1, "mallory", 7), place).is_err());
        assert!(row.open_value(&key(1, "alice", 8), place).is_err());
        let mut edited = bytes.clone();
        edited[10] ^= 1; // created_ms
        assert!(
            Row::from_bytes(&edited)
                .unwrap()
                .open_value(&alice, place)
                .is_err()
        );
    }
}
