//! `sios ask`: the answer of the kernel's deterministic multi-brain pipeline.

use serde::{Deserialize, Serialize};

/// One brain's reading of the input: its most likely label and the runners-up.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Finding {
    pub brain: String,
    pub label: String,
    pub confidence: f32,
    /// The three most likely labels with their probabilities, best first.
    pub top: Vec<(String, f32)>,
}

/// What `ask` did and concluded.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AskAnswer {
    /// Every brain the pipeline ran, in order.
    pub plan: Vec<String>,
    /// Screening results (safety, personal data), in plan order.
    pub screening: Vec<Finding>,
    /// The router's ranking of domain specialists, best first (at most five).
    pub route: Vec<(String, f32)>,
    /// The specialists' answers, in routing order.
    pub answers: Vec<Finding>,
    /// Set when screening stopped the pipeline before any specialist ran.
    pub refused: Option<String>,
    /// Steps skipped and why (a brain not installed, disabled or failed).
    pub notes: Vec<String>,
    /// Audit sequence numbers of the records this request produced.
    pub audit_seqs: Vec<u64>,
}
