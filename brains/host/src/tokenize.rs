//! Text to token ids, the way the reference pipeline does it.
//!
//! A tokenising brain takes one BYTES tensor of UTF-8 texts (shape `[batch]`)
//! and feeds its model `input_ids`, `attention_mask` and `token_type_ids`,
//! INT64 `[batch, sequence]`. The rules are those of the Python reference
//! (`brains/models/common.py`) and of sentence-transformers, and they override
//! whatever the `tokenizer.json` itself says (all-MiniLM-L6-v2's file pins
//! truncation 128 and fixed padding 128):
//!
//! - special tokens added (`[CLS] … [SEP]` for BERT);
//! - truncation to the manifest's `max_length` tokens: longest-first, from the
//!   right, stride 0;
//! - padding on the right to the longest text of the batch, pad id 0, pad
//!   type id 0, pad token `[PAD]`;
//! - `token_type_ids` as the tokenizer produces them (all 0 for single texts).
//!
//! Tokenising runs on the calling thread: the tokenizers crate's rayon pool is
//! switched off, because a brain's sandbox counts threads and ONNX Runtime
//! already runs on one.

use sios_ipc::{BrainError, Truncation};
use tokenizers::tokenizer::{PostProcessor, Tokenizer};
use tokenizers::utils::padding::{PaddingDirection, PaddingParams, PaddingStrategy};
use tokenizers::utils::truncation::{TruncationDirection, TruncationParams, TruncationStrategy};

/// The three model inputs a tokenising brain feeds, in this order.
pub const MODEL_INPUTS: [&str; 3] = ["input_ids", "attention_mask", "token_type_ids"];

/// Pad id and pad token, as the reference pipeline sets them.
pub const PAD_ID: u32 = 0;
pub const PAD_TOKEN: &str = "[PAD]";

/// A Hugging Face tokenizer with the brain's truncation and padding rules.
#[derive(Debug)]
pub struct TextTokenizer {
    inner: Tokenizer,
    max_length: usize,
    /// [`MAX_TOKENISED_BYTES`], but for tests.
    max_tokenised_bytes: usize,
}

/// One batch of texts as model inputs: row-major `[batch, sequence]` INT64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub batch: usize,
    pub sequence: usize,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    /// The texts cut to `max_length` tokens, in element order.
    pub truncated: Vec<Truncation>,
}

