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
use crate::checkpoint::{Checkpoint, NoteError, open_note, verify_checkpoint};
use crate::keys::{PublicKey, read_public};
use crate::merkle::{Frontier, Hash};
use crate::record::{self, Kind, Record};
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, HashSet};
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
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let root: String = self.root.iter().map(|b| format!("{b:02x}")).collect();
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
    /// The log is not intact. `seq` is the first bad record (when one can be
    /// named); `checkpoint` the checkpoint size involved, if any.
    #[error("{}", describe(*seq, *checkpoint, reason))]
    Invalid {
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
}

fn invalid(seq: Option<u64>, checkpoint: Option<u64>, reason: impl Into<String>) -> VerifyFailure {
    VerifyFailure::Invalid {
        seq,
        checkpoint,
        reason: reason.into(),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Verifies the bundle at `bundle` against the public key file `trusted`.
pub fn verify_bundle(bundle: &Path, trusted: &Path) -> Result<VerifyReport, VerifyFailure> {
    let key = read_public(trusted).map_err(|e| VerifyFailure::Unreadable {
        path: trusted.to_owned(),
        reason: e.reason(),
    })?;
    let file = std::fs::File::open(bundle).map_err(|e| VerifyFailure::Unreadable {
        path: bundle.to_owned(),
        reason: e.to_string(),
    })?;
    verify_reader(file, &key)
}

/// A signature check handed to the worker threads.
struct SigJob {
    size: u64,
    /// The first record this checkpoint newly covers.
    first: u64,
    note: String,
    keys: Vec<PublicKey>,
}

/// Verifies a bundle read from `input` against `trusted`.
pub fn verify_reader(input: impl Read, trusted: &PublicKey) -> Result<VerifyReport, VerifyFailure> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let (jobs_tx, jobs_rx) = mpsc::sync_channel::<SigJob>(256);
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    // The earliest signature failure found, by checkpoint size.
    let sig_failure: Arc<Mutex<Option<(u64, VerifyFailure)>>> = Arc::default();
    std::thread::scope(|scope| {
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
        let result = Pass::new(trusted.clone()).run(input, &jobs_tx);
        drop(jobs_tx);
        // Workers finish the queue; the scope joins them.
        result
    })
    .and_then(
        |report| match sig_failure.lock().expect("failure lock").take() {
            Some((_, f)) => Err(f),
            None => Ok(report),
        },
    )
    .map_err(|f| {
        // A structural failure and a signature failure: report the earlier.
        let sig = sig_failure.lock().expect("failure lock").take();
        match (sig, f.seq()) {
            (Some((_, s)), Some(seq)) if s.seq().is_some_and(|t| t < seq) => s,
            _ => f,
        }
    })
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
    policies_needed: Vec<(u64, Hash)>,
    policies_have: HashSet<Hash>,
    /// Records up to here are covered by a checkpoint whose root matched.
    verified_upto: u64,
    last_checkpoint: u64,
    checkpoints: u64,
    /// A checkpoint whose root did not match: (size, first record it newly covers).
    root_mismatch: Option<(u64, u64)>,
    intents: u64,
    outcomes: u64,
    events: u64,
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

impl Pass {
    fn new(trusted: PublicKey) -> Pass {
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
            policies_needed: Vec::new(),
            policies_have: HashSet::new(),
            verified_upto: 0,
            last_checkpoint: 0,
            checkpoints: 0,
            root_mismatch: None,
            intents: 0,
            outcomes: 0,
            events: 0,
        }
    }

    fn next(&self) -> u64 {
        self.frontier.size()
    }

    fn run(
        mut self,
        input: impl Read,
        jobs: &mpsc::SyncSender<SigJob>,
    ) -> Result<VerifyReport, VerifyFailure> {
        let bundle_err = |e: BundleError, next: u64| match e {
            BundleError::Io(io) => VerifyFailure::Unreadable {
                path: PathBuf::from("<bundle>"),
                reason: io.to_string(),
            },
            BundleError::Truncated(_) | BundleError::NoEnd(_) => invalid(
                Some(next),
                None,
                format!("{e}; record {next} onwards is missing"),
            ),
            other => invalid(Some(next), None, other.to_string()),
        };
        let mut reader = BundleReader::new(input).map_err(|e| bundle_err(e, 0))?;
        loop {
            let item = match reader.next_item() {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(e) => {
                    self.settle_root_mismatch(None)?;
                    return Err(bundle_err(e, self.next()));
                }
            };
            match item {
                Item::Key(line) => self.listed_keys.push(line),
                Item::Policy(text) => {
                    self.policies_have
                        .insert(Sha256::digest(text.as_bytes()).into());
                }
                Item::Record(bytes) => {
                    let expected = self.next();
                    match self.record(&bytes) {
                        Ok(None) => self.settle_root_mismatch(Some((expected, false)))?,
                        Ok(Some(chain_break)) => {
                            // A root mismatch just before explains the break better.
                            self.settle_root_mismatch(Some((expected, true)))?;
                            return Err(chain_break);
                        }
                        Err(e) => {
                            self.settle_root_mismatch(Some((expected, false)))?;
                            return Err(e);
                        }
                    }
                }
                Item::Checkpoint(note) => {
                    self.settle_root_mismatch(None)?;
                    self.checkpoint(note, jobs)?;
                }
                Item::End {
                    records,
                    checkpoints,
                } => {
                    self.settle_root_mismatch(None)?;
                    if records != self.next() || checkpoints != self.checkpoints {
                        return Err(invalid(
                            Some(self.next().min(records)),
                            None,
                            format!(
                                "the bundle's end says {records} records and {checkpoints} checkpoints, \
                                 but holds {} and {}: items were removed or added",
                                self.next(),
                                self.checkpoints
                            ),
                        ));
                    }
                }
            }
        }
        self.finish()
    }

    /// Checks one record. Returns `Some(failure)` for a broken chain link,
    /// which may instead be explained by a pending root mismatch.
    fn record(&mut self, bytes: &[u8]) -> Result<Option<VerifyFailure>, VerifyFailure> {
        let expected = self.next();
        let r = Record::decode(bytes).map_err(|e| {
            invalid(
                Some(expected),
                None,
                format!("the bytes at this position are not a valid canonical record: {e}"),
            )
        })?;
        if r.seq != expected {
            return Err(invalid(
                Some(expected),
                None,
                format!(
                    "missing or out of order: the record at position {expected} is record {}",
                    r.seq
                ),
            ));
        }
        let hash = Record::hash_of(bytes);
        let mut chain_break = None;
        if r.prev != self.last_hash {
            // Record `expected - 1` was altered, or this record's link was.
            // If the former is covered by a verified checkpoint, it is this one.
            let blamed = if expected > self.verified_upto {
                expected - 1
            } else {
                expected
            };
            chain_break = Some(invalid(
                Some(blamed),
                None,
                format!(
                    "hash chain broken: record {expected} names predecessor {} but record {} hashes to {} \
                     (record {blamed} was altered)",
                    hex(&r.prev),
                    expected.saturating_sub(1),
                    hex(&self.last_hash)
                ),
            ));
        }
        if r.time_ms < self.last_time {
            return Err(invalid(
                Some(expected),
                None,
                format!(
                    "time goes backwards ({} ms after the predecessor's {} ms)",
                    r.time_ms, self.last_time
                ),
            ));
        }
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
                        return Err(invalid(
                            Some(expected),
                            None,
                            format!(
                                "outcome of intent {intent_seq} does not repeat its actor, action and resource"
                            ),
                        ));
                    }
                    None => {
                        let why = if self.closed.contains(intent_seq) {
                            "which already has an outcome"
                        } else {
                            "which is not an intent"
                        };
                        return Err(invalid(
                            Some(expected),
                            None,
                            format!("outcome names record {intent_seq}, {why}"),
                        ));
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
                    Some(expected),
                    None,
                    "the public key it introduces is not a valid ML-DSA-65 key",
                )
            })?;
            self.keys.push((r.seq, key));
        }
        if let Some(p) = r.policy {
            self.policies_needed.push((r.seq, p));
        }
        self.frontier.push(hash, |_, _, _| {});
        self.last_hash = hash;
        self.last_time = r.time_ms;
        Ok(chain_break)
    }

    /// After a checkpoint whose root did not match: if the next record's
    /// link names the altered record, blame it exactly; otherwise blame the
    /// first record the checkpoint newly covered.
    fn settle_root_mismatch(
        &mut self,
        next_record: Option<(u64, bool)>,
    ) -> Result<(), VerifyFailure> {
        let Some((size, first)) = self.root_mismatch.take() else {
            return Ok(());
        };
        let (seq, how) = match next_record {
            Some((n, true)) if n == size => (
                size - 1,
                "does not hash to what the checkpoint signed nor to what its successor names",
            ),
            _ => (
                first,
                "is the first record not covered by a checkpoint whose root matches the records",
            ),
        };
        Err(invalid(
            Some(seq),
            Some(size),
            format!(
                "altered: the records 0..{size} do not hash to the root signed in the checkpoint of size \
                 {size}; record {seq} {how}"
            ),
        ))
    }

    /// The keys a checkpoint of `size` must be signed by (OAR.md §6.3).
    fn required_keys(&self, size: u64) -> Vec<PublicKey> {
        let mut in_force = &self.keys[0].1;
        for (i, (seq, key)) in self.keys.iter().enumerate().skip(1) {
            if seq + 1 < size {
                in_force = key;
            } else if seq + 1 == size {
                return vec![self.keys[i - 1].1.clone(), key.clone()];
            }
        }
        vec![in_force.clone()]
    }

    fn checkpoint(
        &mut self,
        note: String,
        jobs: &mpsc::SyncSender<SigJob>,
    ) -> Result<(), VerifyFailure> {
        let here = self.next();
        let first = self.verified_upto;
        let fail =
            |reason: String| invalid(Some(first.min(here.saturating_sub(1))), Some(here), reason);
        let (body, _) = open_note(&note).map_err(|e| {
            fail(format!(
                "checkpoint after record {}: {e}",
                here.saturating_sub(1)
            ))
        })?;
        let cp = Checkpoint::parse_body(body).map_err(|e: NoteError| {
            fail(format!(
                "checkpoint after record {}: {e}",
                here.saturating_sub(1)
            ))
        })?;
        if cp.size != here || cp.size <= self.last_checkpoint {
            // Records are missing before it (size too big) or were added.
            return Err(invalid(
                Some(cp.size.min(here)),
                Some(cp.size),
                format!(
                    "a checkpoint claiming size {} stands after record {} (where only size {here} belongs): \
                 records are missing, added or out of order",
                    cp.size,
                    here.saturating_sub(1)
                ),
            ));
        }
        let origin = self.origin.clone().unwrap_or_default();
        if cp.origin != origin {
            return Err(fail(format!(
                "its origin `{}` is not this log's (`{origin}`)",
                cp.origin
            )));
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
            self.root_mismatch = Some((cp.size, first));
            return Ok(());
        }
        let keys = self.required_keys(cp.size);
        let job = SigJob {
            size: cp.size,
            first,
            note,
            keys,
        };
        if jobs.send(job).is_err() {
            return Err(fail("internal: the signature checkers stopped".into()));
        }
        self.verified_upto = cp.size;
        Ok(())
    }

    fn finish(self) -> Result<VerifyReport, VerifyFailure> {
        let size = self.next();
        if size == 0 {
            return Err(invalid(Some(0), None, "the bundle holds no records"));
        }
        if self.verified_upto < size {
            return Err(invalid(
                Some(self.verified_upto),
                None,
                format!(
                    "records {}..{size} are not covered by any signed checkpoint (truncated or appended)",
                    self.verified_upto
                ),
            ));
        }
        if !self.keys.iter().any(|(_, k)| *k == self.trusted) {
            let ids: Vec<String> = self.keys.iter().map(|(_, k)| k.id_hex()).collect();
            return Err(invalid(
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
                    None,
                    None,
                    format!("the bundle lists a key that no record of the log introduces: {line}"),
                ));
            }
        }
        for (seq, hash) in &self.policies_needed {
            if !self.policies_have.contains(hash) {
                return Err(invalid(
                    Some(*seq),
                    None,
                    format!(
                        "activates policy {} whose text is not in the bundle",
                        hex(hash)
                    ),
                ));
            }
        }
        Ok(VerifyReport {
            origin: self.origin.unwrap_or_default(),
            records: size,
            checkpoints: self.checkpoints,
            root: self.frontier.root(),
            keys: self.keys.iter().map(|(_, k)| k.id_hex()).collect(),
            intents: self.intents,
            outcomes: self.outcomes,
            events: self.events,
            open_intents: self.open.len() as u64,
            policies: self.policies_have.len() as u64,
        })
    }
}

/// The names a record must follow (documented in OAR.md, used by tools).
pub const RESERVED_ACTIONS: [&str; 2] = [record::ACTION_LOG_INIT, record::ACTION_KEY_ROTATE];
