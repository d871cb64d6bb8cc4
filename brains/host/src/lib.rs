//! The brain host: one process per brain, one ONNX model, served over the
//! socket the kernel hands it.
//!
//! The `sios-brain` binary (`src/main.rs`) is started only by `sios-kernel`. It
//! takes its listening socket from the kernel (socket activation), verifies and
//! loads its model with ONNX Runtime, and answers the tarpc
//! [`Brain`](sios_ipc::Brain) service: `describe` (the readiness probe) and
//! `infer`.
//!
//! # Layout
//! - [`runtime`]: loads ONNX Runtime once per process from an explicit library path.
//! - [`engine`]: verifies a brain's files, creates its session, checks it against the manifest, runs it.
//! - [`convert`]: wire tensors to ONNX Runtime values and back, for every sios data type.
//! - [`tokenize`]: text to `input_ids`/`attention_mask`/`token_type_ids`, as the reference pipeline does.
//! - [`server`]: the tarpc service, with inference on a dedicated thread.

pub mod convert;
pub mod engine;
pub mod rows;
pub mod runtime;
pub mod server;
pub mod tokenize;

pub use engine::{Engine, EngineError, Inference};
pub use runtime::RuntimeError;

#[cfg(test)]
mod testing;
