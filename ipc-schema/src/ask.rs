//! `sios ask`: the answer of the kernel's deterministic multi-brain pipeline.

use crate::memory::{Embedding, SearchHit};
use crate::services::{InferRequest, InferResponse, Truncation};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// The brain whose sentence embeddings memory search compares: the vectors
/// `sios ask --recall` and `sios memory put --embed` store and look up.
pub const EMBEDDER: &str = "text-embedding";
/// Its output holding one L2-normalised embedding per text.
pub const EMBEDDING_OUTPUT: &str = "sentence_embedding";
/// Most memory items one `ask` recalls.
pub const MAX_RECALL: u32 = 20;
/// Most bytes of one text a tokenising brain ever reads: it tokenises at
/// most this much of a text (`brains/host/src/tokenize.rs`), whose first
/// 256 tokens are all its model takes.
pub const MAX_TEXT_READ_BYTES: usize = 1 << 20;

/// What `ask` sends its brains of `text`: all of it when it is no longer
/// than [`MAX_TEXT_READ_BYTES`], else its start, one character past that
/// bound, so that the brain cuts it at the bound itself and says how far it
/// read. A text of megabytes then costs each brain, each socket and each
/// audit hash what a megabyte costs, and fits under every brain's request
/// bound, with the same answer: no brain would read past the bound anyway.
pub fn text_sent(text: &str) -> &str {
    if text.len() <= MAX_TEXT_READ_BYTES {
        return text;
    }
    // The character that starts at the last boundary within the bound runs
    // past it (the text is longer), and is the one character sent past it.
    let last_within = text.floor_char_boundary(MAX_TEXT_READ_BYTES);
    &text[..text.ceil_char_boundary(last_within + 1)]
}

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
    /// The brains that read only the start of the text, in plan order
    /// (empty when every brain read all of it); `notes` says it in words.
    #[serde(default)]
    pub partly_read: Vec<PartlyRead>,
}

/// A brain that read only the start of a text: its model takes at most
/// `max_tokens` tokens, and what it said is about the first `chars_read`
/// characters (Unicode scalar values) alone.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PartlyRead {
    pub brain: String,
    pub chars_read: u64,
    pub max_tokens: u64,
}

impl PartlyRead {
    /// What `brain`'s response to a request of the one text `text` says it
    /// left unread, or `None` when it read the whole text. A brain's own
    /// account is checked against the text the kernel sent: a claim about
    /// another element, a text of another length, or a part not shorter
    /// than the whole is not about this text, and is dropped.
    pub fn of(brain: &str, text: &str, response: &InferResponse) -> Option<PartlyRead> {
        let chars = text.chars().count() as u64;
        response
            .truncated
            .iter()
            .find(|cut: &&Truncation| {
                cut.element == 0 && cut.chars_total == chars && cut.chars_read < chars
            })
            .map(|cut| PartlyRead {
                brain: brain.to_owned(),
                chars_read: cut.chars_read,
                max_tokens: cut.max_tokens,
            })
    }
}

/// One sentence for a person: how long the text is, and how much of it
/// each brain that read only its start read. `None` when none did.
///
/// Brains that read as much are named together, in the order given:
/// "the text is 5310 characters long; brains read only its start, so their
/// readings are about that part: safety-screen, router and legal its first
/// 612 characters (128 tokens), text-embedding its first 1207 (256 tokens)".
pub fn partly_read_note(text: &str, partly: &[PartlyRead]) -> Option<String> {
    if partly.is_empty() {
        return None;
    }
    let mut groups: Vec<((u64, u64), Vec<&str>)> = Vec::new();
    for p in partly {
        let key = (p.chars_read, p.max_tokens);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, names)) if !names.contains(&p.brain.as_str()) => names.push(&p.brain),
            Some(_) => {}
            None => groups.push((key, vec![&p.brain])),
        }
    }
    let said: Vec<String> = groups
        .iter()
        .enumerate()
        .map(|(i, ((chars, tokens), names))| {
            let unit = if i == 0 { " characters" } else { "" };
            format!(
                "{} its first {chars}{unit} ({tokens} tokens)",
                and_list(names)
            )
        })
        .collect();
    Some(format!(
        "the text is {} characters long; brains read only its start, so their readings are \
         about that part: {}",
        text.chars().count(),
        said.join(", ")
    ))
}

/// "a", "a and b", "a, b and c".
fn and_list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(truncated: Vec<Truncation>) -> InferResponse {
        InferResponse {
            id: None,
            model_name: "legal".into(),
            model_version: String::new(),
            outputs: Vec::new(),
            truncated,
        }
    }

    fn cut(element: u64, chars_read: u64, chars_total: u64) -> Truncation {
        Truncation {
            input: "text".into(),
            element,
            chars_read,
            chars_total,
            max_tokens: 128,
        }
    }

    #[test]
    fn only_a_consistent_account_of_the_sent_text_is_taken() {
        let text = "naïve ".repeat(100); // 600 characters, 700 bytes
        let whole = response(Vec::new());
        assert_eq!(PartlyRead::of("legal", &text, &whole), None);
        let honest = response(vec![cut(0, 250, 600)]);
        assert_eq!(
            PartlyRead::of("legal", &text, &honest),
            Some(PartlyRead {
                brain: "legal".into(),
                chars_read: 250,
                max_tokens: 128
            })
        );
        for wrong in [cut(1, 250, 600), cut(0, 250, 700), cut(0, 600, 600)] {
            assert_eq!(
                PartlyRead::of("legal", &text, &response(vec![wrong.clone()])),
                None,
                "{wrong:?}"
            );
        }
    }

    #[test]
    fn a_text_is_sent_whole_up_to_the_bound_and_one_character_past_it_after() {
        let short = "é".repeat(1000);
        assert_eq!(text_sent(&short), short);
        let exact = "x".repeat(MAX_TEXT_READ_BYTES);
        assert_eq!(text_sent(&exact), exact);
        let long = "x".repeat(MAX_TEXT_READ_BYTES + 10);
        assert_eq!(text_sent(&long).len(), MAX_TEXT_READ_BYTES + 1);
        // Two-byte characters, the bound inside one: that one is the last.
        let accented = format!("x{}", "é".repeat(MAX_TEXT_READ_BYTES));
        let sent = text_sent(&accented);
        assert_eq!(sent.len(), MAX_TEXT_READ_BYTES + 1);
        assert!(sent.ends_with('é') && sent.len() > MAX_TEXT_READ_BYTES);
    }

    #[test]
    fn the_note_names_brains_that_read_as_much_together() {
        assert_eq!(partly_read_note("abc", &[]), None);
        let read = |brain: &str, chars_read, max_tokens| PartlyRead {
            brain: brain.into(),
            chars_read,
            max_tokens,
        };
        let text = "x".repeat(5310);
        let note = partly_read_note(
            &text,
            &[
                read("safety-screen", 612, 128),
                read("text-embedding", 1207, 256),
                read("router", 612, 128),
                read("legal", 612, 128),
            ],
        )
        .unwrap();
        assert_eq!(
            note,
            "the text is 5310 characters long; brains read only its start, so their readings \
             are about that part: safety-screen, router and legal its first 612 characters \
             (128 tokens), text-embedding its first 1207 (256 tokens)"
        );
    }
}
