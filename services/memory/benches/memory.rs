//! `cargo bench -p sios-memory`: the memory store on this machine, with
//! 384-dimensional embeddings (all-MiniLM-L6-v2's size).
//!
//! Prints, per store size (1k, 10k, 100k items; `SIOS_BENCH_SIZES=1000,10000`
//! to choose):
//! - search: the store's exact k-NN (k = 10, no filter, values not fetched)
//!   vs, in the same run over the same unit vectors, a plain brute-force
//!   loop (`iter().zip().map().sum()` per item into a Vec, then a full sort)
//!   and the store's own dot kernel alone over one flat array (the floor for
//!   exact search on one core: what locks, filters and the heap cost on top);
//! - put (durable, one commit each) and get, p50/p99 and throughput;
//! - then, on the largest store: erase-subject of a subject with 10k items,
//!   the compaction after it, and a reopen (recovery + index rebuild).
//!
//! A benchmark, not a test: it asserts nothing about time.

use sios_ipc::{Embedding, ImportRequest, Item, Metadata, PutRequest, SearchRequest, Value};
use sios_memory::MemoryStore;
use std::time::{Duration, Instant};

const DIMS: usize = 384;
const K: usize = 10;

struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vector(&mut self) -> Vec<f32> {
        (0..DIMS).map(|_| self.unit()).collect()
    }
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn item(i: usize, subject: &str, rng: &mut Rng) -> Item {
    Item {
        namespace: format!("tenant/t{}", i % 4),
        key: format!("item-{i:07}"),
        subject: subject.into(),
        value: Value::Text(format!(
            "a remembered sentence number {i} of about sixty bytes..."
        )),
        metadata: [("source".to_owned(), format!("s{}", i % 8))].into(),
        created_ms: 1_700_000_000_000,
        updated_ms: 1_700_000_000_000,
        embedding: Some(Embedding(rng.vector())),
    }
}

/// The floor: raw dot products over unit vectors, then a full sort.
fn brute_force(vectors: &[Vec<f32>], query: &[f32]) -> Vec<(f32, usize)> {
    let mut scores: Vec<(f32, usize)> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| (v.iter().zip(query).map(|(a, b)| a * b).sum::<f32>(), i))
        .collect();
    scores.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    scores.truncate(K);
    scores
}

/// The store's own dot kernel over one contiguous array, keeping the top k
/// with a partial sort: what the store costs without locks, filters,
/// metadata and hit assembly.
fn kernel_only(flat: &[f32], query: &[f32]) -> Vec<(f32, usize)> {
    let mut scores: Vec<(f32, usize)> = flat
        .chunks_exact(DIMS)
        .enumerate()
        .map(|(i, v)| (sios_memory::index::dot(v, query), i))
        .collect();
    scores.select_nth_unstable_by(K, |a, b| b.0.total_cmp(&a.0));
    scores.truncate(K);
    scores.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    scores
}

