//! Export to and import from JSON Lines files (the format of `EXPORT.md`),
//! directly against a store. The CLI does the same through the kernel, page
//! by page; this module is what the service's own tests and tools use.

use crate::MemoryStore;
use sios_ipc::memory::{
    ExportHeader, ExportLine, ExportLineError, MAX_IMPORT_ITEMS, MAX_PAGE_BYTES,
};
use sios_ipc::{
    ExportRequest, ExportScope, ImportReport, ImportRequest, Item, MAX_PAGE_ITEMS, MemoryError,
};
use std::io::{BufRead, Write};

/// Why an export or import failed.
#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Line(#[from] ExportLineError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes the header and every item of `scope`; returns the item count.
pub fn export_jsonl(
    store: &MemoryStore,
    scope: ExportScope,
    exported_at_ms: u64,
    out: &mut impl Write,
) -> Result<u64, JsonlError> {
    writeln!(
        out,
        "{}",
        ExportLine::Header(ExportHeader::new(scope.clone(), exported_at_ms)).to_json()
    )?;
    let mut after = None;
    let mut count = 0;
    loop {
        let page = store.export(&ExportRequest {
            scope: scope.clone(),
            after,
            limit: MAX_PAGE_ITEMS,
        })?;
        for item in page.items {
            writeln!(out, "{}", ExportLine::Item(item).to_json())?;
            count += 1;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    out.flush()?;
    Ok(count)
}

/// Reads an export and imports it in chunks (each chunk one durable
/// transaction); returns the summed report.
pub fn import_jsonl(store: &MemoryStore, input: impl BufRead) -> Result<ImportReport, JsonlError> {
    let mut total = ImportReport::default();
    let mut chunk: Vec<Item> = Vec::new();
    let mut bytes = 0;
    let flush = |chunk: &mut Vec<Item>, total: &mut ImportReport| -> Result<(), JsonlError> {
        if !chunk.is_empty() {
            let report = store.import(&ImportRequest {
                items: std::mem::take(chunk),
            })?;
            total.created += report.created;
            total.replaced += report.replaced;
        }
        Ok(())
    };
    let mut seen_header = false;
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match ExportLine::parse(&line, i as u64 + 1)? {
            ExportLine::Header(_) if !seen_header => seen_header = true,
            ExportLine::Header(_) => {
                return Err(ExportLineError::Syntax {
                    line: i as u64 + 1,
                    reason: "a second header line".into(),
                }
                .into());
            }
            ExportLine::Item(_) if !seen_header => {
                return Err(ExportLineError::MissingHeader.into());
            }
            ExportLine::Item(item) => {
                let size = item.approx_bytes();
                if !chunk.is_empty()
                    && (chunk.len() == MAX_IMPORT_ITEMS || bytes + size > MAX_PAGE_BYTES)
                {
                    flush(&mut chunk, &mut total)?;
                    bytes = 0;
                }
                bytes += size;
                chunk.push(item);
            }
        }
    }
    if !seen_header {
        return Err(ExportLineError::MissingHeader.into());
    }
    flush(&mut chunk, &mut total)?;
    Ok(total)
}
