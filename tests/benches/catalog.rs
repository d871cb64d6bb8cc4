//! Benchmark: the whole catalog. Cold start of every brain to ready, the
//! memory (PSS) its brain processes use, and `sios ask` latency end to end,
//! each against the target in DESIGN.md, from one run.
//!
//! Run with `bash deploy/bench.sh` (builds the release binaries first).

use sios_e2e::{ColdStart, bin_dir, cold_start_catalog};
use std::time::{Duration, Instant};

/// PSS in KiB of `pid` and every descendant (a sandboxed brain is the
/// launcher's child).
fn pss_kib(pid: u32) -> u64 {
    let own = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0);
    let children: u64 = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .map(pss_kib)
        .sum();
    own + children
}

fn main() {
    if std::env::args().skip(1).any(|a| a != "--bench") {
        eprintln!("usage: cargo bench -p sios-e2e --bench catalog (see deploy/bench.sh)");
        std::process::exit(2);
    }
    let _ = bin_dir();
    let ColdStart {
        app,
        took: cold,
        ready,
        ..
    } = cold_start_catalog("");
    let status = app.status();
    let brains: Vec<_> = status
        .processes
        .iter()
        .filter(|p| p.role == sios_ipc::Role::Brain)
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let pss: Vec<u64> = brains.iter().filter_map(|p| p.pid).map(pss_kib).collect();
    let total_mib = pss.iter().sum::<u64>() as f64 / 1024.0;
    let mut sorted = pss.clone();
    sorted.sort();
    let median_mib = sorted.get(sorted.len() / 2).copied().unwrap_or(0) as f64 / 1024.0;

    let questions = [
        "Either party may terminate this agreement with thirty days written notice.",
        "My father has chest pain and his left arm went numb an hour ago.",
        "Please reset my VPN password, I am locked out.",
        "The container is stuck in customs at Rotterdam.",
    ];
    let mut latencies = Vec::new();
    for round in 0..25 {
        let t = Instant::now();
        let out = app.sios(&["ask", "--json", questions[round % questions.len()]]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        latencies.push(t.elapsed());
    }
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() - 1];

    println!("the whole catalog ({} brains), one run", brains.len());
    println!();
    println!("| what | measured | target (DESIGN.md) |");
    println!("|---|---:|---:|");
    println!(
        "| cold start, `sios up` to every brain ready ({ready}/{}) | {:.2} s | ≤ 5 s |",
        brains.len(),
        cold.as_secs_f64()
    );
    println!("| PSS of all brain processes | {total_mib:.0} MiB | ≤ 2048 MiB |");
    println!("| PSS of the median brain | {median_mib:.1} MiB | ≤ 15 MiB |");
    println!(
        "| `sios ask` end to end (CLI process included), p50 / max of 25 | {:.1} / {:.1} ms | — |",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
}