fn normalize(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs us too: be quick then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("memory bench: run with `cargo bench -p sios-memory`");
        return;
    }
    let sizes: Vec<usize> = std::env::var("SIOS_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("SIOS_BENCH_SIZES: numbers"))
        .collect();
    let base = std::env::var_os("SIOS_BENCH_DIR").map(std::path::PathBuf::from);
    let mut rng = Rng(2024);
    println!("sios-memory bench: {DIMS}-dim embeddings, k = {K}, one store per size\n");
    println!(
        "| items | search p50 | search p99 | plain loop p50 | search ÷ plain | kernel only p50 | put p50 | put p99 | puts/s (1 writer) | get p50 | get p99 | gets/s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut last = None;
    for &n in &sizes {
        let dir = match &base {
            Some(b) => tempfile::tempdir_in(b).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let store = MemoryStore::open(dir.path()).unwrap();
        let mut vectors = Vec::with_capacity(n);
        let mut batch = Vec::new();
        for i in 0..n {
            let it = item(i, &format!("subject-{}", i % 100), &mut rng);
            vectors.push(normalize(&it.embedding.as_ref().unwrap().0));
            batch.push(it);
            if batch.len() == 1000 {
                store
                    .import(&ImportRequest {
                        items: std::mem::take(&mut batch),
                    })
                    .unwrap();
            }
        }
        if !batch.is_empty() {
            store.import(&ImportRequest { items: batch }).unwrap();
        }

        let flat: Vec<f32> = vectors.iter().flatten().copied().collect();
        let queries: Vec<Vec<f32>> = (0..200).map(|_| rng.vector()).collect();
        let mut search = Vec::new();
        let mut floor = Vec::new();
        let mut kernel = Vec::new();
        for q in &queries {
            let request = SearchRequest {
                query: Embedding(q.clone()),
                k: K as u32,
                namespaces: None,
                metadata: Metadata::new(),
                include_values: false,
            };
            let t = Instant::now();
            let response = std::hint::black_box(store.search(&request).unwrap());
            search.push(t.elapsed());
            let qn = normalize(q);
            let t = Instant::now();
            let reference = std::hint::black_box(brute_force(&vectors, &qn));
            floor.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(kernel_only(&flat, &qn));
            kernel.push(t.elapsed());
            // Same answer (ranks may swap only on float-level ties).
            assert_eq!(response.hits.len(), reference.len());
            assert!((response.hits[0].score - reference[0].0).abs() < 1e-4);
        }

        let mut puts = Vec::new();
        let started = Instant::now();
        for i in 0..300 {
            let it = item(n + i, "subject-put", &mut rng);
            let request = PutRequest {
                namespace: it.namespace,
                key: it.key,
                subject: it.subject,
                value: it.value,
                metadata: it.metadata,
                embedding: it.embedding,
            };
            let t = Instant::now();
            store.put(&request).unwrap();
            puts.push(t.elapsed());
        }
        let put_rate = 300.0 / started.elapsed().as_secs_f64();

        let mut gets = Vec::new();
        let started = Instant::now();
        for _ in 0..5000 {
            let i = (rng.next_u64() % n as u64) as usize;
            let t = Instant::now();
            std::hint::black_box(
                store
                    .get(&format!("tenant/t{}", i % 4), &format!("item-{i:07}"))
                    .unwrap(),
            );
            gets.push(t.elapsed());
        }
        let get_rate = 5000.0 / started.elapsed().as_secs_f64();

        let s50 = percentile(&mut search, 0.5);
        let f50 = percentile(&mut floor, 0.5);
        println!(
            "| {n} | {} | {} | {} | {:.2}× | {} | {} | {} | {:.0} | {} | {} | {:.0} |",
            ms(s50),
            ms(percentile(&mut search, 0.99)),
            ms(f50),
            s50.as_secs_f64() / f50.as_secs_f64(),
            ms(percentile(&mut kernel, 0.5)),
            ms(percentile(&mut puts, 0.5)),
            ms(percentile(&mut puts, 0.99)),
            put_rate,
            us(percentile(&mut gets, 0.5)),
            us(percentile(&mut gets, 0.99)),
            get_rate,
        );
        last = Some((n, dir, store));
    }

    let Some((n, dir, store)) = last else { return };
    // A subject with 10k items on top of the largest store.
    let mut batch = Vec::new();
    for i in 0..10_000 {
        batch.push(item(n + 1_000_000 + i, "subject-erase", &mut rng));
        if batch.len() == 1000 {
            store
                .import(&ImportRequest {
                    items: std::mem::take(&mut batch),
                })
                .unwrap();
        }
    }
    let t = Instant::now();
    let report = store.erase_subject("subject-erase").unwrap();
    let erase = t.elapsed();
    assert_eq!(report.items_erased, 10_000);
    let t = Instant::now();
    let compact = store.compact().unwrap();
    let compaction = t.elapsed();
    let indexed = store.indexed();
    drop(store);
    let t = Instant::now();
    let store = MemoryStore::open(dir.path()).unwrap();
    let reopen = t.elapsed();
    assert_eq!(store.indexed(), indexed);
    println!();
    println!("| on the {n}-item store | time |");
    println!("|---|---:|");
    println!(
        "| erase-subject, 10 000 items (tombstone, key destroyed, rows deleted; 3 fsyncs) | {} |",
        ms(erase)
    );
    println!(
        "| compaction after it ({:.1} → {:.1} MiB) | {} |",
        compact.database_bytes_before as f64 / 1048576.0,
        compact.database_bytes_after as f64 / 1048576.0,
        ms(compaction)
    );
    println!(
        "| reopen: recovery + decrypting {indexed} embeddings into the index | {} |",
        ms(reopen)
    );
}
