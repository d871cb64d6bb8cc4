//! Offline verification of an export bundle (OAR.md §8), with nothing but
//! the bundle and a public key the auditor trusts.
//!
//! One pass over the bundle checks, for every record: its canonical
//! encoding and rules, its sequence number, its predecessor hash, its time,
//! its intent/outcome pairing; and for every checkpoint: its place, its
//! origin, its root against the tree recomputed from the records (so every
//! two checkpoints are consistent by construction), and its signatures by the
//! key(s) in force (following `key.rotate` records). Signatures are checked
//! on worker threads while the records stream through.
//!
//! On failure it names the first bad record and why.

use crate::bundle::{BundleError, BundleReader, Item};
use crate::checkpoint::{Checkpoint, open_note, verify_checkpoint};
use crate::hex;
use crate::keys::{self, PublicKey, read_public};
use crate::merkle::{Frontier, Hash};
use crate::progress::{Counting, Progress};
use crate::record::{self, Kind, Record};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub origin: String,
    pub records: u64,
    pub checkpoints: u64,
    /// The root of the whole log (the last checkpoint's).
    pub root: Hash,
    /// Key ids, oldest first.
    pub keys: Vec<String>,
    pub intents: u64,
    pub outcomes: u64,
    pub events: u64,
    /// Intents without an outcome (in flight at export time, or interrupted).
    pub open_intents: u64,
    pub policies: u64,
    /// The last checkpoint's signed note, to keep for the next verification
    /// (OAR.md §8.3).
    pub last_checkpoint: String,
    /// The log's keys, each with the seq of the record that introduced it,
    /// oldest first: what [`keys::in_force`] needs to say which key signs
    /// the log's checkpoint of a given size (OAR.md §6.3).
    pub key_history: Vec<(u64, PublicKey)>,
    /// The root of the first `size` records, for each size asked for in
    /// [`VerifyOptions::roots_at`] that the bundle reaches.
    pub roots: BTreeMap<u64, Hash>,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let root = hex(&self.root);
        write!(
            f,
            "OK: {} ({}, {}, {}; {} without outcome), {}, {}, keys {} of log {}; root {root}",
            counted(self.records, "record"),
            counted(self.intents, "intent"),
            counted(self.outcomes, "outcome"),
            counted(self.events, "event"),
            counted(self.open_intents, "intent"),
            counted(self.checkpoints, "signed checkpoint"),
            counted(self.policies, "policy text"),
            self.keys.join(" -> "),
            self.origin
        )
    }
}

/// `n` and the noun, in the plural unless `n` is 1 ("1 record", "3 records").
pub fn counted(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Why verification failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyFailure {
    /// The inputs could not be read (not evidence against the log).
    #[error("{path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    /// The log is not intact. `check` is the failing check's name in OAR.md
    /// §8.1 (`"R-c"`, `"C-e"`, …); `seq` the record OAR.md §8.2 names (none
    /// when no record is wrong: a checkpoint or another item was altered,
    /// moved or added); `checkpoint` the checkpoint size involved, if any.
    #[error("{}", describe(*seq, *checkpoint, reason))]
    Invalid {
        check: &'static str,
        seq: Option<u64>,
        checkpoint: Option<u64>,
        reason: String,
    },
}

fn describe(seq: Option<u64>, checkpoint: Option<u64>, reason: &str) -> String {
    match (seq, checkpoint) {
        (Some(s), Some(c)) => format!("record {s} (checkpoint of size {c}): {reason}"),
        (Some(s), None) => format!("record {s}: {reason}"),
        (None, Some(c)) => format!("checkpoint of size {c}: {reason}"),
        (None, None) => reason.to_owned(),
    }
}

impl VerifyFailure {
    /// The first bad record, if one is named.
    pub fn seq(&self) -> Option<u64> {
        match self {
            VerifyFailure::Invalid { seq, .. } => *seq,
            VerifyFailure::Unreadable { .. } => None,
        }
    }

    /// The failing check's name in OAR.md §8.1, if the log is not intact.
    pub fn check(&self) -> Option<&'static str> {
        match self {
            VerifyFailure::Invalid { check, .. } => Some(check),
            VerifyFailure::Unreadable { .. } => None,
        }
    }
}