impl TextTokenizer {
    /// Parses a `tokenizer.json` (already hash-checked by the caller).
    pub fn from_bytes(json: &[u8], max_length: usize) -> Result<TextTokenizer, String> {
        tokenizers::utils::parallelism::set_parallelism(false);
        let mut inner =
            Tokenizer::from_bytes(json).map_err(|err| format!("not a tokenizer.json: {err}"))?;
        let special = inner
            .get_post_processor()
            .map_or(0, |post| post.added_tokens(false));
        if max_length <= special {
            return Err(format!(
                "max_length {max_length} leaves no room for text: the tokenizer adds {special} special tokens"
            ));
        }
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|err| format!("cannot truncate to {max_length} tokens: {err}"))?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id: PAD_ID,
            pad_type_id: 0,
            pad_token: PAD_TOKEN.to_owned(),
        }));
        Ok(TextTokenizer {
            inner,
            max_length,
            max_tokenised_bytes: MAX_TOKENISED_BYTES,
        })
    }

    /// Longest sequence (special tokens included) this tokenizer produces.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Tokenises `texts` (the elements of input `input_name`) as one batch.
    pub fn encode(
        &self,
        input_name: &str,
        texts: &[impl AsRef<[u8]>],
    ) -> Result<Encoded, BrainError> {
        let failed = |reason: String| BrainError::Tokenize {
            name: input_name.to_owned(),
            reason,
        };
        let texts = texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                std::str::from_utf8(text.as_ref())
                    .map_err(|err| failed(format!("element #{i} is not UTF-8 text ({err})")))
            })
            .collect::<Result<Vec<&str>, _>>()?;
        if texts.is_empty() {
            return Err(failed("the batch is empty; send at least one text".into()));
        }
        let mut cut_short = Vec::with_capacity(texts.len());
        let mut encodings = texts
            .iter()
            .map(|text| {
                let (encoding, cut) = self.encode_start(text)?;
                cut_short.push(cut);
                Ok(encoding)
            })
            .collect::<tokenizers::Result<Vec<_>>>()
            .map_err(|err| failed(err.to_string()))?;
        if let Some(padding) = self.inner.get_padding() {
            tokenizers::utils::padding::pad_encodings(&mut encodings, padding)
                .map_err(|err| failed(err.to_string()))?;
        }
        let batch = encodings.len();
        let sequence = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut out = Encoded {
            batch,
            sequence,
            input_ids: Vec::with_capacity(batch * sequence),
            attention_mask: Vec::with_capacity(batch * sequence),
            token_type_ids: Vec::with_capacity(batch * sequence),
            truncated: Vec::new(),
        };
        for (i, ((encoding, text), cut)) in encodings.iter().zip(&texts).zip(cut_short).enumerate()
        {
            // Padding to the longest makes every row the same length; check
            // rather than trust, because a ragged batch would shift every row.
            let rows = [
                encoding.get_ids(),
                encoding.get_attention_mask(),
                encoding.get_type_ids(),
            ];
            if rows.iter().any(|row| row.len() != sequence) {
                return Err(failed(format!(
                    "element #{i} tokenised to {} ids, not the batch's {sequence}",
                    encoding.get_ids().len()
                )));
            }
            out.input_ids.extend(rows[0].iter().map(|&v| i64::from(v)));
            out.attention_mask
                .extend(rows[1].iter().map(|&v| i64::from(v)));
            out.token_type_ids
                .extend(rows[2].iter().map(|&v| i64::from(v)));
            if cut || !encoding.get_overflowing().is_empty() {
                out.truncated.push(Truncation {
                    input: input_name.to_owned(),
                    element: i as u64,
                    chars_read: chars_read(encoding, text) as u64,
                    chars_total: text.chars().count() as u64,
                    max_tokens: self.max_length as u64,
                });
            }
        }
        Ok(out)
    }

    /// Tokenises the start of `text` that the model reads, without the
    /// rest: a text of megabytes costs what a page costs (tokenising all of
    /// 8 MB took 5.7 s here, for the first 256 tokens). Returns the
    /// encoding, truncated to `max_length`, and whether `text` was cut short
    /// before tokenising (so the model did not read all of it even if the
    /// encoding did not overflow).
    ///
    /// The text is cut only where the cut cannot change the tokens kept: at
    /// whitespace (the tokenizers this host serves split words there, so a
    /// word's tokens do not depend on what follows it), and only once the
    /// part before the cut yields at least [`CUT_MARGIN_TOKENS`] tokens more
    /// than the model reads. Otherwise the part tried grows fourfold, up to
    /// [`MAX_TOKENISED_BYTES`]: past that, a text is cut there whatever is
    /// there. Only a text whose first megabyte holds fewer tokens than the
    /// model reads (megabytes of blanks, or of one word) is then read less
    /// far than its whole tokenising would have gone, and only one with no
    /// whitespace for a megabyte can have its last kept word split; either
    /// way the report of how far the model read is its own.
    fn encode_start(&self, text: &str) -> tokenizers::Result<(tokenizers::Encoding, bool)> {
        let most = self.max_tokenised_bytes;
        let mut tried = self.max_length.saturating_mul(FIRST_BYTES_PER_TOKEN);
        loop {
            let end = text.floor_char_boundary(tried.min(most));
            if end >= text.len() {
                return Ok((self.inner.encode(text, true)?, false));
            }
            let at_bound = tried >= most;
            let cut = if at_bound {
                Some(end)
            } else {
                text[..end]
                    .rfind(char::is_whitespace)
                    .filter(|&at| at >= end / 2)
            };
            if let Some(cut) = cut {
                let encoding = self.inner.encode(&text[..cut], true)?;
                if at_bound || overflow_tokens(&encoding) >= CUT_MARGIN_TOKENS {
                    return Ok((encoding, true));
                }
            }
            tried = tried.saturating_mul(4);
        }
    }
}

