//! The small subset of CBOR (RFC 8949) that records use, in its
//! deterministic form (RFC 8949 §4.2.1 "Core Deterministic Encoding").
//!
//! Only unsigned integers (major type 0), byte strings (2), text strings (3),
//! arrays (4) and maps (5) exist here. The encoder always writes the shortest
//! head and definite lengths; map keys are written by the caller in
//! ascending order (records use small integer keys, whose encodings sort like
//! the numbers). The [`Decoder`] refuses everything else: indefinite lengths,
//! non-shortest heads, other major types, invalid UTF-8. Callers check key
//! order and trailing bytes.

/// Appends CBOR items to a byte vector.
#[derive(Debug, Default)]
pub struct Encoder {
    pub out: Vec<u8>,
}

impl Encoder {
    pub fn with_capacity(n: usize) -> Encoder {
        Encoder {
            out: Vec::with_capacity(n),
        }
    }

    fn head(&mut self, major: u8, n: u64) {
        let m = major << 5;
        if n < 24 {
            self.out.push(m | n as u8);
        } else if n <= 0xff {
            self.out.extend_from_slice(&[m | 24, n as u8]);
        } else if n <= 0xffff {
            self.out.push(m | 25);
            self.out.extend_from_slice(&(n as u16).to_be_bytes());
        } else if n <= 0xffff_ffff {
            self.out.push(m | 26);
            self.out.extend_from_slice(&(n as u32).to_be_bytes());
        } else {
            self.out.push(m | 27);
            self.out.extend_from_slice(&n.to_be_bytes());
        }
    }

    pub fn uint(&mut self, n: u64) {
        self.head(0, n);
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.head(2, b.len() as u64);
        self.out.extend_from_slice(b);
    }

    pub fn text(&mut self, s: &str) {
        self.head(3, s.len() as u64);
        self.out.extend_from_slice(s.as_bytes());
    }

    pub fn array(&mut self, len: usize) {
        self.head(4, len as u64);
    }

    pub fn map(&mut self, len: usize) {
        self.head(5, len as u64);
    }
}

/// Why bytes are not deterministic CBOR of the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CborError {
    #[error("ends early, at byte {0}")]
    Truncated(usize),
    #[error("byte {at}: expected {expected}, found major type {found}")]
    WrongType {
        at: usize,
        expected: &'static str,
        found: u8,
    },
    #[error("byte {0}: length or integer is not in its shortest form (RFC 8949 §4.2.1)")]
    NotShortest(usize),
    #[error("byte {0}: indefinite length or reserved additional information")]
    Indefinite(usize),
    #[error("byte {0}: text string is not valid UTF-8")]
    BadUtf8(usize),
    #[error("{0} bytes follow the record")]
    Trailing(usize),
}

/// Reads deterministic CBOR items from a byte slice.
#[derive(Debug)]
pub struct Decoder<'a> {
    bytes: &'a [u8],
    pub pos: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(bytes: &'a [u8]) -> Decoder<'a> {
        Decoder { bytes, pos: 0 }
    }

    /// The next item's major type, without consuming it.
    pub fn peek_major(&self) -> Result<u8, CborError> {
        self.bytes
            .get(self.pos)
            .map(|b| b >> 5)
            .ok_or(CborError::Truncated(self.pos))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CborError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(CborError::Truncated(self.bytes.len()))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn head(&mut self, major: u8, expected: &'static str) -> Result<u64, CborError> {
        let at = self.pos;
        let first = self.take(1)?[0];
        if first >> 5 != major {
            return Err(CborError::WrongType {
                at,
                expected,
                found: first >> 5,
            });
        }
        let info = first & 0x1f;
        let (n, min) = match info {
            0..=23 => return Ok(u64::from(info)),
            24 => (u64::from(self.take(1)?[0]), 24),
            25 => {
                let b = self.take(2)?;
                (u64::from(u16::from_be_bytes([b[0], b[1]])), 0x100)
            }
            26 => {
                let b = self.take(4)?;
                (
                    u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
                    0x1_0000,
                )
            }
            27 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                (u64::from_be_bytes(a), 0x1_0000_0000)
            }
            _ => return Err(CborError::Indefinite(at)),
        };
        if n < min {
            return Err(CborError::NotShortest(at));
        }
        Ok(n)
    }

    pub fn uint(&mut self) -> Result<u64, CborError> {
        self.head(0, "an unsigned integer")
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], CborError> {
        let n = self.head(2, "a byte string")?;
        self.take(usize::try_from(n).map_err(|_| CborError::Truncated(self.pos))?)
    }

    pub fn text(&mut self) -> Result<&'a str, CborError> {
        let at = self.pos;
        let n = self.head(3, "a text string")?;
        let raw = self.take(usize::try_from(n).map_err(|_| CborError::Truncated(self.pos))?)?;
        std::str::from_utf8(raw).map_err(|_| CborError::BadUtf8(at))
    }

    pub fn array(&mut self) -> Result<u64, CborError> {
        self.head(4, "an array")
    }

    pub fn map(&mut self) -> Result<u64, CborError> {
        self.head(5, "a map")
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), CborError> {
        match self.bytes.len() - self.pos {
            0 => Ok(()),
            n => Err(CborError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: impl FnOnce(&mut Encoder)) -> Vec<u8> {
        let mut e = Encoder::default();
        f(&mut e);
        e.out
    }

    /// RFC 8949 Appendix A examples for the types used here.
    #[test]
    fn rfc8949_appendix_a_examples() {
        let cases: &[(u64, &str)] = &[
            (0, "00"),
            (1, "01"),
            (10, "0a"),
            (23, "17"),
            (24, "1818"),
            (25, "1819"),
            (100, "1864"),
            (1000, "1903e8"),
            (1_000_000, "1a000f4240"),
            (1_000_000_000_000, "1b000000e8d4a51000"),
            (u64::MAX, "1bffffffffffffffff"),
        ];
        for (n, hex) in cases {
            let bytes = enc(|e| e.uint(*n));
            assert_eq!(to_hex(&bytes), *hex, "{n}");
            let mut d = Decoder::new(&bytes);
            assert_eq!(d.uint().unwrap(), *n);
            d.finish().unwrap();
        }
        assert_eq!(to_hex(&enc(|e| e.bytes(&[1, 2, 3, 4]))), "4401020304");
        assert_eq!(to_hex(&enc(|e| e.text("IETF"))), "6449455446");
        assert_eq!(to_hex(&enc(|e| e.text("\u{00fc}"))), "62c3bc");
        assert_eq!(to_hex(&enc(|e| e.array(0))), "80");
        assert_eq!(to_hex(&enc(|e| e.map(0))), "a0");
    }

    #[test]
    fn non_shortest_and_indefinite_forms_are_refused() {
        for hex in [
            "1817",
            "190017",
            "1a00000017",
            "1b0000000000000017",
            "1900ff",
        ] {
            let bytes = from_hex(hex);
            assert!(
                matches!(Decoder::new(&bytes).uint(), Err(CborError::NotShortest(0))),
                "{hex}"
            );
        }
        let indefinite = from_hex("5f4101ff");
        assert!(matches!(
            Decoder::new(&indefinite).bytes(),
            Err(CborError::Indefinite(0))
        ));
        let bad_utf8 = from_hex("62c328");
        assert!(matches!(
            Decoder::new(&bad_utf8).text(),
            Err(CborError::BadUtf8(0))
        ));
        let truncated = from_hex("4401");
        assert!(matches!(
            Decoder::new(&truncated).bytes(),
            Err(CborError::Truncated(_))
        ));
    }

    fn to_hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn from_hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
