//! One brain's model: verified, loaded, checked against its manifest, run.
//!
//! [`Engine::load`] is the whole start-up of a brain apart from the socket:
//!
//! 1. read the model (and tokenizer) bytes and check their sha256 against the
//!    manifest ([`sios_manifest::read_verified`]); a mismatch is refused before
//!    ONNX Runtime sees a byte;
//! 2. create the ONNX Runtime session from *those bytes* (never from the path,
//!    so the file cannot change between the check and the use), with the
//!    settings every reference output was computed with: one intra-op thread,
//!    one inter-op thread, sequential execution, `ORT_ENABLE_ALL`
//!    optimisations, CPU execution provider;
//! 3. compare what the model really takes and returns with what the manifest
//!    declares, and refuse any disagreement, naming both sides.
//!
//! [`Engine::infer`] then validates each request against the manifest (a brain
//! trusts no socket), tokenises text for tokenising brains, runs the model and
//! returns the declared outputs, in manifest order.

use crate::convert;
use crate::rows;
use crate::runtime::{self, RuntimeError};
use crate::tokenize::{self, TextTokenizer};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynValue, TensorElementType, ValueType};
use sios_ipc::tensor::validate;
use sios_ipc::{BrainError, DataType, Tensor, TensorLimits, TensorSpec, Truncation};
use sios_manifest::{Manifest, ManifestError, Preprocess, read_verified};
use std::fmt;
use std::path::{Path, PathBuf};

/// A loaded brain model, ready to run.
#[derive(Debug)]
pub struct Engine {
    name: String,
    model_sha256: String,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    tokenizer: Option<TextTokenizer>,
    /// For `embed_via` brains: where the model's input comes from.
    upstream: Option<Upstream>,
    limits: TensorLimits,
    /// Whether a batch may run in parts (`src/rows.rs`): only a tokenising
    /// model's, whose texts are encoded each on its own (attention masked
    /// to the text, one pooled vector per text) and whose outputs are all
    /// batch-major. Other models' rows may depend on each other (dedup
    /// compares every row with every other, extractive-summary scores each
    /// sentence against the document's mean): run in parts they would give
    /// other answers, so they run whole, within the kernel's request bound.
    batch_major: bool,
    /// The most bytes the outputs of a batch run in parts may add up to.
    max_output_bytes: usize,
    session: Session,
}

/// Most texts × tokens a tokenising model runs on at once: 16 texts of 256
/// tokens, whose attention takes about 50 MB a layer in all-MiniLM-L6-v2.
pub const TOKENS_PER_RUN: usize = 4096;

/// An `embed_via` brain's source: another brain's output, fed to this
/// model's only input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The brain to ask (through the kernel).
    pub brain: String,
    /// Which of its outputs to take.
    pub output: String,
    /// The model input it becomes.
    pub model_input: TensorSpec,
}

/// Why a brain could not start. Each names the brain and the file concerned.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum EngineError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Unreadable file or sha256 mismatch (the message says what to do).
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("brain `{brain}`: the tokenizer {path} is unusable: {reason}")]
    Tokenizer {
        brain: String,
        path: PathBuf,
        reason: String,
    },
    #[error("brain `{brain}`: ONNX Runtime could not load the model {path}: {reason}")]
    Session {
        brain: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "brain `{brain}`: the manifest and the model {path} disagree: {detail}. Make the manifest's inputs and \
         outputs match the model (brains/models/IO.md lists each model's), or pin the model the manifest describes"
    )]
    Signature {
        brain: String,
        path: PathBuf,
        detail: String,
    },
}

