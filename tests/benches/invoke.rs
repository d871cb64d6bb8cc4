//! Benchmark: `invoke` through the kernel (client → kernel → brain process,
//! two Unix-socket hops, validation, routing) against the same model run
//! in-process with `ort`, for 1 and 64 concurrent clients, in one run; and
//! where the kernel's time went, stage by stage, as it timed the same
//! requests itself (`Kernel::invoke_timings`). Three brains: voice-activity
//! (a small recurrent network, 0.1–0.2 ms in process), anomaly-detect (the
//! catalog's smallest model, about 16 µs: what is left is the appliance's
//! own cost) and text-embedding (a transformer, milliseconds).
//!
//! Last, `[performance] low_latency_idle` off and on, appliances in turn
//! (on needs root: without it the row says why nothing was held).
//!
//! Run with `bash deploy/bench.sh` (builds the release binaries first).
//! `SIOS_BENCH_SECONDS` sets the measuring time per cell (default 3).

use sios_e2e::{Options, TestAppliance, bin_dir, fixture_request, source_tree};
use sios_ipc::{InferRequest, InvokeTimings, Tensor};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Latencies of one cell, and how long it ran.
struct Sample {
    latencies: Vec<Duration>,
    elapsed: Duration,
    /// Through the kernel: where its time went, stage by stage, as the
    /// kernel timed the same requests (`Kernel::invoke_timings`).
    stages: Option<InvokeTimings>,
}

impl Sample {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(index).copied().unwrap_or_default()
    }
    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