fn invalid(
    check: &'static str,
    seq: Option<u64>,
    checkpoint: Option<u64>,
    reason: impl Into<String>,
) -> VerifyFailure {
    VerifyFailure::Invalid {
        check,
        seq,
        checkpoint,
        reason: reason.into(),
    }
}

/// The records `from` up to, not including, `to`, with their verb, for
/// operators: "record 7 is", "records 7 to 9 are".
fn records(from: u64, to: u64) -> String {
    if to <= from + 1 {
        format!("record {from} is")
    } else {
        format!("records {from} to {} are", to - 1)
    }
}

/// What a verification checks beyond the bundle itself (OAR.md §8.3).
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The bytes of a signed checkpoint note the auditor kept from an
    /// earlier verification: the bundle must extend it.
    pub extends: Option<Vec<u8>>,
    /// Tree sizes whose roots the report carries ([`VerifyReport::roots`]),
    /// e.g. those of a proof's checkpoints, to check them against the
    /// verified log (OAR.md §7.2).
    pub roots_at: Vec<u64>,
    /// Told the bytes of the bundle file read, of its size, as the pass
    /// goes ([`verify_bundle_with`] only).
    pub progress: Option<Progress>,
}

/// Verifies the bundle at `bundle` against the public key file `trusted`.
pub fn verify_bundle(bundle: &Path, trusted: &Path) -> Result<VerifyReport, VerifyFailure> {
    verify_bundle_with(bundle, trusted, &VerifyOptions::default())
}

/// [`verify_bundle`], and the checks of `options`.
pub fn verify_bundle_with(
    bundle: &Path,
    trusted: &Path,
    options: &VerifyOptions,
) -> Result<VerifyReport, VerifyFailure> {
    let key = read_public(trusted).map_err(|e| VerifyFailure::Unreadable {
        path: trusted.to_owned(),
        reason: e.reason(),
    })?;
    let unreadable = |e: std::io::Error| VerifyFailure::Unreadable {
        path: bundle.to_owned(),
        reason: e.to_string(),
    };
    let file = std::fs::File::open(bundle).map_err(unreadable)?;
    let result = match &options.progress {
        Some(progress) => {
            let size = file.metadata().map_err(unreadable)?.len();
            verify_reader_with(Counting::new(file, size, progress.clone()), &key, options)
        }
        None => verify_reader_with(file, &key, options),
    };
    result.map_err(|f| match f {
        VerifyFailure::Unreadable { path, reason } if path.as_os_str() == BUNDLE => {
            VerifyFailure::Unreadable {
                path: bundle.to_owned(),
                reason,
            }
        }
        f => f,
    })
}

/// The bundle's name in an [`VerifyFailure::Unreadable`] before the caller
/// puts in its path.
const BUNDLE: &str = "<bundle>";

/// A signature check handed to the worker threads.
struct SigJob {
    size: u64,
    /// The first record this checkpoint newly covers.
    first: u64,
    note: String,
    keys: Vec<PublicKey>,
}

/// A failure and where in the bundle it was found: the number of records
/// before the item that failed (`u64::MAX` for the checks at the end), so
/// that the earliest of a structural failure and a signature failure (found
/// on another thread) is the one reported.
type Located = (u64, VerifyFailure);

/// Verifies a bundle read from `input` against `trusted`.
pub fn verify_reader(input: impl Read, trusted: &PublicKey) -> Result<VerifyReport, VerifyFailure> {
    verify_reader_with(input, trusted, &VerifyOptions::default())
}

