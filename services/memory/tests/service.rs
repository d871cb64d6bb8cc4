//! The real `sios-memory` binary, started as the kernel starts it (listening
//! socket at descriptor 3, `SIOS_LISTEN_FD=3`), spoken to over tarpc, and
//! killed with SIGKILL.
//!
//! - every RPC round-trips, with its errors
//! - `kill -9` at random points of an erasure: afterwards the subject is
//!   either wholly there (the kill came before the erasure's first commit,
//!   which was then never acknowledged) or wholly gone, never half; an
//!   acknowledged erasure is always wholly gone; the other subject is intact
//! - `kill -9` under concurrent writers: every acknowledged write is there,
//!   byte for byte, and the database opens cleanly
//! - a disk that stops taking writes: every write is refused with the cause
//!   and what to do, and memory reopens by itself once space is freed

mod common;

use common::{Rng, Service, ctx, item, put, text};
use sios_ipc::{
    Embedding, ExportCursor, ExportRequest, ExportScope, ImportRequest, Item, ListRequest,
    MemoryClient, MemoryError, Metadata, SearchRequest, Value,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Writes acknowledged so far: ((namespace, key), value).
type Acked = Arc<Mutex<Vec<((String, String), Value)>>>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

async fn export_all(client: &MemoryClient, scope: ExportScope) -> Result<Vec<Item>, MemoryError> {
    let mut out = Vec::new();
    let mut after: Option<ExportCursor> = None;
    loop {
        let page = client
            .export(
                ctx(),
                ExportRequest {
                    scope: scope.clone(),
                    after,
                    limit: 1000,
                },
            )
            .await
            .unwrap()?;
        out.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(out),
        }
    }
}

async fn import(client: &MemoryClient, items: Vec<Item>) {
    for chunk in sios_ipc::import_chunks(items) {
        client.import(ctx(), chunk).await.unwrap().unwrap();
    }
}