fn measure_seconds() -> Duration {
    let seconds = std::env::var("SIOS_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(seconds)
}

/// The same model, called directly: `clients` threads share one session
/// behind a mutex, exactly as the brain process serialises its session.
fn in_process(brain: &str, request: &InferRequest, clients: usize, duration: Duration) -> Sample {
    let manifest =
        sios_manifest::Manifest::load(&source_tree().join(format!("brains/catalog/{brain}.toml")))
            .expect("manifest");
    sios_brain::runtime::init(&source_tree().join("build/lib/libonnxruntime.so.1.32.0"))
        .expect("onnxruntime");
    let engine =
        sios_brain::Engine::load(&manifest, &source_tree().join("build/models")).expect("engine");
    let engine = Arc::new(Mutex::new(engine));
    // Warm up.
    for _ in 0..20 {
        engine
            .lock()
            .unwrap()
            .infer(&request.inputs)
            .expect("infer");
    }
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (engine, inputs) = (Arc::clone(&engine), request.inputs.clone());
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                while start.elapsed() < duration {
                    let t = Instant::now();
                    engine.lock().unwrap().infer(&inputs).expect("infer");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let latencies = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    Sample {
        latencies,
        elapsed: start.elapsed(),
        stages: None,
    }
}

/// Through the kernel: each client has its own connection to the kernel socket.
fn through_kernel(
    app: &TestAppliance,
    brain: &str,
    request: &InferRequest,
    clients: usize,
    duration: Duration,
) -> Sample {
    let runtime = sios_e2e::multi_thread_runtime(2);
    runtime.block_on(async {
        let mut connections = Vec::new();
        for _ in 0..clients {
            connections.push(app.client().await);
        }
        for _ in 0..20 {
            let response = connections[0]
                .invoke(sios_e2e::ctx(), brain.into(), request.clone())
                .await;
            response.expect("rpc").expect("invoke");
        }
        let observer = connections[0].clone();
        let before = observer
            .invoke_timings(sios_e2e::ctx())
            .await
            .unwrap()
            .unwrap();
        let start = Instant::now();
        let tasks: Vec<_> = connections
            .into_iter()
            .map(|client| {
                let (brain, request) = (brain.to_owned(), request.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while start.elapsed() < duration {
                        let t = Instant::now();
                        let response = client
                            .invoke(sios_e2e::ctx(), brain.clone(), request.clone())
                            .await;
                        response.expect("rpc").expect("invoke");
                        latencies.push(t.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.unwrap());
        }
        let elapsed = start.elapsed();
        let after = observer
            .invoke_timings(sios_e2e::ctx())
            .await
            .unwrap()
            .unwrap();
        Sample {
            latencies,
            elapsed,
            stages: Some(after.since(&before)),
        }
    })
}

/// One client asking the kernel something it answers itself: the cost of
/// one client↔kernel hop, for reading the table above.
fn kernel_round_trip(app: &TestAppliance, duration: Duration) -> Sample {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = app.client().await;
        let start = Instant::now();
        let mut latencies = Vec::new();
        while start.elapsed() < duration {
            let t = Instant::now();
            client.whoami(sios_e2e::ctx()).await.expect("whoami");
            latencies.push(t.elapsed());
        }
        Sample {
            latencies,
            elapsed: start.elapsed(),
            stages: None,
        }
    })
}

/// The kernel's stages of a through-the-kernel sample, as table cells.
fn stage_row(sample: &Sample) -> String {
    let stages = sample.stages.as_ref().expect("timed through the kernel");
    let p50s = [
        &stages.decided,
        &stages.intent_recorded,
        &stages.brain_answered,
        &stages.outcome_recorded,
    ]
    .map(|h| h.quantile(0.5).unwrap_or_default());
    let cells: Vec<String> = p50s.iter().map(|d| micros(*d)).collect();
    format!(
        "{} | {} | {}",
        cells.join(" | "),
        micros(p50s.iter().sum()),
        micros(sample.percentile(0.5))
    )
}

fn micros(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    if std::env::args().skip(1).any(|a| a != "--bench") {
        eprintln!("usage: cargo bench -p sios-e2e --bench invoke (see deploy/bench.sh)");
        std::process::exit(2);
    }
    let _ = bin_dir();
    let duration = measure_seconds();
    let cases: Vec<(&str, InferRequest)> = vec![
        ("voice-activity", fixture_request("voice-activity")),
        ("anomaly-detect", fixture_request("anomaly-detect")),
        (
            "text-embedding",
            InferRequest {
                id: None,
                inputs: vec![Tensor::from_strings(
                    "text",
                    vec![1],
                    &["Where is the nearest pharmacy?"],
                )],
            },
        ),
    ];
    println!(
        "invoke through the kernel vs the same model in-process ({} s per cell)",
        duration.as_secs_f64()
    );
    println!();
    println!(
        "| brain | clients | in-process p50 µs | p99 µs | req/s | via kernel p50 µs | p99 µs | req/s | p50 ratio | throughput ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut splits = Vec::new();
    for (brain, request) in &cases {
        let app = TestAppliance::start(Options::brains(&[brain]));
        for clients in [1, 64] {
            let direct = in_process(brain, request, clients, duration);
            let kernel = through_kernel(&app, brain, request, clients, duration);
            splits.push((*brain, clients, stage_row(&kernel)));
            println!(
                "| {brain} | {clients} | {} | {} | {:.0} | {} | {} | {:.0} | {:.2}× | {:.2}× |",
                micros(direct.percentile(0.5)),
                micros(direct.percentile(0.99)),
                direct.throughput(),
                micros(kernel.percentile(0.5)),
                micros(kernel.percentile(0.99)),
                kernel.throughput(),
                kernel.percentile(0.5).as_secs_f64() / direct.percentile(0.5).as_secs_f64(),
                kernel.throughput() / direct.throughput(),
            );
        }
    }
    println!();
    println!(
        "where the kernel's time went, p50 per stage as the kernel timed the same requests (µs)"
    );
    println!();
    println!(
        "| brain | clients | decided | intent recorded | brain answered | outcome recorded | sum of p50s | via kernel p50 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (brain, clients, row) in &splits {
        println!("| {brain} | {clients} | {row} |");
    }
    let app = TestAppliance::start(Options::brains(&["voice-activity"]));
    let hop = kernel_round_trip(&app, duration);
    println!();
    println!(
        "kernel round trip alone (whoami, 1 client, no brain): p50 {} µs, p99 {} µs",
        micros(hop.percentile(0.5)),
        micros(hop.percentile(0.99))
    );
    println!(
        "p50 ratio = via-kernel p50 / in-process p50 (1.00× would be free); throughput ratio = via-kernel / in-process."
    );
    drop(app);
    low_latency_idle_rows(&cases[0], duration);
}

/// `[performance] low_latency_idle`, off and on, in the same run: the same
/// brain at 1 and 64 clients, and the disk-free round trip, each appliance
/// measured in turn, twice.
fn low_latency_idle_rows((brain, request): &(&str, InferRequest), duration: Duration) {
    println!();
    println!(
        "[performance] low_latency_idle, off and on ({brain}; two rounds, appliances in turn)"
    );
    println!();
    println!(
        "| round | low_latency_idle | cpu idle (sios status) | 1 client p50 µs | 64 clients req/s | round trip p50 µs |"
    );
    println!("|---:|---|---|---:|---:|---:|");
    for round in 1..=2 {
        for on in [false, true] {
            let app = TestAppliance::start(Options {
                extra_config: format!("[performance]\nlow_latency_idle = {on}\n"),
                ..Options::brains(&[brain])
            });
            let held = app
                .status()
                .cpu_idle
                .unwrap_or_else(|| "the machine's own".into());
            let one = through_kernel(&app, brain, request, 1, duration);
            let many = through_kernel(&app, brain, request, 64, duration);
            let hop = kernel_round_trip(&app, duration);
            println!(
                "| {round} | {on} | {held} | {} | {:.0} | {} |",
                micros(one.percentile(0.5)),
                many.throughput(),
                micros(hop.percentile(0.5))
            );
        }
    }
}