/// [`verify_reader`], and the checks of `options`.
pub fn verify_reader_with(
    input: impl Read,
    trusted: &PublicKey,
    options: &VerifyOptions,
) -> Result<VerifyReport, VerifyFailure> {
    let kept = options.extends.as_deref().map(Kept::parse).transpose()?;
    let mut watch: Vec<u64> = kept
        .as_ref()
        .map(|k| k.checkpoint.size)
        .into_iter()
        .chain(options.roots_at.iter().copied())
        // No tree of size 0 is ever reached; waiting for one would block
        // every larger size behind it.
        .filter(|&size| size > 0)
        .collect();
    // Largest first, so the next size wanted is the last: one comparison
    // per record on the pass's hot path.
    watch.sort_unstable_by(|a, b| b.cmp(a));
    watch.dedup();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let (jobs_tx, jobs_rx) = mpsc::sync_channel::<SigJob>(256);
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    // The earliest signature failure found, by checkpoint size.
    let sig_failure: Arc<Mutex<Option<Located>>> = Arc::default();
    let result = std::thread::scope(|scope| {
        for _ in 0..workers {
            let rx = jobs_rx.clone();
            let failure = sig_failure.clone();
            scope.spawn(move || {
                loop {
                    let job = {
                        let Ok(rx) = rx.lock() else { return };
                        match rx.recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        }
                    };
                    let refs: Vec<&PublicKey> = job.keys.iter().collect();
                    if let Err(e) = verify_checkpoint(&job.note, &refs) {
                        let f = invalid(
                            "C-f",
                            Some(job.first),
                            Some(job.size),
                            format!(
                                "the checkpoint covering this record is not validly signed: {e}"
                            ),
                        );
                        let mut slot = failure.lock().expect("failure lock");
                        if slot.as_ref().is_none_or(|(size, _)| job.size < *size) {
                            *slot = Some((job.size, f));
                        }
                    }
                }
            });
        }
        let result = Pass::new(trusted.clone(), watch).run(input, &jobs_tx);
        drop(jobs_tx);
        // Workers finish the queue; the scope joins them.
        result
    });
    // A signature failure stands at its checkpoint, after `size` records: it
    // comes first unless the structural failure was found before that.
    let sig = sig_failure.lock().expect("failure lock").take();
    match (result, sig) {
        (Err((at, f)), Some((size, s))) => Err(if size <= at { s } else { f }),
        (Err((_, f)), None) | (Ok(_), Some((_, f))) => Err(f),
        (Ok(pass), None) => pass.report(kept.as_ref()),
    }
}

/// A failure whose record §8.2 names only once the next item is seen.
enum Pending {
    /// R-c: record `at` does not name its predecessor's hash. If the next
    /// record does not name `hash` (record `at`'s) either, record `at`
    /// changed; otherwise its predecessor did.
    ChainBreak { at: u64, hash: Hash, named: Hash },
    /// C-e with a valid signature: the records `first..size` are not the
    /// ones signed. If the next record still names record `size - 1`'s hash,
    /// they were rewritten with their links; otherwise record `size - 1`
    /// changed (the only record that can change without breaking a link).
    RootMismatch { size: u64, first: u64 },
}

/// The item before the current one, as the policy-text checks need it.
#[derive(Clone, Copy)]
enum Before {
    /// A record with a `policy` field whose text has not come yet.
    PolicyRecord {
        seq: u64,
        hash: Hash,
    },
    Other,
}

/// The state of one pass over the bundle.
struct Pass {
    trusted: PublicKey,
    origin: Option<String>,
    frontier: Frontier,
    last_hash: Hash,
    last_time: u64,
    /// (seq of the introducing record, key).
    keys: Vec<(u64, PublicKey)>,
    listed_keys: Vec<String>,
    open: HashMap<u64, Hash>,
    closed: HashSet<u64>,
    before: Before,
    policies: HashSet<Hash>,
    /// Records up to here are covered by a checkpoint whose root matched.
    verified_upto: u64,
    last_checkpoint: u64,
    last_note: String,
    checkpoints: u64,
    intents: u64,
    outcomes: u64,
    events: u64,
    /// The sizes whose roots are wanted: the checkpoint the auditor kept
    /// (OAR.md §8.3) and [`VerifyOptions::roots_at`]; and those roots, once
    /// the pass gets there. `watch` is sorted largest first, and loses each
    /// size once its root is taken.
    watch: Vec<u64>,
    roots: BTreeMap<u64, Hash>,
}

fn tag(r: &Record) -> Hash {
    Sha256::new()
        .chain_update(r.actor.as_bytes())
        .chain_update([0])
        .chain_update(r.action.as_bytes())
        .chain_update([0])
        .chain_update(r.resource.as_bytes())
        .finalize()
        .into()
}

/// Whether one signature line of `note` verifies under one of `keys`.
fn signed_by_any<'k>(note: &str, keys: impl IntoIterator<Item = &'k PublicKey>) -> bool {
    keys.into_iter()
        .any(|k| verify_checkpoint(note, &[k]).is_ok())
}

