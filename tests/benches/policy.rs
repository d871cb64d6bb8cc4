//! Benchmark: what the policy adds to `invoke`, measured inside the real
//! request path. Run with `bash deploy/bench.sh` (builds the release
//! binaries first); `SIOS_BENCH_SECONDS` sets the measuring time per row
//! (default 3).
//!
//! # Why there is no "policy off" run
//!
//! The production kernel has no way to skip the policy, and must not get
//! one: a runtime switch is a way around every rule. A cargo feature that
//! turns the decision into "allow" would be just as bad here: cargo unifies
//! features across a workspace build, so `cargo test --workspace` would
//! build the very `sios-kernel` the end-to-end tests run with the policy
//! off. So this bench measures the decision where it happens instead:
//!
//! - the whole request path, hosted in this process with the kernel library
//!   exactly as `sios-kernel` hosts it: client → the kernel's Unix socket
//!   (tarpc, SO_PEERCRED) → resolve, validate, **decide**, record the intent
//!   durably (real `sios-audit`, ML-DSA checkpoints) → the brain process
//!   (real `sios-brain`, ONNX Runtime, sandboxed when root) → record the
//!   outcome → answer; timed per request at the client;
//! - the decide step of those same requests, timed inside the kernel by
//!   [`sios_kernel::governance::Governor::stats`] (from taking the active
//!   policy to a finished ruling: Cedar's evaluation with the shipped policy,
//!   the recorded decision, the request serialised for replay; the clock
//!   only measures, it never reaches the decision). The kernel remembers the
//!   rulings it made under the active policy, so a request equal to one
//!   decided before is answered without evaluating Cedar again; here every
//!   request is the same, so after the first nearly all are (the `memo`
//!   column says how many). That is what a steady appliance sees: a few
//!   callers, brains and actions. Cedar's own cost per evaluation is
//!   `cargo bench -p sios-policy`.
//!
//! "Without the decision" is the first minus the second: what the same
//! requests would have cost had the decide step taken no time. The ratio is
//! the policy's share of end-to-end invoke latency (target: ≤ 10%). The
//! caller is a named, non-operator client invoking `readability`, the
//! cheapest brain of the catalog, so the policy's share is as large as it
//! gets; a heavier brain dilutes it. The principal lookup before `decide`
//! (two map look-ups) is not in the measured step.
//!
//! Decision latency alone, p50/p99 with the default and a 50-brain ×
//! 20-client × 30-policy set, is `cargo bench -p sios-policy`
//! (`kernel/policy/benches/decide.rs`).

use sios_e2e::{bin_dir, source_tree};
use sios_ipc::{InferRequest, KernelClient, transport};
use sios_kernel::appliance::Appliance;
use std::sync::Arc;
use std::time::{Duration, Instant};

const READABILITY_REQUEST: &str =
    r#"{"inputs":[{"name":"counts","datatype":"FP32","shape":[1,6],"data":[120,8,180,14,30,2]}]}"#;

fn measure_seconds() -> Duration {
    let seconds = std::env::var("SIOS_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(seconds)
}

/// One row: client-side latencies, wall time, and the kernel's decision meter.
struct Row {
    clients: usize,
    latencies: Vec<Duration>,
    elapsed: Duration,
    decisions: u64,
    /// Of `decisions`, those the kernel's memo of rulings answered.
    remembered: u64,
    deciding: Duration,
}

impl Row {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(index).copied().unwrap_or_default()
    }
    fn mean(&self) -> Duration {
        self.latencies.iter().sum::<Duration>() / self.latencies.len().max(1) as u32
    }
    fn decide_mean(&self) -> Duration {
        self.deciding / self.decisions.max(1) as u32
    }
}

async fn connect(socket: &std::path::Path) -> KernelClient {
    let stream = transport::connect(socket, Duration::from_secs(5))
        .await
        .expect("connect to the kernel socket");
    KernelClient::new(
        transport::client_config(),
        transport::framed(stream, 64 << 20),
    )
    .spawn()
}

