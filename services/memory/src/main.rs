//! `sios-memory --data-dir <dir>`: serves customer memory. Started by
//! sios-kernel with its listening socket inherited (see `sios_ipc::activation`).

use anyhow::Context as _;
use clap::Parser;
use sios_ipc::{Memory, MemoryError, ServiceInfo, transport};
use sios_memory::MemoryStore;
use std::path::PathBuf;
use std::sync::Arc;
use tarpc::context::Context;

/// The sios memory service. Started by sios-kernel; not meant to be run by hand.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Directory this service owns; memory.redb lives here.
    #[arg(long)]
    data_dir: PathBuf,
    /// Largest frame accepted on the socket, in bytes.
    #[arg(long, default_value_t = transport::DEFAULT_MAX_FRAME_BYTES)]
    max_frame_bytes: usize,
}

#[derive(Clone)]
struct MemoryServer {
    store: Arc<MemoryStore>,
    database: String,
}

impl MemoryServer {
    /// redb calls block on disk I/O; keep them off the async thread.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&MemoryStore) -> Result<T, MemoryError> + Send + 'static,
    ) -> Result<T, MemoryError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| MemoryError::Storage(format!("storage task failed: {e}")))?
    }
}

impl Memory for MemoryServer {
    async fn ready(self, _: Context) -> ServiceInfo {
        ServiceInfo {
            name: "memory".into(),
            pid: std::process::id(),
            database: self.database,
        }
    }

    async fn put(
        self,
        _: Context,
        namespace: String,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), MemoryError> {
        self.blocking(move |store| store.put(&namespace, &key, &value))
            .await
    }

    async fn get(
        self,
        _: Context,
        namespace: String,
        key: String,
    ) -> Result<Option<Vec<u8>>, MemoryError> {
        self.blocking(move |store| store.get(&namespace, &key))
            .await
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = sios_ipc::activation::inherited_listener()?;
    sios_ipc::process::init_tracing("memory");
    let path = args.data_dir.join("memory.redb");
    let store = MemoryStore::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let server = MemoryServer {
        store: Arc::new(store),
        database: path.display().to_string(),
    };
    tracing::info!(database = %server.database, "opened");
    let max = args.max_frame_bytes;
    sios_ipc::process::serve_until_signal("memory service", listener, |stream| {
        tokio::spawn(transport::serve_connection(
            stream,
            max,
            server.clone().serve(),
        ));
    })
    .context("serving")
}