/// The `prev` field of a record's bytes, if they decode.
fn prev_of(bytes: &[u8]) -> Option<Hash> {
    Record::decode(bytes).ok().map(|r| r.prev)
}

impl Pass {
    fn new(trusted: PublicKey, watch: Vec<u64>) -> Pass {
        Pass {
            trusted,
            origin: None,
            frontier: Frontier::new(),
            last_hash: [0; 32],
            last_time: 0,
            keys: Vec::new(),
            listed_keys: Vec::new(),
            open: HashMap::new(),
            closed: HashSet::new(),
            before: Before::Other,
            policies: HashSet::new(),
            verified_upto: 0,
            last_checkpoint: 0,
            last_note: String::new(),
            checkpoints: 0,
            intents: 0,
            outcomes: 0,
            events: 0,
            watch,
            roots: BTreeMap::new(),
        }
    }

    fn next(&self) -> u64 {
        self.frontier.size()
    }

    /// §8.2's "`v` if `v < i`, else none": the first record a bad
    /// checkpoint here newly covers.
    fn newly_covered(&self) -> Option<u64> {
        (self.verified_upto < self.next()).then_some(self.verified_upto)
    }

    fn run(mut self, input: impl Read, jobs: &mpsc::SyncSender<SigJob>) -> Result<Pass, Located> {
        let mut reader = BundleReader::new(input).map_err(|e| (0, self.framing(e, false)))?;
        let mut pending: Option<Pending> = None;
        loop {
            let at = self.next();
            let item = match reader.next_item() {
                Ok(item) => item,
                Err(e) => {
                    if let Some(p) = pending.take() {
                        return Err((at, self.resolve(p, None)));
                    }
                    return Err((at, self.framing(e, reader.ended())));
                }
            };
            if let Some(p) = pending.take() {
                match item {
                    // §8.2 passes over policy texts and key lines.
                    Some(Item::Policy(_) | Item::Key(_)) => {
                        pending = Some(p);
                        continue;
                    }
                    _ => return Err((at, self.resolve(p, item.as_ref()))),
                }
            }
            let Some(item) = item else { break };
            // P-a: a record that activates a policy is followed by its text.
            if let Before::PolicyRecord { seq, hash } = self.before
                && !matches!(item, Item::Policy(_))
            {
                return Err((
                    at,
                    invalid(
                        "P-a",
                        Some(seq),
                        None,
                        format!(
                            "activates policy {} but its text does not follow it: it was removed",
                            hex(&hash)
                        ),
                    ),
                ));
            }
            let before = std::mem::replace(&mut self.before, Before::Other);
            let step = match item {
                Item::Key(line) => {
                    self.listed_keys.push(line);
                    Ok(None)
                }
                Item::Policy(text) => self.policy(&text, before).map(|()| None),
                Item::Record(bytes) => self.record(&bytes),
                Item::Checkpoint(note) => self.checkpoint(note, jobs),
                Item::End {
                    records,
                    checkpoints,
                } => self.end(records, checkpoints).map(|()| None),
            };
            match step {
                Ok(p) => pending = p,
                Err(f) => return Err((at, f)),
            }
        }
        self.finish().map_err(|f| (u64::MAX, f))?;
        Ok(self)
    }

    /// F: the bundle cannot be read from here on; after the end item, no
    /// record is in question.
    fn framing(&self, e: BundleError, after_end: bool) -> VerifyFailure {
        let next = self.next();
        match e {
            BundleError::Io(io) => VerifyFailure::Unreadable {
                path: PathBuf::from(BUNDLE),
                reason: io.to_string(),
            },
            e @ BundleError::Magic => VerifyFailure::Unreadable {
                path: PathBuf::from(BUNDLE),
                reason: e.to_string(),
            },
            e if after_end => invalid("F", None, None, format!("{e}: bytes follow the end item")),
            e @ BundleError::End { .. } => invalid("F", None, None, e.to_string()),
            e @ (BundleError::Truncated(_) | BundleError::NoEnd(_)) => invalid(
                "F",
                Some(next),
                None,
                format!("{e}; record {next} onwards is missing"),
            ),
            other => invalid(
                "F",
                Some(next),
                None,
                format!("{other}; the bundle cannot be read from record {next} on"),
            ),
        }
    }

