//! `sios memory …`: customer-owned memory, through the kernel.
//!
//! Every command goes through a [`MemoryTarget`] (implemented by the CLI over
//! the kernel's client socket): the kernel decides each request with the
//! policy, records it in the audit log, and only then asks the memory
//! service. The CLI never talks to the memory service itself.
//!
//! Exit status: 0 ok; 1 a negative answer (no such item, namespace or
//! subject; a search with no hits; nothing to erase) or the appliance said
//! no (denied, storage failure, unavailable); 2 usage (bad arguments, an
//! invalid name or value, unreadable files). A closed standard output
//! (`| head`) ends quietly.
//!
//! # JSON shapes (`--json`; scripts rely on them, keep them stable)
//! An *item* is the export item line without `"type"` (services/memory/EXPORT.md):
//! `{"namespace", "key", "subject", "value": {"text": …} | {"base64": …},
//! "metadata": {…}, "created_ms", "updated_ms", "embedding": [numbers] | null}`.
//! - `put`: `{"namespace", "key", "subject", "created": bool, "created_ms", "updated_ms"}`
//! - `get`: an item
//! - `ls`: one JSON object per line: `{"namespace", "key", "subject",
//!   "value_kind": "text" | "bytes", "value_bytes", "metadata", "created_ms",
//!   "updated_ms", "embedding_dims": number | null}`
//! - `search`: `{"hits": [{"namespace", "key", "subject", "score", "metadata",
//!   "created_ms", "updated_ms", "value": {…} | null}], "scanned", "values_omitted"}`
//! - `rm`: `{"namespace", "key", "deleted": true}`
//! - `erase-subject`: `{"subject", "items_erased", "namespaces": [..], "key_destroyed": bool,
//!   "audit_link_removed": bool}`; exit 0 if either is true (an erasure done, or an
//!   unfinished one finished), 1 if nothing was held about the subject
//! - `export --output FILE`: `{"scope": {"namespace": …} | {"subject": …}, "items", "output"}`
//! - `import`: `{"created", "replaced", "items"}`
//! - `compact`: `{"database_bytes_before", "database_bytes_after",
//!   "key_file_bytes_before", "key_file_bytes_after"}`
//!
//! On a negative answer nothing is printed on standard output (the reason
//! goes to standard error), except `search` and `erase-subject`, whose JSON
//! is printed anyway.

