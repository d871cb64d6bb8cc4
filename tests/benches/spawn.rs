//! Benchmark: what the sandbox costs at start. Spawn-to-ready of one brain
//! with and without its sandbox, and the cold start of the whole default
//! catalog with and without sandboxes, from one run, as one table.
//!
//! Spawn-to-ready is measured as the kernel sees it: the kernel's own launch
//! path (`sios_kernel::spawn::spawn`, through `sios-launch`) of the program
//! and sandbox the kernel builds for the brain
//! (`sios_kernel::appliance::brain_program`), until the brain answers
//! `describe` on its socket (the kernel's readiness probe); then SIGTERM and
//! reap, as the kernel stops it. The two variants alternate round by round,
//! so drift on a shared machine falls on both. The cold start is
//! `sios_e2e::cold_start_catalog`, the code the catalog benchmark uses.
//!
//! Needs root (the sandbox) and `deploy/setup.sh`. Run with
//! `bash deploy/bench.sh`. `SIOS_BENCH_ROUNDS` sets the rounds per variant
//! (default 20).

use sios_e2e::{ColdStart, bin_dir, cold_start_catalog, source_tree};
use sios_ipc::{BrainClient, transport};
use std::path::Path;
use std::time::{Duration, Instant};

/// The brain spawned: small, and one of the fixture brains set-up builds.
const BRAIN: &str = "voice-activity";

/// How a spawned program shows it is ready.
#[derive(Clone, Copy)]
enum Probe {
    /// A brain: it answers `describe` (the kernel's readiness probe).
    Describe,
    /// `sios-hostile-brain serve`: it answers `ping` with `pong` at once, so
    /// the time is the launch and the sandbox's setup alone.
    Ping,
}

/// One spawn of `program` as the kernel does it, until it is ready; stops
/// it before returning.
async fn spawn_to_ready(
    launcher: &Path,
    program: &sios_kernel::spawn::Program,
    socket: &Path,
    probe: Probe,
) -> Duration {
    let listener = sios_kernel::appliance::bind(socket).expect("bind the brain's socket");
    // The brain's private channel to the kernel, as every brain gets one.
    let (kernel_end, brain_end) = std::os::unix::net::UnixStream::pair().expect("channel");
    let started = Instant::now();
    let mut child =
        sios_kernel::spawn::spawn(BRAIN, launcher, program, &listener, Some(&brain_end))
            .expect("spawn through sios-launch");
    drop(brain_end);
    let stream = transport::connect(socket, Duration::from_secs(30))
        .await
        .expect("connect");
    let took = match probe {
        Probe::Describe => {
            let client = BrainClient::new(
                transport::client_config(),
                transport::framed(stream, 8 << 20),
            )
            .spawn();
            let info = client
                .describe(transport::context_with_timeout(Duration::from_secs(30)))
                .await
                .expect("the brain's readiness answer");
            assert_eq!(info.name, BRAIN);
            started.elapsed()
        }
        Probe::Ping => {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut stream = stream;
            stream.write_all(b"ping\n").await.expect("ping");
            let mut pong = [0u8; 5];
            stream.read_exact(&mut pong).await.expect("pong");
            assert_eq!(&pong, b"pong\n");
            started.elapsed()
        }
    };
    let pid = child.id().expect("running") as i32;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait().await;
    drop(kernel_end);
    took
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// (p50, min, max) of `samples`.
fn summary(samples: &mut [Duration]) -> (Duration, Duration, Duration) {
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
    )
}

