//! The contract every sios process shares.
//!
//! # Layout
//! - [`tensor`]: typed, shaped tensors and their validation against declared specs.
//! - [`kserve`]: Open Inference Protocol (KServe v2) JSON for tensors.
//! - [`services`]: the tarpc service traits (kernel, brain) and messages.
//! - [`audit`]: the audit service's trait and messages.
//! - [`recorder`]: how the kernel sends its audit records under load (concurrent calls coalesced).
//! - [`ask`]: the answer of `sios ask`'s multi-brain pipeline.
//! - [`memory`]: the memory service's trait and messages, and the export line format.
//! - [`transport`]: length-delimited bincode frames over Unix sockets, with a hard size limit.
//! - [`process`]: logging and shutdown signals, the same in every process.
//! - [`activation`]: how a child receives the listening socket the kernel bound for it.
//! - [`storage`]: whether a disk takes writes again, before a closed store is reopened.
//! - [`new_file`]: exports that appear at their path complete or not at all.
//! - [`idle`]: holding every CPU out of halting idle states (`[performance] low_latency_idle`).

pub mod activation;
pub mod ask;
pub mod audit;
pub mod budget;
pub mod idle;
pub mod input;
pub mod kserve;
pub mod latency;
pub mod memory;
pub mod new_file;
pub mod process;
pub mod recorder;
pub mod services;
pub mod storage;
pub mod tensor;
#[doc(hidden)]
pub mod testing;
pub mod transport;

pub use ask::{AskAnswer, AskRequest, Finding};
pub use audit::*;
pub use memory::*;
pub use services::*;
pub use tensor::{DataType, Tensor, TensorData, TensorError, TensorLimits, TensorSpec};
