//! The operator's ML-DSA-65 signing key (FIPS 204, pure, empty context) and
//! its files (OAR.md §6).
//!
//! - Secret key file `signing.key`, mode 0600, one line:
//!   `PRIVATE+KEY+<name>+<key id hex>+<base64(0xff || 32-byte seed ξ)>`.
//!   The seed is FIPS 204's `KeyGen_internal` input; the key pair is derived
//!   from it. It never leaves the audit service's data directory.
//! - Public key file `signing.pub`, one line, the signed-note verifier key:
//!   `<name>+<key id hex>+<base64(0xff || 1952-byte public key)>`.
//! - Key id: the first 4 bytes of `SHA-256(name || 0x0a || 0xff || public key)`,
//!   the C2SP signed-note construction with signature type 0xff (OAR.md §5.2
//!   says why 0xff).
//!
//! Signatures use FIPS 204's deterministic variant (`rnd` = 32 zero bytes),
//! so a checkpoint is a pure function of key and content: if the service
//! dies between signing and storing one, it re-creates the same bytes.
//!
//! Two implementations, one algorithm: key generation and signing use
//! `libcrux-ml-dsa` (Cryspen, formally verified, AVX2 when the CPU has it),
//! because a signature is on the path of every intent and libcrux signs
//! several times faster than the `ml-dsa` crate; verification uses `ml-dsa`.
//! Both are FIPS 204: the same seed gives the same key pair and the same
//! deterministic signature in each (and in the independent `fips204` crate),
//! which the tests below check. libcrux gives up after FIPS 204's suggested
//! bound of 814 signing attempts (Appendix C); for the astronomically rare
//! message that needs more, `ml-dsa`, which has no bound, signs instead and
//! produces the signature FIPS 204 defines.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use libcrux_ml_dsa::ml_dsa_65 as libcrux65;
use ml_dsa::{EncodedSignature, EncodedVerifyingKey, MlDsa65, Signature, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// The signed-note signature type byte sios uses for ML-DSA-65.
pub const SIG_TYPE: u8 = 0xff;
/// Bytes in an ML-DSA-65 signature.
pub const SIGNATURE_LEN: usize = 3309;
/// The secret key file in the audit data directory.
pub const SECRET_FILE: &str = "signing.key";
/// The public key file in the audit data directory.
pub const PUBLIC_FILE: &str = "signing.pub";
/// A secret key generated for a rotation, until the rotation is committed.
pub const NEXT_SECRET_FILE: &str = "signing.key.next";

/// Why a key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{0}: a signing key already exists; `sios keys rotate` replaces it while keeping the log verifiable"
    )]
    Exists(PathBuf),
    #[error("{path}: not a sios key file: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("{0}: is readable by others than its owner; run `chmod 600` on it")]
    Permissions(PathBuf),
    #[error("the system random number generator failed: {0}")]
    Random(String),
    #[error("key name `{0}` is not allowed: it must be non-empty, without spaces, `+` or newlines")]
    BadName(String),
}

impl KeyError {
    /// What went wrong, without the file's path: for a caller that names the
    /// file itself.
    pub fn reason(&self) -> String {
        match self {
            KeyError::Io { source, .. } => source.to_string(),
            KeyError::Malformed { reason, .. } => format!("not a sios key file: {reason}"),
            other => other.to_string(),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

fn check_name(name: &str) -> Result<(), KeyError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
    {
        return Err(KeyError::BadName(name.to_owned()));
    }
    Ok(())
}

/// `SHA-256(name || 0x0a || 0xff || public key)[0..4]`.
pub fn key_id(name: &str, public_key: &[u8]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', SIG_TYPE]);
    h.update(public_key);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// A verifier key: a name and an ML-DSA-65 public key.
#[derive(Clone)]
pub struct PublicKey {
    name: String,
    bytes: Vec<u8>,
    id: [u8; 4],
    key: VerifyingKey<MlDsa65>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({}+{})", self.name, self.id_hex())
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &PublicKey) -> bool {
        self.name == other.name && self.bytes == other.bytes
    }
}

impl Eq for PublicKey {}

impl PublicKey {
    /// From a name and the 1952 bytes of FIPS 204 `pkEncode`.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Option<PublicKey> {
        check_name(name).ok()?;
        let enc = EncodedVerifyingKey::<MlDsa65>::try_from(bytes).ok()?;
        let key = VerifyingKey::<MlDsa65>::decode(&enc);
        // pkDecode accepts any bytes; insist they are what pkEncode writes.
        if key.encode().as_slice() != bytes {
            return None;
        }
        Some(PublicKey {
            name: name.to_owned(),
            bytes: bytes.to_vec(),
            id: key_id(name, bytes),
            key,
        })
    }

    /// Parses `<name>+<key id hex>+<base64(0xff || public key)>`.
    pub fn parse_vkey(line: &str) -> Result<PublicKey, String> {
        let line = line.trim_end_matches('\n');
        let mut parts = line.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err("expected `<name>+<key id>+<base64 key>`".into());
        };
        let raw = B64
            .decode(b64)
            .map_err(|e| format!("the key is not base64: {e}"))?;
        let Some((&SIG_TYPE, bytes)) = raw.split_first() else {
            return Err(format!(
                "the key does not start with signature type 0x{SIG_TYPE:02x} (ML-DSA-65 in sios)"
            ));
        };
        let key = PublicKey::from_bytes(name, bytes)
            .ok_or_else(|| "not an ML-DSA-65 public key of 1952 bytes".to_owned())?;
        if key.id_hex() != id_hex {
            return Err(format!(
                "key id {id_hex} does not match the key (its id is {})",
                key.id_hex()
            ));
        }
        Ok(key)
    }

