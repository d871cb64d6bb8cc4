//! ONNX Runtime, loaded once per process from an explicit library path.
//!
//! `ort` is built with `load-dynamic`: nothing links against ONNX Runtime at
//! build time, and the shared library is opened with `dlopen` when [`init`] is
//! called. The brain never lets `ort` search for a library on its own (it would
//! look at `ORT_DYLIB_PATH` or the loader's search path): the kernel passes the
//! exact file (`--onnxruntime`), normally `build/lib/libonnxruntime.so.1.32.0`
//! as fetched by `deploy/setup.sh` from the official `onnxruntime==1.32.0`
//! wheel. Every `ort` call in this crate goes through [`environment`], which
//! refuses to run before [`init`] succeeded, so the implicit search can never
//! happen.
//!
//! ONNX Runtime allows one environment per process; it is created here, with
//! telemetry events switched off (`DisableTelemetryEvents`; `ort`'s builder
//! would otherwise switch them *on*), and its log lines forwarded to `tracing`
//! at warning level and above.

use ort::environment::Environment;
use ort::logging::LogLevel;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// The runtime this process loaded, and where from.
static LOADED: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

/// Why ONNX Runtime could not be made ready.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum RuntimeError {
    #[error(
        "the ONNX Runtime library {path} does not exist; run deploy/setup.sh, which fetches \
         libonnxruntime.so.1.32.0 into build/lib, or point --onnxruntime at that file"
    )]
    LibraryMissing { path: PathBuf },
    #[error(
        "{path} could not be loaded as ONNX Runtime ({reason}); sios needs the official ONNX Runtime \
         1.32 shared library: run deploy/setup.sh, which fetches build/lib/libonnxruntime.so.1.32.0"
    )]
    LibraryUnusable { path: PathBuf, reason: String },
    #[error("ONNX Runtime loaded from {path} but refused to create its environment: {reason}")]
    Environment { path: PathBuf, reason: String },
    #[error(
        "ONNX Runtime is already loaded from {loaded} in this process; it cannot also be loaded from {requested}"
    )]
    AlreadyLoaded { loaded: PathBuf, requested: PathBuf },
    #[error(
        "ONNX Runtime is not loaded yet; call sios_brain::runtime::init with the library path first"
    )]
    NotInitialised,
}

/// Loads ONNX Runtime from `library` and creates the process's environment.
///
/// Idempotent for the same path (later calls return the same environment);
/// a different path after a successful load is refused, because a process can
/// hold only one ONNX Runtime.
pub fn init(library: &Path) -> Result<Environment, RuntimeError> {
    let requested = std::path::absolute(library).unwrap_or_else(|_| library.to_owned());
    if !requested.is_file() {
        return Err(RuntimeError::LibraryMissing { path: requested });
    }
    let mut loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((path, env)) = loaded.as_ref() {
        if *path == requested {
            return Ok(env.clone());
        }
        return Err(RuntimeError::AlreadyLoaded {
            loaded: path.clone(),
            requested,
        });
    }
    let builder = ort::init_from(&requested).map_err(|err| RuntimeError::LibraryUnusable {
        path: requested.clone(),
        reason: err.to_string(),
    })?;
    let env = builder
        .with_name("sios-brain")
        .with_telemetry(false)
        .with_logger(Arc::new(forward_log))
        .build()
        .map_err(|err| RuntimeError::Environment {
            path: requested.clone(),
            reason: err.to_string(),
        })?;
    // With a custom logger ONNX Runtime starts at VERBOSE and formats every
    // message; only warnings and errors are worth a brain's log.
    env.set_log_level(LogLevel::Warning);
    *loaded = Some((requested, env.clone()));
    Ok(env)
}

/// The environment [`init`] created.
pub fn environment() -> Result<Environment, RuntimeError> {
    LOADED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map(|(_, env)| env.clone())
        .ok_or(RuntimeError::NotInitialised)
}

/// The library [`init`] loaded, if any.
pub fn loaded_library() -> Option<PathBuf> {
    LOADED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map(|(path, _)| path.clone())
}

/// ONNX Runtime's own log lines, as `tracing` events. Runs on ONNX Runtime's
/// threads, called from C: it must not panic, and `tracing` does not.
fn forward_log(level: LogLevel, category: &str, id: &str, location: &str, message: &str) {
    match level {
        LogLevel::Fatal | LogLevel::Error => {
            tracing::error!(target: "onnxruntime", category, id, location, "{message}")
        }
        LogLevel::Warning => {
            tracing::warn!(target: "onnxruntime", category, id, location, "{message}")
        }
        LogLevel::Info => {
            tracing::debug!(target: "onnxruntime", category, id, location, "{message}")
        }
        LogLevel::Verbose => {
            tracing::trace!(target: "onnxruntime", category, id, location, "{message}")
        }
    }
}
