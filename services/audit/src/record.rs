//! One Open Audit Record and its canonical bytes (OAR.md §3).
//!
//! A record is a CBOR map with small unsigned-integer keys, encoded
//! deterministically (RFC 8949 §4.2.1): keys ascending, shortest heads,
//! definite lengths, absent optional fields omitted (never `null`, never an
//! empty string or array). [`Record::decode`] accepts exactly the bytes
//! [`Record::encode`] produces and nothing else, so a record has one
//! encoding and therefore one hash.

use crate::cbor::{CborError, Decoder, Encoder};
use crate::hex;
use crate::merkle::{Hash, leaf_hash};
use serde_json::json;
use sios_ipc::{ActionResult, Effect};

/// The only record format version so far.
pub const FORMAT_VERSION: u64 = 1;
/// Length of an ML-DSA-65 public key (FIPS 204 `pkEncode`).
pub const PUBLIC_KEY_LEN: usize = 1952;
/// Longest actor, action or resource, in bytes (the kernel fits its drafts
/// to the same limits).
pub const MAX_NAME: usize = sios_ipc::audit::MAX_NAME_BYTES;
/// Longest detail or error message, in bytes.
pub const MAX_DETAIL: usize = sios_ipc::audit::MAX_DETAIL_BYTES;
/// Most input (or output) hashes, deciding policy ids.
pub const MAX_LIST: usize = 1024;

/// The `action` of the log's first record, which names the first key.
pub const ACTION_LOG_INIT: &str = "log.init";
/// The `action` of a key rotation record, which names the next key.
pub const ACTION_KEY_ROTATE: &str = "key.rotate";

/// Map keys (OAR.md §3.2).
pub mod key {
    pub const VERSION: u64 = 0;
    pub const SEQ: u64 = 1;
    pub const TIME: u64 = 2;
    pub const KIND: u64 = 3;
    pub const ACTOR: u64 = 4;
    pub const ACTION: u64 = 5;
    pub const RESOURCE: u64 = 6;
    pub const PREV: u64 = 7;
    pub const OUTCOME: u64 = 8;
    pub const DECISION: u64 = 9;
    pub const SUBJECT: u64 = 10;
    pub const INPUTS: u64 = 11;
    pub const OUTPUTS: u64 = 12;
    pub const BRAIN: u64 = 13;
    pub const POLICY: u64 = 14;
    pub const PUBLIC_KEY: u64 = 15;
    pub const DETAIL: u64 = 16;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Event,
    Intent,
    Outcome {
        intent_seq: u64,
        result: ActionResult,
    },
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Event => "event",
            Kind::Intent => "intent",
            Kind::Outcome { .. } => "outcome",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordDecision {
    pub effect: Effect,
    pub policy_hash: Hash,
    /// Sorted by bytes, no duplicates.
    pub policy_ids: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    /// Milliseconds since the Unix epoch, never less than the predecessor's.
    pub time_ms: u64,
    pub kind: Kind,
    pub actor: String,
    pub action: String,
    pub resource: String,
    /// The predecessor's record hash; 32 zero bytes for record 0.
    pub prev: Hash,
    pub decision: Option<RecordDecision>,
    /// HMAC-SHA256(subject linking key, "sios-oar/v1 subject").
    pub subject: Option<Hash>,
    /// HMAC-SHA256(subject linking key, SHA-256 of each input).
    pub inputs: Vec<Hash>,
    pub outputs: Vec<Hash>,
    /// Brain name and model SHA-256.
    pub brain: Option<(String, Hash)>,
    /// SHA-256 of a policy text this record activates.
    pub policy: Option<Hash>,
    /// An ML-DSA-65 public key this record introduces (log.init, key.rotate).
    pub public_key: Option<Vec<u8>>,
    pub detail: String,
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("not deterministic CBOR: {0}")]
    Cbor(#[from] CborError),
    #[error("map key {0} is unknown, repeated or out of order")]
    BadKey(u64),
    #[error("required field {0} is missing")]
    Missing(&'static str),
    #[error("field {field}: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("format version {0} is not supported (this verifier knows version 1)")]
    Version(u64),
    #[error("decodes, but re-encodes to different bytes (not canonical)")]
    NotCanonical,
}

fn field(field: &'static str, reason: impl Into<String>) -> RecordError {
    RecordError::Field {
        field,
        reason: reason.into(),
    }
}

fn result_name(r: &ActionResult) -> &'static str {
    match r {
        ActionResult::Ok => "ok",
        ActionResult::Error(_) => "error",
        ActionResult::ProcessDied => "process-died",
        ActionResult::Denied => "denied",
    }
}

fn effect_name(e: Effect) -> &'static str {
    match e {
        Effect::Allow => "allow",
        Effect::Deny => "deny",
    }
}

