//! Keyed hashes of customer content (OAR.md §3.4).
//!
//! A record never holds content, nor the content's bare SHA-256 (which
//! anyone holding the content could recompute and so link). It holds
//! `HMAC-SHA256(K_s, sha256(content))`, where `K_s` is 32 random bytes kept
//! per data subject in `audit.redb`. Erasing `K_s` makes every such hash of
//! that subject unlinkable, while the records, their chain and their
//! signatures stay intact: the verifier never needs `K_s`.

use crate::merkle::Hash;
use sha2::{Digest as _, Sha256};

/// The message whose HMAC is a record's `subject` pseudonym.
pub const SUBJECT_LABEL: &[u8] = b"sios-oar/v1 subject";

/// HMAC-SHA256 (RFC 2104) with a 32-byte key.
pub fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> Hash {
    const BLOCK: usize = 64;
    let mut ipad = [0x36u8; BLOCK];
    let mut opad = [0x5cu8; BLOCK];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// The subject's pseudonym in records.
pub fn subject_ref(key: &[u8; 32]) -> Hash {
    hmac_sha256(key, SUBJECT_LABEL)
}

/// The keyed hash stored for one content digest.
pub fn keyed(key: &[u8; 32], digest: &Hash) -> Hash {
    hmac_sha256(key, digest)
}

/// A fresh linking key.
pub fn fresh_key() -> Result<[u8; 32], getrandom::Error> {
    let mut k = [0u8; 32];
    getrandom::fill(&mut k)?;
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2 has a 4-byte key; HMAC pads keys shorter than the
    /// block with zeros, so the same key zero-padded to 32 bytes gives the
    /// same MAC.
    #[test]
    fn rfc4231_case_2() {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let mac = hmac_sha256(&key, b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn different_keys_unlink() {
        let d = [5u8; 32];
        assert_ne!(keyed(&[1; 32], &d), keyed(&[2; 32], &d));
        assert_ne!(subject_ref(&[1; 32]), keyed(&[1; 32], &d));
    }
}