    /// Names the record a pending failure blames, now that `next` (the next
    /// item other than a policy text or key line, or none) is known.
    fn resolve(&self, pending: Pending, next: Option<&Item>) -> VerifyFailure {
        let next_prev = match next {
            Some(Item::Record(bytes)) => prev_of(bytes),
            _ => None,
        };
        match pending {
            Pending::ChainBreak { at, hash, named } => {
                let (seq, how) = if next_prev.is_some_and(|p| p != hash) {
                    (
                        at,
                        format!(
                            "record {at} was altered: it does not name its predecessor's hash, and \
                             its successor does not name its hash either"
                        ),
                    )
                } else if next_prev.is_some() {
                    (at - 1, format!("record {} was altered", at - 1))
                } else {
                    (
                        at - 1,
                        format!(
                            "record {} was altered, or record {at}'s link to it was (nothing \
                             after record {at} tells which)",
                            at - 1
                        ),
                    )
                };
                invalid(
                    "R-c",
                    Some(seq),
                    None,
                    format!(
                        "hash chain broken: record {at} names predecessor {} but record {} hashes \
                         to {}; {how}",
                        hex(&named),
                        at - 1,
                        hex(&self.last_hash)
                    ),
                )
            }
            Pending::RootMismatch { size, first } => {
                let (seq, how) = if next_prev == Some(self.last_hash) {
                    (
                        first,
                        format!(
                            "the chain is intact, so records from {first} on were rewritten with \
                             their links"
                        ),
                    )
                } else {
                    (
                        size - 1,
                        format!(
                            "record {} was altered (the only one here that can change without \
                             breaking a link)",
                            size - 1
                        ),
                    )
                };
                invalid(
                    "C-e",
                    Some(seq),
                    Some(size),
                    format!(
                        "altered: {} not what the checkpoint of size {size} signed (their root \
                         differs, its signature is valid); {how}",
                        records(0, size)
                    ),
                )
            }
        }
    }

    fn policy(&mut self, text: &str, before: Before) -> Result<(), VerifyFailure> {
        let hash: Hash = Sha256::digest(text.as_bytes()).into();
        match before {
            Before::PolicyRecord { hash: want, .. } if want == hash => {
                self.policies.insert(hash);
                Ok(())
            }
            Before::PolicyRecord { seq, hash: want } => Err(invalid(
                "P-b",
                Some(seq),
                None,
                format!(
                    "activates policy {} but the text after it hashes to {}: the text was altered",
                    hex(&want),
                    hex(&hash)
                ),
            )),
            Before::Other => Err(invalid(
                "P-c",
                None,
                None,
                format!(
                    "a policy text ({}) stands after record {}, which activates no policy: it was added",
                    hex(&hash),
                    self.next().saturating_sub(1)
                ),
            )),
        }
    }