impl Record {
    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::with_capacity(256 + self.inputs.len() * 34 + self.outputs.len() * 34);
        let present = 8
            + usize::from(matches!(self.kind, Kind::Outcome { .. }))
            + usize::from(self.decision.is_some())
            + usize::from(self.subject.is_some())
            + usize::from(!self.inputs.is_empty())
            + usize::from(!self.outputs.is_empty())
            + usize::from(self.brain.is_some())
            + usize::from(self.policy.is_some())
            + usize::from(self.public_key.is_some())
            + usize::from(!self.detail.is_empty());
        e.map(present);
        e.uint(key::VERSION);
        e.uint(FORMAT_VERSION);
        e.uint(key::SEQ);
        e.uint(self.seq);
        e.uint(key::TIME);
        e.uint(self.time_ms);
        e.uint(key::KIND);
        e.text(self.kind.name());
        e.uint(key::ACTOR);
        e.text(&self.actor);
        e.uint(key::ACTION);
        e.text(&self.action);
        e.uint(key::RESOURCE);
        e.text(&self.resource);
        e.uint(key::PREV);
        e.bytes(&self.prev);
        if let Kind::Outcome { intent_seq, result } = &self.kind {
            e.uint(key::OUTCOME);
            let message = match result {
                ActionResult::Error(m) => Some(m),
                _ => None,
            };
            e.map(2 + usize::from(message.is_some()));
            e.uint(0);
            e.uint(*intent_seq);
            e.uint(1);
            e.text(result_name(result));
            if let Some(m) = message {
                e.uint(2);
                e.text(m);
            }
        }
        if let Some(d) = &self.decision {
            e.uint(key::DECISION);
            e.map(3);
            e.uint(0);
            e.text(effect_name(d.effect));
            e.uint(1);
            e.bytes(&d.policy_hash);
            e.uint(2);
            e.array(d.policy_ids.len());
            for id in &d.policy_ids {
                e.text(id);
            }
        }
        if let Some(s) = &self.subject {
            e.uint(key::SUBJECT);
            e.bytes(s);
        }
        for (k, list) in [(key::INPUTS, &self.inputs), (key::OUTPUTS, &self.outputs)] {
            if !list.is_empty() {
                e.uint(k);
                e.array(list.len());
                for h in list {
                    e.bytes(h);
                }
            }
        }
        if let Some((id, model)) = &self.brain {
            e.uint(key::BRAIN);
            e.map(2);
            e.uint(0);
            e.text(id);
            e.uint(1);
            e.bytes(model);
        }
        if let Some(p) = &self.policy {
            e.uint(key::POLICY);
            e.bytes(p);
        }
        if let Some(k) = &self.public_key {
            e.uint(key::PUBLIC_KEY);
            e.bytes(k);
        }
        if !self.detail.is_empty() {
            e.uint(key::DETAIL);
            e.text(&self.detail);
        }
        e.out
    }

    /// The record hash: its Merkle leaf hash, `SHA-256(0x00 || bytes)`.
    pub fn hash_of(bytes: &[u8]) -> Hash {
        leaf_hash(bytes)
    }

    /// Decodes canonical bytes and checks every rule of OAR.md §3.3 that a
    /// single record can be checked against. Refuses any other encoding.
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        let record = Self::decode_fields(bytes)?;
        record.check()?;
        if record.encode() != bytes {
            return Err(RecordError::NotCanonical);
        }
        Ok(record)
    }

    fn decode_fields(bytes: &[u8]) -> Result<Record, RecordError> {
        let mut d = Decoder::new(bytes);
        let n = d.map()?;
        let mut last: Option<u64> = None;
        let mut version = None;
        let mut seq = None;
        let mut time = None;
        let mut kind_name: Option<&str> = None;
        let mut actor = None;
        let mut action = None;
        let mut resource = None;
        let mut prev = None;
        let mut outcome = None;
        let mut r = Record {
            seq: 0,
            time_ms: 0,
            kind: Kind::Event,
            actor: String::new(),
            action: String::new(),
            resource: String::new(),
            prev: [0; 32],
            decision: None,
            subject: None,
            inputs: Vec::new(),
            outputs: Vec::new(),
            brain: None,
            policy: None,
            public_key: None,
            detail: String::new(),
        };
        for _ in 0..n {
            let k = d.uint()?;
            if last.is_some_and(|l| k <= l) || k > key::DETAIL {
                return Err(RecordError::BadKey(k));
            }
            last = Some(k);
            match k {
                key::VERSION => version = Some(d.uint()?),
                key::SEQ => seq = Some(d.uint()?),
                key::TIME => time = Some(d.uint()?),
                key::KIND => kind_name = Some(d.text()?),
                key::ACTOR => actor = Some(d.text()?.to_owned()),
                key::ACTION => action = Some(d.text()?.to_owned()),
                key::RESOURCE => resource = Some(d.text()?.to_owned()),
                key::PREV => prev = Some(hash32(d.bytes()?, "prev")?),
                key::OUTCOME => outcome = Some(decode_outcome(&mut d)?),
                key::DECISION => r.decision = Some(decode_decision(&mut d)?),
                key::SUBJECT => r.subject = Some(hash32(d.bytes()?, "subject")?),
                key::INPUTS => r.inputs = hash_list(&mut d, "inputs")?,
                key::OUTPUTS => r.outputs = hash_list(&mut d, "outputs")?,
                key::BRAIN => {
                    if d.map()? != 2 || d.uint()? != 0 {
                        return Err(field("brain", "must be the map {0: id, 1: model hash}"));
                    }
                    let id = d.text()?.to_owned();
                    if d.uint()? != 1 {
                        return Err(field("brain", "must be the map {0: id, 1: model hash}"));
                    }
                    r.brain = Some((id, hash32(d.bytes()?, "brain model hash")?));
                }
                key::POLICY => r.policy = Some(hash32(d.bytes()?, "policy")?),
                key::PUBLIC_KEY => r.public_key = Some(d.bytes()?.to_vec()),
                key::DETAIL => r.detail = d.text()?.to_owned(),
                _ => return Err(RecordError::BadKey(k)),
            }
        }
        d.finish()?;
        let version = version.ok_or(RecordError::Missing("version (0)"))?;
        if version != FORMAT_VERSION {
            return Err(RecordError::Version(version));
        }
        r.seq = seq.ok_or(RecordError::Missing("seq (1)"))?;
        r.time_ms = time.ok_or(RecordError::Missing("time (2)"))?;
        r.actor = actor.ok_or(RecordError::Missing("actor (4)"))?;
        r.action = action.ok_or(RecordError::Missing("action (5)"))?;
        r.resource = resource.ok_or(RecordError::Missing("resource (6)"))?;
        r.prev = prev.ok_or(RecordError::Missing("prev (7)"))?;
        r.kind = match (kind_name.ok_or(RecordError::Missing("kind (3)"))?, outcome) {
            ("event", None) => Kind::Event,
            ("intent", None) => Kind::Intent,
            ("outcome", Some((intent_seq, result))) => Kind::Outcome { intent_seq, result },
            ("outcome", None) => return Err(RecordError::Missing("outcome (8)")),
            ("event" | "intent", Some(_)) => {
                return Err(field("outcome", "only an outcome record has one"));
            }
            (other, _) => {
                return Err(field(
                    "kind",
                    format!("`{other}` is not event, intent or outcome"),
                ));
            }
        };
        Ok(r)
    }

    /// The rules of OAR.md §3.3 that need only this record.
    pub fn check(&self) -> Result<(), RecordError> {
        for (name, value) in [
            ("actor", &self.actor),
            ("action", &self.action),
            ("resource", &self.resource),
        ] {
            if value.is_empty() {
                return Err(field(name, "must not be empty"));
            }
            if value.len() > MAX_NAME {
                return Err(field(name, format!("longer than {MAX_NAME} bytes")));
            }
        }
        if self.detail.len() > MAX_DETAIL {
            return Err(field("detail", format!("longer than {MAX_DETAIL} bytes")));
        }
        if let Kind::Outcome { intent_seq, result } = &self.kind {
            if *intent_seq >= self.seq {
                return Err(field(
                    "outcome",
                    format!(
                        "names intent {intent_seq}, which is not before the outcome itself ({})",
                        self.seq
                    ),
                ));
            }
            if let ActionResult::Error(m) = result
                && (m.is_empty() || m.len() > MAX_DETAIL)
            {
                return Err(field("outcome", "an error message must be 1..4096 bytes"));
            }
        }
        if let Some(d) = &self.decision {
            if d.policy_ids.len() > MAX_LIST {
                return Err(field("decision", "too many policy ids"));
            }
            if d.policy_ids
                .windows(2)
                .any(|w| w[0].as_bytes() >= w[1].as_bytes())
            {
                return Err(field(
                    "decision",
                    "policy ids must be sorted by their bytes, without repeats",
                ));
            }
            if d.policy_ids
                .iter()
                .any(|id| id.is_empty() || id.len() > MAX_NAME)
            {
                return Err(field("decision", "a policy id is empty or too long"));
            }
        }
        if self.inputs.len() > MAX_LIST || self.outputs.len() > MAX_LIST {
            return Err(field(
                "inputs/outputs",
                format!("more than {MAX_LIST} hashes"),
            ));
        }
        if (!self.inputs.is_empty() || !self.outputs.is_empty()) && self.subject.is_none() {
            return Err(field(
                "subject",
                "input or output hashes need the subject they are keyed for",
            ));
        }
        if let Some((id, _)) = &self.brain
            && (id.is_empty() || id.len() > MAX_NAME)
        {
            return Err(field("brain", "the id is empty or too long"));
        }
        let introduces_key = self.action == ACTION_LOG_INIT || self.action == ACTION_KEY_ROTATE;
        match &self.public_key {
            Some(k) if k.len() != PUBLIC_KEY_LEN => {
                return Err(field(
                    "public key",
                    format!("is {} bytes, an ML-DSA-65 key is {PUBLIC_KEY_LEN}", k.len()),
                ));
            }
            Some(_) if !(introduces_key && self.kind == Kind::Event) => {
                return Err(field(
                    "public key",
                    "only a log.init or key.rotate event carries one",
                ));
            }
            None if introduces_key => {
                return Err(field(
                    "public key",
                    format!("a {} record must carry the key it introduces", self.action),
                ));
            }
            _ => {}
        }
        if (self.seq == 0) != (self.action == ACTION_LOG_INIT) {
            return Err(field(
                "action",
                "record 0, and only record 0, is the log.init record",
            ));
        }
        if self.seq == 0 && self.prev != [0; 32] {
            return Err(field(
                "prev",
                "record 0's predecessor hash must be 32 zero bytes",
            ));
        }
        Ok(())
    }

    /// A JSON view for people and scripts (`sios audit tail --json`). Hashes
    /// are lower-case hex; the public key is summarised by its length.
    pub fn to_json(&self, record_hash: &Hash) -> serde_json::Value {
        let mut v = json!({
            "seq": self.seq,
            "time_unix_ms": self.time_ms,
            "kind": self.kind.name(),
            "actor": self.actor,
            "action": self.action,
            "resource": self.resource,
            "prev": hex(&self.prev),
            "hash": hex(record_hash),
        });
        let obj = v
            .as_object_mut()
            .expect("json! of an object literal is an object");
        if let Kind::Outcome { intent_seq, result } = &self.kind {
            obj.insert("intent_seq".into(), json!(intent_seq));
            obj.insert("result".into(), json!(result_name(result)));
            if let ActionResult::Error(m) = result {
                obj.insert("error".into(), json!(m));
            }
        }
        if let Some(d) = &self.decision {
            obj.insert(
                "decision".into(),
                json!({
                    "effect": effect_name(d.effect),
                    "policy_hash": hex(&d.policy_hash),
                    "policy_ids": d.policy_ids,
                }),
            );
        }
        if let Some(s) = &self.subject {
            obj.insert("subject".into(), json!(hex(s)));
        }
        if !self.inputs.is_empty() {
            obj.insert(
                "inputs".into(),
                json!(self.inputs.iter().map(|h| hex(h)).collect::<Vec<_>>()),
            );
        }
        if !self.outputs.is_empty() {
            obj.insert(
                "outputs".into(),
                json!(self.outputs.iter().map(|h| hex(h)).collect::<Vec<_>>()),
            );
        }
        if let Some((id, model)) = &self.brain {
            obj.insert(
                "brain".into(),
                json!({"id": id, "model_sha256": hex(model)}),
            );
        }
        if let Some(p) = &self.policy {
            obj.insert("policy".into(), json!(hex(p)));
        }
        if let Some(k) = &self.public_key {
            obj.insert("public_key_len".into(), json!(k.len()));
        }
        if !self.detail.is_empty() {
            obj.insert("detail".into(), json!(self.detail));
        }
        v
    }

    /// One line for people: `seq time kind actor action resource [result] detail`.
    /// One line for people: seq, time (RFC 3339, UTC, milliseconds), kind,
    /// actor, action, resource, then the result, the decision and the detail.
    pub fn to_line(&self) -> String {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.time_ms);
        let mut line = format!(
            "{:>8} {} {:<7} {} {} {}",
            self.seq,
            humantime::format_rfc3339_millis(time),
            self.kind.name(),
            self.actor,
            self.action,
            self.resource
        );
        if let Kind::Outcome { intent_seq, result } = &self.kind {
            line.push_str(&format!(
                " -> {} (intent {intent_seq})",
                result_name(result)
            ));
            if let ActionResult::Error(m) = result {
                line.push_str(&format!(": {m}"));
            }
        }
        if let Some(d) = &self.decision {
            line.push_str(&format!(" [{}]", effect_name(d.effect)));
        }
        if !self.detail.is_empty() {
            line.push_str(&format!(" — {}", self.detail));
        }
        line
    }
}

