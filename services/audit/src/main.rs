//! `sios-audit --data-dir <dir>`: serves the Open Audit Record. Started by
//! sios-kernel with its listening socket inherited (see `sios_ipc::activation`).
//! Creates the signing key and the log on first start.

use anyhow::Context as _;
use clap::Parser;
use sios_audit::AuditLog;
use sios_audit::service::AuditServer;
use sios_ipc::{Audit as _, transport};
use std::path::PathBuf;

// See the workspace's Cargo.toml: glibc's malloc cost the writer a fifth of
// its CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The sios audit service. Started by sios-kernel; not meant to be run by hand.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Directory this service owns: audit.redb, signing.key (0600), signing.pub.
    #[arg(long)]
    data_dir: PathBuf,
    /// The kernel's id for its current run, the same for every audit service
    /// it starts. Intents left open under another id lost the kernel that
    /// would record their outcomes: they are closed as `process-died` at
    /// start (OAR.md §10). Without it, the listening socket's identity is used.
    #[arg(long)]
    kernel_session: Option<String>,
    /// Largest frame accepted on the socket, in bytes.
    #[arg(long, default_value_t = transport::DEFAULT_MAX_FRAME_BYTES)]
    max_frame_bytes: usize,
}

fn main() -> std::process::ExitCode {
    sios_ipc::process::finish("sios-audit", try_main())
}

fn try_main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = sios_ipc::activation::inherited_listener()?;
    sios_ipc::process::init_tracing("audit");
    // The log's writer and signer threads are `audit-writer` and
    // `audit-signer`: without them nothing is recorded. The committer on
    // the runtime's own thread (below) is watched by `serve_with_companion`.
    sios_ipc::process::abort_when_thread_panics("audit-");
    let log = AuditLog::open(&args.data_dir)
        .with_context(|| format!("opening the audit log in {}", args.data_dir.display()))?;
    tracing::info!(
        database = %log.path().display(),
        size = log.checkpoint().size,
        "opened"
    );
    // Before serving: close the intents a previous kernel left open.
    let session = match args.kernel_session {
        Some(id) => format!("kernel {id}"),
        None => sios_audit::service::socket_session(&listener)
            .context("identifying the inherited listening socket")?,
    };
    futures::executor::block_on(log.begin_session(&session))
        .context("recording the intents the previous kernel left open")?;
    let server = AuditServer::new(log.clone(), args.max_frame_bytes);
    let max = args.max_frame_bytes;
    // Requests are committed on the runtime's one thread, the one that
    // decodes them: no thread hand-off per call (src/writer_queue.rs).
    let committer = log.commit_here();
    let served =
        sios_ipc::process::serve_with_companion("audit service", listener, committer, |stream| {
            tokio::spawn(transport::serve_connection(
                stream,
                max,
                server.clone().serve(),
            ));
        });
    // Store the last checkpoint and close the file before exiting.
    log.close();
    served.context("serving")
}