    /// Checks one record. A broken link is returned as pending: the next
    /// item tells which record it blames.
    fn record(&mut self, bytes: &[u8]) -> Result<Option<Pending>, VerifyFailure> {
        let expected = self.next();
        let r = Record::decode(bytes).map_err(|e| {
            invalid(
                "R-a",
                Some(expected),
                None,
                format!("the bytes at this position are not a valid canonical record: {e}"),
            )
        })?;
        if r.seq != expected {
            return Err(invalid(
                "R-b",
                Some(expected),
                None,
                format!(
                    "missing or out of order: the record at position {expected} is record {}",
                    r.seq
                ),
            ));
        }
        let hash = Record::hash_of(bytes);
        if r.prev != self.last_hash {
            if expected == 0 || expected - 1 < self.verified_upto {
                // Its predecessor is covered by a checkpoint that matched.
                return Err(invalid(
                    "R-c",
                    Some(expected),
                    None,
                    format!(
                        "hash chain broken: record {expected} names predecessor {} but record {} \
                         hashes to {}, and a signed checkpoint covers it: record {expected} was altered",
                        hex(&r.prev),
                        expected.saturating_sub(1),
                        hex(&self.last_hash)
                    ),
                ));
            }
            return Ok(Some(Pending::ChainBreak {
                at: expected,
                hash,
                named: r.prev,
            }));
        }
        if r.time_ms < self.last_time {
            return Err(invalid(
                "R-d",
                Some(expected),
                None,
                format!(
                    "time goes backwards ({} ms after the predecessor's {} ms)",
                    r.time_ms, self.last_time
                ),
            ));
        }
        let bad_outcome = |reason: String| invalid("R-e", Some(expected), None, reason);
        match &r.kind {
            Kind::Intent => {
                self.intents += 1;
                self.open.insert(r.seq, tag(&r));
            }
            Kind::Outcome { intent_seq, .. } => {
                self.outcomes += 1;
                match self.open.remove(intent_seq) {
                    Some(t) if t == tag(&r) => {}
                    Some(_) => {
                        return Err(bad_outcome(format!(
                            "outcome of intent {intent_seq} does not repeat its actor, action and resource"
                        )));
                    }
                    None => {
                        let why = if self.closed.contains(intent_seq) {
                            "which already has an outcome"
                        } else {
                            "which is not an intent"
                        };
                        return Err(bad_outcome(format!(
                            "outcome names record {intent_seq}, {why}"
                        )));
                    }
                }
                self.closed.insert(*intent_seq);
            }
            Kind::Event => self.events += 1,
        }
        if let Some(pk) = &r.public_key {
            let origin = if r.seq == 0 {
                self.origin = Some(r.resource.clone());
                r.resource.clone()
            } else {
                self.origin.clone().unwrap_or_default()
            };
            let key = PublicKey::from_bytes(&origin, pk).ok_or_else(|| {
                invalid(
                    "R-f",
                    Some(expected),
                    None,
                    "the public key it introduces is not a valid ML-DSA-65 key",
                )
            })?;
            self.keys.push((r.seq, key));
        }
        if let Some(p) = r.policy {
            self.before = Before::PolicyRecord {
                seq: r.seq,
                hash: p,
            };
        }
        self.frontier.push(hash, |_, _, _| {});
        if self.watch.last() == Some(&self.frontier.size()) {
            self.watch.pop();
            self.roots
                .insert(self.frontier.size(), self.frontier.root());
        }
        self.last_hash = hash;
        self.last_time = r.time_ms;
        Ok(None)
    }

    /// The keys a checkpoint of `size` must be signed by (OAR.md §6.3).
    fn required_keys(&self, size: u64) -> Vec<PublicKey> {
        keys::in_force(&self.keys, size)
            .into_iter()
            .cloned()
            .collect()
    }

    /// OAR.md §8.2 "signed by some key of the log": one signature line of
    /// `note` verifies under a key the log has introduced so far. Used only
    /// to tell an altered checkpoint from altered records or a checkpoint
    /// in the wrong place; C-f decides whether it is signed as it must be.
    fn signed_by_some_key(&self, note: &str) -> bool {
        signed_by_any(note, self.keys.iter().map(|(_, k)| k))
    }

    fn checkpoint(
        &mut self,
        note: String,
        jobs: &mpsc::SyncSender<SigJob>,
    ) -> Result<Option<Pending>, VerifyFailure> {
        let here = self.next();
        let first = self.verified_upto;
        let after = match here {
            0 => "before any record".to_owned(),
            n => format!("after record {}", n - 1),
        };
        let altered = |check, reason: String| {
            invalid(
                check,
                self.newly_covered(),
                None,
                format!("the checkpoint {after} was altered: {reason}"),
            )
        };
        let (body, _) = open_note(&note).map_err(|e| altered("C-a", e.to_string()))?;
        let cp = Checkpoint::parse_body(body).map_err(|e| altered("C-a", e.to_string()))?;
        if cp.size != here || cp.size <= self.last_checkpoint {
            return Err(self.misplaced(&note, &cp, here, &after));
        }
        let origin = self.origin.clone().unwrap_or_default();
        if cp.origin != origin {
            return Err(altered(
                "C-c",
                format!("its origin `{}` is not this log's (`{origin}`)", cp.origin),
            ));
        }
        // OAR.md §6.3: a rotation takes effect only through its hand-over
        // checkpoint (size r + 1, signed by the old key and the new). Without
        // it, anyone holding only the public key could append a `key.rotate`
        // to a key of their own and sign whatever follows.
        let previous = self.last_checkpoint;
        if let Some((r, _)) = self
            .keys
            .iter()
            .skip(1)
            .find(|(r, _)| *r >= previous && r + 1 < cp.size)
        {
            return Err(invalid(
                "C-d",
                Some(*r),
                Some(cp.size),
                format!(
                    "the key rotation in record {r} has no hand-over checkpoint of size {} signed by \
                     the old key and the new (the next checkpoint has size {}): the old key never \
                     approved the new one",
                    r + 1,
                    cp.size
                ),
            ));
        }
        self.checkpoints += 1;
        self.last_checkpoint = cp.size;
        if cp.root != self.frontier.root() {
            // No valid signature says the checkpoint itself changed; one
            // that the records did (OAR.md §8.2).
            if !self.signed_by_some_key(&note) {
                return Err(invalid(
                    "C-e",
                    Some(first),
                    Some(cp.size),
                    format!(
                        "the checkpoint {after} was altered: its root is not the records' and no \
                         signature on it is valid"
                    ),
                ));
            }
            return Ok(Some(Pending::RootMismatch {
                size: cp.size,
                first,
            }));
        }
        let keys = self.required_keys(cp.size);
        self.last_note.clone_from(&note);
        let job = SigJob {
            size: cp.size,
            first,
            note,
            keys,
        };
        if jobs.send(job).is_err() {
            return Err(invalid(
                "C-f",
                Some(first),
                Some(cp.size),
                "internal: the signature checkers stopped",
            ));
        }
        self.verified_upto = cp.size;
        Ok(None)
    }