fn hash32(b: &[u8], name: &'static str) -> Result<Hash, RecordError> {
    b.try_into()
        .map_err(|_| field(name, format!("is {} bytes, not 32", b.len())))
}

fn hash_list(d: &mut Decoder<'_>, name: &'static str) -> Result<Vec<Hash>, RecordError> {
    let n = d.array()?;
    if n == 0 {
        return Err(field(name, "an empty list is omitted, not written"));
    }
    if n > MAX_LIST as u64 {
        return Err(field(name, format!("more than {MAX_LIST} hashes")));
    }
    (0..n).map(|_| hash32(d.bytes()?, name)).collect()
}

fn decode_outcome(d: &mut Decoder<'_>) -> Result<(u64, ActionResult), RecordError> {
    let bad = || {
        field(
            "outcome",
            "must be the map {0: intent seq, 1: result[, 2: message]}",
        )
    };
    let n = d.map()?;
    if !(n == 2 || n == 3) || d.uint()? != 0 {
        return Err(bad());
    }
    let intent_seq = d.uint()?;
    if d.uint()? != 1 {
        return Err(bad());
    }
    let name = d.text()?;
    let result = match (name, n) {
        ("ok", 2) => ActionResult::Ok,
        ("process-died", 2) => ActionResult::ProcessDied,
        ("denied", 2) => ActionResult::Denied,
        ("error", 3) => {
            if d.uint()? != 2 {
                return Err(bad());
            }
            ActionResult::Error(d.text()?.to_owned())
        }
        ("error", _) => return Err(field("outcome", "an error result needs its message (2)")),
        ("ok" | "process-died" | "denied", _) => {
            return Err(field("outcome", "only an error result has a message"));
        }
        (other, _) => {
            return Err(field(
                "outcome",
                format!("result `{other}` is not ok, error, process-died or denied"),
            ));
        }
    };
    Ok((intent_seq, result))
}

