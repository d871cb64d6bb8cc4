//! `sios-audit --data-dir <dir>`: serves the audit log. Started by sios-kernel
//! with its listening socket inherited (see `sios_ipc::activation`).

use anyhow::Context as _;
use clap::Parser;
use sios_audit::AuditLog;
use sios_ipc::{AppendReceipt, Audit, AuditError, AuditEvent, ServiceInfo, transport};
use std::path::PathBuf;
use tarpc::context::Context;

/// The sios audit service. Started by sios-kernel; not meant to be run by hand.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Directory this service owns; audit.redb lives here.
    #[arg(long)]
    data_dir: PathBuf,
    /// Largest frame accepted on the socket, in bytes.
    #[arg(long, default_value_t = transport::DEFAULT_MAX_FRAME_BYTES)]
    max_frame_bytes: usize,
}

#[derive(Clone)]
struct AuditServer {
    log: AuditLog,
    database: String,
}

impl Audit for AuditServer {
    async fn ready(self, _: Context) -> ServiceInfo {
        ServiceInfo {
            name: "audit".into(),
            pid: std::process::id(),
            database: self.database,
        }
    }

    async fn append(
        self,
        _: Context,
        events: Vec<AuditEvent>,
    ) -> Result<AppendReceipt, AuditError> {
        self.log.append(events).await
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = sios_ipc::activation::inherited_listener()?;
    sios_ipc::process::init_tracing("audit");
    let path = args.data_dir.join("audit.redb");
    let log = AuditLog::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let server = AuditServer {
        log,
        database: path.display().to_string(),
    };
    tracing::info!(database = %server.database, "opened");
    let max = args.max_frame_bytes;
    sios_ipc::process::serve_until_signal("audit service", listener, |stream| {
        tokio::spawn(transport::serve_connection(
            stream,
            max,
            server.clone().serve(),
        ));
    })
    .context("serving")
}