impl Engine {
    /// Verifies, loads and checks the brain `manifest` describes, with its
    /// files under `models_dir`. ONNX Runtime must have been loaded with
    /// [`runtime::init`] first.
    pub fn load(manifest: &Manifest, models_dir: &Path) -> Result<Engine, EngineError> {
        let brain = manifest.name.clone();
        let model_path = models_dir.join(&manifest.model.file);

        // 1. Hashes first: nothing unverified reaches a parser.
        let model_bytes = read_verified(models_dir, &manifest.model)?;
        let tokenizer = match &manifest.preprocess {
            Some(Preprocess::Tokenize {
                tokenizer,
                max_length,
            }) => {
                let bytes = read_verified(models_dir, tokenizer)?;
                let parsed = TextTokenizer::from_bytes(&bytes, *max_length).map_err(|reason| {
                    EngineError::Tokenizer {
                        brain: brain.clone(),
                        path: models_dir.join(&tokenizer.file),
                        reason,
                    }
                })?;
                Some(parsed)
            }
            _ => None,
        };

        // 2. The session, from the verified bytes.
        let env = runtime::environment()?;
        let build = || -> ort::Result<Session> {
            Session::builder(&env)?
                .with_intra_threads(1)?
                .with_inter_threads(1)?
                .with_parallel_execution(false)?
                // `All` is ORT_ENABLE_ALL (99); ort's `Level3` is ORT_ENABLE_LAYOUT.
                .with_optimization_level(GraphOptimizationLevel::All)?
                .with_log_id(brain.as_str())?
                // No arena: ONNX Runtime's CPU arena keeps what the largest
                // run needed for the session's life. A brain runs requests of
                // any size under a hard memory limit, and with the arena a
                // 7.2 MB request to a 64 MiB brain left 30 MB held, so the
                // next one got it killed; without it the brain goes back to
                // its idle size after each request (see also the kernel's
                // GLIBC_TUNABLES for brains, `kernel/src/appliance.rs`).
                .with_execution_providers([ort::ep::CPU::default()
                    .with_arena_allocator(false)
                    .build()])?
                .commit_from_memory(&model_bytes)
        };
        let session = build().map_err(|err| EngineError::Session {
            brain: brain.clone(),
            path: model_path.clone(),
            reason: err.to_string(),
        })?;

        // 3. The model must be what the manifest says it is.
        let inputs = manifest.input_specs();
        let outputs = manifest.output_specs();
        let model_inputs: Vec<ModelIo> = session
            .inputs()
            .iter()
            .map(|o| ModelIo::new(o.name(), o.dtype()))
            .collect();
        let model_outputs: Vec<ModelIo> = session
            .outputs()
            .iter()
            .map(|o| ModelIo::new(o.name(), o.dtype()))
            .collect();
        let signature_error = |detail| EngineError::Signature {
            brain: brain.clone(),
            path: model_path.clone(),
            detail,
        };
        let upstream = match manifest.upstream() {
            Some((source, output)) => Some(Upstream {
                brain: source.to_owned(),
                output: output.to_owned(),
                model_input: single_fp32_input(&model_inputs).map_err(signature_error)?,
            }),
            None => None,
        };
        let checked = if tokenizer.is_some() {
            check_tokenising_inputs(&inputs, &model_inputs)
        } else if upstream.is_some() {
            Ok(())
        } else {
            check_plain_inputs(&inputs, &model_inputs)
        }
        .and_then(|()| check_outputs(&outputs, &model_outputs));
        checked.map_err(signature_error)?;
        let batch_major =
            tokenizer.is_some() && outputs.iter().all(|spec| spec.shape.first() == Some(&-1));

        Ok(Engine {
            name: brain,
            model_sha256: manifest.model.sha256.clone(),
            inputs,
            outputs,
            tokenizer,
            upstream,
            limits: TensorLimits::default(),
            batch_major,
            max_output_bytes: usize::MAX,
            session,
        })
    }

    /// Where this brain's model input comes from, for `embed_via` brains.
    pub fn upstream(&self) -> Option<&Upstream> {
        self.upstream.as_ref()
    }

    /// Replaces the default per-tensor limits.
    pub fn with_limits(mut self, limits: TensorLimits) -> Engine {
        self.limits = limits;
        self
    }

