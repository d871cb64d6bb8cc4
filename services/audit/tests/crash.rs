//! The real `sios-audit` binary, started the way the kernel starts it
//! (listening socket at descriptor 3, `SIOS_LISTEN_FD=3`), hammered by
//! concurrent clients and killed with SIGKILL mid-append, several times.
//! After each restart every acknowledged record must be there with the
//! acknowledged hash, the chain and tree must continue, and the whole log
//! must verify offline.

use sios_audit::AuditLog;
use sios_audit::keys;
use sios_audit::verify::verify_bundle;
use sios_ipc::activation::hand_listener;
use sios_ipc::transport::{DEFAULT_MAX_FRAME_BYTES, client_config, context_with_timeout, framed};
use sios_ipc::{ActionResult, AuditClient, Digest, DraftKind, RecordDraft};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Service {
    child: Child,
    socket: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(data: &Path, run: &Path) -> Service {
    let socket = run.join("audit.sock");
    let _ = std::fs::remove_file(&socket);
    let mut command = Command::new(env!("CARGO_BIN_EXE_sios-audit"));
    command
        .arg("--data-dir")
        .arg(data)
        .env("SIOS_LOG", "warn")
        .stdin(Stdio::null());
    let listener = hand_listener(&mut command, &socket).unwrap();
    let child = command.spawn().unwrap();
    drop(listener);
    Service { child, socket }
}

async fn connect(service: &Service) -> AuditClient {
    let stream = tokio::net::UnixStream::connect(&service.socket)
        .await
        .unwrap();
    let client = AuditClient::new(client_config(), framed(stream, DEFAULT_MAX_FRAME_BYTES)).spawn();
    // The socket accepts before the log is open; `ready` answers once it is.
    client
        .ready(context_with_timeout(Duration::from_secs(30)))
        .await
        .unwrap();
    client
}

fn ctx() -> tarpc::context::Context {
    context_with_timeout(Duration::from_secs(10))
}

/// One client: intent, then outcome, for ever; every acknowledged receipt
/// is kept as (seq, record hash).
async fn hammer(client: AuditClient, id: u64, acked: Arc<Mutex<Vec<(u64, Digest)>>>) {
    let actor = format!("uid:{}", 1000 + id);
    for i in 0.. {
        let resource = format!("brain:b{}", i % 5);
        let mut d = RecordDraft::new(&actor, "invoke", &resource, DraftKind::Intent);
        d.subject = Some(actor.clone());
        d.input_digests = vec![Digest([i as u8; 32])];
        let Ok(Ok(r)) = client.record(ctx(), vec![d]).await else {
            return;
        };
        acked.lock().unwrap().push((r[0].seq, r[0].record_hash));
        let o = RecordDraft::new(
            &actor,
            "invoke",
            &resource,
            DraftKind::Outcome {
                intent_seq: r[0].seq,
                result: ActionResult::Ok,
            },
        );
        let Ok(Ok(r)) = client.record(ctx(), vec![o]).await else {
            return;
        };
        acked.lock().unwrap().push((r[0].seq, r[0].record_hash));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_append_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let acked: Arc<Mutex<Vec<(u64, Digest)>>> = Arc::default();
    let mut sizes = Vec::new();
    for round in 0..4u64 {
        let mut service = spawn(&data, &run);
        let client = connect(&service).await;
        // Everything acknowledged before this start is still there.
        let so_far = acked.lock().unwrap().clone();
        for &(seq, hash) in &so_far {
            let page = client.read(ctx(), seq, 1).await.unwrap().unwrap();
            assert_eq!(page.records.len(), 1, "record {seq} lost");
            assert_eq!(
                sios_audit::record::Record::hash_of(&page.records[0]),
                hash.0,
                "record {seq} changed"
            );
        }
        let size = client.checkpoint(ctx()).await.unwrap().unwrap().size;
        sizes.push(size);
        let tasks: Vec<_> = (0..16)
            .map(|id| tokio::spawn(hammer(client.clone(), id, acked.clone())))
            .collect();
        // Let at least 20 more acknowledgements happen (bounded wait), then
        // kill at a different point each round, while appends are in flight.
        let before = acked.lock().unwrap().len();
        let give_up = std::time::Instant::now() + Duration::from_secs(20);
        while acked.lock().unwrap().len() < before + 20 && std::time::Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(7 + 31 * round)).await;
        service.child.kill().unwrap();
        service.child.wait().unwrap();
        for t in tasks {
            t.await.unwrap();
        }
    }
    assert!(
        sizes.windows(2).all(|w| w[1] > w[0]),
        "the log grew every round: {sizes:?}"
    );
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "only {} records were acknowledged",
        acked.len()
    );
    // Reopen in process: the tree continues and the whole log verifies.
    let log = AuditLog::open(&data).unwrap();
    for &(seq, hash) in &acked {
        let page = log.read(seq, 1, 1 << 20).unwrap();
        assert_eq!(
            sios_audit::record::Record::hash_of(&page.records[0]),
            hash.0
        );
    }
    let bundle = dir.path().join("after-crashes.bundle");
    sios_audit::export::write_bundle(&log, &bundle)
        .await
        .unwrap();
    let report = verify_bundle(&bundle, &data.join(keys::PUBLIC_FILE)).unwrap();
    assert!(report.records >= acked.len() as u64);
    // Each start (a new listening socket: a new kernel session) closed the
    // intents the killed round left open, so only the last round's remain:
    // at most one per client.
    assert!(
        report.open_intents <= 16,
        "{} intents left open: earlier rounds' were not closed",
        report.open_intents
    );
    println!("{} acknowledged; {report}", acked.len());
}
