//! `sios ask`: the answer of the kernel's deterministic multi-brain pipeline.

use crate::memory::{Embedding, SearchHit};
use crate::services::{InferRequest, InferResponse};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// The brain whose sentence embeddings memory search compares: the vectors
/// `sios ask --recall` and `sios memory put --embed` store and look up.
pub const EMBEDDER: &str = "text-embedding";
/// Its output holding one L2-normalised embedding per text.
pub const EMBEDDING_OUTPUT: &str = "sentence_embedding";
/// Most memory items one `ask` recalls.
pub const MAX_RECALL: u32 = 20;

/// What to ask, and which of the asker's memory to consult.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct AskRequest {
    pub text: String,
    /// Memory namespaces to recall related items from (each must be readable
    /// by the asker under the policy); empty: memory is not consulted.
    pub recall: Vec<String>,
    /// How many related items to recall, 1 to [`MAX_RECALL`].
    pub recall_k: u32,
}

/// The request that asks [`EMBEDDER`] for the embedding of one text.
pub fn embedding_request(text: &str) -> InferRequest {
    InferRequest {
        id: None,
        inputs: vec![Tensor::from_strings("text", vec![1], &[text])],
    }
}

/// The one embedding in [`EMBEDDER`]'s answer to [`embedding_request`].
pub fn embedding_of(response: &InferResponse) -> Result<Embedding, String> {
    let tensor = response
        .outputs
        .iter()
        .find(|t| t.name == EMBEDDING_OUTPUT)
        .ok_or_else(|| format!("`{EMBEDDER}` did not return `{EMBEDDING_OUTPUT}`"))?;
    let values = tensor.to_elements::<f32>().map_err(|e| e.to_string())?;
    if values.is_empty() || tensor.shape.first() != Some(&1) {
        return Err(format!(
            "`{EMBEDDER}` returned `{EMBEDDING_OUTPUT}` of shape {:?}, expected [1, dims]",
            tensor.shape
        ));
    }
    Ok(Embedding(values))
}

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
    /// Items recalled from the asker's memory, nearest first (with `recall`).
    #[serde(default)]
    pub recalled: Vec<SearchHit>,
}
