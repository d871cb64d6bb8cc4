//! Checkpoints: a C2SP tlog-checkpoint body wrapped in a C2SP signed note
//! (<https://c2sp.org/tlog-checkpoint>, <https://c2sp.org/signed-note>),
//! signed with ML-DSA-65 (OAR.md §5).
//!
//! ```text
//! sios/audit/0123456789abcdef            origin (= the key name)
//! 42                                     tree size, decimal
//! 5dc9da79a70659a9ad559cb701ded9a2...=   base64 of the RFC 9162 root hash
//!                                        (blank line)
//! — sios/audit/0123456789abcdef AbCd...  em dash, key name, base64(key id || signature)
//! ```

use crate::keys::{PublicKey, SIGNATURE_LEN, SecretKey};
use crate::merkle::Hash;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// The signature line prefix: U+2014 EM DASH and a space.
const DASH: &str = "\u{2014} ";

/// An unsigned checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

/// One signature line of a note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: [u8; 4],
    pub signature: Vec<u8>,
}

/// Why a note or checkpoint is malformed or not signed as required.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("not a signed note: {0}")]
    Malformed(String),
    #[error("not a checkpoint body: {0}")]
    Body(String),
    #[error("no signature by key {name}+{key_id}")]
    MissingSignature { name: String, key_id: String },
    #[error("the signature by key {name}+{key_id} does not verify")]
    BadSignature { name: String, key_id: String },
}

impl Checkpoint {
    /// The note text that is signed: three lines, each ending in `\n`.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    pub fn parse_body(body: &str) -> Result<Checkpoint, NoteError> {
        let bad = |r: &str| NoteError::Body(r.to_owned());
        let lines: Vec<&str> = body
            .strip_suffix('\n')
            .ok_or_else(|| bad("does not end with a newline"))?
            .split('\n')
            .collect();
        // Extension lines may follow the three mandatory lines (C2SP); sios
        // writes none and accepts none, so that a body has one meaning.
        if lines.len() != 3 {
            return Err(bad("expected exactly three lines: origin, size, root"));
        }
        let origin = lines[0];
        if origin.is_empty() {
            return Err(bad("empty origin line"));
        }
        let size_text = lines[1];
        if size_text.is_empty()
            || !size_text.bytes().all(|b| b.is_ascii_digit())
            || (size_text.len() > 1 && size_text.starts_with('0'))
        {
            return Err(bad(
                "the size is not a decimal number without leading zeros",
            ));
        }
        let size: u64 = size_text
            .parse()
            .map_err(|_| bad("the size does not fit 64 bits"))?;
        let root_bytes = B64
            .decode(lines[2])
            .map_err(|_| bad("the root hash is not base64"))?;
        let root: Hash = root_bytes
            .as_slice()
            .try_into()
            .map_err(|_| bad("the root hash is not 32 bytes"))?;
        let cp = Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        };
        if cp.body() != body {
            return Err(bad("not in canonical form (base64 padding or spacing)"));
        }
        Ok(cp)
    }

    /// Signs the body with each key, in order; returns the note text.
    pub fn sign(&self, keys: &[&SecretKey]) -> String {
        let body = self.body();
        let mut note = body.clone();
        note.push('\n');
        for key in keys {
            let mut raw = key.public().id().to_vec();
            raw.extend_from_slice(&key.sign(body.as_bytes()));
            note.push_str(&format!(
                "{DASH}{} {}\n",
                key.public().name(),
                B64.encode(raw)
            ));
        }
        note
    }
}

/// Splits a signed note into its body (with its final newline) and its
/// signature lines.
pub fn open_note(note: &str) -> Result<(&str, Vec<NoteSignature>), NoteError> {
    let bad = |r: &str| NoteError::Malformed(r.to_owned());
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| bad("no blank line before the signatures"))?;
    let body = &note[..split + 1];
    let sigs = &note[split + 2..];
    let sigs = sigs
        .strip_suffix('\n')
        .ok_or_else(|| bad("the last signature line does not end with a newline"))?;
    let mut out = Vec::new();
    for line in sigs.split('\n') {
        let rest = line
            .strip_prefix(DASH)
            .ok_or_else(|| bad("a signature line does not start with an em dash and a space"))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| bad("a signature line has no space between name and signature"))?;
        if name.is_empty() {
            return Err(bad("a signature line has an empty key name"));
        }
        let raw = B64
            .decode(b64)
            .map_err(|_| bad("a signature is not base64"))?;
        if raw.len() < 5 {
            return Err(bad("a signature is shorter than its key id"));
        }
        out.push(NoteSignature {
            name: name.to_owned(),
            key_id: [raw[0], raw[1], raw[2], raw[3]],
            signature: raw[4..].to_vec(),
        });
    }
    if out.is_empty() {
        return Err(bad("no signature lines"));
    }
    Ok((body, out))
}

