//! Shared by the memory service's integration tests: a seeded random number
//! generator, item builders, a byte scanner over a data directory, and the
//! real `sios-memory` binary started the way the kernel starts it.

#![allow(dead_code)] // each test binary uses a part

use sios_ipc::activation::hand_listener;
use sios_ipc::transport::{DEFAULT_MAX_FRAME_BYTES, client_config, context_with_timeout, framed};
use sios_ipc::{Embedding, Item, MemoryClient, Metadata, PutRequest, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// SplitMix64: small, seeded, good enough for test data.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn vector(&mut self, dims: usize) -> Vec<f32> {
        loop {
            let v: Vec<f32> = (0..dims).map(|_| self.unit()).collect();
            if v.iter().any(|x| *x != 0.0) {
                return v;
            }
        }
    }
}

pub fn put(
    namespace: &str,
    key: &str,
    subject: &str,
    value: Value,
    metadata: &[(&str, &str)],
    embedding: Option<Vec<f32>>,
) -> PutRequest {
    PutRequest {
        namespace: namespace.into(),
        key: key.into(),
        subject: subject.into(),
        value,
        metadata: metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<Metadata>(),
        embedding: embedding.map(Embedding),
    }
}

pub fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

/// An item as import takes it.
pub fn item(
    namespace: &str,
    key: &str,
    subject: &str,
    value: Value,
    embedding: Option<Vec<f32>>,
) -> Item {
    Item {
        namespace: namespace.into(),
        key: key.into(),
        subject: subject.into(),
        value,
        metadata: Metadata::new(),
        created_ms: 1_700_000_000_000,
        updated_ms: 1_700_000_000_000,
        embedding: embedding.map(Embedding),
    }
}

/// Every regular file under `dir`, recursively, with its bytes.
pub fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.push((path, bytes));
            }
        }
    }
    out
}

/// The files under `dir` that contain `needle` anywhere.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    scan(dir, &[needle]).into_iter().next().unwrap_or_default()
}

/// For each needle, the files under `dir` that contain it (files read once).
pub fn scan(dir: &Path, needles: &[&[u8]]) -> Vec<Vec<PathBuf>> {
    let files = files(dir);
    needles
        .iter()
        .map(|needle| {
            assert!(!needle.is_empty());
            let finder = memchr::memmem::Finder::new(needle);
            files
                .iter()
                .filter(|(_, bytes)| finder.find(bytes).is_some())
                .map(|(path, _)| path.clone())
                .collect()
        })
        .collect()
}

// ------------------------------------------------------------ the binary

/// A running `sios-memory`, killed (SIGKILL) when dropped.
pub struct Service {
    pub child: Child,
    pub socket: PathBuf,
    _socket_dir: tempfile::TempDir,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    /// Starts the binary on `data_dir` with its listening socket at fd 3, as
    /// the kernel does.
    pub fn start(data_dir: &Path) -> Service {
        Service::start_with(data_dir, |_| {})
    }

    /// [`Service::start`], with `configure` applied to the command first.
    pub fn start_with(data_dir: &Path, configure: impl FnOnce(&mut Command)) -> Service {
        let socket_dir = tempfile::tempdir().unwrap();
        let socket = socket_dir.path().join("memory.sock");
        let mut command = Command::new(env!("CARGO_BIN_EXE_sios-memory"));
        command
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--max-frame-bytes")
            .arg(DEFAULT_MAX_FRAME_BYTES.to_string())
            .env("SIOS_LOG", "warn")
            .stdin(Stdio::null());
        configure(&mut command);
        let listener = hand_listener(&mut command, &socket).unwrap();
        let child = command.spawn().unwrap();
        drop(listener);
        Service {
            child,
            socket,
            _socket_dir: socket_dir,
        }
    }

    /// A client, once the service answers `ready` (recovery done).
    pub async fn client(&self) -> MemoryClient {
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            let stream = tokio::net::UnixStream::connect(&self.socket).await.unwrap();
            let client =
                MemoryClient::new(client_config(), framed(stream, DEFAULT_MAX_FRAME_BYTES)).spawn();
            if client.ready(ctx()).await.is_ok() {
                return client;
            }
            assert!(Instant::now() < give_up, "sios-memory did not become ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and reap.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn ctx() -> tarpc::context::Context {
    context_with_timeout(Duration::from_secs(60))
}