use crate::progress::{Meter, Unit};
use clap::{ArgGroup, Subcommand};
use sios_ipc::memory::{
    ExportHeader, ExportLine, ExportLineError, ExportReader, ImportChunker, base64,
};
use sios_ipc::new_file::NewFile;
use sios_ipc::{
    CompactReport, Embedding, EraseReport, ExportCursor, ExportPage, ExportRequest, ExportScope,
    ImportReport, ImportRequest, Item, ListPage, ListRequest, MAX_PAGE_ITEMS, MemoryError,
    Metadata, PutRequest, PutResponse, SearchRequest, SearchResponse, Value,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `sios memory …`
#[derive(Subcommand, Debug)]
pub enum MemoryCommand {
    /// Store an item (replacing any at the same key); returns once durable.
    ///
    /// The value is the VALUE argument as text, or --file's bytes (text if
    /// they are UTF-8, unless --binary), or VALUE decoded from --base64.
    ///
    /// Example: sios memory put --namespace tenant/acme --subject alice@example.com prefs "mornings" --meta source=crm
    Put {
        /// The namespace, e.g. client:ops/crm, tenant/acme (names are audited: never name one after a person).
        #[arg(long, short)]
        namespace: String,
        /// The data subject the item is about (erase-subject removes it).
        #[arg(long, short)]
        subject: String,
        key: String,
        /// The value, as text (or base64 with --base64).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        value: Option<String>,
        /// Read the value from FILE (- for standard input).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Store --file's bytes as binary even if they are UTF-8.
        #[arg(long, requires = "file")]
        binary: bool,
        /// VALUE is base64 (RFC 4648) of binary bytes.
        #[arg(long, conflicts_with = "file")]
        base64: bool,
        /// Metadata pair KEY=VALUE (repeatable).
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
        /// The embedding: a JSON array or comma-separated numbers.
        #[arg(long, value_name = "NUMBERS")]
        embedding: Option<String>,
        /// Store the text value's embedding by the text-embedding brain (so
        /// `search --text` and `sios ask --recall` find it by meaning).
        #[arg(long, conflicts_with = "embedding")]
        embed: bool,
        #[arg(long)]
        json: bool,
    },
    /// Print an item's value (text as text, binary bytes raw); exit 1 if absent.
    Get {
        #[arg(long, short)]
        namespace: String,
        key: String,
        /// Print the whole item as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List a namespace's items in key order: key, subject, size, updated time.
    Ls {
        #[arg(long, short)]
        namespace: String,
        /// Start after this key.
        #[arg(long, value_name = "KEY")]
        after: Option<String>,
        /// Stop after this many items [default: all].
        #[arg(long)]
        limit: Option<u64>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Nearest stored items to an embedding by cosine similarity (exact).
    ///
    /// The query is an embedding, or a text that the text-embedding brain
    /// embeds (items stored with `put --embed` are found by meaning).
    /// Exit 1 if nothing matched.
    ///
    /// Example: sios memory search --namespace client:alice/notes --text "late rent payments" --values
    Search {
        /// The query embedding: a JSON array or comma-separated numbers.
        #[arg(
            long,
            value_name = "NUMBERS",
            required_unless_present = "text",
            conflicts_with = "text"
        )]
        embedding: Option<String>,
        /// The query as text, embedded by the text-embedding brain.
        #[arg(long, value_name = "QUERY")]
        text: Option<String>,
        /// How many hits (1–100).
        #[arg(short, default_value_t = 10)]
        k: u32,
        /// Only this namespace (repeatable) [default: all the policy grants].
        #[arg(long, short)]
        namespace: Vec<String>,
        /// Only items with this metadata pair (repeatable).
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
        /// Include each hit's value.
        #[arg(long)]
        values: bool,
        #[arg(long)]
        json: bool,
    },
    /// Delete one item; returns once durable. Exit 1 if it was not there.
    Rm {
        #[arg(long, short)]
        namespace: String,
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Erase everything about one data subject, in every namespace, for good:
    /// the subject's key is destroyed and its items deleted, then the audit
    /// log's linking key for them, so that the records of requests about
    /// them link to nobody.
    ///
    /// Exit 1 if nothing was held about the subject. If an erasure stopped
    /// after the memory part, run it again: that finishes it (exit 0).
    EraseSubject {
        /// The data subject's id.
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Write a namespace or a subject as JSON Lines (services/memory/EXPORT.md).
    ///
    /// The file is plaintext: it is the customer's data, leaving the
    /// appliance's encryption. Keep it accordingly. With --output it is
    /// created readable by its owner only (0600), and appears under its
    /// name only once complete: an export that fails or is interrupted
    /// leaves no shorter file there.
    #[command(group(ArgGroup::new("scope").required(true).args(["namespace", "subject"])))]
    Export {
        #[arg(long, short)]
        namespace: Option<String>,
        #[arg(long, short)]
        subject: Option<String>,
        /// Write to FILE (created, must not exist) instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// With --output, print a JSON summary.
        #[arg(long)]
        json: bool,
    },
    /// Restore an export exactly (items replace any at the same key).
    ///
    /// The whole file is checked before anything is stored; then it is sent
    /// in chunks, each stored durably as a whole. If a chunk is refused (a
    /// memory limit, say), the error says how many of the file's items are
    /// in. Re-running is harmless. Standard input is first copied to a
    /// temporary file in $TMPDIR, so it needs that much room there.
    Import {
        /// The export file, or - for standard input.
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Reclaim free space in the memory service's files.
    Compact {
        #[arg(long)]
        json: bool,
    },
}

/// The running appliance's memory, as the kernel offers it to this caller.
/// Each method is the `sios_ipc::Memory` method of the same name; the kernel
/// decides and audits every call. Map a refusal by the policy to
/// [`MemoryError::Denied`] and a transport failure to
/// [`MemoryError::Unavailable`].
#[allow(async_fn_in_trait)]
pub trait MemoryTarget {
    async fn put(&self, request: PutRequest) -> Result<PutResponse, MemoryError>;
    async fn get(&self, namespace: String, key: String) -> Result<Item, MemoryError>;
    async fn list(&self, request: ListRequest) -> Result<ListPage, MemoryError>;
    async fn delete(&self, namespace: String, key: String) -> Result<(), MemoryError>;
    async fn search(&self, request: SearchRequest) -> Result<SearchResponse, MemoryError>;
    async fn erase_subject(&self, subject: String) -> Result<EraseReport, MemoryError>;
    async fn export(&self, request: ExportRequest) -> Result<ExportPage, MemoryError>;
    async fn import(&self, request: ImportRequest) -> Result<ImportReport, MemoryError>;
    async fn compact(&self) -> Result<CompactReport, MemoryError>;
    /// The embedding of a text by the appliance's text-embedding brain.
    async fn embed(&self, text: String) -> Result<Embedding, MemoryError>;
}

/// A failed memory command, with its exit status.
#[derive(Debug, thiserror::Error)]
pub enum MemoryCliError {
    /// The appliance refused or failed: exit 1 (2 if the request itself was
    /// bad: an invalid name, a value too large).
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Bad arguments or unreadable files: exit 2.
    #[error("{0}")]
    Usage(String),
    /// A good request that failed here, e.g. the disk filled while an
    /// export was written: exit 1.
    #[error("{0}")]
    Failed(String),
    /// An import stopped part-way: the chunks before the failing one are
    /// stored. Exit status as for the failure itself.
    #[error(
        "{source}; the first {stored} of the file's {total} items were imported before this. Importing the same file again is safe: it restores each item exactly, replacing what is there"
    )]
    ImportStopped {
        source: MemoryError,
        stored: u64,
        total: u64,
    },
}

impl MemoryCliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            MemoryCliError::Memory(err) | MemoryCliError::ImportStopped { source: err, .. }
                if err.is_bad_request() =>
            {
                2
            }
            MemoryCliError::Memory(_)
            | MemoryCliError::ImportStopped { .. }
            | MemoryCliError::Failed(_) => 1,
            MemoryCliError::Usage(_) => 2,
        }
    }
}

fn usage(err: impl std::fmt::Display) -> MemoryCliError {
    MemoryCliError::Usage(err.to_string())
}

fn failed(err: impl std::fmt::Display) -> MemoryCliError {
    MemoryCliError::Failed(err.to_string())
}

/// Where a command writes; stops quietly once the reader has gone.
struct Out<'a> {
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
    closed: bool,
}

impl Out<'_> {
    fn bytes(&mut self, bytes: &[u8]) -> Result<(), MemoryCliError> {
        if self.closed {
            return Ok(());
        }
        match self.out.write_all(bytes) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(usage(format!("writing to standard output: {e}"))),
        }
    }

    fn line(&mut self, text: &str) -> Result<(), MemoryCliError> {
        self.bytes(format!("{text}\n").as_bytes())
    }

    fn json(&mut self, value: &serde_json::Value) -> Result<(), MemoryCliError> {
        self.line(&value.to_string())
    }

    /// A negative answer: the reason on standard error, exit 1.
    fn negative(&mut self, reason: &MemoryError) -> Result<ExitCode, MemoryCliError> {
        let _ = writeln!(self.err, "sios: {reason}");
        Ok(ExitCode::from(1))
    }

    fn flush(&mut self) -> Result<(), MemoryCliError> {
        match self.out.flush() {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(usage(format!("writing to standard output: {e}")))
            }
            _ => Ok(()),
        }
    }
}

/// Any `sios_ipc` message as JSON. (A macro, not a function: this crate
/// does not name `serde::Serialize`.) Serialising these types cannot fail:
/// string keys, finite numbers.
macro_rules! to_json {
    ($value:expr) => {
        serde_json::to_value($value).unwrap_or(serde_json::Value::Null)
    };
}