/// `clients` connections, each invoking in a loop for `duration`.
async fn run(
    appliance: &Arc<Appliance>,
    socket: &std::path::Path,
    request: &InferRequest,
    clients: usize,
    duration: Duration,
) -> Row {
    let mut connections = Vec::new();
    for _ in 0..clients {
        connections.push(connect(socket).await);
    }
    let before = appliance.governor.stats();
    let start = Instant::now();
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|client| {
            let request = request.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while start.elapsed() < duration {
                    let t = Instant::now();
                    client
                        .invoke(sios_e2e::ctx(), "readability".into(), request.clone())
                        .await
                        .expect("rpc")
                        .expect("invoke");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client task"));
    }
    let elapsed = start.elapsed();
    let after = appliance.governor.stats();
    Row {
        clients,
        latencies,
        elapsed,
        decisions: after.decisions - before.decisions,
        remembered: after.remembered - before.remembered,
        deciding: Duration::from_nanos(after.deciding_ns - before.deciding_ns),
    }
}

fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn main() {
    let tree = source_tree();
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let config_path = dir.path().join("config.toml");
    // A named client (this process's uid), not an operator: ordinary traffic.
    let uid = nix::unistd::geteuid().as_raw();
    std::fs::write(
        &config_path,
        format!(
            "[paths]\ncatalog_dir = {:?}\nmodels_dir = {:?}\nonnxruntime_lib = {:?}\nbin_dir = {:?}\n\n\
             [brains]\nenabled = [\"readability\"]\n\n[policy.operators]\nuids = []\n\n\
             [[policy.clients]]\nuid = {uid}\nname = \"bench\"\nclearance = \"internal\"\n",
            tree.join("brains/catalog").display().to_string(),
            tree.join("build/models").display().to_string(),
            tree.join("build/lib/libonnxruntime.so.1.32.0")
                .display()
                .to_string(),
            bin_dir().display().to_string(),
        ),
    )
    .expect("config");
    let config = sios_config::Config::load(Some(&config_path), &state).expect("config");
    let layout = sios_config::StateLayout::new(&state);
    for d in [layout.root.clone(), layout.run_dir()] {
        sios_kernel::appliance::create_private_dir(&d).expect("state dir");
    }
    let max_frame = config.limits.max_frame_bytes;
    let request = sios_ipc::kserve::parse_request(READABILITY_REQUEST).expect("request");
    let duration = measure_seconds();
    let runtime = sios_e2e::multi_thread_runtime(2);
    let rows = runtime.block_on(async {
        let (appliance, pending) = Appliance::prepare(config, layout.clone()).expect("prepare");
        appliance.start(pending).await;
        // The client socket, served as sios-kernel's main serves it.
        let listener = sios_kernel::appliance::bind(&layout.kernel_socket()).expect("bind");
        let listener = tokio::net::UnixListener::from_std(listener).expect("listener");
        tokio::spawn(sios_kernel::api::serve_clients(
            listener,
            Arc::clone(&appliance),
            max_frame,
        ));
        let socket = layout.kernel_socket();
        run(&appliance, &socket, &request, 1, Duration::from_millis(500)).await;
        let mut rows = Vec::new();
        for clients in [1, 16] {
            rows.push(run(&appliance, &socket, &request, clients, duration).await);
        }
        appliance.stop().await;
        rows
    });

    println!(
        "\nsios invoke through the kernel (readability; client -> socket -> decide -> audit -> brain -> audit), \
         policy measured inside the path; {:.0} s per row\n",
        duration.as_secs_f64()
    );
    println!(
        "{:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11} {:>12} {:>9} {:>7}",
        "clients",
        "req/s",
        "p50 us",
        "p99 us",
        "mean us",
        "decide",
        "w/o decide",
        "est. req/s",
        "policy",
        "memo"
    );
    for row in &rows {
        let mean = row.mean();
        let decide = row.decide_mean();
        let without = mean.saturating_sub(decide);
        let throughput = row.latencies.len() as f64 / row.elapsed.as_secs_f64();
        // Same requests in flight, each shorter by its decision.
        let throughput_without = throughput * mean.as_secs_f64() / without.as_secs_f64();
        println!(
            "{:>7} {:>9.0} {:>9} {:>9} {:>9} {:>9} {:>11} {:>12.0} {:>8.2}% {:>6.1}%",
            row.clients,
            throughput,
            micros(row.percentile(0.50)),
            micros(row.percentile(0.99)),
            micros(mean),
            micros(decide),
            micros(without),
            throughput_without,
            100.0 * decide.as_secs_f64() / without.as_secs_f64(),
            100.0 * row.remembered as f64 / row.decisions.max(1) as f64
        );
        assert_eq!(
            row.decisions,
            row.latencies.len() as u64,
            "one decision per invoke (nothing else ran)"
        );
    }
    println!(
        "\n`decide`: mean time of the decide step per request, timed in the kernel; `w/o decide`: mean minus it;\n\
         `policy`: what the policy adds to end-to-end invoke latency (decide / w/o decide). Target: <= 10%.\n\
         `memo`: the share of decisions answered from the kernel's memo of rulings already made under the policy.\n\
         `est. req/s`: the throughput the same clients would reach with each request shorter by its decision\n\
         (derived, Little's law: the measured req/s times mean / w/o decide).\n"
    );
}