#[test]
fn every_rpc_round_trips_with_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let service = Service::start(dir.path());
        let client = service.client().await;
        let stored = client
            .put(
                ctx(),
                put(
                    "tenant/a",
                    "k1",
                    "alice",
                    text("hello"),
                    &[("lang", "en")],
                    Some(vec![1.0, 2.0]),
                ),
            )
            .await
            .unwrap()
            .unwrap();
        assert!(stored.created);
        let got = client
            .get(ctx(), "tenant/a".into(), "k1".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.value, text("hello"));
        assert_eq!(got.embedding, Some(Embedding(vec![1.0, 2.0])));
        assert_eq!(got.metadata["lang"], "en");
        let err = client
            .get(ctx(), "tenant/zz".into(), "k1".into())
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, MemoryError::UnknownNamespace { .. }), "{err}");
        assert!(err.is_not_found());
        let err = client
            .get(ctx(), "tenant/a".into(), "k2".into())
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, MemoryError::NotFound { .. }), "{err}");
        let err = client
            .get(ctx(), "../etc".into(), "k".into())
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, MemoryError::InvalidName { .. }), "{err}");
        import(
            &client,
            (0..50)
                .map(|i| {
                    item(
                        "tenant/a",
                        &format!("bulk-{i:02}"),
                        "bob",
                        Value::Bytes(vec![i; 3]),
                        Some(vec![0.0, 1.0 + f32::from(i)]),
                    )
                })
                .collect(),
        )
        .await;
        let page = client
            .list(
                ctx(),
                ListRequest {
                    namespace: "tenant/a".into(),
                    after: None,
                    limit: 20,
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(page.items.len(), 20);
        assert_eq!(page.next.as_deref(), Some("bulk-19"));
        let hits = client
            .search(
                ctx(),
                SearchRequest {
                    query: Embedding(vec![1.0, 2.0]),
                    k: 3,
                    namespaces: Some(vec!["tenant/a".into()]),
                    metadata: Metadata::new(),
                    include_values: true,
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hits.hits[0].key, "k1");
        assert_eq!(hits.hits[0].value, Some(text("hello")));
        assert_eq!(hits.scanned, 51);
        client
            .delete(ctx(), "tenant/a".into(), "bulk-00".into())
            .await
            .unwrap()
            .unwrap();
        let report = client
            .erase_subject(ctx(), "bob".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((report.items_erased, report.key_destroyed), (49, true));
        assert_eq!(
            export_all(&client, ExportScope::Namespace("tenant/a".into()))
                .await
                .unwrap()
                .len(),
            1
        );
        let compacted = client.compact(ctx()).await.unwrap().unwrap();
        assert!(compacted.database_bytes_after <= compacted.database_bytes_before);
        // A clean stop (SIGTERM) and a restart keep everything acknowledged.
        nix_kill(&service, libc::SIGTERM);
        drop(service);
        let service = Service::start(dir.path());
        let client = service.client().await;
        assert_eq!(
            client
                .get(ctx(), "tenant/a".into(), "k1".into())
                .await
                .unwrap()
                .unwrap(),
            got
        );
    });
}

fn nix_kill(service: &Service, signal: i32) {
    #[allow(unsafe_code)]
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    let rc = unsafe { libc::kill(service.child.id() as i32, signal) };
    assert_eq!(rc, 0);
}

const A_ITEMS: usize = 3000;
const B_ITEMS: usize = 300;
const NAMESPACES: [&str; 3] = ["tenant/shared", "subject/a", "brain/assistant"];

fn subject_items(subject: &str, n: usize, rng: &mut Rng) -> Vec<Item> {
    (0..n)
        .map(|i| {
            item(
                NAMESPACES[i % 3],
                &format!("{subject}-{i:05}"),
                subject,
                text(format!("{subject} secret {i}")),
                Some(rng.vector(16)),
            )
        })
        .collect()
}

/// How much of subject `a` the service returns, by every read path; panics
/// if the paths disagree or the subject is partly there.
async fn a_state(client: &MemoryClient) -> usize {
    let exported = match export_all(client, ExportScope::Subject("a".into())).await {
        Ok(items) => items.len(),
        Err(MemoryError::UnknownSubject { .. }) => 0,
        Err(other) => panic!("{other}"),
    };
    let mut listed = 0;
    for ns in NAMESPACES {
        let mut after = None;
        loop {
            let page = match client
                .list(
                    ctx(),
                    ListRequest {
                        namespace: ns.into(),
                        after,
                        limit: 1000,
                    },
                )
                .await
                .unwrap()
            {
                Ok(page) => page,
                Err(MemoryError::UnknownNamespace { .. }) => break,
                Err(other) => panic!("{other}"),
            };
            listed += page.items.iter().filter(|i| i.subject == "a").count();
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    let got = client
        .get(ctx(), NAMESPACES[1].into(), "a-00001".into())
        .await
        .unwrap();
    let hits = client
        .search(
            ctx(),
            SearchRequest {
                query: Embedding(vec![1.0; 16]),
                k: 100, // a third of the namespace is b's: some of a's make the top 100
                namespaces: Some(vec![NAMESPACES[1].into()]),
                metadata: Metadata::new(),
                include_values: false,
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exported, listed, "export and list disagree");
    assert!(
        exported == 0 || exported == A_ITEMS,
        "half an erasure is visible: {exported} items"
    );
    assert_eq!(got.is_ok(), exported > 0, "get disagrees");
    assert_eq!(
        hits.hits.iter().any(|h| h.subject == "a"),
        exported > 0,
        "search disagrees"
    );
    exported
}

#[test]
fn kill_9_at_random_points_of_an_erasure_never_leaves_half_or_resurrects() {
    let rt = runtime();
    let mut rng = Rng(0xE2A5E);
    let mut outcomes = BTreeMap::new();
    let mut erase_time = Duration::ZERO;
    for trial in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let b_items = subject_items("b", B_ITEMS, &mut rng);
        let a_items = subject_items("a", A_ITEMS, &mut rng);
        rt.block_on(async {
            let service = Service::start(dir.path());
            let client = service.client().await;
            import(&client, a_items.clone()).await;
            import(&client, b_items.clone()).await;
            if trial == 0 {
                // Calibrate: how long a whole erasure of this size takes here.
                import(&client, subject_items("calibration", A_ITEMS, &mut rng)).await;
                let started = Instant::now();
                client
                    .erase_subject(ctx(), "calibration".into())
                    .await
                    .unwrap()
                    .unwrap();
                erase_time = started.elapsed();
                eprintln!("an erasure of {A_ITEMS} items takes {erase_time:?} here");
            }
            // Mostly inside the erasure's window; now and then right at its start.
            let delay = if trial % 4 == 1 {
                Duration::from_micros(rng.below(2000))
            } else {
                erase_time.mul_f64(rng.below(1000) as f64 / 1000.0)
            };
            let eraser = {
                let client = client.clone();
                tokio::spawn(async move { client.erase_subject(ctx(), "a".into()).await })
            };
            tokio::time::sleep(delay).await;
            service.kill9();
            let acknowledged = matches!(eraser.await.unwrap(), Ok(Ok(_)));

            let service = Service::start(dir.path());
            let client = service.client().await;
            let left = a_state(&client).await;
            assert!(
                !(acknowledged && left > 0),
                "an acknowledged erasure came back"
            );
            let outcome = match (acknowledged, left) {
                (true, _) => "acknowledged, gone",
                (false, 0) => "killed mid-way, gone after recovery",
                (false, _) => "killed before the first commit, all there",
            };
            *outcomes.entry(outcome).or_insert(0) += 1;
            // B is intact, byte for byte.
            let mut b = export_all(&client, ExportScope::Subject("b".into()))
                .await
                .unwrap();
            b.sort_by(|x, y| x.key.cmp(&y.key));
            let mut expected = b_items.clone();
            expected.sort_by(|x, y| x.key.cmp(&y.key));
            assert_eq!(b, expected);
            // Finishing the erasure by hand, then a restart: still gone.
            client
                .erase_subject(ctx(), "a".into())
                .await
                .unwrap()
                .unwrap();
            service.kill9();
            let service = Service::start(dir.path());
            let client = service.client().await;
            assert_eq!(a_state(&client).await, 0);
        });
    }
    eprintln!("outcomes: {outcomes:?}");
}

#[test]
fn kill_9_under_concurrent_writers_loses_no_acknowledged_write() {
    let rt = runtime();
    let mut rng = Rng(0xC0FFEE);
    let dir = tempfile::tempdir().unwrap();
    // One data directory across rounds: each round's crash lands on the
    // previous rounds' data too.
    let mut acknowledged: BTreeMap<(String, String), Value> = BTreeMap::new();
    for round in 0..4 {
        let kill_after = Duration::from_millis(150 + rng.below(450));
        let acked = rt.block_on(async {
            let service = Service::start(dir.path());
            let mut clients = Vec::new();
            for _ in 0..4 {
                clients.push(service.client().await);
            }
            let acked: Acked = Arc::default();
            let mut writers = Vec::new();
            for writer in 0..8 {
                let client = clients[writer % clients.len()].clone();
                let acked = Arc::clone(&acked);
                writers.push(tokio::spawn(async move {
                    for i in 0.. {
                        let namespace = format!("tenant/w{}", writer % 3);
                        let key = format!("r{round}-w{writer}-{i:06}");
                        let value = if i % 2 == 0 {
                            text(format!("round {round} writer {writer} item {i}"))
                        } else {
                            Value::Bytes(format!("{round}/{writer}/{i}").into_bytes())
                        };
                        let request = put(
                            &namespace,
                            &key,
                            &format!("subject-{}", i % 5),
                            value.clone(),
                            &[("round", &round.to_string())],
                            (i % 3 == 0).then(|| vec![1.0, i as f32, writer as f32]),
                        );
                        match client.put(ctx(), request).await {
                            Ok(Ok(_)) => acked.lock().unwrap().push(((namespace, key), value)),
                            _ => return,
                        }
                    }
                }));
            }
            tokio::time::sleep(kill_after).await;
            service.kill9();
            for writer in writers {
                writer.await.unwrap();
            }
            std::mem::take(&mut *acked.lock().unwrap())
        });
        assert!(
            !acked.is_empty(),
            "round {round}: no write was acknowledged"
        );
        eprintln!(
            "round {round}: {} writes acknowledged before kill -9 at {kill_after:?}",
            acked.len()
        );
        acknowledged.extend(acked);
        rt.block_on(async {
            let service = Service::start(dir.path());
            let client = service.client().await;
            for ((namespace, key), value) in &acknowledged {
                let item = client
                    .get(ctx(), namespace.clone(), key.clone())
                    .await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("acknowledged {namespace}/{key} lost: {e}"));
                assert_eq!(&item.value, value);
            }
            // Every row opens (no half-written row), and nothing unacknowledged
            // beyond the in-flight writes appeared.
            let mut total = 0;
            for ns in ["tenant/w0", "tenant/w1", "tenant/w2"] {
                total += export_all(&client, ExportScope::Namespace(ns.into()))
                    .await
                    .unwrap()
                    .len();
            }
            assert!(total >= acknowledged.len() && total <= acknowledged.len() + 8 * (round + 1));
            service.kill9();
        });
    }
    let _ = ImportRequest { items: Vec::new() };
}

/// A full disk, made without root: the service's file-size limit is lowered
/// to just above memory.redb, so a commit that must grow the file fails
/// (EFBIG, as a full disk fails with ENOSPC). Writes are then refused with
/// the cause and what to do, and the service stays up; once the limit is
/// lifted ("space freed") memory reopens by itself at the next request, and
/// every acknowledged write is there.
#[test]
fn a_full_disk_refuses_writes_clearly_and_memory_reopens_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let mut service = Service::start_with(dir.path(), sios_ipc::testing::ignore_file_size_signal);
    let pid = service.child.id();
    runtime().block_on(async {
        let client = service.client().await;
        let store = |i: usize| {
            put(
                "tenant/shared",
                &format!("note-{i}"),
                "subject-a",
                text(format!("{i} {}", "x".repeat(4000))),
                &[],
                None,
            )
        };
        let mut acked = Vec::new();
        for i in 0..5 {
            client.put(ctx(), store(i)).await.unwrap().unwrap();
            acked.push(i);
        }
        let database = dir.path().join(sios_memory::DATABASE_FILE);
        sios_ipc::testing::cap_file_size(
            pid,
            std::fs::metadata(&database).unwrap().len() + 256 * 1024,
        );
        let mut refused = None;
        for i in 5..100_000 {
            match client.put(ctx(), store(i)).await.unwrap() {
                Ok(_) => acked.push(i),
                Err(err) => {
                    refused = Some(err);
                    break;
                }
            }
        }
        let refused = refused.expect("the capped store never refused a write");
        let message = refused.to_string();
        assert!(
            message.contains("File too large")
                && message.contains("free space on the disk holding")
                && message.contains(&dir.path().display().to_string()),
            "the refusal names the cause, the place and what to do: {message}"
        );
        // Still full: refused again with the same words (not the first
        // refusal wrapped inside a new one).
        for _ in 0..3 {
            let again = client.put(ctx(), store(0)).await.unwrap().unwrap_err();
            assert_eq!(again.to_string(), message);
        }
        assert!(
            service.child.try_wait().unwrap().is_none(),
            "the service died"
        );
        // Its health answer (what `sios status` shows) says the same, and
        // keeps saying it while the disk is full, reopen attempts or not.
        for _ in 0..3 {
            let fault = client.ready(ctx()).await.unwrap().fault;
            let fault = fault.expect("`ready` reports the closed store");
            assert!(
                fault.contains("File too large")
                    && fault.contains("free space on the disk holding"),
                "{fault}"
            );
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        sios_ipc::testing::cap_file_size(pid, libc::RLIM_INFINITY);
        let give_up = std::time::Instant::now() + Duration::from_secs(10);
        while let Some(fault) = client.ready(ctx()).await.unwrap().fault {
            assert!(
                std::time::Instant::now() < give_up,
                "memory did not report itself healthy within 10 s of space being freed: {fault}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let next = acked.len() + 1_000_000;
        client.put(ctx(), store(next)).await.unwrap().unwrap();
        acked.push(next);
        for i in acked {
            let item = client
                .get(ctx(), "tenant/shared".into(), format!("note-{i}"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(item.value, text(format!("{i} {}", "x".repeat(4000))));
        }
    });
}