fn decode_decision(d: &mut Decoder<'_>) -> Result<RecordDecision, RecordError> {
    let bad = || {
        field(
            "decision",
            "must be the map {0: effect, 1: policy hash, 2: [ids]}",
        )
    };
    if d.map()? != 3 || d.uint()? != 0 {
        return Err(bad());
    }
    let effect = match d.text()? {
        "allow" => Effect::Allow,
        "deny" => Effect::Deny,
        other => {
            return Err(field(
                "decision",
                format!("effect `{other}` is not allow or deny"),
            ));
        }
    };
    if d.uint()? != 1 {
        return Err(bad());
    }
    let policy_hash = hash32(d.bytes()?, "decision policy hash")?;
    if d.uint()? != 2 {
        return Err(bad());
    }
    let n = d.array()?;
    if n > MAX_LIST as u64 {
        return Err(field("decision", "too many policy ids"));
    }
    let policy_ids = (0..n)
        .map(|_| d.text().map(str::to_owned))
        .collect::<Result<_, _>>()?;
    Ok(RecordDecision {
        effect,
        policy_hash,
        policy_ids,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn hex(b: &[u8]) -> String {
        super::hex(b)
    }

    /// The record pinned in OAR.md §8 (test vector 1).
    pub fn vector_record() -> Record {
        Record {
            seq: 7,
            time_ms: 1_700_000_000_000,
            kind: Kind::Intent,
            actor: "uid:1000".into(),
            action: "invoke".into(),
            resource: "brain:echo".into(),
            prev: [0x11; 32],
            decision: Some(RecordDecision {
                effect: Effect::Allow,
                policy_hash: [0x22; 32],
                policy_ids: vec!["p1".into(), "p2".into()],
            }),
            subject: Some([0x33; 32]),
            inputs: vec![[0x44; 32]],
            outputs: vec![],
            brain: Some(("echo".into(), [0x55; 32])),
            policy: None,
            public_key: None,
            detail: String::new(),
        }
    }

    /// OAR.md §9, vector 1.
    pub const VECTOR_HEX: &str = "ac00010107021b0000018bcfe568000366696e74656e7404687569643a3130\
        30300566696e766f6b65066a627261696e3a6563686f07582011111111111111111111111111111111111111111111\
        1111111111111111111109a30065616c6c6f7701582022222222222222222222222222222222222222222222222222\
        2222222222222202826270316270320a5820333333333333333333333333333333333333333333333333333333333333\
        33330b81582044444444444444444444444444444444444444444444444444444444444444440da200646563686f01\
        58205555555555555555555555555555555555555555555555555555555555555555";
    /// OAR.md §9, vector 2: the root of the tree of the three leaves.
    pub const VECTOR_ROOT3: &str =
        "0f48e5d4929024df413920e96c99ab2b94d382d0ee76438d82b0a5124289ab7d";
    /// OAR.md §9, vector 2: the event record's bytes.
    pub const VECTOR_EVENT_HEX: &str = "a900010109021b0000018bcfe5680103656576656e7404666b65726e656c056e70726f636573732e657869746564066c70726f636573733a6563686f075820731effbc74b3fa07b0ee9017f33ee379b752268bbae6f1b386e6caae426fa16f106d65786974207374617475732030";
    pub const VECTOR_LEAF: &str =
        "a7009be2083de4d3d9599125f5e67ab2d9f648a0701c37cf486bc016fa14e9d4";

    /// OAR.md §9, vector 2: the outcome and the event that follow vector 1.
    pub fn vector_chain() -> Vec<Record> {
        let a = vector_record();
        let mut b = a.clone();
        b.seq = 8;
        b.kind = Kind::Outcome {
            intent_seq: 7,
            result: ActionResult::Ok,
        };
        b.prev = Record::hash_of(&a.encode());
        b.decision = None;
        b.inputs = vec![];
        b.outputs = vec![[0x66; 32]];
        let c = Record {
            seq: 9,
            time_ms: 1_700_000_000_001,
            kind: Kind::Event,
            actor: "kernel".into(),
            action: "process.exited".into(),
            resource: "process:echo".into(),
            prev: Record::hash_of(&b.encode()),
            decision: None,
            subject: None,
            inputs: vec![],
            outputs: vec![],
            brain: None,
            policy: None,
            public_key: None,
            detail: "exit status 0".into(),
        };
        vec![a, b, c]
    }

    #[test]
    fn a_line_for_people_reads_the_time_in_utc() {
        let chain = vector_chain();
        // 1_700_000_000_000 ms after the epoch.
        assert_eq!(
            chain[0].to_line(),
            "       7 2023-11-14T22:13:20.000Z intent  uid:1000 invoke brain:echo [allow]"
        );
        assert_eq!(
            chain[1].to_line(),
            "       8 2023-11-14T22:13:20.000Z outcome uid:1000 invoke brain:echo -> ok (intent 7)"
        );
    }

    #[test]
    fn encode_decode_round_trip_for_every_kind() {
        let mut r = vector_record();
        for kind in [
            Kind::Event,
            Kind::Intent,
            Kind::Outcome {
                intent_seq: 3,
                result: ActionResult::Ok,
            },
            Kind::Outcome {
                intent_seq: 3,
                result: ActionResult::Error("model crashed".into()),
            },
            Kind::Outcome {
                intent_seq: 6,
                result: ActionResult::ProcessDied,
            },
            Kind::Outcome {
                intent_seq: 0,
                result: ActionResult::Denied,
            },
        ] {
            r.kind = kind;
            r.detail = "d".into();
            let bytes = r.encode();
            assert_eq!(Record::decode(&bytes).unwrap(), r);
        }
    }

    #[test]
    fn pinned_vector_bytes() {
        let bytes = vector_record().encode();
        let pinned: String = VECTOR_HEX.split_whitespace().collect();
        assert_eq!(hex(&bytes), pinned);
        assert_eq!(hex(&Record::hash_of(&bytes)), VECTOR_LEAF);
        assert_eq!(Record::decode(&bytes).unwrap(), vector_record());
    }

    #[test]
    fn pinned_three_record_chain_and_tree() {
        let chain = vector_chain();
        let leaves: Vec<_> = chain.iter().map(|r| Record::hash_of(&r.encode())).collect();
        for r in &chain {
            assert_eq!(&Record::decode(&r.encode()).unwrap(), r);
        }
        assert_eq!(hex(&chain[2].encode()), VECTOR_EVENT_HEX);
        assert_eq!(
            hex(&leaves[1]),
            "731effbc74b3fa07b0ee9017f33ee379b752268bbae6f1b386e6caae426fa16f"
        );
        assert_eq!(
            hex(&leaves[2]),
            "ab3fba04d332aba2af366e49eaa1f61ac1a5f870fe9cf7db7f2f4bfb7d245eca"
        );
        let root = crate::merkle::naive_root(&leaves);
        assert_eq!(hex(&root), VECTOR_ROOT3);
    }

    #[test]
    fn non_canonical_variants_are_refused() {
        let r = vector_record();
        let bytes = r.encode();
        // seq 7 written with a one-byte argument (0x18 0x07): not shortest.
        let mut long = bytes.clone();
        let at = long.iter().position(|&b| b == 0x07).unwrap();
        long.splice(at..=at, [0x18, 0x07]);
        assert!(Record::decode(&long).is_err());
        // Trailing byte.
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            Record::decode(&trailing),
            Err(RecordError::Cbor(CborError::Trailing(1)))
        ));
        // Unsorted policy ids.
        let mut unsorted = r.clone();
        unsorted.decision.as_mut().unwrap().policy_ids.reverse();
        assert!(Record::decode(&unsorted.encode()).is_err());
        // Empty detail written explicitly.
        let mut e = Encoder::default();
        e.map(0);
        assert!(Record::decode(&e.out).is_err());
        // Hashes without a subject.
        let mut no_subject = r.clone();
        no_subject.subject = None;
        assert!(Record::decode(&no_subject.encode()).is_err());
        // An outcome naming itself.
        let mut own = r.clone();
        own.kind = Kind::Outcome {
            intent_seq: 7,
            result: ActionResult::Ok,
        };
        assert!(Record::decode(&own.encode()).is_err());
    }
}