    /// C-b: a checkpoint whose size does not belong here. A valid signature
    /// by any key of the log so far means a genuine checkpoint in the wrong
    /// place (records missing or inserted, or it was moved); none means the
    /// checkpoint itself was altered (OAR.md §8.2).
    fn misplaced(&self, note: &str, cp: &Checkpoint, here: u64, after: &str) -> VerifyFailure {
        let size = cp.size;
        let (seq, how) = if !self.signed_by_some_key(note) {
            (
                self.newly_covered(),
                format!(
                    "the checkpoint {after} claims size {size} and no key of the log signed it: \
                     it was altered"
                ),
            )
        } else if size > here {
            (
                Some(here),
                format!(
                    "a signed checkpoint of size {size} stands {after}: {} missing before it",
                    records(here, size)
                ),
            )
        } else if size > self.last_checkpoint {
            (
                Some(size),
                format!(
                    "a signed checkpoint of size {size} stands {after}: {} inserted before it, \
                     or it was moved",
                    records(size, here)
                ),
            )
        } else {
            (
                None,
                format!(
                    "a signed checkpoint of size {size} stands {after}, after the checkpoint of size \
                     {}: it was repeated or moved",
                    self.last_checkpoint
                ),
            )
        };
        invalid("C-b", seq, Some(size), how)
    }

    /// E-a: the end item's counts.
    fn end(&self, records: u64, checkpoints: u64) -> Result<(), VerifyFailure> {
        let have = self.next();
        let seq = if records > have {
            Some(have)
        } else if records < have {
            Some(records)
        } else if checkpoints != self.checkpoints {
            None
        } else {
            return Ok(());
        };
        Err(invalid(
            "E-a",
            seq,
            None,
            format!(
                "the bundle's end says {} and {}, but holds {} and {}: items were removed or \
                 added",
                counted(records, "record"),
                counted(checkpoints, "checkpoint"),
                counted(have, "record"),
                counted(self.checkpoints, "checkpoint")
            ),
        ))
    }

    /// End-a to End-d.
    fn finish(&self) -> Result<(), VerifyFailure> {
        let size = self.next();
        if size == 0 {
            return Err(invalid(
                "End-a",
                Some(0),
                None,
                "the bundle holds no records",
            ));
        }
        if self.verified_upto < size {
            return Err(invalid(
                "End-b",
                Some(self.verified_upto),
                None,
                format!(
                    "{} not covered by any signed checkpoint (truncated or appended)",
                    records(self.verified_upto, size)
                ),
            ));
        }
        if !self.keys.iter().any(|(_, k)| *k == self.trusted) {
            let ids: Vec<String> = self.keys.iter().map(|(_, k)| k.id_hex()).collect();
            return Err(invalid(
                "End-c",
                Some(0),
                None,
                format!(
                    "the trusted public key {}+{} is not a key of this log (its keys: {}); \
                     the log was not signed by the operator you trust",
                    self.trusted.name(),
                    self.trusted.id_hex(),
                    ids.join(", ")
                ),
            ));
        }
        for line in &self.listed_keys {
            let ok = PublicKey::parse_vkey(line)
                .map(|k| self.keys.iter().any(|(_, own)| *own == k))
                .unwrap_or(false);
            if !ok {
                return Err(invalid(
                    "End-d",
                    None,
                    None,
                    format!("the bundle lists a key that no record of the log introduces: {line}"),
                ));
            }
        }
        Ok(())
    }