/// Bytes of a text tokenised first, per token the model reads: English
/// averages 4–5 bytes a token, so this is ample for natural text.
const FIRST_BYTES_PER_TOKEN: usize = 32;
/// Tokens past what the model reads that the part before a cut must yield.
const CUT_MARGIN_TOKENS: usize = 16;
/// Most bytes of one text ever tokenised (shared with the kernel, which
/// sends `ask`'s brains no more of a text than this).
pub const MAX_TOKENISED_BYTES: usize = sios_ipc::ask::MAX_TEXT_READ_BYTES;

/// Tokens that did not fit `max_length`, special tokens not counted.
fn overflow_tokens(encoding: &tokenizers::Encoding) -> usize {
    encoding
        .get_overflowing()
        .iter()
        .map(|part| {
            part.get_special_tokens_mask()
                .iter()
                .filter(|&&special| special == 0)
                .count()
        })
        .sum()
}

/// How many characters from the start of `text` the kept tokens cover: up
/// to the end of the last token that is not a special one or padding.
/// Offsets are byte offsets into the original text (the normaliser maps
/// them back); one that does not fall on a character boundary is moved back
/// to one, so the count never claims a character the model did not see.
fn chars_read(encoding: &tokenizers::Encoding, text: &str) -> usize {
    let end = encoding
        .get_offsets()
        .iter()
        .zip(encoding.get_special_tokens_mask())
        .filter(|(_, special)| **special == 0)
        .map(|(&(_, end), _)| end)
        .max()
        .unwrap_or(0);
    text[..text.floor_char_boundary(end)].chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::build_dir;

    /// The text-embedding tokenizer from `build/models`, or `None` (after a
    /// loud SKIPPED line) when `build/` is absent outside CI.
    fn minilm(test: &str) -> Option<TextTokenizer> {
        let build = build_dir();
        if !build.is_dir() {
            assert!(
                !crate::testing::in_ci(),
                "{test}: {} is missing; CI must run deploy/setup.sh first",
                build.display()
            );
            crate::testing::skipped(test, &build);
            return None;
        }
        let json = std::fs::read(build.join("models/text-embedding.tokenizer.json")).unwrap();
        Some(TextTokenizer::from_bytes(&json, 256).unwrap())
    }

    #[test]
    fn tokenises_exactly_like_the_python_reference() {
        let Some(tokenizer) = minilm("tokenises_exactly_like_the_python_reference") else {
            return;
        };
        let fixture: serde_json::Value = serde_json::from_slice(
            &std::fs::read(build_dir().join("fixtures/text-embedding.json")).unwrap(),
        )
        .unwrap();
        let request = sios_ipc::kserve::parse_request(&fixture["request"].to_string()).unwrap();
        let text = &request.inputs[0];
        let encoded = tokenizer
            .encode(&text.name, text.strings().unwrap())
            .unwrap();
        for want in fixture["preprocess"]["tensors"].as_array().unwrap() {
            let want = sios_ipc::kserve::parse_tensor(0, want).unwrap();
            let got = match want.name.as_str() {
                "input_ids" => &encoded.input_ids,
                "attention_mask" => &encoded.attention_mask,
                "token_type_ids" => &encoded.token_type_ids,
                other => panic!("unexpected fixture tensor {other}"),
            };
            assert_eq!(
                want.shape,
                [encoded.batch as u64, encoded.sequence as u64],
                "{}",
                want.name
            );
            assert_eq!(&want.to_elements::<i64>().unwrap(), got, "{}", want.name);
        }
    }

    #[test]
    fn truncates_to_max_length_and_pads_to_the_longest() {
        let Some(tokenizer) = minilm("truncates_to_max_length_and_pads_to_the_longest") else {
            return;
        };
        let long = vec!["word"; 400].join(" ");
        let encoded = tokenizer.encode("text", &[long.as_str(), "short"]).unwrap();
        assert_eq!((encoded.batch, encoded.sequence), (2, 256));
        // [CLS] short [SEP], then padding with id 0 and mask 0.
        let second = &encoded.input_ids[256..];
        assert_eq!(second[0], 101);
        assert_eq!(second[2], 102);
        assert!(second[3..].iter().all(|&id| id == i64::from(PAD_ID)));
        assert_eq!(encoded.attention_mask[256..].iter().sum::<i64>(), 3);
        assert!(encoded.token_type_ids.iter().all(|&t| t == 0));
        // The tokenizer file's own setting (truncation 128) is overridden.
        let alone = tokenizer.encode("text", &[long.as_str()]).unwrap();
        assert_eq!(alone.sequence, 256);
    }

    #[test]
    fn a_cut_text_says_how_much_of_it_the_model_read() {
        let Some(tokenizer) = minilm("a_cut_text_says_how_much_of_it_the_model_read") else {
            return;
        };
        // Accented, multi-byte words: the count is in characters, and the
        // normaliser (lower case, accents stripped) must not shift it.
        let long = (0..300)
            .map(|i| format!("Émile{i} naïve"))
            .collect::<Vec<_>>()
            .join(" ");
        let texts = ["short and whole", long.as_str(), "also whole"];
        let encoded = tokenizer.encode("text", &texts).unwrap();
        assert_eq!(encoded.truncated.len(), 1, "{:?}", encoded.truncated);
        let cut = &encoded.truncated[0];
        assert_eq!((cut.input.as_str(), cut.element), ("text", 1));
        assert_eq!(cut.max_tokens, 256);
        assert_eq!(cut.chars_total, long.chars().count() as u64);
        assert!(
            0 < cut.chars_read && cut.chars_read < cut.chars_total,
            "{cut:?}"
        );
        // The part said to be read is exactly what the model got: alone, it
        // tokenises to the same ids, and one more word would not fit.
        let read: String = long.chars().take(cut.chars_read as usize).collect();
        let again = tokenizer.encode("text", &[read.as_str()]).unwrap();
        assert!(again.truncated.is_empty(), "{:?}", again.truncated);
        let kept = |e: &Encoded, row: usize| -> Vec<i64> {
            let ids = &e.input_ids[row * e.sequence..(row + 1) * e.sequence];
            let mask = &e.attention_mask[row * e.sequence..(row + 1) * e.sequence];
            ids.iter()
                .zip(mask)
                .filter(|(_, m)| **m == 1)
                .map(|(id, _)| *id)
                .collect()
        };
        assert_eq!(kept(&again, 0), kept(&encoded, 1));
        let (_, rest) = long.split_at(read.len());
        let next_word = rest.split_whitespace().next().unwrap();
        let more = format!(
            "{read}{}",
            &rest[..rest.find(next_word).unwrap() + next_word.len()]
        );
        assert_eq!(
            tokenizer
                .encode("text", &[more.as_str()])
                .unwrap()
                .truncated
                .len(),
            1
        );
    }

    #[test]
    fn a_long_text_is_cut_before_tokenising_without_changing_what_the_model_reads() {
        let Some(mut tokenizer) =
            minilm("a_long_text_is_cut_before_tokenising_without_changing_what_the_model_reads")
        else {
            return;
        };
        tokenizer.max_tokenised_bytes = 64 * 1024;
        let words = |word: &str, gap: &str, n: usize| vec![word; n].join(gap);
        let texts = [
            // Cut at the first try.
            words("Either party may terminate this agreement.", " ", 2_000),
            words("Émile naïve 東京 déjà-vu", "\n", 3_000),
            // Few tokens per byte: words past WordPiece's 100 characters
            // are one [UNK] each, and long runs of blanks are nothing; the
            // part tried must grow before a cut keeps enough tokens.
            words(&"x".repeat(150), " ", 1_500),
            words("word", &" ".repeat(50), 600),
            // No whitespace at all: tokenised whole while short enough…
            "日本語の文章です。".repeat(1_000),
            // …and cut at the bound past it (punctuation splits it into
            // words, so the cut cannot change the kept tokens here).
            "a,".repeat(50_000),
            // Short: read whole, as before.
            "A short question about a lease.".to_owned(),
        ];
        for text in &texts {
            let got = tokenizer.encode("text", &[text.as_str()]).unwrap();
            let whole = tokenizer.inner.encode(text.as_str(), true).unwrap();
            let kept: Vec<i64> = whole.get_ids().iter().map(|&id| i64::from(id)).collect();
            let shown: String = text.chars().take(20).collect();
            assert_eq!(got.input_ids, kept, "{shown}…");
            let read = chars_read(&whole, text) as u64;
            let was_cut = !whole.get_overflowing().is_empty();
            match got.truncated.as_slice() {
                [] => assert!(!was_cut, "{shown}…"),
                [cut] => {
                    assert!(was_cut, "{shown}…");
                    assert_eq!(cut.chars_read, read, "{shown}…");
                    assert_eq!(cut.chars_total, text.chars().count() as u64);
                }
                more => panic!("{more:?}"),
            }
        }
        // Whatever the text, no more than the bound is tokenised: a text
        // of one word megabytes long, or one whose first bound holds fewer
        // tokens than the model reads, is cut there and read only that far;
        // the response says how far.
        let one_word = "z".repeat(1 << 20);
        let got = tokenizer.encode("text", &[one_word.as_str()]).unwrap();
        assert_eq!(got.truncated.len(), 1, "{:?}", got.truncated);
        assert_eq!(got.truncated[0].chars_total, 1 << 20);
        let sparse = words("word", &" ".repeat(300), 600);
        let got = tokenizer.encode("text", &[sparse.as_str()]).unwrap();
        let words_read = got.input_ids.iter().filter(|&&id| id == 2773).count();
        assert!(words_read < 254 && words_read > 200, "{words_read}");
        assert_eq!(got.truncated[0].chars_read, (words_read * 304 - 300) as u64);
        // The bound holds for a text between it and the next part tried
        // (100 KB, where 128 KiB would come after 32 KiB): cut at 64 KiB.
        let between = words("word", &" ".repeat(300), 330);
        assert!(between.len() > 96 * 1024 && between.len() < 128 * 1024);
        let got = tokenizer.encode("text", &[between.as_str()]).unwrap();
        assert_eq!(got.truncated.len(), 1, "{:?}", got.truncated);
        assert!(
            got.truncated[0].chars_read <= 64 * 1024,
            "{:?}",
            got.truncated
        );
    }

    #[test]
    fn text_that_cannot_be_tokenised_is_a_tokenize_error() {
        let Some(tokenizer) = minilm("text_that_cannot_be_tokenised_is_a_tokenize_error") else {
            return;
        };
        let bad: [&[u8]; 2] = [b"fine", b"\xff\xfe not UTF-8"];
        match tokenizer.encode("text", &bad) {
            Err(BrainError::Tokenize { name, reason }) => {
                assert_eq!(name, "text");
                assert!(reason.contains("element #1 is not UTF-8"), "{reason}");
            }
            other => panic!("expected a tokenize error, got {other:?}"),
        }
        let none: [&str; 0] = [];
        assert!(matches!(
            tokenizer.encode("text", &none),
            Err(BrainError::Tokenize { .. })
        ));
    }

    #[test]
    fn a_max_length_with_no_room_for_text_is_refused() {
        let Some(_) = minilm("a_max_length_with_no_room_for_text_is_refused") else {
            return;
        };
        let json = std::fs::read(build_dir().join("models/text-embedding.tokenizer.json")).unwrap();
        let err = TextTokenizer::from_bytes(&json, 2).unwrap_err();
        assert!(err.contains("2 special tokens"), "{err}");
        assert!(TextTokenizer::from_bytes(b"{}", 16).is_err());
    }
}