    /// The verifier key line (no newline).
    pub fn to_vkey(&self) -> String {
        let mut raw = Vec::with_capacity(1 + self.bytes.len());
        raw.push(SIG_TYPE);
        raw.extend_from_slice(&self.bytes);
        format!("{}+{}+{}", self.name, self.id_hex(), B64.encode(raw))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn id(&self) -> [u8; 4] {
        self.id
    }

    pub fn id_hex(&self) -> String {
        crate::hex(&self.id)
    }

    /// ML-DSA-65 `Verify(pk, message, signature, ctx = "")`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(enc) = EncodedSignature::<MlDsa65>::try_from(signature) else {
            return false;
        };
        let Some(sig) = Signature::<MlDsa65>::decode(&enc) else {
            return false;
        };
        self.key.verify_with_context(message, &[], &sig)
    }
}

/// A signing key and its name.
pub struct SecretKey {
    seed: [u8; 32],
    /// FIPS 204 `skEncode` of the expanded key (4032 bytes), boxed so that
    /// moving the key does not leave copies on the stack.
    signing: Box<libcrux65::MLDSA65SigningKey>,
    public: PublicKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({:?})", self.public)
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        // libcrux's key type does not zeroise itself: clear it and the seed
        // (black_box keeps the stores from being optimised away).
        self.seed = [0; 32];
        self.signing.as_ref_mut().fill(0);
        std::hint::black_box(&self.seed);
        std::hint::black_box(&self.signing);
    }
}

impl SecretKey {
    /// FIPS 204 `KeyGen_internal(ξ)` under `name`.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<SecretKey, KeyError> {
        check_name(name)?;
        // libcrux's `generate_key_pair(randomness)` is `KeyGen_internal(ξ)`.
        let mut pair = libcrux65::generate_key_pair(seed);
        let public = PublicKey::from_bytes(name, pair.verification_key.as_slice())
            .expect("a derived public key is well formed");
        let signing = Box::new(pair.signing_key.clone());
        pair.signing_key.as_ref_mut().fill(0);
        std::hint::black_box(&pair.signing_key);
        Ok(SecretKey {
            seed,
            signing,
            public,
        })
    }

    /// A fresh key from the operating system's random number generator.
    pub fn generate(name: &str) -> Result<SecretKey, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        SecretKey::from_seed(name, seed)
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// ML-DSA-65 `Sign(sk, message, ctx = "")`, deterministic variant.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match libcrux65::sign(&self.signing, message, &[], [0u8; 32]) {
            Ok(sig) => sig.as_slice().to_vec(),
            // Only `RejectionSamplingError` can happen with an empty context:
            // see the module doc.
            Err(_) => self.sign_unbounded(message),
        }
    }

    /// The same signature from the `ml-dsa` crate, which retries without
    /// bound; used when libcrux gives up.
    fn sign_unbounded(&self, message: &[u8]) -> Vec<u8> {
        use ml_dsa::signature::Signer as _;
        // The `Signer` impl is FIPS 204 ML-DSA.Sign, deterministic, empty context.
        let key = SigningKey::<MlDsa65>::from_seed(&self.seed.into());
        let sig: Signature<MlDsa65> = key.sign(message);
        sig.encode().to_vec()
    }

    fn to_skey(&self) -> String {
        let mut raw = Vec::with_capacity(33);
        raw.push(SIG_TYPE);
        raw.extend_from_slice(&self.seed);
        format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.public.name,
            self.public.id_hex(),
            B64.encode(raw)
        )
    }

    fn parse_skey(path: &Path, text: &str) -> Result<SecretKey, KeyError> {
        let bad = |reason: &str| KeyError::Malformed {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let line = text.trim_end_matches('\n');
        let rest = line
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| bad("does not start with PRIVATE+KEY+"))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected PRIVATE+KEY+<name>+<key id>+<base64 seed>"));
        };
        let raw = B64.decode(b64).map_err(|_| bad("the seed is not base64"))?;
        if raw.len() != 33 || raw[0] != SIG_TYPE {
            return Err(bad("expected 0xff and a 32-byte ML-DSA-65 seed"));
        }
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&raw[1..]);
        let key = SecretKey::from_seed(name, seed)?;
        if key.public.id_hex() != id_hex {
            return Err(bad("the key id does not match the seed"));
        }
        Ok(key)
    }

    /// Reads a secret key file, refusing one that others can read.
    pub fn load(path: &Path) -> Result<SecretKey, KeyError> {
        let meta = fs::metadata(path).map_err(io(path))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(KeyError::Permissions(path.to_owned()));
        }
        let text = fs::read_to_string(path).map_err(io(path))?;
        SecretKey::parse_skey(path, &text)
    }

    /// Writes the secret key file (0600, created fresh, synced, directory
    /// synced); fails if it exists.
    pub fn store(&self, path: &Path) -> Result<(), KeyError> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    KeyError::Exists(path.to_owned())
                } else {
                    io(path)(e)
                }
            })?;
        file.write_all(format!("{}\n", self.to_skey()).as_bytes())
            .map_err(io(path))?;
        file.sync_all().map_err(io(path))?;
        sync_parent(path)
    }
}