    /// The report of a pass that succeeded, after OAR.md §8.3's checks.
    fn report(self, kept: Option<&Kept>) -> Result<VerifyReport, VerifyFailure> {
        if let Some(kept) = kept {
            self.extends(kept)?;
        }
        Ok(VerifyReport {
            origin: self.origin.unwrap_or_default(),
            records: self.frontier.size(),
            checkpoints: self.checkpoints,
            root: self.frontier.root(),
            keys: self.keys.iter().map(|(_, k)| k.id_hex()).collect(),
            key_history: self.keys,
            roots: self.roots,
            intents: self.intents,
            outcomes: self.outcomes,
            events: self.events,
            open_intents: self.open.len() as u64,
            policies: self.policies.len() as u64,
            last_checkpoint: self.last_note,
        })
    }

    /// X-a to X-d: the bundle extends the checkpoint the auditor kept.
    fn extends(&self, kept: &Kept) -> Result<(), VerifyFailure> {
        let cp = &kept.checkpoint;
        let origin = self.origin.as_deref().unwrap_or_default();
        if cp.origin != origin {
            return Err(unusable(format!(
                "it is of the log `{}`, the bundle of `{origin}`",
                cp.origin
            )));
        }
        let have = self.frontier.size();
        if cp.size > have {
            return Err(invalid(
                "X-b",
                Some(have),
                Some(cp.size),
                format!(
                    "the bundle holds {}, fewer than the {} of the checkpoint you kept: {} cut \
                     from its end",
                    counted(have, "record"),
                    cp.size,
                    records(have, cp.size)
                ),
            ));
        }
        // Each key of a hand-over may sign it; otherwise the key in force.
        let allowed = self.required_keys(cp.size);
        if !signed_by_any(&kept.note, &allowed) {
            let ids: Vec<String> = allowed.iter().map(PublicKey::id_hex).collect();
            return Err(invalid(
                "X-c",
                None,
                Some(cp.size),
                format!(
                    "the checkpoint you kept is not validly signed by the key this log had in \
                     force at size {} ({}): it is not a checkpoint of this log",
                    cp.size,
                    ids.join(" or ")
                ),
            ));
        }
        let root = *self
            .roots
            .get(&cp.size)
            .expect("the pass watched the kept size, and X-b checked the bundle reaches it");
        if root != cp.root {
            return Err(invalid(
                "X-d",
                None,
                Some(cp.size),
                format!(
                    "the first {} of the bundle are not the ones in the checkpoint you kept (root {} \
                     against {}): the operator's key signed two different histories",
                    counted(cp.size, "record"),
                    hex(&root),
                    hex(&cp.root)
                ),
            ));
        }
        Ok(())
    }
}

/// A checkpoint the auditor kept (OAR.md §8.3), parsed.
struct Kept {
    note: String,
    checkpoint: Checkpoint,
}

impl Kept {
    fn parse(note: &[u8]) -> Result<Kept, VerifyFailure> {
        let note = std::str::from_utf8(note)
            .map_err(|_| unusable("it is not text (a signed note is UTF-8)".into()))?;
        let (body, _) = open_note(note).map_err(|e| unusable(e.to_string()))?;
        let checkpoint = Checkpoint::parse_body(body).map_err(|e| unusable(e.to_string()))?;
        if checkpoint.size == 0 {
            return Err(unusable("it has size 0".into()));
        }
        Ok(Kept {
            note: note.to_owned(),
            checkpoint,
        })
    }
}

/// X-a: the kept note is not a checkpoint of this log.
fn unusable(reason: String) -> VerifyFailure {
    invalid(
        "X-a",
        None,
        None,
        format!("the checkpoint you kept cannot be used: {reason}"),
    )
}

/// The names a record must follow (documented in OAR.md, used by tools).
pub const RESERVED_ACTIONS: [&str; 2] = [record::ACTION_LOG_INIT, record::ACTION_KEY_ROTATE];