/// `KEY=VALUE` pairs into metadata.
fn parse_meta(pairs: &[String]) -> Result<Metadata, MemoryCliError> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| usage(format!("--meta {pair:?}: expected KEY=VALUE")))
        })
        .collect()
}

/// A JSON array (`[0.1, 0.2]`) or comma-separated numbers (`0.1,0.2`).
fn parse_embedding(text: &str) -> Result<Embedding, MemoryCliError> {
    let text = text.trim();
    let numbers: Result<Vec<f32>, String> = if text.starts_with('[') {
        serde_json::from_str(text).map_err(|e| e.to_string())
    } else {
        text.split(',')
            .map(|n| n.trim().parse::<f32>().map_err(|e| format!("{n:?}: {e}")))
            .collect()
    };
    numbers
        .map(Embedding)
        .map_err(|e| usage(format!("--embedding: not a list of numbers ({e})")))
}

/// Standard input, copied to an unnamed temporary file (in `$TMPDIR`,
/// readable by this user only, gone once closed) so that [`import`] can read
/// it twice, as it reads a file: memory stays bounded whatever its size,
/// and the disk holds one copy of it meanwhile.
fn spool_stdin() -> Result<std::fs::File, MemoryCliError> {
    let no_room = |e: std::io::Error| {
        usage(format!(
            "standard input: could not copy it to a temporary file ({e}); nothing was \
             imported: set TMPDIR to a directory with room for it, or give the file's path"
        ))
    };
    let mut spool = tempfile::tempfile().map_err(no_room)?;
    std::io::copy(&mut std::io::stdin().lock(), &mut spool).map_err(no_room)?;
    Ok(spool)
}

/// Imports the export read from `input` (`name` in messages), in two
/// passes over it: the first checks every line and counts the items, so a
/// damaged file is refused before anything is stored; the second sends the
/// items in requests of [`ImportChunker`]'s size. Memory use is bounded by
/// one line and one request, whatever the file's size. Returns the item
/// count and what the memory service reported.
async fn import<R: std::io::BufRead + std::io::Seek>(
    target: &impl MemoryTarget,
    mut input: R,
    name: &str,
) -> Result<(u64, ImportReport), MemoryCliError> {
    let unreadable = |e: std::io::Error| usage(format!("{name}: {e}"));
    let size = input.seek(std::io::SeekFrom::End(0)).map_err(unreadable)?;
    input.rewind().map_err(unreadable)?;
    let refused = |e: ExportLineError| usage(format!("{name}: {e}; nothing was imported"));
    let total = {
        let meter = Meter::on_terminal("checking the import file", Unit::Bytes);
        let progress = meter.as_ref().map(Meter::progress);
        let mut reader = ExportReader::new(&mut input).map_err(refused)?;
        let mut total = 0u64;
        while let Some(item) = reader.next() {
            item.map_err(refused)?;
            total += 1;
            if let Some(progress) = &progress {
                progress.report(reader.bytes_read(), size);
            }
        }
        total
    };
    input.rewind().map_err(unreadable)?;

    let meter = Meter::on_terminal("importing memory items", Unit::Items);
    let progress = meter.as_ref().map(Meter::progress);
    let mut report = ImportReport::default();
    let mut stored = 0u64;
    let send = |chunk: ImportRequest, stored: u64| async move {
        target.import(chunk).await.map_err(|source| match stored {
            0 => MemoryCliError::Memory(source),
            _ => MemoryCliError::ImportStopped {
                source,
                stored,
                total,
            },
        })
    };
    // The file was checked a moment ago; a line that fails now, or a count
    // that differs, means it changed in between.
    let changed = |what: String, stored: u64| {
        failed(format!(
            "{name} changed while it was being imported ({what}); the first {stored} of the \
             {total} items it held when checked were imported. Import it again once nothing \
             writes to it: that is safe, it restores each item exactly"
        ))
    };
    let mut chunker = ImportChunker::default();
    let mut reader = ExportReader::new(&mut input).map_err(|e| changed(e.to_string(), 0))?;
    loop {
        let chunk = match reader.next() {
            Some(item) => match chunker.push(item.map_err(|e| changed(e.to_string(), stored))?) {
                Some(chunk) => chunk,
                None => continue,
            },
            None => match std::mem::take(&mut chunker).finish() {
                Some(chunk) => chunk,
                None => break,
            },
        };
        let size = chunk.items.len() as u64;
        let done = send(chunk, stored).await?;
        stored += size;
        report.created += done.created;
        report.replaced += done.replaced;
        if let Some(progress) = &progress {
            progress.report(stored, total);
        }
    }
    if stored != total {
        return Err(changed(format!("{stored} items now"), stored));
    }
    Ok((total, report))
}

fn ls_json(item: &Item) -> serde_json::Value {
    serde_json::json!({
        "namespace": item.namespace,
        "key": item.key,
        "subject": item.subject,
        "value_kind": match item.value { Value::Text(_) => "text", Value::Bytes(_) => "bytes" },
        "value_bytes": item.value.len(),
        "metadata": item.metadata,
        "created_ms": item.created_ms,
        "updated_ms": item.updated_ms,
        "embedding_dims": item.embedding.as_ref().map(|e| e.0.len()),
    })
}

/// Runs `sios memory CMD` against `target`, printing to standard output.
pub async fn run(
    cmd: MemoryCommand,
    target: &impl MemoryTarget,
) -> Result<ExitCode, MemoryCliError> {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr();
    run_to(cmd, target, &mut stdout, &mut stderr).await
}