    /// Stops a batch run in parts once its outputs take more than `bytes`
    /// (as [`sios_ipc::tensor::encoded_bytes_bound`] counts them): the
    /// brain's reply could not carry them, and held until the last part,
    /// the outputs of a million short texts took text-embedding past its
    /// memory limit.
    pub fn with_max_output_bytes(mut self, bytes: usize) -> Engine {
        self.max_output_bytes = bytes;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sha256 of the model that answers (the response's `model_version`).
    pub fn model_sha256(&self) -> &str {
        &self.model_sha256
    }

    /// What clients send, as declared in the manifest.
    pub fn input_specs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    /// What the brain returns, as declared in the manifest.
    pub fn output_specs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    /// Runs the model on `inputs`: validated against the manifest,
    /// tokenised if this brain tokenises, and in parts of bounded rows when
    /// the batch of texts is larger than [`TOKENS_PER_RUN`] allows, so
    /// that no request's size decides the model's working memory. Returns
    /// the declared outputs in manifest order, and the texts cut to the
    /// tokenizer's `max_length`.
    ///
    /// An `embed_via` brain cannot run from its declared inputs alone (its
    /// model input comes from another brain): use [`Engine::infer_upstream`].
    pub fn infer(&mut self, inputs: &[Tensor]) -> Result<Inference, BrainError> {
        self.infer_while(inputs, &|| true)
    }

    /// [`Engine::infer`], stopping between parts of a batch once
    /// `still_wanted` says no (the caller's deadline passed, or the caller
    /// left): a large batch nobody waits for stops costing CPU after one part.
    pub fn infer_while(
        &mut self,
        inputs: &[Tensor],
        still_wanted: &dyn Fn() -> bool,
    ) -> Result<Inference, BrainError> {
        validate(inputs, &self.inputs, self.limits)?;
        if let Some(upstream) = &self.upstream {
            return Err(BrainError::Runtime(format!(
                "this brain takes its model input from brain `{}`, which only the brain host can ask",
                upstream.brain
            )));
        }
        self.in_parts(inputs, still_wanted, |engine, part| {
            let (feed, truncated): (Feed, _) = match &engine.tokenizer {
                Some(tokenizer) => tokenised_feed(tokenizer, &part[0])?,
                None => (
                    part.iter()
                        .map(|tensor| Ok((tensor.name.clone(), convert::to_ort(tensor)?)))
                        .collect::<Result<_, BrainError>>()?,
                    Vec::new(),
                ),
            };
            Ok(Inference {
                outputs: engine.run(feed)?,
                truncated,
            })
        })
    }

    /// Runs `run` on `inputs` whole, or, when the batch is larger than one
    /// run should take, on each part of it in order (`src/rows.rs`), and
    /// joins what the parts give.
    fn in_parts(
        &mut self,
        inputs: &[Tensor],
        still_wanted: &dyn Fn() -> bool,
        mut run: impl FnMut(&mut Engine, &[Tensor]) -> Result<Inference, BrainError>,
    ) -> Result<Inference, BrainError> {
        let parts = if self.batch_major {
            rows::split(inputs, self.rows_per_run())
        } else {
            None
        };
        let Some(parts) = parts else {
            return run(self, inputs);
        };
        let mut outputs = Vec::with_capacity(parts.len());
        let mut truncated = Vec::new();
        let mut first_row = 0;
        let mut output_bytes = 0;
        let count = parts.len();
        for (ran, part) in parts.into_iter().enumerate() {
            if ran > 0 && !still_wanted() {
                return Err(BrainError::Runtime(format!(
                    "stopped after {ran} of the batch's {count} parts: nobody waits for the \
                     answer any more (its deadline passed); send fewer inputs per request"
                )));
            }
            let rows = rows::rows(&part).unwrap_or(0);
            let done = run(self, &part)?;
            truncated.extend(done.truncated.into_iter().map(|mut cut| {
                cut.element += first_row;
                cut
            }));
            output_bytes += sios_ipc::tensor::encoded_bytes_bound(&done.outputs);
            if output_bytes > self.max_output_bytes {
                return Err(BrainError::Output {
                    name: self
                        .outputs
                        .first()
                        .map(|o| o.name.clone())
                        .unwrap_or_default(),
                    reason: format!(
                        "the outputs of {} of the batch's {count} parts already take about \
                         {output_bytes} bytes, more than the {}-byte frame limit; send fewer \
                         inputs per request (or raise [limits] max_frame_bytes)",
                        ran + 1,
                        self.max_output_bytes
                    ),
                });
            }
            outputs.push(done.outputs);
            first_row += rows;
        }
        let outputs = rows::join(outputs).map_err(|reason| BrainError::Output {
            name: self
                .outputs
                .first()
                .map(|o| o.name.clone())
                .unwrap_or_default(),
            reason,
        })?;
        Ok(Inference { outputs, truncated })
    }

    /// How many texts one run takes: [`TOKENS_PER_RUN`] worth.
    fn rows_per_run(&self) -> u64 {
        let per_run = self
            .tokenizer
            .as_ref()
            .map_or(1, |tokenizer| TOKENS_PER_RUN / tokenizer.max_length());
        per_run.max(1) as u64
    }

    /// Runs an `embed_via` brain's model on what its upstream brain returned
    /// (`source`, that brain's output tensor), checked against the model's input.
    /// What the upstream brain left unread is its response's to report.
    /// Stops between parts as [`Engine::infer_while`] does.
    pub fn infer_upstream(
        &mut self,
        source: &Tensor,
        still_wanted: &dyn Fn() -> bool,
    ) -> Result<Inference, BrainError> {
        let Some(upstream) = &self.upstream else {
            return Err(BrainError::Runtime(
                "this brain has no upstream brain".into(),
            ));
        };
        let mut input = source.clone();
        input.name = upstream.model_input.name.clone();
        validate(
            std::slice::from_ref(&input),
            std::slice::from_ref(&upstream.model_input),
            self.limits,
        )
        .map_err(|e| BrainError::Output {
            name: upstream.output.clone(),
            reason: format!(
                "brain `{}` returned a tensor this model cannot take: {e}",
                upstream.brain
            ),
        })?;
        self.in_parts(
            std::slice::from_ref(&input),
            still_wanted,
            |engine, part| {
                let feed = vec![(part[0].name.clone(), convert::to_ort(&part[0])?)];
                Ok(Inference {
                    outputs: engine.run(feed)?,
                    truncated: Vec::new(),
                })
            },
        )
    }

    fn run(&mut self, feed: Feed) -> Result<Vec<Tensor>, BrainError> {
        let results = self
            .session
            .run(feed)
            .map_err(|err| BrainError::Runtime(err.to_string()))?;
        self.outputs
            .iter()
            .map(|spec| {
                let value = results.get(&spec.name).ok_or_else(|| BrainError::Output {
                    name: spec.name.clone(),
                    reason: "the model did not produce it".into(),
                })?;
                let tensor = convert::from_ort(&spec.name, value)?;
                check_output(spec, &tensor)?;
                Ok(tensor)
            })
            .collect()
    }
}

/// Named model inputs, as ONNX Runtime takes them.
type Feed = Vec<(String, DynValue)>;

/// One run of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Inference {
    /// The declared outputs, in manifest order.
    pub outputs: Vec<Tensor>,
    /// The texts the model read only the start of.
    pub truncated: Vec<Truncation>,
}

/// The three INT64 `[batch, sequence]` model inputs for a batch of texts,
/// and the texts cut to fit them.
fn tokenised_feed(
    tokenizer: &TextTokenizer,
    text: &Tensor,
) -> Result<(Feed, Vec<Truncation>), BrainError> {
    let encoded = tokenizer.encode(&text.name, text.strings()?)?;
    let shape = || vec![encoded.batch as i64, encoded.sequence as i64];
    let [ids, mask, types] = tokenize::MODEL_INPUTS;
    let feed = vec![
        (
            ids.to_owned(),
            convert::from_elements(shape(), encoded.input_ids)?,
        ),
        (
            mask.to_owned(),
            convert::from_elements(shape(), encoded.attention_mask)?,
        ),
        (
            types.to_owned(),
            convert::from_elements(shape(), encoded.token_type_ids)?,
        ),
    ];
    Ok((feed, encoded.truncated))
}

/// A model output must be what the manifest promised callers.
fn check_output(spec: &TensorSpec, tensor: &Tensor) -> Result<(), BrainError> {
    let shape_ok = tensor.shape.len() == spec.shape.len()
        && tensor
            .shape
            .iter()
            .zip(&spec.shape)
            .all(|(&got, &want)| want < 0 || got == want as u64);
    if tensor.datatype != spec.datatype || !shape_ok {
        return Err(BrainError::Output {
            name: spec.name.clone(),
            reason: format!(
                "the model returned {} {:?}, but the manifest declares {}",
                tensor.datatype,
                tensor.shape,
                Declared(spec)
            ),
        });
    }
    Ok(())
}

/// One model input or output, as ONNX Runtime reports it.
#[derive(Debug, Clone)]
struct ModelIo {
    name: String,
    /// `None` for sequences, maps and optionals.
    element: Option<TensorElementType>,
    /// `-1` for a dynamic dimension.
    shape: Vec<i64>,
    kind: String,
}

impl ModelIo {
    fn new(name: &str, dtype: &ValueType) -> ModelIo {
        match dtype {
            ValueType::Tensor { ty, shape, .. } => ModelIo {
                name: name.to_owned(),
                element: Some(*ty),
                shape: shape.iter().copied().collect(),
                kind: String::new(),
            },
            other => ModelIo {
                name: name.to_owned(),
                element: None,
                shape: Vec::new(),
                kind: other.to_string(),
            },
        }
    }

