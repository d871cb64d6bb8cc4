//! `sios-memory --data-dir <dir> --max-frame-bytes N`: serves customer
//! memory. Started by sios-kernel with its listening socket inherited (see
//! `sios_ipc::activation`); the kernel is its only client.

use anyhow::Context as _;
use clap::Parser;
use sios_ipc::{
    CompactReport, EraseReport, ExportPage, ExportRequest, ImportReport, ImportRequest, Item,
    ListPage, ListRequest, Memory, MemoryError, PutRequest, PutResponse, SearchRequest,
    SearchResponse, ServiceInfo, transport,
};
use sios_memory::MemoryStore;
use std::path::PathBuf;
use std::sync::Arc;
use tarpc::context::Context;

/// The sios memory service. Started by sios-kernel; not meant to be run by hand.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Directory this service owns (made 0700): memory.redb and subject-keys live here.
    #[arg(long)]
    data_dir: PathBuf,
    /// Largest frame accepted on the socket, in bytes.
    #[arg(long, default_value_t = transport::DEFAULT_MAX_FRAME_BYTES)]
    max_frame_bytes: usize,
    /// MiB one owner's namespaces may hold together (`[memory] owner_quota_mib`).
    #[arg(long, default_value_t = sios_ipc::memory::DEFAULT_OWNER_QUOTA_MIB)]
    owner_quota_mib: u64,
    /// MiB the whole store may hold (`[memory] capacity_mib`).
    #[arg(long, default_value_t = sios_ipc::memory::DEFAULT_CAPACITY_MIB)]
    capacity_mib: u64,
    /// Items the whole store may hold (`[memory] max_items`).
    #[arg(long, default_value_t = sios_ipc::memory::DEFAULT_MAX_ITEMS)]
    max_items: u64,
}

#[derive(Clone)]
struct MemoryServer {
    store: Arc<MemoryStore>,
    database: String,
}

impl MemoryServer {
    /// redb calls block on disk I/O and search on the CPU; keep them off the
    /// async thread.
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
        // Reopening a closed store touches the disk: off the async thread.
        let (fault, holds) = self
            .blocking(|store| Ok((store.health(), Some(store.holds()))))
            .await
            .unwrap_or_else(|err| (Some(err.to_string()), None));
        ServiceInfo {
            name: "memory".into(),
            pid: std::process::id(),
            database: self.database,
            fault,
            holds,
        }
    }

    async fn put(self, _: Context, request: PutRequest) -> Result<PutResponse, MemoryError> {
        self.blocking(move |store| store.put(&request)).await
    }

    async fn get(self, _: Context, namespace: String, key: String) -> Result<Item, MemoryError> {
        self.blocking(move |store| store.get(&namespace, &key))
            .await
    }

    async fn list(self, _: Context, request: ListRequest) -> Result<ListPage, MemoryError> {
        self.blocking(move |store| store.list(&request)).await
    }

    async fn delete(self, _: Context, namespace: String, key: String) -> Result<(), MemoryError> {
        self.blocking(move |store| store.delete(&namespace, &key))
            .await
    }

    async fn search(
        self,
        _: Context,
        request: SearchRequest,
    ) -> Result<SearchResponse, MemoryError> {
        self.blocking(move |store| store.search(&request)).await
    }

    async fn erase_subject(self, _: Context, subject: String) -> Result<EraseReport, MemoryError> {
        let report = self
            .blocking(move |store| store.erase_subject(&subject))
            .await?;
        tracing::info!(
            items = report.items_erased,
            key_destroyed = report.key_destroyed,
            "subject erased"
        );
        Ok(report)
    }

    async fn export(self, _: Context, request: ExportRequest) -> Result<ExportPage, MemoryError> {
        self.blocking(move |store| store.export(&request)).await
    }

    async fn import(self, _: Context, request: ImportRequest) -> Result<ImportReport, MemoryError> {
        self.blocking(move |store| store.import(&request)).await
    }

    async fn compact(self, _: Context) -> Result<CompactReport, MemoryError> {
        let report = self.blocking(|store| store.compact()).await?;
        tracing::info!(
            before = report.database_bytes_before,
            after = report.database_bytes_after,
            "compacted"
        );
        Ok(report)
    }
}

fn main() -> std::process::ExitCode {
    sios_ipc::process::finish("sios-memory", try_main())
}

fn try_main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = sios_ipc::activation::inherited_listener()?;
    sios_ipc::process::init_tracing("memory");
    // Recovery (finishing an interrupted erasure) happens inside `open`,
    // before the first request can be served.
    let quotas =
        sios_memory::Quotas::from_config(args.owner_quota_mib, args.capacity_mib, args.max_items);
    let store = MemoryStore::open_with(&args.data_dir, quotas)
        .with_context(|| format!("opening the memory store in {}", args.data_dir.display()))?;
    let server = MemoryServer {
        database: store.database_path().display().to_string(),
        store: Arc::new(store),
    };
    let usage = server.store.usage();
    tracing::info!(
        database = %server.database,
        indexed = server.store.indexed(),
        items = usage.items,
        bytes = usage.bytes,
        max_items = quotas.total_items,
        capacity_bytes = quotas.total_bytes,
        "opened"
    );
    for (what, used, limit) in [
        ("items", usage.items, quotas.total_items),
        ("bytes", usage.bytes, quotas.total_bytes),
    ] {
        if used > limit {
            tracing::warn!(
                used,
                limit,
                "the store holds more {what} than its limit allows: it takes no write that adds {what} until items are deleted or the limit raised"
            );
        }
    }
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