/// Makes a rename or creation in `path`'s directory durable.
pub fn sync_parent(path: &Path) -> Result<(), KeyError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Writes `signing.pub` (0644) atomically.
pub fn write_public(path: &Path, key: &PublicKey) -> Result<(), KeyError> {
    write_atomically(path, public_file_text(key).as_bytes())
}

/// A public key file's whole text: its verifier key line.
fn public_file_text(key: &PublicKey) -> String {
    format!("{}\n", key.to_vkey())
}

/// Reads a public key file's bytes; `Err` says why they are not one.
fn parse_public_file(bytes: &[u8]) -> Result<PublicKey, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| "it is not text (a public key file is one line)".to_owned())?;
    if text.starts_with("PRIVATE+KEY+") {
        return Err(format!(
            "it is the operator's secret signing key, not a public key. Name the public key \
             instead ({PUBLIC_FILE} beside it, or the file `sios keys export-public` wrote), \
             and keep {SECRET_FILE} on the appliance: whoever holds it can sign checkpoints"
        ));
    }
    PublicKey::parse_vkey(text.trim())
}

/// Writes a file that others may read (0644) so that a crash leaves the old
/// content or the new, never a mix (`sios_ipc::new_file::replace`).
pub fn write_atomically(path: &Path, content: &[u8]) -> Result<(), KeyError> {
    sios_ipc::new_file::replace(path, content, 0o644).map_err(io(path))
}

/// The key(s) that must sign a log's checkpoint of `size` (OAR.md §6.3),
/// given the log's keys, each with the seq of the record that introduced
/// it, oldest first: the old key and the new for a rotation's hand-over
/// checkpoint (size `r + 1`), otherwise the newest key introduced before
/// `size - 1`. Empty only if `history` is.
pub fn in_force(history: &[(u64, PublicKey)], size: u64) -> Vec<&PublicKey> {
    let Some((_, first)) = history.first() else {
        return Vec::new();
    };
    let mut in_force = first;
    for pair in history.windows(2) {
        let [(_, old), (seq, new)] = pair else {
            unreachable!("windows of two")
        };
        if seq + 1 < size {
            in_force = new;
        } else if seq + 1 == size {
            return vec![old, new];
        }
    }
    vec![in_force]
}

/// Reads a public key file (a verifier key line).
pub fn read_public(path: &Path) -> Result<PublicKey, KeyError> {
    let malformed = |reason: String| KeyError::Malformed {
        path: path.to_owned(),
        reason,
    };
    let bytes = sios_ipc::input::read_at_most(path, MAX_PUBLIC_FILE_BYTES, "a public key file")
        .map_err(|err| match err {
            sios_ipc::input::InputError::Unreadable { source, .. } => io(path)(source),
            // Said without the path, which the error names already.
            sios_ipc::input::InputError::TooLarge { limit, .. } => malformed(format!(
                "it is larger than {} KiB, which no public key file is",
                limit >> 10
            )),
        })?;
    parse_public_file(&bytes).map_err(malformed)
}