fn main() {
    if std::env::args().skip(1).any(|a| a != "--bench") {
        eprintln!("usage: cargo bench -p sios-e2e --bench spawn (see deploy/bench.sh)");
        std::process::exit(2);
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the spawn benchmark compares sandboxed and unsandboxed brains: run it as root");
        std::process::exit(1);
    }
    let bin = bin_dir();
    let rounds: usize = std::env::var("SIOS_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20)
        .max(1);

    // One brain, spawned as the kernel would, in a state directory of its own.
    let state = tempfile::tempdir().expect("temp dir");
    let layout = sios_config::StateLayout::new(state.path());
    sios_kernel::appliance::create_private_dir(&layout.brain_socket_dir()).expect("run dir");
    let mut config = sios_config::Config::default();
    config.paths.bin_dir = Some(bin.clone());
    let manifest =
        sios_manifest::Manifest::load(&source_tree().join(format!("brains/catalog/{BRAIN}.toml")))
            .expect("manifest");
    let program = |sandboxed| {
        sios_kernel::appliance::brain_program(&config, &layout, &manifest, 0, sandboxed)
            .expect("the brain's program")
    };
    let (plain, sandboxed) = (program(false), program(true));
    // The same two launches of a program that is ready at once: what the
    // launcher and the sandbox's setup cost, without ONNX Runtime.
    let at_once = |program: &sios_kernel::spawn::Program| sios_kernel::spawn::Program {
        path: bin.join("sios-hostile-brain"),
        args: vec!["serve".into()],
        ..program.clone()
    };
    let (plain_at_once, sandboxed_at_once) = (at_once(&plain), at_once(&sandboxed));
    let launcher = bin.join("sios-launch");
    let socket = layout.brain_socket(BRAIN);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let variants = [
        (&plain, Probe::Describe),
        (&sandboxed, Probe::Describe),
        (&plain_at_once, Probe::Ping),
        (&sandboxed_at_once, Probe::Ping),
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
    runtime.block_on(async {
        // One of each first, unmeasured: page cache and ONNX Runtime warm.
        for (program, probe) in variants {
            spawn_to_ready(&launcher, program, &socket, probe).await;
        }
        for _ in 0..rounds {
            for ((program, probe), taken) in variants.iter().zip(&mut samples) {
                taken.push(spawn_to_ready(&launcher, program, &socket, *probe).await);
            }
        }
    });
    let stats: Vec<(Duration, Duration, Duration)> =
        samples.iter_mut().map(|s| summary(s)).collect();

    // The whole catalog, cold, each way (one appliance at a time).
    let cold = |extra: &str| {
        let ColdStart {
            app,
            took,
            brains,
            ready,
        } = cold_start_catalog(extra);
        drop(app);
        (took, brains, ready)
    };
    let (cold_with, brains, ready_with) = cold("");
    let (cold_without, _, ready_without) = cold("[sandbox]\nmode = \"off\"\n");

    println!(
        "spawn to ready ({rounds} rounds per variant, interleaved) and cold start of the whole catalog, one run"
    );
    println!();
    println!("| what | unsandboxed | sandboxed | sandbox costs |");
    println!("|---|---:|---:|---:|");
    for (what, without, with) in [
        (
            format!("one brain ({BRAIN}), spawn to ready"),
            stats[0],
            stats[1],
        ),
        (
            "a program ready at once, same sandbox (launcher + sandbox setup alone)".to_owned(),
            stats[2],
            stats[3],
        ),
    ] {
        println!(
            "| {what}, p50 | {:.1} ms | {:.1} ms | {:+.1} ms |",
            ms(without.0),
            ms(with.0),
            ms(with.0) - ms(without.0)
        );
        println!(
            "| {what}, min / max | {:.1} / {:.1} ms | {:.1} / {:.1} ms | — |",
            ms(without.1),
            ms(without.2),
            ms(with.1),
            ms(with.2)
        );
    }
    println!(
        "| whole catalog, `sios up` to every brain ready (ready: {ready_without} / {ready_with} of {brains}) | {:.2} s | {:.2} s | {:+.2} s |",
        cold_without.as_secs_f64(),
        cold_with.as_secs_f64(),
        cold_with.as_secs_f64() - cold_without.as_secs_f64()
    );
    println!();
    println!(
        "targets (DESIGN.md): a full sandboxed spawn ~3–6 ms on top; all 50 brains ready ≤ 5 s on 2 cores"
    );
}
