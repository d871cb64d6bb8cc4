//! Brain mode: the kernel starts this program in place of `sios-brain` for a
//! manifest with `program = "sios-hostile-brain"`, through the same launcher
//! and sandbox, with the same arguments and descriptors. It serves the
//! `Brain` tarpc service on fd 3 as a real brain does (the kernel's readiness
//! probe and `infer`), and on each inference turns on the kernel: it uses its
//! fd-4 channel (`BrainSupport`) in ways its manifest does not allow and
//! answers with what happened to each attempt.
//!
//! The request's `text` tensor names the phases to run, one per element:
//! - `calls`: call the brains named by `--allowed` (its manifest's callee)
//!   and `--forbidden` (a brain it does not name), then the forbidden call
//!   again while claiming another identity in the request id, in the text and
//!   in a tensor name, and under a callee name dressed as a principal;
//! - `memory`: write and read its own namespace (`brain:<name>/notes`), then
//!   read, overwrite and search a client's (`client:ops/secrets`, key
//!   `plan`) and another brain's (`brain:legal/notes`), search everything,
//!   and write the client's namespace claiming to be the operator in the
//!   item's subject and metadata;
//! - `operator`: send a `Kernel::shutdown` request (the client service) down
//!   the brain channel, which offers no operator action;
//! - `garbage`: a flood of frames that are not sios messages;
//! - `oversized`: a frame header announcing more than any frame limit;
//! - `overlong-reply`: answers with a tensor as large as the frame limit,
//!   a reply it cannot send: its connection to the kernel breaks while the
//!   process lives on, and the kernel must restart it;
//! - `fatal:<what>`, `allocate:<mib>`: the `fatal` and `allocate` modes, from
//!   a brain the kernel runs (tests/tests/violations.rs): the process dies by
//!   seccomp or by the OOM killer mid-request.
//!
//! `operator`, `garbage` and `oversized` make the kernel drop this brain's
//! channel; the kernel must keep serving everyone else, and this brain must
//! still answer on fd 3.
//!
//! The reply is `report` (BYTES [n]), one line per attempt:
//! `<attempt>\t<outcome>\t<detail>`, where outcome is `ok` (the kernel did
//! it), `denied` (`InvokeError::Denied`/`MemoryError::Denied`), `refused`
//! (another kernel error), `transport` (no answer on the channel: it is
//! closed), `closed` (the kernel hung up on the flood) or `open` (it did not).

use sios_ipc::transport::{self, DEFAULT_MAX_FRAME_BYTES};
use sios_ipc::{
    Brain, BrainError, BrainInfo, BrainSupportClient, InferRequest, InferResponse, InvokeError,
    Tensor,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tarpc::context::Context;
use tokio::io::AsyncWriteExt as _;

/// A client's namespace the `memory` phase goes after (the test plants an
/// item `plan` there).
const CLIENT_NAMESPACE: &str = "client:ops/secrets";
/// Another brain's namespace.
const OTHER_BRAIN_NAMESPACE: &str = "brain:legal/notes";

/// How the kernel started us, and what to attack.
#[derive(Debug)]
struct Args {
    manifest: std::path::PathBuf,
    max_frame_bytes: usize,
    /// A brain the manifest names in `capabilities.calls`.
    allowed: String,
    /// A brain it does not.
    forbidden: String,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut manifest = None;
    let mut max_frame_bytes = DEFAULT_MAX_FRAME_BYTES;
    let mut forbidden = "router".to_owned();
    let mut allowed = None;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--manifest" => manifest = Some(value.into()),
            "--max-frame-bytes" => {
                max_frame_bytes = value.parse().map_err(|e| format!("{flag}: {e}"))?
            }
            "--forbidden" => forbidden = value.clone(),
            "--allowed" => allowed = Some(value.clone()),
            // Passed to every brain; this one loads no model.
            "--models-dir" | "--onnxruntime" => {}
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    let manifest: std::path::PathBuf = manifest.ok_or("--manifest is required")?;
    Ok(Args {
        manifest,
        max_frame_bytes,
        allowed: allowed.unwrap_or_default(),
        forbidden,
    })
}

/// Runs brain mode with the kernel's arguments; never returns while serving.
pub fn run(args: &[String]) -> ! {
    let fail = |what: String| -> ! {
        eprintln!("sios-hostile-brain: {what}");
        std::process::exit(78)
    };
    let mut args = parse_args(args).unwrap_or_else(|e| fail(e));
    let manifest =
        sios_manifest::Manifest::load(&args.manifest).unwrap_or_else(|e| fail(e.to_string()));
    if args.allowed.is_empty() {
        args.allowed = manifest
            .capabilities
            .calls
            .first()
            .cloned()
            .unwrap_or_default();
    }
    let listener =
        sios_ipc::activation::inherited_listener().unwrap_or_else(|e| fail(e.to_string()));
    let channel = match sios_ipc::activation::inherited_kernel_channel() {
        Ok(Some(channel)) => channel,
        Ok(None) => fail("no kernel channel (SIOS_KERNEL_FD); start me through sios-kernel".into()),
        Err(e) => fail(e.to_string()),
    };
    // A second descriptor for the same socket, for writing raw bytes to the
    // kernel behind the tarpc client's back.
    let raw = channel
        .try_clone()
        .unwrap_or_else(|e| fail(format!("dup of fd 4: {e}")));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(e.to_string()));
    let outcome: std::io::Result<()> = runtime.block_on(async move {
        let channel = tokio::net::UnixStream::from_std(channel)?;
        let kernel = BrainSupportClient::new(
            transport::client_config(),
            transport::framed(channel, args.max_frame_bytes),
        )
        .spawn();
        let server = Hostile {
            shared: Arc::new(Shared {
                info: BrainInfo {
                    name: manifest.name.clone(),
                    pid: std::process::id(),
                    // What the kernel's readiness probe checks; nothing is loaded.
                    model_sha256: manifest.model.sha256.clone(),
                    inputs: manifest.input_specs(),
                    outputs: manifest.output_specs(),
                    requests_served: 0,
                },
                served: AtomicU64::new(0),
                kernel,
                raw: tokio::sync::Mutex::new(Some(raw)),
                allowed: args.allowed,
                forbidden: args.forbidden,
                max_frame_bytes: args.max_frame_bytes,
            }),
        };
        let listener = tokio::net::UnixListener::from_std(listener)?;
        println!("serving as brain {}", manifest.name);
        let max = args.max_frame_bytes;
        transport::accept_loop(listener, |stream| {
            tokio::spawn(transport::serve_connection(
                stream,
                max,
                server.clone().serve(),
            ));
        })
        .await
    });
    match outcome {
        Ok(()) => std::process::exit(0),
        Err(e) => fail(format!("stopped serving: {e}")),
    }
}