/// Most bytes a public key file is read to: its one line is some 2.7 KB.
pub const MAX_PUBLIC_FILE_BYTES: usize = 64 * 1024;

/// A fresh log name (the checkpoint origin and key name):
/// `sios/audit/<16 random hex digits>`.
pub fn fresh_name() -> Result<String, KeyError> {
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(format!("sios/audit/{}", crate::hex(&id)))
}

/// `sios keys init`: generates the key pair in `data_dir` (created 0700 if
/// missing) unless one exists. Returns the public key.
pub fn init(data_dir: &Path) -> Result<PublicKey, KeyError> {
    fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let secret = data_dir.join(SECRET_FILE);
    if secret.exists() {
        return Err(KeyError::Exists(secret));
    }
    let key = SecretKey::generate(&fresh_name()?)?;
    key.store(&secret)?;
    write_public(&data_dir.join(PUBLIC_FILE), key.public())?;
    Ok(key.public().clone())
}

/// `sios keys export-public <file>`: copies the current public key of the
/// key pair in `data_dir` to `out`.
/// `out` may already hold a public key (exported before, to be replaced);
/// any other file there is refused, not overwritten: `signing.key` named
/// by mistake would otherwise be destroyed.
pub fn export_public(data_dir: &Path, out: &Path) -> Result<PublicKey, KeyError> {
    let key = read_public(&data_dir.join(PUBLIC_FILE))?;
    sios_ipc::new_file::replace_own(
        out,
        public_file_text(&key).as_bytes(),
        0o644,
        "a public key file",
        |bytes| parse_public_file(bytes).is_ok(),
    )
    .map_err(io(out))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_public_replaces_a_public_key_but_never_the_secret_key() {
        let dir = tempfile::tempdir().unwrap();
        let public = init(dir.path()).unwrap();
        let secret_path = dir.path().join(SECRET_FILE);
        let secret = fs::read(&secret_path).unwrap();
        let err = export_public(dir.path(), &secret_path).unwrap_err();
        assert!(
            err.to_string().contains("is not a public key file"),
            "{err}"
        );
        assert_eq!(
            fs::read(&secret_path).unwrap(),
            secret,
            "the secret key is intact"
        );
        // Exported again over an earlier export: replaced, as before.
        let out = dir.path().join("for-auditors.pub");
        export_public(dir.path(), &out).unwrap();
        assert_eq!(export_public(dir.path(), &out).unwrap(), public);
        assert_eq!(read_public(&out).unwrap(), public);
    }

    #[test]
    fn a_secret_key_named_as_the_public_key_is_refused_saying_so() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path()).unwrap();
        let err = read_public(&dir.path().join(SECRET_FILE)).unwrap_err();
        let told = err.to_string();
        assert!(
            matches!(err, KeyError::Malformed { .. })
                && told.contains("secret signing key, not a public key")
                && told.contains(PUBLIC_FILE),
            "{told}"
        );
        read_public(&dir.path().join(PUBLIC_FILE)).unwrap();
    }

    #[test]
    fn seed_derived_keys_and_signatures_are_stable() {
        let key = SecretKey::from_seed("sios/audit/test", [7u8; 32]).unwrap();
        let again = SecretKey::from_seed("sios/audit/test", [7u8; 32]).unwrap();
        assert_eq!(key.public(), again.public());
        assert_eq!(key.public().bytes().len(), 1952);
        let sig = key.sign(b"hello");
        assert_eq!(sig.len(), SIGNATURE_LEN);
        assert_eq!(sig, again.sign(b"hello"), "deterministic signing");
        assert!(key.public().verify(b"hello", &sig));
        assert!(!key.public().verify(b"hellp", &sig));
        let mut bad = sig.clone();
        bad[100] ^= 1;
        assert!(!key.public().verify(b"hello", &bad));
        assert!(!key.public().verify(b"hello", &sig[..100]));
    }

    /// OAR.md §6.3 with keys introduced at records 0, 5 and 9: each key
    /// signs from its introduction (exclusive) through its successor's
    /// hand-over, which both sign.
    #[test]
    fn the_key_in_force_follows_rotations_and_hand_overs() {
        let k: Vec<PublicKey> = (0..3u8)
            .map(|n| {
                SecretKey::from_seed("sios/audit/test", [n; 32])
                    .unwrap()
                    .public()
                    .clone()
            })
            .collect();
        let history = vec![(0, k[0].clone()), (5, k[1].clone()), (9, k[2].clone())];
        let expected: [(u64, &[usize]); 8] = [
            (1, &[0]),
            (5, &[0]),
            (6, &[0, 1]),
            (7, &[1]),
            (10, &[1, 2]),
            (11, &[2]),
            (1000, &[2]),
            (0, &[0]),
        ];
        for (size, want) in expected {
            let want: Vec<&PublicKey> = want.iter().map(|&i| &k[i]).collect();
            assert_eq!(in_force(&history, size), want, "size {size}");
        }
        assert!(in_force(&[], 3).is_empty());
    }

    #[test]
    fn vkey_round_trips_and_rejects_mismatched_ids() {
        let key = SecretKey::from_seed("sios/audit/test", [1u8; 32]).unwrap();
        let line = key.public().to_vkey();
        assert_eq!(&PublicKey::parse_vkey(&line).unwrap(), key.public());
        let other = SecretKey::from_seed("sios/audit/test", [2u8; 32]).unwrap();
        let forged = format!(
            "sios/audit/test+{}+{}",
            other.public().id_hex(),
            line.rsplit('+').next().unwrap()
        );
        assert!(PublicKey::parse_vkey(&forged).is_err());
        assert!(PublicKey::parse_vkey("nonsense").is_err());
    }

    #[test]
    fn key_files_are_private_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let public = init(dir.path()).unwrap();
        let secret = dir.path().join(SECRET_FILE);
        let mode = fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(SecretKey::load(&secret).unwrap().public(), &public);
        assert!(matches!(init(dir.path()), Err(KeyError::Exists(_))));
        let out = dir.path().join("exported.pub");
        assert_eq!(export_public(dir.path(), &out).unwrap(), public);
        assert_eq!(read_public(&out).unwrap(), public);
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            SecretKey::load(&secret),
            Err(KeyError::Permissions(_))
        ));
    }

    /// The signer (libcrux) and the verifier's implementation (`ml-dsa`)
    /// agree: the same seed gives the same public key as `ml-dsa`'s
    /// `KeyGen_internal` (so key files made before the switch keep working),
    /// and byte-identical deterministic signatures, including the fallback
    /// path, over messages of many lengths.
    #[test]
    fn the_signer_and_the_verifier_implementation_agree() {
        use ml_dsa::signature::Signer as _;
        for seed in [
            [0u8; 32],
            [7u8; 32],
            [0xffu8; 32],
            *b"sios-oar ml-dsa-65 seed 32 bytes",
        ] {
            let ours = SecretKey::from_seed("sios/audit/x", seed).unwrap();
            let theirs = SigningKey::<MlDsa65>::from_seed(&seed.into());
            let vk = ml_dsa::Keypair::verifying_key(&theirs);
            assert_eq!(vk.encode().as_slice(), ours.public().bytes());
            for len in [0usize, 1, 59, 64, 135, 136, 137, 1000] {
                let msg: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
                let sig = ours.sign(&msg);
                let want: Signature<MlDsa65> = theirs.sign(&msg);
                assert_eq!(sig.as_slice(), want.encode().as_slice(), "length {len}");
                assert_eq!(ours.sign_unbounded(&msg), sig, "fallback, length {len}");
                assert!(ours.public().verify(&msg, &sig));
            }
        }
    }

    /// Cross-implementation check: the `fips204` crate (an independent
    /// ML-DSA-65) derives the same public key from the same seed, produces
    /// byte-identical deterministic signatures (rnd = 32 zero bytes), accepts
    /// ours, and we accept its hedged ones.
    #[test]
    fn signatures_match_an_independent_implementation() {
        use fips204::ml_dsa_65;
        use fips204::traits::{KeyGen as _, SerDes as _, Signer as _, Verifier as _};
        for seed in [[0u8; 32], [42u8; 32], *b"sios-oar ml-dsa-65 seed 32 bytes"] {
            let ours = SecretKey::from_seed("sios/audit/x", seed).unwrap();
            let (pk, sk) = ml_dsa_65::KG::keygen_from_seed(&seed);
            assert_eq!(pk.clone().into_bytes().as_slice(), ours.public().bytes());
            let msg = b"sios/audit/x\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
            let sig = ours.sign(msg);
            let theirs_det = sk.try_sign_with_seed(&[0u8; 32], msg, &[]).unwrap();
            assert_eq!(
                sig.as_slice(),
                theirs_det.as_slice(),
                "deterministic signatures agree"
            );
            let sig_arr: [u8; SIGNATURE_LEN] = sig.as_slice().try_into().unwrap();
            assert!(pk.verify(msg, &sig_arr, &[]));
            let hedged = sk.try_sign(msg, &[]).unwrap();
            assert!(ours.public().verify(msg, &hedged));
            assert!(
                !pk.verify(msg, &sig_arr, b"ctx"),
                "a context changes the message"
            );
        }
    }
}
