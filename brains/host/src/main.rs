//! `sios-brain`: one brain process. Started only by `sios-kernel`, which binds
//! the brain's socket and passes it as descriptor 3 (`SIOS_LISTEN_FD=3`), sets
//! `ORT_DISABLE_TELEMETRY=1`, and shows this process's last stderr line in
//! `sios status` when it fails to start.
//!
//! Threads: the main thread runs a current-thread tokio runtime that serves
//! every connection; one `inference` thread owns the ONNX Runtime session
//! (which itself runs with one intra-op thread, i.e. no pool of its own).
//!
//! Exit status: 78 (EX_CONFIG) if the brain cannot start — a bad manifest, a
//! model whose hash does not match, a missing ONNX Runtime: problems a restart
//! cannot fix, which the kernel therefore does not retry; 1 if it stops
//! serving; 2 for bad arguments. The one-line reason is the last line on
//! stderr. A healthy brain serves until it is stopped.

use anyhow::Context as _;
use clap::Parser;
use sios_brain::server::{BrainServer, DEFAULT_QUEUE_DEPTH};
use sios_brain::{Engine, runtime};
use sios_ipc::activation::inherited_listener;
use sios_ipc::transport::DEFAULT_MAX_FRAME_BYTES;
use sios_manifest::Manifest;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use tracing::Instrument as _;

/// Serves one brain over the socket the kernel hands it (descriptor 3).
#[derive(Parser, Debug)]
#[command(name = "sios-brain", version)]
struct Args {
    /// The brain's manifest (brains/catalog/<name>.toml).
    #[arg(long)]
    manifest: PathBuf,
    /// The directory the manifest's model and tokenizer paths are relative to.
    #[arg(long)]
    models_dir: PathBuf,
    /// The ONNX Runtime shared library (build/lib/libonnxruntime.so.1.32.0).
    #[arg(long)]
    onnxruntime: PathBuf,
    /// Largest request frame accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_FRAME_BYTES)]
    max_frame_bytes: usize,
}

/// The kernel sets this to `1` for every brain so that ONNX Runtime writes no
/// telemetry. The brain checks it and never sets it itself.
const TELEMETRY_VAR: &str = "ORT_DISABLE_TELEMETRY";

fn main() -> ExitCode {
    let started = Instant::now();
    let args = Args::parse();
    sios_ipc::process::init_tracing("brain");
    let fail = |code: u8, err: anyhow::Error| {
        // One line: the kernel shows the last stderr line in `sios status`.
        eprintln!("sios-brain: {err:#}");
        ExitCode::from(code)
    };
    let (brain, max_frame_bytes) = match start(&args, started) {
        Ok(brain) => (brain, args.max_frame_bytes),
        Err(err) => return fail(EXIT_CONFIG, err),
    };
    match serve(brain, max_frame_bytes, started) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(1, err),
    }
}

/// sysexits' EX_CONFIG, which the kernel reads as "do not restart".
const EXIT_CONFIG: u8 = 78;

/// Everything between exec and serving.
struct Started {
    listener: std::os::unix::net::UnixListener,
    manifest: Manifest,
    engine: Engine,
    kernel_channel: Option<std::os::unix::net::UnixStream>,
    span: tracing::Span,
    runtime_ms: f64,
    engine_ms: f64,
}

fn start(args: &Args, started: Instant) -> anyhow::Result<Started> {
    if std::env::var_os(TELEMETRY_VAR).is_none_or(|value| value != "1") {
        anyhow::bail!(
            "refusing to start: {TELEMETRY_VAR}=1 is not in the environment. sios-kernel sets it for every \
             brain so that ONNX Runtime writes no telemetry; start brains with `sios up`, not by hand"
        );
    }
    // Before any other thread exists: this edits the environment.
    let listener = inherited_listener()?;
    let kernel_channel = sios_ipc::activation::inherited_kernel_channel()?;
    let manifest = Manifest::load(&args.manifest)?;
    let span = tracing::info_span!("brain", name = %manifest.name);
    let _entered = span.enter();

    runtime::init(&args.onnxruntime)?;
    let runtime_ms = ms(started);
    let engine = Engine::load(&manifest, &args.models_dir)
        .with_context(|| format!("brain `{}` cannot start", manifest.name))?;
    let engine_ms = ms(started) - runtime_ms;
    if let (Some(upstream), None) = (engine.upstream(), &kernel_channel) {
        anyhow::bail!(
            "brain `{}` embeds via brain `{}` but was given no channel to the kernel (SIOS_KERNEL_FD); \
             brains are started by sios-kernel",
            manifest.name,
            upstream.brain
        );
    }
    let started_serving = Started {
        listener,
        manifest,
        engine,
        kernel_channel,
        span: span.clone(),
        runtime_ms,
        engine_ms,
    };
    drop(_entered);
    Ok(started_serving)
}

fn serve(brain: Started, max_frame_bytes: usize, started: Instant) -> anyhow::Result<()> {
    let Started {
        listener,
        manifest,
        engine,
        kernel_channel,
        span,
        runtime_ms,
        engine_ms,
    } = brain;
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let kernel = match kernel_channel {
        Some(stream) => {
            // The client's dispatch task is spawned onto this runtime.
            let _runtime = tokio.enter();
            let stream = tokio::net::UnixStream::from_std(stream)
                .context("cannot use the kernel channel")?;
            let framed = sios_ipc::transport::framed(stream, max_frame_bytes);
            Some(
                sios_ipc::BrainSupportClient::new(sios_ipc::transport::client_config(), framed)
                    .spawn(),
            )
        }
        None => None,
    };
    let (server, _worker) =
        BrainServer::start(engine, DEFAULT_QUEUE_DEPTH, max_frame_bytes, kernel)
            .context("cannot start the inference thread")?;
    tokio.block_on(
        async move {
            let listener = tokio::net::UnixListener::from_std(listener)
                .context("cannot use the inherited socket")?;
            tracing::info!(
                ready_ms = ms(started),
                runtime_ms,
                engine_ms,
                model = %manifest.model.file,
                sha256 = %manifest.model.sha256,
                "ready"
            );
            server
                .run(listener)
                .await
                .context("stopped accepting connections")
        }
        .instrument(span.clone()),
    )
}

/// Milliseconds since `since`, with microsecond resolution.
fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}