#[derive(Clone, Debug)]
struct Hostile {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    info: BrainInfo,
    served: AtomicU64,
    kernel: BrainSupportClient,
    /// The raw duplicate of fd 4, until a flood has used it up.
    raw: tokio::sync::Mutex<Option<std::os::unix::net::UnixStream>>,
    allowed: String,
    forbidden: String,
    max_frame_bytes: usize,
}

/// One line of the report.
fn line(attempt: &str, outcome: &str, detail: impl std::fmt::Display) -> String {
    let detail = detail.to_string().replace(['\t', '\n'], " ");
    format!("{attempt}\t{outcome}\t{detail}")
}

fn text(strings: &[&str]) -> Vec<Tensor> {
    vec![Tensor::from_strings(
        "text",
        vec![strings.len() as u64],
        strings,
    )]
}

/// A short deadline for our own calls: the kernel's call to us has its own.
fn ctx() -> Context {
    transport::context_with_timeout(Duration::from_secs(20))
}

impl Hostile {
    async fn call(&self, attempt: &str, callee: &str, request: InferRequest) -> String {
        match self
            .shared
            .kernel
            .call_brain(ctx(), callee.to_owned(), request)
            .await
        {
            Ok(Ok(response)) => line(
                attempt,
                "ok",
                format!(
                    "{callee} answered as {} with {}",
                    response.model_name,
                    response
                        .outputs
                        .iter()
                        .map(|t| format!("{}{:?}", t.name, t.shape))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ),
            Ok(Err(err @ InvokeError::Denied { .. })) => line(attempt, "denied", err),
            Ok(Err(err)) => line(attempt, "refused", err),
            Err(err) => line(attempt, "transport", err),
        }
    }

    async fn calls(&self) -> Vec<String> {
        let allowed = self.shared.allowed.clone();
        let forbidden = self.shared.forbidden.clone();
        let plain = |inputs| InferRequest { id: None, inputs };
        let mut report = vec![
            self.call(
                "call_allowed",
                &allowed,
                plain(text(&["a harmless sentence"])),
            )
            .await,
            self.call(
                "call_forbidden",
                &forbidden,
                plain(text(&["a harmless sentence"])),
            )
            .await,
        ];
        // The same forbidden call, claiming to be someone with more rights in
        // every part of the payload a brain controls.
        let claims = [
            "principal=operator",
            "brain:router",
            "uid 0 gid 0 role=operator",
            "Operator::\"root\"",
        ];
        report.push(
            self.call(
                "claim_in_id",
                &forbidden,
                InferRequest {
                    id: Some("principal=operator; actor=brain:router; uid=0".into()),
                    inputs: text(&["a harmless sentence"]),
                },
            )
            .await,
        );
        report.push(
            self.call("claim_in_text", &forbidden, plain(text(&claims)))
                .await,
        );
        let mut named = text(&["a harmless sentence"]);
        named.push(Tensor::from_strings(
            "principal=operator",
            vec![1],
            &["uid 0"],
        ));
        report.push(
            self.call("claim_in_tensor_name", &forbidden, plain(named))
                .await,
        );
        report.push(
            self.call(
                "claim_as_callee",
                &format!("brain:{forbidden}"),
                plain(text(&["a harmless sentence"])),
            )
            .await,
        );
        report
    }

    async fn memory(&self) -> Vec<String> {
        use sios_ipc::memory::{Embedding, MemoryError, PutRequest, SearchRequest, Value};
        fn judged<T>(
            attempt: &str,
            result: Result<Result<T, MemoryError>, tarpc::client::RpcError>,
            ok: impl FnOnce(T) -> String,
        ) -> String {
            match result {
                Ok(Ok(value)) => line(attempt, "ok", ok(value)),
                Ok(Err(err @ MemoryError::Denied { .. })) => line(attempt, "denied", err),
                Ok(Err(err)) => line(attempt, "refused", err),
                Err(err) => line(attempt, "transport", err),
            }
        }
        let kernel = &self.shared.kernel;
        let own = format!("brain:{}/notes", self.shared.info.name);
        let put = |namespace: &str, subject: &str, metadata: &[(&str, &str)]| PutRequest {
            namespace: namespace.to_owned(),
            key: "plan".into(),
            subject: subject.into(),
            value: Value::Text("overwritten by a hostile brain".into()),
            metadata: metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            embedding: Some(Embedding(vec![0.6, 0.8])),
        };
        let search = |namespaces: Option<Vec<String>>| SearchRequest {
            query: Embedding(vec![0.6, 0.8]),
            k: 5,
            namespaces,
            metadata: Default::default(),
            include_values: true,
        };
        let shown = |item: sios_ipc::memory::Item| match item.value {
            Value::Text(text) => text,
            Value::Bytes(bytes) => format!("{} bytes", bytes.len()),
        };
        let mut report = vec![
            judged(
                "memory_own_put",
                kernel.memory_put(ctx(), put(&own, "hostile", &[])).await,
                |r| format!("created={}", r.created),
            ),
            judged(
                "memory_own_get",
                kernel.memory_get(ctx(), own.clone(), "plan".into()).await,
                shown,
            ),
        ];
        for (attempt, namespace) in [
            ("memory_read_client", CLIENT_NAMESPACE),
            ("memory_read_brain", OTHER_BRAIN_NAMESPACE),
        ] {
            report.push(judged(
                attempt,
                kernel
                    .memory_get(ctx(), namespace.into(), "plan".into())
                    .await,
                shown,
            ));
        }
        report.push(judged(
            "memory_write_client",
            kernel
                .memory_put(ctx(), put(CLIENT_NAMESPACE, "hostile", &[]))
                .await,
            |r| format!("created={}", r.created),
        ));
        report.push(judged(
            "memory_claim_write_client",
            kernel
                .memory_put(
                    ctx(),
                    put(
                        CLIENT_NAMESPACE,
                        "operator",
                        &[("principal", "operator"), ("actor", "uid:0")],
                    ),
                )
                .await,
            |r| format!("created={}", r.created),
        ));
        let hits = |r: sios_ipc::memory::SearchResponse| {
            format!(
                "hits {}",
                r.hits
                    .iter()
                    .map(|h| format!("{}/{}", h.namespace, h.key))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        report.push(judged(
            "memory_search_client",
            kernel
                .memory_search(ctx(), search(Some(vec![CLIENT_NAMESPACE.into()])))
                .await,
            hits,
        ));
        report.push(judged(
            "memory_search_all",
            kernel.memory_search(ctx(), search(None)).await,
            hits,
        ));
        report
    }

    async fn operator(&self) -> Vec<String> {
        let Some(raw) = self.shared.raw.lock().await.take() else {
            return vec![line(
                "operator_shutdown",
                "transport",
                "the channel is already used up",
            )];
        };
        let attempt = async {
            let stream = tokio::net::UnixStream::from_std(raw)?;
            // The client's own service: a frame the brain channel does not speak.
            let kernel = sios_ipc::KernelClient::new(
                transport::client_config(),
                transport::framed(stream, self.shared.max_frame_bytes),
            )
            .spawn();
            Ok::<_, std::io::Error>(kernel.shutdown(ctx()).await)
        };
        vec![match attempt.await {
            Ok(Ok(Ok(()))) => line("operator_shutdown", "ok", "the kernel agreed to shut down"),
            Ok(Ok(Err(err))) => line("operator_shutdown", "denied", err),
            Ok(Err(err)) => line("operator_shutdown", "transport", err),
            Err(err) => line("operator_shutdown", "transport", err),
        }]
    }

    /// Writes `header` then `chunk` over and over on the raw channel until
    /// the kernel stops taking bytes (it hangs up: `closed`) or `budget`
    /// bytes have gone without that (`open`). A write that cannot make
    /// progress for 5 s counts as the kernel no longer reading.
    async fn flood(&self, attempt: &str, header: &[u8], chunk: &[u8], budget: usize) -> String {
        let Some(raw) = self.shared.raw.lock().await.take() else {
            return line(attempt, "transport", "the channel is already used up");
        };
        let mut stream = match tokio::net::UnixStream::from_std(raw) {
            Ok(stream) => stream,
            Err(err) => return line(attempt, "transport", err),
        };
        let mut sent = 0usize;
        let mut first = true;
        while sent < budget {
            let bytes = if first { header } else { chunk };
            first = false;
            match tokio::time::timeout(Duration::from_secs(5), stream.write_all(bytes)).await {
                Ok(Ok(())) => sent += bytes.len(),
                Ok(Err(err)) => {
                    return line(attempt, "closed", format!("after {sent} bytes: {err}"));
                }
                Err(_) => {
                    return line(
                        attempt,
                        "closed",
                        format!("after {sent} bytes: the kernel stopped reading"),
                    );
                }
            }
        }
        line(attempt, "open", format!("the kernel took all {sent} bytes"))
    }

    async fn garbage(&self) -> Vec<String> {
        // Frames of a plausible length whose bytes are no tarpc message
        // (bincode variant 0xffffffff), sent as fast as the socket takes them.
        let frame_len = 64 * 1024u32;
        let mut frame = frame_len.to_be_bytes().to_vec();
        frame.resize(4 + frame_len as usize, 0xff);
        vec![self.flood("flood_garbage", &frame, &frame, 256 << 20).await]
    }

    async fn oversized(&self) -> Vec<String> {
        // A header announcing nearly 4 GiB, then the bytes to back it.
        let header = (u32::MAX - 1).to_be_bytes();
        vec![
            self.flood("flood_oversized", &header, &[0x41; 64 * 1024], 256 << 20)
                .await,
        ]
    }
}

impl Hostile {
    /// `fatal:<what>` and `allocate:<mib>`: the sandbox attempts of the
    /// command-line modes, made mid-request (tests/tests/violations.rs). The
    /// sandbox is expected to kill the process; a line comes back only if it
    /// survived. Anything else is an unknown phase, answered as such.
    fn sandbox(&self, phase: &str) -> String {
        if let Some(what) = phase.strip_prefix("fatal:")
            && let Some(outcome) = crate::try_fatal(what)
        {
            return line(phase, "survived", crate::shown(outcome));
        }
        if let Some(mib) = phase
            .strip_prefix("allocate:")
            .and_then(|mib| mib.parse().ok())
        {
            return line(phase, "survived", crate::try_allocate(mib));
        }
        line(phase, "unknown", "no such phase")
    }
}

impl Brain for Hostile {
    async fn describe(self, _: Context) -> BrainInfo {
        BrainInfo {
            requests_served: self.shared.served.load(Ordering::Relaxed),
            ..self.shared.info.clone()
        }
    }

    async fn infer(self, _: Context, request: InferRequest) -> Result<InferResponse, BrainError> {
        let phases: Vec<String> = request
            .inputs
            .iter()
            .find(|t| t.name == "text")
            .map(|t| t.strings())
            .transpose()?
            .unwrap_or_default()
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        let mut report = Vec::new();
        for phase in &phases {
            report.extend(match phase.as_str() {
                "calls" => self.calls().await,
                "memory" => self.memory().await,
                "operator" => self.operator().await,
                "garbage" => self.garbage().await,
                "oversized" => self.oversized().await,
                "overlong-reply" => vec![line(phase, "sent", "a reply over the frame limit")],
                // Sandbox violations (for the kernel's exit reports and
                // restarts); anything else is an unknown phase.
                other => vec![self.sandbox(other)],
            });
        }
        let mut outputs = vec![Tensor::from_strings(
            "report",
            vec![report.len() as u64],
            &report,
        )];
        if phases.iter().any(|p| p == "overlong-reply") {
            // A reply no frame can carry: sending it breaks the connection
            // to the kernel while this process lives on.
            let size = self.shared.max_frame_bytes;
            outputs.push(Tensor::from_elements(
                "padding",
                vec![size as u64],
                &vec![0u8; size],
            ));
        }
        self.shared.served.fetch_add(1, Ordering::Relaxed);
        Ok(InferResponse {
            id: request.id,
            model_name: self.shared.info.name.clone(),
            model_version: self.shared.info.model_sha256.clone(),
            outputs,
            truncated: Vec::new(),
        })
    }
}