/// Parses a signed checkpoint and checks that each of `required` signed it.
/// Signature lines by other keys are ignored, as C2SP requires; every line
/// by a required key must verify (OAR.md §7.2: one that does not is a failed
/// proof, even beside a good one).
pub fn verify_checkpoint(note: &str, required: &[&PublicKey]) -> Result<Checkpoint, NoteError> {
    let (body, sigs) = open_note(note)?;
    let cp = Checkpoint::parse_body(body)?;
    for key in required {
        let id_hex = key.id_hex();
        let mut lines = sigs
            .iter()
            .filter(|s| s.name == key.name() && s.key_id == key.id())
            .peekable();
        if lines.peek().is_none() {
            return Err(NoteError::MissingSignature {
                name: key.name().to_owned(),
                key_id: id_hex,
            });
        }
        for line in lines {
            if line.signature.len() != SIGNATURE_LEN
                || !key.verify(body.as_bytes(), &line.signature)
            {
                return Err(NoteError::BadSignature {
                    name: key.name().to_owned(),
                    key_id: id_hex,
                });
            }
        }
    }
    Ok(cp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed("sios/audit/test", [n; 32]).unwrap()
    }

    #[test]
    fn body_format_is_c2sp() {
        let cp = Checkpoint {
            origin: "sios/audit/test".into(),
            size: 8,
            root: [0; 32],
        };
        assert_eq!(
            cp.body(),
            "sios/audit/test\n8\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
        );
        assert_eq!(Checkpoint::parse_body(&cp.body()).unwrap(), cp);
        for bad in [
            "o\n08\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
            "o\n8\nAAAA\n",
            "o\n8\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "o\n8\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\next\n",
            "\n8\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        ] {
            assert!(Checkpoint::parse_body(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn signed_checkpoints_verify_and_tampering_is_caught() {
        let (a, b) = (key(1), key(2));
        let cp = Checkpoint {
            origin: "sios/audit/test".into(),
            size: 3,
            root: [9; 32],
        };
        let note = cp.sign(&[&a]);
        assert!(note.contains("\n\n\u{2014} sios/audit/test "));
        assert_eq!(verify_checkpoint(&note, &[a.public()]).unwrap(), cp);
        assert!(matches!(
            verify_checkpoint(&note, &[b.public()]),
            Err(NoteError::MissingSignature { .. })
        ));
        // Two signatures: each required one must verify.
        let both = cp.sign(&[&a, &b]);
        verify_checkpoint(&both, &[a.public(), b.public()]).unwrap();
        // A changed size.
        let forged = note.replacen("\n3\n", "\n4\n", 1);
        assert!(matches!(
            verify_checkpoint(&forged, &[a.public()]),
            Err(NoteError::BadSignature { .. })
        ));
        // A flipped signature character.
        let mut bytes = note.clone().into_bytes();
        let at = bytes.len() - 10;
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(bytes).unwrap();
        assert!(verify_checkpoint(&flipped, &[a.public()]).is_err());
        // A good line followed by a bad one by the same key: a failed proof
        // (OAR.md §7.2), as the Python verifier says too.
        let bad_line = flipped.rsplit('\n').nth(1).unwrap();
        let doubled = format!("{note}{bad_line}\n");
        assert!(matches!(
            verify_checkpoint(&doubled, &[a.public()]),
            Err(NoteError::BadSignature { .. })
        ));
        // A line with an empty key name is malformed.
        let nameless = format!("{note}\u{2014}  AAAAAAAA\n");
        assert!(matches!(
            verify_checkpoint(&nameless, &[a.public()]),
            Err(NoteError::Malformed(_))
        ));
    }
}

#[cfg(test)]
mod vector {
    use super::*;
    use sha2::{Digest as _, Sha256};

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// OAR.md §9, vector 3: a key from a fixed seed, and the checkpoint of
    /// the three-record tree of vector 2 signed with it.
    #[test]
    fn pinned_key_and_checkpoint() {
        let key = SecretKey::from_seed("sios/audit/test", [7u8; 32]).unwrap();
        let pk_hash = hex(&Sha256::digest(key.public().bytes()));
        let root: Hash = {
            let mut r = [0u8; 32];
            let h = "0f48e5d4929024df413920e96c99ab2b94d382d0ee76438d82b0a5124289ab7d";
            for i in 0..32 {
                r[i] = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap();
            }
            r
        };
        let cp = Checkpoint {
            origin: "sios/audit/test".into(),
            size: 3,
            root,
        };
        let note = cp.sign(&[&key]);
        let (_, sigs) = open_note(&note).unwrap();
        assert_eq!(
            cp.body(),
            "sios/audit/test\n3\nD0jl1JKQJN9BOSDpbJmrK5TTgtDudkONgrClEkKJq30=\n"
        );
        assert_eq!(key.public().id_hex(), VECTOR_KEY_ID);
        assert_eq!(pk_hash, VECTOR_PK_SHA256);
        assert_eq!(hex(&Sha256::digest(&sigs[0].signature)), VECTOR_SIG_SHA256);
        verify_checkpoint(&note, &[key.public()]).unwrap();
    }

    const VECTOR_KEY_ID: &str = "63f3108d";
    const VECTOR_PK_SHA256: &str =
        "d3a1e51ecf491b79ca7691bd269271f8d8e8d94313a6abcc6c8ae8bc34b5f9aa";
    const VECTOR_SIG_SHA256: &str =
        "c01d6343b263113c637efd58fa5f71b2e0bc9cc74bfc842ad417c21621ed52a8";
}