    fn datatype(&self) -> Option<DataType> {
        self.element.and_then(convert::datatype_of)
    }
}

impl fmt::Display for ModelIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.element, self.datatype()) {
            (Some(_), Some(dt)) => write!(f, "`{}` {} {}", self.name, dt, Dims(&self.shape)),
            (Some(element), None) => write!(f, "`{}` {} {}", self.name, element, Dims(&self.shape)),
            (None, _) => write!(f, "`{}` ({})", self.name, self.kind),
        }
    }
}

/// A manifest declaration, formatted like [`ModelIo`].
struct Declared<'a>(&'a TensorSpec);

impl fmt::Display for Declared<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` {} {}",
            self.0.name,
            self.0.datatype,
            Dims(&self.0.shape)
        )
    }
}

struct Dims<'a>(&'a [i64]);

impl fmt::Display for Dims<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(f, "[{}]", dims.join(", "))
    }
}

fn list(items: &[ModelIo]) -> String {
    let items: Vec<String> = items.iter().map(ToString::to_string).collect();
    items.join(", ")
}

/// Declared and model shapes agree when the ranks match and every dimension
/// the model fixes is declared with that same size. A dimension the model
/// leaves dynamic may be declared fixed (the manifest may be stricter).
fn shapes_agree(declared: &[i64], model: &[i64]) -> bool {
    declared.len() == model.len() && declared.iter().zip(model).all(|(&d, &m)| m < 0 || d == m)
}

fn check_declared(direction: &str, spec: &TensorSpec, model: &[ModelIo]) -> Result<(), String> {
    let Some(io) = model.iter().find(|io| io.name == spec.name) else {
        return Err(format!(
            "the manifest declares {direction} {}, but the model has no {direction} of that name (its {direction}s: {})",
            Declared(spec),
            list(model)
        ));
    };
    if io.datatype() != Some(spec.datatype) || !shapes_agree(&spec.shape, &io.shape) {
        return Err(format!(
            "the manifest declares {direction} {}, but the model's is {} (-1 is a dynamic dimension)",
            Declared(spec),
            io
        ));
    }
    Ok(())
}

/// An `embed_via` brain's model takes exactly one FP32 input.
fn single_fp32_input(model: &[ModelIo]) -> Result<TensorSpec, String> {
    match model {
        [io] if io.datatype() == Some(DataType::Fp32) => Ok(TensorSpec {
            name: io.name.clone(),
            datatype: DataType::Fp32,
            shape: io.shape.clone(),
        }),
        _ => Err(format!(
            "an embed_via brain's model takes exactly one FP32 input, but this one takes {}",
            list(model)
        )),
    }
}

fn check_plain_inputs(declared: &[TensorSpec], model: &[ModelIo]) -> Result<(), String> {
    for spec in declared {
        if spec.datatype == DataType::Bytes {
            return Err(format!(
                "the manifest declares input {}, but BYTES inputs need `preprocess` (kind = \"tokenize\")",
                Declared(spec)
            ));
        }
        check_declared("input", spec, model)?;
    }
    if let Some(extra) = model
        .iter()
        .find(|io| !declared.iter().any(|s| s.name == io.name))
    {
        return Err(format!(
            "the model also needs input {extra}, which the manifest does not declare"
        ));
    }
    Ok(())
}

fn check_tokenising_inputs(declared: &[TensorSpec], model: &[ModelIo]) -> Result<(), String> {
    // `Manifest::load` already ensured exactly one BYTES input.
    if let Some(text) = declared.first()
        && text.shape.len() != 1
    {
        return Err(format!(
            "the manifest declares text input {}, but a tokenising brain takes a batch of texts of shape [-1]",
            Declared(text)
        ));
    }
    let expected = "input_ids, attention_mask and token_type_ids, INT64 [batch, sequence]";
    let mut names: Vec<&str> = model.iter().map(|io| io.name.as_str()).collect();
    names.sort_unstable();
    let mut wanted = tokenize::MODEL_INPUTS;
    wanted.sort_unstable();
    if names != wanted {
        return Err(format!(
            "the manifest tokenises text into {expected}, but the model takes {}",
            list(model)
        ));
    }
    if let Some(bad) = model
        .iter()
        .find(|io| io.datatype() != Some(DataType::Int64) || io.shape.len() != 2)
    {
        return Err(format!(
            "the manifest tokenises text into {expected}, but the model's input is {bad}"
        ));
    }
    Ok(())
}

fn check_outputs(declared: &[TensorSpec], model: &[ModelIo]) -> Result<(), String> {
    for spec in declared {
        if spec.datatype == DataType::Bytes {
            return Err(format!(
                "the manifest declares output {}, but sios cannot return BYTES from a model",
                Declared(spec)
            ));
        }
        check_declared("output", spec, model)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A catalog brain's engine over `build/models`, or `None` (loudly)
    /// without `build/` outside CI.
    fn catalog_engine(test: &str, brain: &str) -> Option<Engine> {
        crate::testing::runtime_or_skip(test)?;
        let root = crate::testing::build_dir().join("..");
        let manifest = Manifest::load(&root.join(format!("brains/catalog/{brain}.toml"))).unwrap();
        Some(Engine::load(&manifest, &crate::testing::build_dir().join("models")).unwrap())
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5,
                "{what}: element {i}: {g} against {w}"
            );
        }
    }

    #[test]
    fn texts_past_one_run_are_embedded_in_parts_as_each_alone() {
        let test = "texts_past_one_run_are_embedded_in_parts_as_each_alone";
        let Some(mut engine) = catalog_engine(test, "text-embedding") else {
            return;
        };
        // 40 texts: three runs of 16, 16 and 8. The one at 33 is longer than
        // the model reads, so its cut is reported with its own index.
        let long = "Either party may terminate this agreement. ".repeat(100);
        let texts: Vec<String> = (0..40)
            .map(|i| {
                if i == 33 {
                    long.clone()
                } else {
                    format!("note {i}: the tenant paid {i} days late")
                }
            })
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let batch = Tensor::from_strings("text", vec![40], &refs);
        assert_eq!(engine.rows_per_run(), 16);
        let whole = engine.infer(std::slice::from_ref(&batch)).unwrap();
        assert_eq!(whole.outputs[0].shape, [40, 384]);
        let cut: Vec<u64> = whole.truncated.iter().map(|c| c.element).collect();
        assert_eq!(cut, [33]);
        let got = whole.outputs[0].to_elements::<f32>().unwrap();
        for (i, text) in refs.iter().enumerate() {
            let alone = engine
                .infer(&[Tensor::from_strings("text", vec![1], &[*text])])
                .unwrap();
            let want = alone.outputs[0].to_elements::<f32>().unwrap();
            assert_close(&got[i * 384..(i + 1) * 384], &want, &format!("text {i}"));
        }
    }

    #[test]
    fn a_batch_stops_between_parts_when_nobody_waits_or_its_outputs_could_not_be_sent() {
        let test = "a_batch_stops_between_parts_when_nobody_waits_or_its_outputs_could_not_be_sent";
        let Some(mut engine) = catalog_engine(test, "text-embedding") else {
            return;
        };
        let texts: Vec<String> = (0..40).map(|i| format!("note {i}")).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let batch = [Tensor::from_strings("text", vec![40], &refs)];
        let asked = std::cell::Cell::new(0);
        let wanted_once = || {
            asked.set(asked.get() + 1);
            false
        };
        match engine.infer_while(&batch, &wanted_once) {
            Err(BrainError::Runtime(why)) => {
                assert!(
                    why.starts_with("stopped after 1 of the batch's 3 parts"),
                    "{why}"
                )
            }
            other => panic!("expected a stop, got {other:?}"),
        }
        assert_eq!(asked.get(), 1, "asked before the second part, then stopped");
        // A batch that fits one run is never stopped half-way.
        let small = [Tensor::from_strings("text", vec![2], &["a", "b"])];
        assert!(engine.infer_while(&small, &|| false).is_ok());
        // Nor is one whose outputs, part by part, stay within the bound;
        // past it, the batch stops at the part that crossed it.
        let mut engine = engine.with_max_output_bytes(40_000); // a part: 16 x 384 x 4 bytes
        match engine.infer(&batch) {
            Err(BrainError::Output { name, reason }) => {
                assert_eq!(name, "sentence_embedding");
                assert!(
                    reason.starts_with("the outputs of 2 of the batch's 3 parts already take"),
                    "{reason}"
                );
            }
            other => panic!("expected the output bound, got {other:?}"),
        }
        let mut engine = engine.with_max_output_bytes(100_000);
        assert_eq!(engine.infer(&batch).unwrap().outputs[0].shape, [40, 384]);
    }

    #[test]
    fn only_a_tokenising_brain_runs_a_batch_in_parts() {
        let test = "only_a_tokenising_brain_runs_a_batch_in_parts";
        let Some(engine) = catalog_engine(test, "text-embedding") else {
            return;
        };
        assert!(engine.batch_major);
        // Rows that depend on each other (every pair, the document's mean)
        // or are not batch-major at all, and a head over embeddings.
        for brain in [
            "dedup",
            "extractive-summary",
            "anomaly-detect",
            "voice-activity",
            "legal",
        ] {
            let engine = catalog_engine(test, brain).unwrap();
            assert!(!engine.batch_major, "{brain}");
        }
    }

    fn io(name: &str, element: TensorElementType, shape: &[i64]) -> ModelIo {
        ModelIo {
            name: name.into(),
            element: Some(element),
            shape: shape.to_vec(),
            kind: String::new(),
        }
    }

    fn spec(name: &str, datatype: DataType, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype,
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn plain_signatures_must_agree_by_name_type_and_shape() {
        let model = [
            io("x", TensorElementType::Float32, &[-1, 4]),
            io("sr", TensorElementType::Int64, &[]),
        ];
        let good = [
            spec("x", DataType::Fp32, &[-1, 4]),
            spec("sr", DataType::Int64, &[]),
        ];
        check_plain_inputs(&good, &model).unwrap();
        // The manifest may fix a dimension the model leaves open.
        check_plain_inputs(
            &[spec("x", DataType::Fp32, &[2, 4]), good[1].clone()],
            &model,
        )
        .unwrap();

        let err = check_plain_inputs(
            &[spec("x", DataType::Fp64, &[-1, 4]), good[1].clone()],
            &model,
        )
        .unwrap_err();
        assert!(
            err.contains("`x` FP64 [-1, 4]") && err.contains("`x` FP32 [-1, 4]"),
            "{err}"
        );
        let err = check_plain_inputs(
            &[spec("x", DataType::Fp32, &[-1, -1]), good[1].clone()],
            &model,
        )
        .unwrap_err();
        assert!(err.contains("[-1, -1]") && err.contains("[-1, 4]"), "{err}");
        let err = check_plain_inputs(
            &[spec("y", DataType::Fp32, &[-1, 4]), good[1].clone()],
            &model,
        )
        .unwrap_err();
        assert!(
            err.contains("no input of that name") && err.contains("`sr` INT64 []"),
            "{err}"
        );
        let err = check_plain_inputs(&good[..1], &model).unwrap_err();
        assert!(err.contains("also needs input `sr` INT64 []"), "{err}");
        let err = check_plain_inputs(&[spec("x", DataType::Bytes, &[-1])], &model).unwrap_err();
        assert!(err.contains("preprocess"), "{err}");
    }

    #[test]
    fn tokenising_brains_need_the_three_bert_inputs() {
        let text = [spec("text", DataType::Bytes, &[-1])];
        let bert = [
            io("input_ids", TensorElementType::Int64, &[-1, -1]),
            io("attention_mask", TensorElementType::Int64, &[-1, -1]),
            io("token_type_ids", TensorElementType::Int64, &[-1, -1]),
        ];
        check_tokenising_inputs(&text, &bert).unwrap();
        let err = check_tokenising_inputs(&text, &bert[..2]).unwrap_err();
        assert!(err.contains("but the model takes `input_ids`"), "{err}");
        let mut int32 = bert.clone();
        int32[1] = io("attention_mask", TensorElementType::Int32, &[-1, -1]);
        let err = check_tokenising_inputs(&text, &int32).unwrap_err();
        assert!(err.contains("`attention_mask` INT32 [-1, -1]"), "{err}");
        let err =
            check_tokenising_inputs(&[spec("text", DataType::Bytes, &[-1, 2])], &bert).unwrap_err();
        assert!(err.contains("[-1]"), "{err}");
    }

    #[test]
    fn outputs_are_checked_but_extra_model_outputs_are_allowed() {
        let model = [
            io("output", TensorElementType::Float32, &[-1, 1]),
            io("stateN", TensorElementType::Float32, &[-1, -1, -1]),
            io("f16", TensorElementType::Float16, &[1]),
        ];
        check_outputs(&[spec("output", DataType::Fp32, &[-1, 1])], &model).unwrap();
        let err = check_outputs(&[spec("f16", DataType::Fp32, &[1])], &model).unwrap_err();
        assert!(
            err.contains("`f16` FP32 [1]") && err.contains("`f16` f16 [1]"),
            "{err}"
        );
    }

    #[test]
    fn outputs_that_break_the_declaration_are_refused() {
        let declared = spec("y", DataType::Fp32, &[-1, 384]);
        check_output(
            &declared,
            &Tensor::from_elements("y", vec![2, 384], &[0f32; 768]),
        )
        .unwrap();
        let wrong = Tensor::from_elements("y", vec![2, 3], &[0f32; 6]);
        assert!(matches!(
            check_output(&declared, &wrong),
            Err(BrainError::Output { .. })
        ));
        let wrong = Tensor::from_elements("y", vec![1, 384], &[0f64; 384]);
        assert!(matches!(
            check_output(&declared, &wrong),
            Err(BrainError::Output { .. })
        ));
    }

    /// Engines over hand-written identity models (see `crate::testing`).
    mod sessions {
        use super::*;
        use crate::testing::{Passthrough, identity_model, onnx_type, runtime_or_skip, samples};
        use sios_ipc::TensorError;
        use sios_manifest::{BrainKind, ModelFile, TensorSpecToml};

        type Io<'a> = (&'a str, &'a str, &'a [i64]);

        /// Writes `model` into `dir` and a manifest pinning it.
        fn brain(dir: &Path, model: &[u8], inputs: &[Io<'_>], outputs: &[Io<'_>]) -> Manifest {
            std::fs::write(dir.join("m.onnx"), model).unwrap();
            let toml = |specs: &[Io<'_>]| {
                specs
                    .iter()
                    .map(|(name, datatype, shape)| TensorSpecToml {
                        name: (*name).into(),
                        datatype: (*datatype).into(),
                        shape: shape.to_vec(),
                    })
                    .collect()
            };
            Manifest {
                name: "identity".into(),
                kind: BrainKind::Operational,
                purpose: "tests".into(),
                model: ModelFile {
                    file: "m.onnx".into(),
                    sha256: sios_manifest::sha256_file(&dir.join("m.onnx")).unwrap(),
                },
                preprocess: None,
                sensitivity: Default::default(),
                labels: Default::default(),
                inputs: toml(inputs),
                outputs: toml(outputs),
                sandbox: Default::default(),
                capabilities: Default::default(),
                program: None,
            }
        }

        fn x_and_sr() -> Vec<u8> {
            identity_model(&[
                Passthrough {
                    input: "x",
                    output: "y",
                    elem_type: onnx_type::FLOAT,
                    shape: &[-1, 4],
                },
                Passthrough {
                    input: "sr",
                    output: "sr_out",
                    elem_type: onnx_type::INT64,
                    shape: &[],
                },
            ])
        }

        const X: Io<'static> = ("x", "FP32", &[-1, 4]);
        const SR: Io<'static> = ("sr", "INT64", &[]);
        const Y: Io<'static> = ("y", "FP32", &[-1, 4]);

        #[test]
        fn every_datatype_round_trips_through_a_session() {
            if runtime_or_skip("every_datatype_round_trips_through_a_session").is_none() {
                return;
            }
            let dir = tempfile::tempdir().unwrap();
            let codes = [
                ("BOOL", onnx_type::BOOL),
                ("UINT8", onnx_type::UINT8),
                ("INT8", onnx_type::INT8),
                ("INT32", onnx_type::INT32),
                ("INT64", onnx_type::INT64),
                ("FP32", onnx_type::FLOAT),
                ("FP64", onnx_type::DOUBLE),
            ];
            for (declared, shape) in [
                (&[-1i64, -1][..], &[2u64, 3][..]),
                (&[][..], &[][..]),
                (&[-1][..], &[0][..]),
            ] {
                for ((datatype, code), tensor) in codes.iter().zip(samples(shape)) {
                    let model = identity_model(&[Passthrough {
                        input: &tensor.name,
                        output: "out",
                        elem_type: *code,
                        shape: declared,
                    }]);
                    let manifest = brain(
                        dir.path(),
                        &model,
                        &[(&tensor.name, datatype, declared)],
                        &[("out", datatype, declared)],
                    );
                    let mut engine = Engine::load(&manifest, dir.path()).unwrap();
                    let out = engine.infer(std::slice::from_ref(&tensor)).unwrap().outputs;
                    let expected = Tensor {
                        name: "out".into(),
                        ..tensor.clone()
                    };
                    assert_eq!(out, vec![expected], "{datatype} {shape:?}");
                }
            }
        }

        #[test]
        fn outputs_come_back_in_manifest_order_and_only_those_declared() {
            if runtime_or_skip("outputs_come_back_in_manifest_order_and_only_those_declared")
                .is_none()
            {
                return;
            }
            let dir = tempfile::tempdir().unwrap();
            let both = brain(
                dir.path(),
                &x_and_sr(),
                &[X, SR],
                &[("sr_out", "INT64", &[]), Y],
            );
            let mut engine = Engine::load(&both, dir.path()).unwrap();
            let x = Tensor::from_elements("x", vec![1, 4], &[1f32, 2.0, 3.0, 4.0]);
            let sr = Tensor::from_elements("sr", vec![], &[16000i64]);
            let out = engine.infer(&[x.clone(), sr.clone()]).unwrap().outputs;
            let names: Vec<&str> = out.iter().map(|t| t.name.as_str()).collect();
            assert_eq!(names, ["sr_out", "y"]);

            let only_y = brain(dir.path(), &x_and_sr(), &[X, SR], &[Y]);
            let mut engine = Engine::load(&only_y, dir.path()).unwrap();
            let out = engine.infer(&[sr, x]).unwrap().outputs;
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].to_elements::<f32>().unwrap(), [1.0, 2.0, 3.0, 4.0]);
        }

        #[test]
        fn bad_inputs_get_the_right_brain_error() {
            if runtime_or_skip("bad_inputs_get_the_right_brain_error").is_none() {
                return;
            }
            let dir = tempfile::tempdir().unwrap();
            let manifest = brain(dir.path(), &x_and_sr(), &[X, SR], &[Y]);
            let mut engine = Engine::load(&manifest, dir.path()).unwrap();
            let x = Tensor::from_elements("x", vec![2, 4], &[0.5f32; 8]);
            let sr = Tensor::from_elements("sr", vec![], &[16000i64]);
            engine.infer(&[x.clone(), sr.clone()]).unwrap();

            let input_error = |result: Result<Inference, BrainError>| match result {
                Err(BrainError::Input(err)) => err,
                other => panic!("expected an input error, got {other:?}"),
            };
            let wrong_type = Tensor::from_elements("x", vec![2, 4], &[0.5f64; 8]);
            assert!(matches!(
                input_error(engine.infer(&[wrong_type, sr.clone()])),
                TensorError::WrongDatatype {
                    expected: DataType::Fp32,
                    got: DataType::Fp64,
                    ..
                }
            ));
            let wrong_shape = Tensor::from_elements("x", vec![2, 3], &[0.5f32; 6]);
            assert!(matches!(
                input_error(engine.infer(&[wrong_shape, sr.clone()])),
                TensorError::WrongShape { .. }
            ));
            let not_scalar = Tensor::from_elements("sr", vec![1], &[16000i64]);
            assert!(matches!(
                input_error(engine.infer(&[x.clone(), not_scalar])),
                TensorError::WrongShape { .. }
            ));
            assert!(matches!(
                input_error(engine.infer(std::slice::from_ref(&x))),
                TensorError::Missing { ref name, .. } if name == "sr"
            ));
            let stranger = Tensor::from_elements("z", vec![1], &[0f32]);
            assert!(matches!(
                input_error(engine.infer(&[x.clone(), sr.clone(), stranger])),
                TensorError::Unknown { .. }
            ));
            assert!(matches!(
                input_error(engine.infer(&[x.clone(), x.clone(), sr.clone()])),
                TensorError::Duplicate { .. }
            ));
            let mut short = x.clone();
            short.data = sios_ipc::TensorData::Packed(vec![0; 31]);
            assert!(matches!(
                input_error(engine.infer(&[short, sr.clone()])),
                TensorError::DataLength {
                    expected: 32,
                    got: 31,
                    ..
                }
            ));
            let text = Tensor::from_strings("x", vec![2, 4], &["a"; 8]);
            assert!(matches!(
                input_error(engine.infer(&[text, sr.clone()])),
                TensorError::WrongDatatype { .. }
            ));

            let mut tight = engine.with_limits(TensorLimits { max_elements: 4 });
            assert!(matches!(
                input_error(tight.infer(&[x, sr])),
                TensorError::TooLarge { .. }
            ));
        }

        #[test]
        fn a_model_that_disagrees_with_its_manifest_is_refused_naming_both() {
            if runtime_or_skip("a_model_that_disagrees_with_its_manifest_is_refused_naming_both")
                .is_none()
            {
                return;
            }
            let dir = tempfile::tempdir().unwrap();
            let refused = |manifest: &Manifest| match Engine::load(manifest, dir.path()) {
                Err(err @ EngineError::Signature { .. }) => err.to_string(),
                other => panic!("expected a signature error, got {other:?}"),
            };
            let err = refused(&brain(
                dir.path(),
                &x_and_sr(),
                &[("x", "FP64", &[-1, 4]), SR],
                &[Y],
            ));
            assert!(
                err.contains("brain `identity`") && err.contains("m.onnx"),
                "{err}"
            );
            assert!(
                err.contains("`x` FP64 [-1, 4]") && err.contains("`x` FP32 [-1, 4]"),
                "{err}"
            );
            let err = refused(&brain(dir.path(), &x_and_sr(), &[X], &[Y]));
            assert!(err.contains("also needs input `sr` INT64 []"), "{err}");
            let err = refused(&brain(
                dir.path(),
                &x_and_sr(),
                &[X, SR],
                &[("y", "FP32", &[-1, 5])],
            ));
            assert!(
                err.contains("output `y` FP32 [-1, 5]") && err.contains("`y` FP32 [-1, 4]"),
                "{err}"
            );
            let err = refused(&brain(
                dir.path(),
                &x_and_sr(),
                &[X, SR],
                &[("probability", "FP32", &[-1, 1])],
            ));
            assert!(
                err.contains("no output of that name") && err.contains("`y` FP32 [-1, 4]"),
                "{err}"
            );

            let half = identity_model(&[Passthrough {
                input: "h",
                output: "h_out",
                elem_type: onnx_type::FLOAT16,
                shape: &[2],
            }]);
            let err = refused(&brain(
                dir.path(),
                &half,
                &[("h", "FP32", &[2])],
                &[("h_out", "FP32", &[2])],
            ));
            assert!(err.contains("`h` f16 [2]"), "{err}");
        }

        #[test]
        fn a_model_whose_hash_does_not_match_is_never_loaded() {
            // No ONNX Runtime needed: the hash is checked before anything is parsed.
            let dir = tempfile::tempdir().unwrap();
            let mut manifest = brain(dir.path(), &x_and_sr(), &[X, SR], &[Y]);
            manifest.model.sha256 = "0".repeat(64);
            match Engine::load(&manifest, dir.path()) {
                Err(EngineError::Manifest(err @ ManifestError::HashMismatch { .. })) => {
                    assert!(err.to_string().contains("Refusing to load it"), "{err}")
                }
                other => panic!("expected a hash mismatch, got {other:?}"),
            }
        }

        #[test]
        fn bytes_that_are_not_a_model_are_a_session_error() {
            if runtime_or_skip("bytes_that_are_not_a_model_are_a_session_error").is_none() {
                return;
            }
            let dir = tempfile::tempdir().unwrap();
            let manifest = brain(dir.path(), b"this is not an ONNX model", &[X, SR], &[Y]);
            match Engine::load(&manifest, dir.path()) {
                Err(err @ EngineError::Session { .. }) => {
                    assert!(
                        err.to_string().contains("could not load the model"),
                        "{err}"
                    )
                }
                other => panic!("expected a session error, got {other:?}"),
            }
        }
    }
}