/// [`run`], writing to `out` and `err` (for tests).
pub async fn run_to(
    cmd: MemoryCommand,
    target: &impl MemoryTarget,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<ExitCode, MemoryCliError> {
    let mut out = Out {
        out,
        err,
        closed: false,
    };
    let code = run_inner(cmd, target, &mut out).await?;
    out.flush()?;
    Ok(code)
}

async fn run_inner(
    cmd: MemoryCommand,
    target: &impl MemoryTarget,
    out: &mut Out<'_>,
) -> Result<ExitCode, MemoryCliError> {
    match cmd {
        MemoryCommand::Put {
            namespace,
            subject,
            key,
            value,
            file,
            binary,
            base64: is_base64,
            meta,
            embedding,
            embed,
            json,
        } => {
            let value = match (value, file) {
                (Some(v), _) if is_base64 => Value::Bytes(
                    base64::decode(v.trim()).map_err(|e| usage(format!("VALUE: {e}")))?,
                ),
                (Some(v), _) => Value::Text(v),
                (None, Some(path)) => {
                    let bytes = sios_ipc::input::read_at_most(
                        &path,
                        sios_ipc::memory::MAX_VALUE_BYTES,
                        "one memory item may hold",
                    )
                    .map_err(usage)?;
                    match String::from_utf8(bytes) {
                        Ok(text) if !binary => Value::Text(text),
                        Ok(text) => Value::Bytes(text.into_bytes()),
                        Err(e) => Value::Bytes(e.into_bytes()),
                    }
                }
                (None, None) => return Err(usage("give a VALUE or --file")),
            };
            let request = PutRequest {
                namespace,
                key,
                subject,
                value,
                metadata: parse_meta(&meta)?,
                embedding: embedding.as_deref().map(parse_embedding).transpose()?,
            };
            request.validate()?;
            let request = if embed {
                let Value::Text(text) = &request.value else {
                    return Err(usage(
                        "--embed needs a text value (not --binary or --base64)",
                    ));
                };
                let embedding = Some(target.embed(text.clone()).await?);
                PutRequest {
                    embedding,
                    ..request
                }
            } else {
                request
            };
            let (namespace, key, subject) = (
                request.namespace.clone(),
                request.key.clone(),
                request.subject.clone(),
            );
            let stored = target.put(request).await?;
            if json {
                out.json(&serde_json::json!({
                    "namespace": namespace,
                    "key": key,
                    "subject": subject,
                    "created": stored.created,
                    "created_ms": stored.created_ms,
                    "updated_ms": stored.updated_ms,
                }))?;
            } else {
                let verb = if stored.created { "stored" } else { "replaced" };
                out.line(&format!("{verb} {namespace}/{key} (subject {subject})"))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        MemoryCommand::Get {
            namespace,
            key,
            json,
        } => match target.get(namespace, key).await {
            Ok(item) if json => {
                out.json(&to_json!(&item))?;
                Ok(ExitCode::SUCCESS)
            }
            Ok(item) => {
                match &item.value {
                    Value::Text(text) if text.ends_with('\n') => out.bytes(text.as_bytes())?,
                    Value::Text(text) => out.line(text)?,
                    Value::Bytes(bytes) => out.bytes(bytes)?,
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) if e.is_not_found() => out.negative(&e),
            Err(e) => Err(e.into()),
        },
        MemoryCommand::Ls {
            namespace,
            after,
            limit,
            json,
        } => {
            let mut after = after;
            let mut left = limit.unwrap_or(u64::MAX);
            while left > 0 {
                let page = match target
                    .list(ListRequest {
                        namespace: namespace.clone(),
                        after: after.take(),
                        limit: left.min(u64::from(MAX_PAGE_ITEMS)) as u32,
                    })
                    .await
                {
                    Ok(page) => page,
                    Err(e) if e.is_not_found() => return out.negative(&e),
                    Err(e) => return Err(e.into()),
                };
                for item in page.items.iter().take(left as usize) {
                    if json {
                        out.json(&ls_json(item))?;
                    } else {
                        out.line(&format!(
                            "{}\t{}\t{}\t{}",
                            item.key,
                            item.subject,
                            item.value.len(),
                            item.updated_ms
                        ))?;
                    }
                    left -= 1;
                }
                match page.next {
                    Some(next) if !out.closed => after = Some(next),
                    _ => break,
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        MemoryCommand::Search {
            embedding,
            text,
            k,
            namespace,
            meta,
            values,
            json,
        } => {
            let request = SearchRequest {
                query: match (embedding, text) {
                    (Some(numbers), _) => parse_embedding(&numbers)?,
                    (None, Some(text)) => target.embed(text).await?,
                    (None, None) => return Err(usage("give --embedding or --text")),
                },
                k,
                namespaces: (!namespace.is_empty()).then_some(namespace),
                metadata: parse_meta(&meta)?,
                include_values: values,
            };
            let response = target.search(request).await?;
            if json {
                out.json(&to_json!(&response))?;
            } else {
                for hit in &response.hits {
                    let mut line = format!(
                        "{:.6}\t{}\t{}\t{}",
                        hit.score, hit.namespace, hit.key, hit.subject
                    );
                    if let Some(value) = &hit.value {
                        line.push('\t');
                        line.push_str(&match value {
                            Value::Text(text) => text.replace(['\n', '\t'], " "),
                            Value::Bytes(bytes) => format!("base64:{}", base64::encode(bytes)),
                        });
                    }
                    out.line(&line)?;
                }
            }
            Ok(if response.hits.is_empty() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        MemoryCommand::Rm {
            namespace,
            key,
            json,
        } => {
            match target.delete(namespace.clone(), key.clone()).await {
                Ok(()) => {
                    if json {
                        out.json(&serde_json::json!({"namespace": namespace, "key": key, "deleted": true}))?;
                    } else {
                        out.line(&format!("deleted {namespace}/{key}"))?;
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) if e.is_not_found() => out.negative(&e),
                Err(e) => Err(e.into()),
            }
        }
        MemoryCommand::EraseSubject { id, json } => {
            let report = target.erase_subject(id).await?;
            if json {
                out.json(&to_json!(&report))?;
            } else if report.key_destroyed {
                out.line(&format!(
                    "erased subject {}: {} items in {} namespaces ({}); key destroyed",
                    report.subject,
                    report.items_erased,
                    report.namespaces.len(),
                    report.namespaces.join(", ")
                ))?;
            } else if report.audit_link_removed {
                out.line(&format!(
                    "erased subject {}: the memory held nothing more about them; the audit \
                     log's linking key is now removed, which finishes an earlier erasure",
                    report.subject
                ))?;
            }
            if report.key_destroyed || report.audit_link_removed {
                Ok(ExitCode::SUCCESS)
            } else {
                out.negative(&MemoryError::UnknownSubject {
                    subject: report.subject,
                })
            }
        }
        MemoryCommand::Export {
            namespace,
            subject,
            output,
            json,
        } => {
            let scope = match (namespace, subject) {
                (Some(ns), None) => ExportScope::Namespace(ns),
                (None, Some(s)) => ExportScope::Subject(s),
                _ => return Err(usage("give exactly one of --namespace or --subject")),
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            // Customer data: the owner's only. Buffered, since it is written
            // a line at a time.
            let mut file = match &output {
                Some(path) => {
                    let new = NewFile::create(path, 0o600)
                        .map_err(|e| usage(format!("{}: {e}", path.display())))?;
                    let writer = std::io::BufWriter::new(
                        new.file()
                            .try_clone()
                            .map_err(|e| usage(format!("{}: {e}", path.display())))?,
                    );
                    Some((new, writer))
                }
                None => None,
            };
            let mut write_line = |out: &mut Out<'_>, line: String| -> Result<(), MemoryCliError> {
                match &mut file {
                    Some((_, w)) => {
                        writeln!(w, "{line}").map_err(|e| failed(format!("writing the export failed ({e}); nothing was left under its name, so it can be run again")))
                    }
                    None => out.line(&line),
                }
            };
            let mut after: Option<ExportCursor> = None;
            let mut count = 0u64;
            let mut header = Some(ExportLine::Header(ExportHeader::new(scope.clone(), now)));
            loop {
                let page = match target
                    .export(ExportRequest {
                        scope: scope.clone(),
                        after: after.take(),
                        limit: MAX_PAGE_ITEMS,
                    })
                    .await
                {
                    Ok(page) => page,
                    // Nothing was written: the partial file goes with `file`.
                    Err(e) if e.is_not_found() && count == 0 => return out.negative(&e),
                    Err(e) => return Err(e.into()),
                };
                // The header goes out with the first page, so a refused export
                // leaves nothing behind.
                if let Some(h) = header.take() {
                    write_line(out, h.to_json())?;
                }
                for item in page.items {
                    write_line(out, ExportLine::Item(item).to_json())?;
                    count += 1;
                }
                match page.next {
                    Some(next) if !out.closed => after = Some(next),
                    _ => break,
                }
            }
            if let Some((new, writer)) = file {
                writer
                    .into_inner()
                    .map_err(|e| failed(format!("writing the export failed ({}); nothing was left under its name, so it can be run again", e.error())))?;
                new.commit()
                    .map_err(|e| failed(format!("writing the export failed ({e}); nothing was left under its name, so it can be run again")))?;
            }
            if let Some(path) = &output {
                if json {
                    out.json(&serde_json::json!({
                        "scope": to_json!(&scope),
                        "items": count,
                        "output": path.display().to_string(),
                    }))?;
                } else {
                    out.line(&format!("exported {count} items to {}", path.display()))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        MemoryCommand::Import { file, json } => {
            let name = file.display().to_string();
            let (total, report) = if file == Path::new("-") {
                let spooled = spool_stdin()?;
                import(target, std::io::BufReader::new(spooled), &name).await?
            } else {
                let opened =
                    std::fs::File::open(&file).map_err(|e| usage(format!("{name}: {e}")))?;
                import(target, std::io::BufReader::new(opened), &name).await?
            };
            if json {
                out.json(&serde_json::json!({
                    "created": report.created,
                    "replaced": report.replaced,
                    "items": total,
                }))?;
            } else {
                out.line(&format!(
                    "imported {total} items ({} new, {} replaced)",
                    report.created, report.replaced
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        MemoryCommand::Compact { json } => {
            let report = target.compact().await?;
            if json {
                out.json(&to_json!(&report))?;
            } else {
                out.line(&format!(
                    "memory.redb {} → {} bytes; subject keys {} → {} bytes",
                    report.database_bytes_before,
                    report.database_bytes_after,
                    report.key_file_bytes_before,
                    report.key_file_bytes_after
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    /// A memory with the service's semantics for what the CLI relies on.
    #[derive(Default)]
    struct Fake {
        items: RefCell<BTreeMap<(String, String), Item>>,
        /// Export pages served before the service "goes away".
        export_pages_left: std::cell::Cell<Option<u32>>,
        /// Subjects whose last erasure stopped before the audit log's
        /// linking key was removed (the kernel's `EraseUnfinished`).
        unfinished_erasures: RefCell<std::collections::BTreeSet<String>>,
    }

    impl MemoryTarget for Fake {
        async fn put(&self, r: PutRequest) -> Result<PutResponse, MemoryError> {
            r.validate()?;
            let created = !self
                .items
                .borrow()
                .contains_key(&(r.namespace.clone(), r.key.clone()));
            let item = Item {
                namespace: r.namespace.clone(),
                key: r.key.clone(),
                subject: r.subject,
                value: r.value,
                metadata: r.metadata,
                created_ms: 1,
                updated_ms: 2,
                embedding: r.embedding,
            };
            self.items.borrow_mut().insert((r.namespace, r.key), item);
            Ok(PutResponse {
                created,
                created_ms: 1,
                updated_ms: 2,
            })
        }
        async fn get(&self, namespace: String, key: String) -> Result<Item, MemoryError> {
            let items = self.items.borrow();
            if !items.keys().any(|(ns, _)| *ns == namespace) {
                return Err(MemoryError::UnknownNamespace { namespace });
            }
            items
                .get(&(namespace.clone(), key.clone()))
                .cloned()
                .ok_or(MemoryError::NotFound { namespace, key })
        }
        async fn list(&self, r: ListRequest) -> Result<ListPage, MemoryError> {
            let items = self.items.borrow();
            let all: Vec<Item> = items
                .values()
                .filter(|i| {
                    i.namespace == r.namespace && r.after.as_ref().is_none_or(|a| i.key > *a)
                })
                .cloned()
                .collect();
            if !items.keys().any(|(ns, _)| *ns == r.namespace) {
                return Err(MemoryError::UnknownNamespace {
                    namespace: r.namespace,
                });
            }
            let limit = r.limit.clamp(1, 2) as usize; // tiny pages: exercise paging
            let next = (all.len() > limit).then(|| all[limit - 1].key.clone());
            Ok(ListPage {
                items: all.into_iter().take(limit).collect(),
                next,
            })
        }
        async fn delete(&self, namespace: String, key: String) -> Result<(), MemoryError> {
            self.items
                .borrow_mut()
                .remove(&(namespace.clone(), key.clone()))
                .map(|_| ())
                .ok_or(MemoryError::NotFound { namespace, key })
        }
        async fn search(&self, r: SearchRequest) -> Result<SearchResponse, MemoryError> {
            let hits = self
                .items
                .borrow()
                .values()
                .filter(|i| {
                    i.embedding
                        .as_ref()
                        .is_some_and(|e| e.0.len() == r.query.0.len())
                })
                .map(|i| sios_ipc::SearchHit {
                    namespace: i.namespace.clone(),
                    key: i.key.clone(),
                    subject: i.subject.clone(),
                    score: 1.0,
                    metadata: i.metadata.clone(),
                    created_ms: i.created_ms,
                    updated_ms: i.updated_ms,
                    value: r.include_values.then(|| i.value.clone()),
                })
                .collect::<Vec<_>>();
            Ok(SearchResponse {
                scanned: hits.len() as u64,
                hits,
                values_omitted: 0,
            })
        }
        async fn erase_subject(&self, subject: String) -> Result<EraseReport, MemoryError> {
            let mut items = self.items.borrow_mut();
            let before = items.len();
            let namespaces: std::collections::BTreeSet<String> = items
                .values()
                .filter(|i| i.subject == subject)
                .map(|i| i.namespace.clone())
                .collect();
            items.retain(|_, i| i.subject != subject);
            let erased = (before - items.len()) as u64;
            let audit_link_removed = self.unfinished_erasures.borrow_mut().remove(&subject);
            Ok(EraseReport {
                subject,
                items_erased: erased,
                namespaces: namespaces.into_iter().collect(),
                key_destroyed: erased > 0,
                audit_link_removed,
            })
        }
        async fn export(&self, r: ExportRequest) -> Result<ExportPage, MemoryError> {
            if let Some(left) = self.export_pages_left.get() {
                if left == 0 {
                    return Err(MemoryError::Unavailable("the service went away".into()));
                }
                self.export_pages_left.set(Some(left - 1));
            }
            let items: Vec<Item> = self
                .items
                .borrow()
                .values()
                .filter(|i| match &r.scope {
                    ExportScope::Namespace(ns) => i.namespace == *ns,
                    ExportScope::Subject(s) => i.subject == *s,
                })
                .filter(|i| {
                    r.after
                        .as_ref()
                        .is_none_or(|a| (&i.namespace, &i.key) > (&a.namespace, &a.key))
                })
                .cloned()
                .collect();
            if items.is_empty() && r.after.is_none() {
                return Err(match r.scope {
                    ExportScope::Namespace(namespace) => {
                        MemoryError::UnknownNamespace { namespace }
                    }
                    ExportScope::Subject(subject) => MemoryError::UnknownSubject { subject },
                });
            }
            let next = (items.len() > 1).then(|| ExportCursor {
                namespace: items[0].namespace.clone(),
                key: items[0].key.clone(),
            });
            Ok(ExportPage {
                items: items.into_iter().take(1).collect(),
                next,
            })
        }
        async fn import(&self, r: ImportRequest) -> Result<ImportReport, MemoryError> {
            let mut report = ImportReport::default();
            for item in r.items {
                match self
                    .items
                    .borrow_mut()
                    .insert((item.namespace.clone(), item.key.clone()), item)
                {
                    Some(_) => report.replaced += 1,
                    None => report.created += 1,
                }
            }
            Ok(report)
        }
        async fn compact(&self) -> Result<CompactReport, MemoryError> {
            Ok(CompactReport {
                database_bytes_before: 2,
                database_bytes_after: 1,
                key_file_bytes_before: 2,
                key_file_bytes_after: 1,
            })
        }
        /// Letter counts: enough for the CLI's plumbing, which is all these
        /// tests check (the real embedder is tested end to end).
        async fn embed(&self, text: String) -> Result<Embedding, MemoryError> {
            let mut counts = vec![0.0f32; 26];
            for b in text.bytes().filter(u8::is_ascii_alphabetic) {
                counts[usize::from(b.to_ascii_lowercase() - b'a')] += 1.0;
            }
            Ok(Embedding(counts))
        }
    }

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: MemoryCommand,
    }

    /// Runs `sios memory ARGS…`; returns (exit code, stdout bytes, stderr).
    fn sios_raw(fake: &Fake, args: &[&str]) -> (u8, Vec<u8>, String) {
        let cmd = match Cli::try_parse_from(std::iter::once("memory").chain(args.iter().copied())) {
            Ok(cli) => cli.cmd,
            Err(e) => return (2, Vec::new(), e.to_string()),
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let code = match rt.block_on(run_to(cmd, fake, &mut out, &mut err)) {
            Ok(code) if code == ExitCode::SUCCESS => 0,
            Ok(_) => 1,
            Err(e) => {
                err.extend_from_slice(e.to_string().as_bytes());
                e.exit_code()
            }
        };
        (code, out, String::from_utf8_lossy(&err).into_owned())
    }

    /// [`sios_raw`] with standard output as text.
    fn sios(fake: &Fake, args: &[&str]) -> (u8, String, String) {
        let (code, out, err) = sios_raw(fake, args);
        (code, String::from_utf8_lossy(&out).into_owned(), err)
    }

    #[test]
    fn put_get_ls_rm_with_stable_json_and_exit_codes() {
        let fake = Fake::default();
        let (code, out, _) = sios(
            &fake,
            &[
                "put",
                "-n",
                "tenant/acme",
                "-s",
                "alice",
                "greeting",
                "hello",
                "--meta",
                "lang=en",
                "--embedding",
                "[1, 0.5]",
                "--json",
            ],
        );
        assert_eq!(code, 0);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&out).unwrap(),
            serde_json::json!({"namespace": "tenant/acme", "key": "greeting", "subject": "alice", "created": true, "created_ms": 1, "updated_ms": 2})
        );
        assert_eq!(
            sios(
                &fake,
                &[
                    "put",
                    "-n",
                    "tenant/acme",
                    "-s",
                    "bob",
                    "blob",
                    "AP8=",
                    "--base64"
                ]
            )
            .0,
            0
        );
        assert_eq!(
            sios(&fake, &["get", "-n", "tenant/acme", "greeting"]),
            (0, "hello\n".into(), String::new())
        );
        assert_eq!(
            sios_raw(&fake, &["get", "-n", "tenant/acme", "blob"]).1,
            [0, 255]
        );
        let (_, out, _) = sios(&fake, &["get", "-n", "tenant/acme", "greeting", "--json"]);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&out).unwrap(),
            serde_json::json!({"namespace": "tenant/acme", "key": "greeting", "subject": "alice", "value": {"text": "hello"}, "metadata": {"lang": "en"}, "created_ms": 1, "updated_ms": 2, "embedding": [1.0, 0.5]})
        );
        let (code, out, err) = sios(&fake, &["get", "-n", "tenant/acme", "nope"]);
        assert_eq!((code, out.as_str()), (1, ""));
        assert!(err.contains("no item `nope`"), "{err}");
        assert_eq!(sios(&fake, &["get", "-n", "tenant/zzz", "greeting"]).0, 1);
        assert_eq!(
            sios(&fake, &["get", "-n", "bad//ns", "x"]).0,
            1,
            "the fake does not validate gets"
        );
        assert_eq!(
            sios(&fake, &["put", "-n", "bad//ns", "-s", "a", "k", "v"]).0,
            2,
            "validated before sending"
        );
        assert_eq!(
            sios(
                &fake,
                &["put", "-n", "ns", "-s", "a", "k", "v", "--meta", "novalue"]
            )
            .0,
            2
        );
        assert_eq!(
            sios(
                &fake,
                &["put", "-n", "ns", "-s", "a", "k", "v", "--embedding", "1,x"]
            )
            .0,
            2
        );
        assert_eq!(
            sios(&fake, &["put", "-n", "ns", "k", "v"]).0,
            2,
            "--subject is required"
        );

        for i in 0..5 {
            sios(
                &fake,
                &[
                    "put",
                    "-n",
                    "tenant/acme",
                    "-s",
                    "carol",
                    &format!("k{i}"),
                    "v",
                ],
            );
        }
        let (code, out, _) = sios(&fake, &["ls", "-n", "tenant/acme"]);
        assert_eq!(code, 0);
        let keys: Vec<&str> = out.lines().map(|l| l.split('\t').next().unwrap()).collect();
        assert_eq!(keys, ["blob", "greeting", "k0", "k1", "k2", "k3", "k4"]);
        let (_, out, _) = sios(
            &fake,
            &[
                "ls",
                "-n",
                "tenant/acme",
                "--after",
                "greeting",
                "--limit",
                "3",
                "--json",
            ],
        );
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            serde_json::json!({"namespace": "tenant/acme", "key": "k0", "subject": "carol", "value_kind": "text", "value_bytes": 1, "metadata": {}, "created_ms": 1, "updated_ms": 2, "embedding_dims": null})
        );
        assert_eq!(sios(&fake, &["ls", "-n", "tenant/none"]).0, 1);

        let (code, out, _) = sios(&fake, &["rm", "-n", "tenant/acme", "k0", "--json"]);
        assert_eq!(code, 0);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&out).unwrap(),
            serde_json::json!({"namespace": "tenant/acme", "key": "k0", "deleted": true})
        );
        assert_eq!(sios(&fake, &["rm", "-n", "tenant/acme", "k0"]).0, 1);
    }

    #[test]
    fn search_erase_export_import_compact() {
        let fake = Fake::default();
        sios(
            &fake,
            &[
                "put",
                "-n",
                "a",
                "-s",
                "alice",
                "x",
                "hello",
                "--embedding",
                "0.1,0.2",
            ],
        );
        sios(
            &fake,
            &["put", "-n", "b", "-s", "alice", "y", "AAEC", "--base64"],
        );
        sios(&fake, &["put", "-n", "b", "-s", "bob", "z", "bob's"]);
        let (code, out, _) = sios(
            &fake,
            &["search", "--embedding", "[0.1,0.2]", "--values", "--json"],
        );
        assert_eq!(code, 0);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["hits"][0]["key"], "x");
        assert_eq!(v["hits"][0]["value"], serde_json::json!({"text": "hello"}));
        assert_eq!(v["scanned"], 1);
        assert_eq!(
            sios(&fake, &["search", "--embedding", "1,2,3"]).0,
            1,
            "no hits"
        );

        let dir = std::env::temp_dir().join(format!("sios-memory-cli-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("alice.jsonl");
        let (code, out, _) = sios(
            &fake,
            &[
                "export",
                "--subject",
                "alice",
                "-o",
                file.to_str().unwrap(),
                "--json",
            ],
        );
        assert_eq!(code, 0);
        let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(summary["items"], 2);
        assert_eq!(summary["scope"], serde_json::json!({"subject": "alice"}));
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with(
                "{\"type\":\"header\",\"format\":\"sios-memory-export\",\"version\":1,"
            )
        );
        assert_eq!(text.lines().count(), 3);
        assert_eq!(
            sios(
                &fake,
                &["export", "--subject", "alice", "-o", file.to_str().unwrap()]
            )
            .0,
            2,
            "never overwrites"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "customer data: the owner's only");
        // The service goes away after the first item: exit 1, and nothing
        // under the name, not even the first item.
        fake.export_pages_left.set(Some(1));
        let cut = dir.join("cut.jsonl");
        let (code, _, err) = sios(&fake, &["export", "-n", "b", "-o", cut.to_str().unwrap()]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("went away"), "{err}");
        let mut left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, ["alice.jsonl"], "a failed export left a file");
        fake.export_pages_left.set(None);
        let (_, stdout_export, _) = sios(&fake, &["export", "-n", "b"]);
        assert_eq!(stdout_export.lines().count(), 3);
        assert_eq!(sios(&fake, &["export", "-s", "nobody"]).0, 1);
        assert_eq!(sios(&fake, &["export"]).0, 2, "a scope is required");

        let (code, out, _) = sios(&fake, &["erase-subject", "alice", "--json"]);
        assert_eq!(code, 0);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&out).unwrap(),
            serde_json::json!({"subject": "alice", "items_erased": 2, "namespaces": ["a", "b"], "key_destroyed": true, "audit_link_removed": false})
        );
        assert_eq!(
            sios(&fake, &["erase-subject", "alice"]).0,
            1,
            "nothing left to erase"
        );
        // The retry of an erasure that stopped before the audit log's
        // linking key was removed finishes it: success, and it says so.
        fake.unfinished_erasures.borrow_mut().insert("carol".into());
        let (code, out, err) = sios(&fake, &["erase-subject", "carol"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("finishes an earlier erasure"), "{out}");
        assert_eq!(sios(&fake, &["erase-subject", "carol"]).0, 1, "finished");
        assert_eq!(sios(&fake, &["get", "-n", "a", "x"]).0, 1);

        let (code, out, _) = sios(&fake, &["import", file.to_str().unwrap(), "--json"]);
        assert_eq!(code, 0);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&out).unwrap(),
            serde_json::json!({"created": 2, "replaced": 0, "items": 2})
        );
        assert_eq!(sios_raw(&fake, &["get", "-n", "b", "y"]).1, [0, 1, 2]);
        std::fs::write(&file, "{\"type\":\"item\"}\n").unwrap();
        assert_eq!(sios(&fake, &["import", file.to_str().unwrap()]).0, 2);
        assert_eq!(sios(&fake, &["compact", "--json"]).0, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An export of `n` items with distinct keys, as JSON lines.
    fn export_of(n: usize) -> String {
        let mut text =
            ExportLine::Header(ExportHeader::new(ExportScope::Namespace("t".into()), 1)).to_json();
        for i in 0..n {
            let item = Item {
                namespace: "t".into(),
                key: format!("k{i}"),
                subject: "s".into(),
                value: Value::Text(format!("value {i}")),
                metadata: Metadata::default(),
                created_ms: 1,
                updated_ms: 1,
                embedding: None,
            };
            text.push('\n');
            text.push_str(&ExportLine::Item(item).to_json());
        }
        text.push('\n');
        text
    }

    #[test]
    fn a_value_file_is_read_no_further_than_an_item_may_hold() {
        let fake = Fake::default();
        let (code, _, err) = sios(
            &fake,
            &["put", "-n", "t", "-s", "s", "k", "--file", "/dev/zero"],
        );
        assert_eq!(code, 2, "{err}");
        assert_eq!(
            err,
            "/dev/zero is larger than 1 MiB, more than one memory item may hold"
        );
        assert!(fake.items.borrow().is_empty());
    }

    #[test]
    fn an_import_checks_the_whole_file_before_storing_any_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("export.jsonl");
        let path = file.to_str().unwrap();
        // More items than one request takes: they go in several.
        std::fs::write(&file, export_of(2_345)).unwrap();
        let fake = Fake::default();
        let (code, out, err) = sios(&fake, &["import", path, "--json"]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&out).unwrap(),
            serde_json::json!({"created": 2345, "replaced": 0, "items": 2345})
        );
        assert_eq!(fake.items.borrow().len(), 2_345);

        // A bad last line, a line that is not UTF-8, a line past the bound:
        // each is named, and nothing of the file is stored.
        let good = export_of(1_500).into_bytes();
        let long = vec![b'x'; sios_ipc::memory::MAX_EXPORT_LINE_BYTES];
        let cases: [(&[u8], &str); 3] = [
            (
                b"{\"type\":\"item\"}\n",
                "line 1502: not a sios memory export line",
            ),
            (b"\xff\n", "line 1502: not UTF-8"),
            (&long, "line 1502: longer than 8 MiB"),
        ];
        for (last, says) in cases {
            let bytes = [good.as_slice(), last].concat();
            std::fs::write(&file, &bytes).unwrap();
            let fake = Fake::default();
            let (code, _, err) = sios(&fake, &["import", path]);
            assert_eq!(code, 2, "{err}");
            assert!(
                err.contains(says) && err.ends_with("nothing was imported"),
                "{err}"
            );
            assert!(fake.items.borrow().is_empty());
        }
    }

    /// A file that reads differently the second time, as one rewritten
    /// between the check and the import would.
    struct Changing {
        now: std::io::Cursor<Vec<u8>>,
        later: Option<Vec<u8>>,
        rewinds: u32,
    }

    impl std::io::Read for Changing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.now.read(buf)
        }
    }

    impl std::io::BufRead for Changing {
        fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
            self.now.fill_buf()
        }
        fn consume(&mut self, amount: usize) {
            self.now.consume(amount)
        }
    }

    impl std::io::Seek for Changing {
        fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
            if to == std::io::SeekFrom::Start(0) {
                self.rewinds += 1;
                // The size is taken, the file checked, then read again.
                if self.rewinds == 2
                    && let Some(later) = self.later.take()
                {
                    self.now = std::io::Cursor::new(later);
                }
            }
            self.now.seek(to)
        }
    }

    #[test]
    fn a_file_changed_between_the_check_and_the_import_is_said_to_have_changed() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let good = export_of(1_200);
        let cases = [
            (format!("{good}{{\"type\":\"item\"}}\n"), 1_000, "line 1202"),
            (export_of(1_100), 1_100, "1100 items now"),
        ];
        for (later, stored, says) in cases {
            let fake = Fake::default();
            let input = Changing {
                now: std::io::Cursor::new(good.clone().into_bytes()),
                later: Some(later.into_bytes()),
                rewinds: 0,
            };
            let err = rt.block_on(import(&fake, input, "e.jsonl")).unwrap_err();
            let said = err.to_string();
            assert_eq!(err.exit_code(), 1, "{said}");
            assert!(
                said.starts_with("e.jsonl changed while it was being imported")
                    && said.contains(says)
                    && said.contains(&format!("the first {stored} of the 1200 items")),
                "{said}"
            );
            assert_eq!(fake.items.borrow().len(), stored);
        }
    }
}
