//! The store against real redb and key files in temporary directories.
//!
//! - CRUD, errors and namespace isolation
//! - pagination: stable cursor, byte budget
//! - search equals a brute-force reference on a few thousand items
//! - erasure: byte scan of every file for plaintext, embeddings and key bytes
//! - no resurrection: after delete and erase, across restart, across an
//!   erasure interrupted at each step, across export
//! - export/import round trip, exactly

mod common;

use common::{Rng, files_containing, item, put, scan, text};
use sios_ipc::{
    Embedding, ExportRequest, ExportScope, ImportRequest, Item, ListRequest, MemoryError, Metadata,
    PutRequest, SearchRequest, Value,
};
use sios_memory::jsonl::{export_jsonl, import_jsonl};
use sios_memory::{EraseStop, MemoryStore};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

fn list_all(store: &MemoryStore, namespace: &str, limit: u32) -> Vec<Item> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(&ListRequest {
                namespace: namespace.into(),
                after,
                limit,
            })
            .unwrap();
        assert!(page.items.len() <= limit.max(1) as usize);
        out.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return out,
        }
    }
}

fn export_all(store: &MemoryStore, scope: ExportScope) -> Result<Vec<Item>, MemoryError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store.export(&ExportRequest {
            scope: scope.clone(),
            after,
            limit: 333,
        })?;
        out.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(out),
        }
    }
}

fn search(store: &MemoryStore, query: &[f32], k: u32) -> Vec<(String, String)> {
    store
        .search(&SearchRequest {
            query: Embedding(query.to_vec()),
            k,
            namespaces: None,
            metadata: Metadata::new(),
            include_values: true,
        })
        .unwrap()
        .hits
        .into_iter()
        .map(|h| (h.namespace, h.key))
        .collect()
}

#[test]
fn crud_errors_and_namespace_isolation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("memory");
    {
        let store = MemoryStore::open(&data).unwrap();
        let first = store
            .put(&put(
                "tenant/a",
                "k",
                "alice",
                text("one"),
                &[("lang", "en")],
                Some(vec![1.0, 0.0]),
            ))
            .unwrap();
        assert!(first.created);
        store
            .put(&put(
                "tenant/b",
                "k",
                "bob",
                Value::Bytes(vec![0, 255, 7]),
                &[],
                None,
            ))
            .unwrap();
        let again = store
            .put(&put("tenant/a", "k", "alice", text("uno"), &[], None))
            .unwrap();
        assert!(!again.created);
        assert_eq!(again.created_ms, first.created_ms);
        assert!(again.updated_ms >= first.updated_ms);
        // The embedding went with the replacement.
        assert!(search(&store, &[1.0, 0.0], 5).is_empty());

        let a = store.get("tenant/a", "k").unwrap();
        assert_eq!((a.subject.as_str(), &a.value), ("alice", &text("uno")));
        assert!(a.metadata.is_empty() && a.embedding.is_none());
        assert_eq!(
            store.get("tenant/b", "k").unwrap().value,
            Value::Bytes(vec![0, 255, 7])
        );
        assert!(matches!(
            store.get("tenant/c", "k"),
            Err(MemoryError::UnknownNamespace { .. })
        ));
        assert!(matches!(
            store.get("tenant/a", "nope"),
            Err(MemoryError::NotFound { .. })
        ));
        assert!(matches!(
            store.get("bad//ns", "k"),
            Err(MemoryError::InvalidName { .. })
        ));
        assert!(matches!(
            store.put(&put(
                "tenant/a",
                "k",
                "alice",
                Value::Bytes(vec![0; sios_ipc::MAX_VALUE_BYTES + 1]),
                &[],
                None
            )),
            Err(MemoryError::TooLarge { .. })
        ));
        assert!(matches!(
            store.put(&put("tenant/a", "k", "bad subject", text("x"), &[], None)),
            Err(MemoryError::InvalidName { .. })
        ));
        // Isolation: each namespace sees only its own items, search filters too.
        assert_eq!(list_all(&store, "tenant/a", 10).len(), 1);
        store
            .put(&put(
                "tenant/b",
                "v",
                "bob",
                text("b"),
                &[],
                Some(vec![0.0, 1.0]),
            ))
            .unwrap();
        let hits = store
            .search(&SearchRequest {
                query: Embedding(vec![0.0, 1.0]),
                k: 10,
                namespaces: Some(vec!["tenant/a".into()]),
                metadata: Metadata::new(),
                include_values: true,
            })
            .unwrap();
        assert!(hits.hits.is_empty());

        store.delete("tenant/a", "k").unwrap();
        assert!(matches!(
            store.delete("tenant/a", "k"),
            Err(MemoryError::UnknownNamespace { .. })
        ));
        assert!(matches!(
            store.delete("tenant/b", "zz"),
            Err(MemoryError::NotFound { .. })
        ));
    }
    // Durable across reopen; the directory and files are private.
    let store = MemoryStore::open(&data).unwrap();
    assert!(matches!(
        store.get("tenant/a", "k"),
        Err(MemoryError::UnknownNamespace { .. })
    ));
    assert_eq!(
        store.get("tenant/b", "k").unwrap().value,
        Value::Bytes(vec![0, 255, 7])
    );
    assert_eq!(
        search(&store, &[0.0, 1.0], 1),
        [("tenant/b".to_owned(), "v".to_owned())]
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for (path, _) in common::files(&data) {
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

#[test]
fn pagination_is_stable_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::open(dir.path()).unwrap();
    let mut rng = Rng(7);
    let mut keys = BTreeSet::new();
    let mut items = Vec::new();
    for i in 0..2500 {
        let key = format!("k{:08x}", rng.next_u64() as u32);
        keys.insert(key.clone());
        items.push(item(
            "ns",
            &key,
            &format!("s{}", i % 5),
            text(format!("v{i}")),
            None,
        ));
    }
    for chunk in sios_ipc::import_chunks(items) {
        store.import(&chunk).unwrap();
    }
    for limit in [1, 7, 100, 5000] {
        let got: Vec<String> = list_all(&store, "ns", limit)
            .into_iter()
            .map(|i| i.key)
            .collect();
        assert_eq!(
            got,
            keys.iter().cloned().collect::<Vec<_>>(),
            "limit {limit}"
        );
    }
    // Writes between pages: items present for the whole walk come exactly once.
    let first = store
        .list(&ListRequest {
            namespace: "ns".into(),
            after: None,
            limit: 50,
        })
        .unwrap();
    let cursor = first.next.clone().unwrap();
    store
        .put(&put(
            "ns",
            "a-before-everything",
            "s0",
            text("x"),
            &[],
            None,
        ))
        .unwrap();
    store
        .put(&put(
            "ns",
            "zzz-after-everything",
            "s0",
            text("x"),
            &[],
            None,
        ))
        .unwrap();
    let victim = keys.iter().nth(60).unwrap().clone();
    store.delete("ns", &victim).unwrap();
    let mut rest = Vec::new();
    let mut after = Some(cursor);
    while let Some(a) = after {
        let page = store
            .list(&ListRequest {
                namespace: "ns".into(),
                after: Some(a),
                limit: 97,
            })
            .unwrap();
        rest.extend(page.items.into_iter().map(|i| i.key));
        after = page.next;
    }
    let mut walked: Vec<String> = first.items.into_iter().map(|i| i.key).collect();
    walked.extend(rest);
    let mut expected: Vec<String> = keys.iter().filter(|k| **k != victim).cloned().collect();
    expected.push("zzz-after-everything".into());
    assert_eq!(walked, expected);

    // The largest value there may be goes in and comes out whole (the page
    // byte budget itself is a unit test of the store: sealing megabytes is
    // slow in a debug build).
    let biggest = Value::Bytes((0..sios_ipc::MAX_VALUE_BYTES).map(|i| i as u8).collect());
    store
        .put(&put("big", "max", "s", biggest.clone(), &[], None))
        .unwrap();
    assert_eq!(store.get("big", "max").unwrap().value, biggest);
}

/// Cosine similarity in f64, straight from the definition.
fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn search_equals_a_brute_force_reference() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::open(dir.path()).unwrap();
    let mut rng = Rng(42);
    let dims = 24;
    let namespaces = ["tenant/a", "tenant/b", "brain/x"];
    let colours = ["red", "green", "blue"];
    let mut items = Vec::new();
    for i in 0..3000 {
        let mut it = item(
            namespaces[i % 3],
            &format!("item-{:05}", rng.below(100_000)),
            &format!("subject-{}", i % 17),
            text(format!("value {i}")),
            // Every 10th vector repeats an earlier one: exact ties must break by (namespace, key).
            Some(if i % 10 == 9 {
                items
                    .iter()
                    .map(|x: &Item| x.embedding.clone().unwrap().0)
                    .nth(i / 2)
                    .unwrap()
            } else {
                rng.vector(dims)
            }),
        );
        it.metadata
            .insert("colour".into(), colours[rng.below(3) as usize].into());
        items.push(it);
    }
    // 100 items of another dimension never match a 24-dim query.
    for i in 0..100 {
        items.push(item(
            "tenant/a",
            &format!("other-dim-{i}"),
            "s",
            text("x"),
            Some(rng.vector(8)),
        ));
    }
    for chunk in sios_ipc::import_chunks(items) {
        store.import(&chunk).unwrap();
    }
    // The reference reads everything back through the public API.
    let all: Vec<Item> = namespaces
        .iter()
        .flat_map(|ns| list_all(&store, ns, 1000))
        .collect();
    assert!(all.len() > 2900);
    for round in 0..40 {
        let query = if round % 4 == 0 {
            all[rng.below(all.len() as u64) as usize]
                .embedding
                .clone()
                .unwrap()
                .0
        } else {
            rng.vector(dims)
        };
        if query.len() != dims {
            continue;
        }
        let k = [1, 5, 10, 100][round % 4];
        let ns_filter: Option<Vec<String>> =
            (round % 3 == 1).then(|| vec!["tenant/b".into(), "brain/x".into(), "absent/ns".into()]);
        let mut metadata = Metadata::new();
        if round % 5 == 2 {
            metadata.insert("colour".into(), "green".into());
        }
        let response = store
            .search(&SearchRequest {
                query: Embedding(query.clone()),
                k,
                namespaces: ns_filter.clone(),
                metadata: metadata.clone(),
                include_values: round % 2 == 0,
            })
            .unwrap();
        let mut reference: Vec<(f64, &Item)> = all
            .iter()
            .filter(|it| it.embedding.as_ref().unwrap().0.len() == dims)
            .filter(|it| ns_filter.as_ref().is_none_or(|f| f.contains(&it.namespace)))
            .filter(|it| metadata.iter().all(|(k, v)| it.metadata.get(k) == Some(v)))
            .map(|it| (cosine(&query, &it.embedding.as_ref().unwrap().0), it))
            .collect();
        assert_eq!(response.scanned, reference.len() as u64);
        reference.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then_with(|| (&a.1.namespace, &a.1.key).cmp(&(&b.1.namespace, &b.1.key)))
        });
        reference.truncate(k as usize);
        assert_eq!(response.hits.len(), reference.len());
        let exact: BTreeMap<(&str, &str), f64> = all
            .iter()
            .filter(|it| it.embedding.as_ref().unwrap().0.len() == dims)
            .map(|it| {
                (
                    (it.namespace.as_str(), it.key.as_str()),
                    cosine(&query, &it.embedding.as_ref().unwrap().0),
                )
            })
            .collect();
        let mut seen = BTreeSet::new();
        for (rank, (hit, (ref_score, ref_item))) in response.hits.iter().zip(&reference).enumerate()
        {
            assert!(seen.insert((&hit.namespace, &hit.key)), "duplicate hit");
            assert!(
                (f64::from(hit.score) - ref_score).abs() < 1e-5,
                "round {round} rank {rank}"
            );
            // Same item, or one the reference scores equal within f32 rounding.
            let hit_exact = exact[&(hit.namespace.as_str(), hit.key.as_str())];
            assert!(
                (hit.namespace == ref_item.namespace && hit.key == ref_item.key)
                    || (hit_exact - ref_score).abs() < 1e-6,
                "round {round} rank {rank}: {}/{} vs {}/{}",
                hit.namespace,
                hit.key,
                ref_item.namespace,
                ref_item.key
            );
            assert_eq!(hit.value.is_some(), round % 2 == 0);
        }
    }
    // Exact ties (identical vectors) come out in (namespace, key) order.
    let twin = vec![0.25f32; dims];
    for (ns, key) in [
        ("tenant/b", "t2"),
        ("tenant/a", "t9"),
        ("tenant/b", "t1"),
        ("tenant/a", "t0"),
    ] {
        store
            .put(&put(ns, key, "twins", text("x"), &[], Some(twin.clone())))
            .unwrap();
    }
    let hits = search(&store, &twin, 4);
    let expected: Vec<(String, String)> = [
        ("tenant/a", "t0"),
        ("tenant/a", "t9"),
        ("tenant/b", "t1"),
        ("tenant/b", "t2"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(hits, expected);
    assert!(matches!(
        store.search(&SearchRequest {
            query: Embedding(vec![0.0; dims]),
            k: 1,
            namespaces: None,
            metadata: Metadata::new(),
            include_values: false
        }),
        Err(MemoryError::Invalid(_))
    ));
    assert!(matches!(
        store.search(&SearchRequest {
            query: Embedding(twin.clone()),
            k: 101,
            namespaces: None,
            metadata: Metadata::new(),
            include_values: false
        }),
        Err(MemoryError::Invalid(_))
    ));
}

/// A distinctive embedding: its first four floats, as bytes, are the pattern
/// the byte scan looks for.
const A_PATTERN: [f32; 4] = [1.234_567_8, -7.654_321, 3.333_111_7, 0.000_123_4];
const B_PATTERN: [f32; 4] = [2.222_333_7, -1.515_151_5, 9.876_543, 0.000_987_6];

fn pattern_bytes(p: &[f32; 4]) -> Vec<u8> {
    p.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn embedding_with(pattern: &[f32; 4], rng: &mut Rng) -> Vec<f32> {
    let mut v = pattern.to_vec();
    v.extend(rng.vector(12));
    v
}

/// Subject A and B, each with items in three namespaces (one shared).
fn fill_two_subjects(store: &MemoryStore, per_subject: usize) -> (Vec<String>, Vec<String>) {
    let mut rng = Rng(99);
    let mut a_values = Vec::new();
    let mut b_values = Vec::new();
    for i in 0..per_subject {
        for (subject, pattern, values, own_ns, prefix) in [
            (
                "subject-a",
                &A_PATTERN,
                &mut a_values,
                "subject/a-notes",
                "alpha",
            ),
            (
                "subject-b",
                &B_PATTERN,
                &mut b_values,
                "subject/b-notes",
                "beta",
            ),
        ] {
            let value = format!("{subject}-PLAINTEXT-{i:05}-{:016x}", rng.next_u64());
            let meta_value = format!("{subject}-META-{i:05}");
            let namespace = ["tenant/shared", own_ns, "brain/assistant"][i % 3];
            store
                .put(&put(
                    namespace,
                    &format!("{prefix}/item-{i}"),
                    subject,
                    if i % 4 == 3 {
                        Value::Bytes(value.clone().into_bytes())
                    } else {
                        text(value.clone())
                    },
                    &[("note", &meta_value)],
                    Some(embedding_with(pattern, &mut rng)),
                ))
                .unwrap();
            values.push(value);
            values.push(meta_value);
        }
    }
    (a_values, b_values)
}

fn assert_subject_a_is_gone(store: &MemoryStore, b_items: usize) {
    for ns in ["tenant/shared", "brain/assistant", "subject/b-notes"] {
        assert!(
            list_all(store, ns, 1000)
                .iter()
                .all(|i| i.subject == "subject-b")
        );
    }
    assert!(matches!(
        store.list(&ListRequest {
            namespace: "subject/a-notes".into(),
            after: None,
            limit: 10
        }),
        Err(MemoryError::UnknownNamespace { .. })
    ));
    assert!(matches!(
        store.get("tenant/shared", "alpha/item-0"),
        Err(MemoryError::NotFound { .. })
    ));
    let mut probe = A_PATTERN.to_vec();
    probe.extend([0.0; 12]);
    let hits = store
        .search(&SearchRequest {
            query: Embedding(probe),
            k: 100,
            namespaces: None,
            metadata: Metadata::new(),
            include_values: true,
        })
        .unwrap();
    assert!(!hits.hits.is_empty() && hits.hits.iter().all(|h| h.subject == "subject-b"));
    assert!(matches!(
        export_all(store, ExportScope::Subject("subject-a".into())),
        Err(MemoryError::UnknownSubject { .. })
    ));
    assert!(
        export_all(store, ExportScope::Namespace("tenant/shared".into()))
            .unwrap()
            .iter()
            .all(|i| i.subject == "subject-b")
    );
    assert!(store.subject_key_bytes("subject-a").is_none());
    // B is whole.
    assert_eq!(
        export_all(store, ExportScope::Subject("subject-b".into()))
            .unwrap()
            .len(),
        b_items
    );
}

#[test]
fn erased_subject_leaves_no_plaintext_embedding_or_key_bytes_in_any_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("memory");
    let store = MemoryStore::open(&data).unwrap();
    let (a_values, b_values) = fill_two_subjects(&store, 150);
    let a_key = store.subject_key_bytes("subject-a").unwrap();
    let b_key = store.subject_key_bytes("subject-b").unwrap();
    // The scanner works: the live keys are found (in the key file only).
    assert_eq!(files_containing(&data, &a_key), [data.join("subject-keys")]);
    assert_eq!(files_containing(&data, &b_key), [data.join("subject-keys")]);
    // Encrypted at rest: no value, metadata or embedding in clear, even before erasure.
    let all: Vec<&[u8]> = a_values
        .iter()
        .chain(&b_values)
        .map(|v| v.as_bytes())
        .collect();
    for (v, found) in all.iter().zip(scan(&data, &all)) {
        assert!(found.is_empty(), "{} in clear", String::from_utf8_lossy(v));
    }
    assert!(files_containing(&data, &pattern_bytes(&A_PATTERN)).is_empty());
    assert!(files_containing(&data, &pattern_bytes(&B_PATTERN)).is_empty());

    let report = store.erase_subject("subject-a").unwrap();
    assert_eq!(report.items_erased, 150);
    assert_eq!(
        report.namespaces,
        ["brain/assistant", "subject/a-notes", "tenant/shared"]
    );
    assert!(report.key_destroyed);
    // The key is gone from every file at once, before any compaction.
    assert!(files_containing(&data, &a_key).is_empty());
    assert!(
        files_containing(&data, b"subject-a").is_empty(),
        "the subject id lingers"
    );
    store.compact().unwrap();
    let scan = |data: &Path| {
        let a: Vec<&[u8]> = a_values.iter().map(|v| v.as_bytes()).collect();
        for (v, found) in a.iter().zip(scan(data, &a)) {
            assert!(found.is_empty(), "{}", String::from_utf8_lossy(v));
        }
        assert!(files_containing(data, &pattern_bytes(&A_PATTERN)).is_empty());
        assert!(files_containing(data, &a_key).is_empty());
        assert_eq!(files_containing(data, &b_key), [data.join("subject-keys")]);
    };
    scan(&data);
    assert_subject_a_is_gone(&store, 150);
    for i in (0..150).step_by(7) {
        let item = store
            .get(
                ["tenant/shared", "subject/b-notes", "brain/assistant"][i % 3],
                &format!("beta/item-{i}"),
            )
            .unwrap();
        assert_eq!(item.value.as_bytes(), b_values[2 * i].as_bytes());
        assert_eq!(item.metadata["note"], b_values[2 * i + 1]);
        assert_eq!(&item.embedding.unwrap().0[..4], &B_PATTERN);
    }
    drop(store);
    // And after a restart (which compacts nothing more but rebuilds everything).
    let store = MemoryStore::open(&data).unwrap();
    scan(&data);
    assert_subject_a_is_gone(&store, 150);
    // Erasing again is harmless and says nothing was held.
    let again = store.erase_subject("subject-a").unwrap();
    assert!(!again.key_destroyed && again.items_erased == 0);
}

#[test]
fn an_erasure_interrupted_at_any_step_completes_on_restart() {
    for stop in [EraseStop::AfterTombstone, EraseStop::AfterKeyDestroyed] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("memory");
        let a_key = {
            let store = MemoryStore::open(&data).unwrap();
            fill_two_subjects(&store, 150);
            let a_key = store.subject_key_bytes("subject-a").unwrap();
            assert!(store.erase_subject_interrupted("subject-a", stop).is_err());
            a_key
        };
        if stop == EraseStop::AfterTombstone {
            assert!(
                !files_containing(&data, &a_key).is_empty(),
                "the crash came before the key went"
            );
        }
        let store = MemoryStore::open(&data).unwrap();
        assert_subject_a_is_gone(&store, 150);
        assert!(files_containing(&data, &a_key).is_empty(), "{stop:?}");
        assert_eq!(store.item_count().unwrap(), 150);
        drop(store);
        let store = MemoryStore::open(&data).unwrap();
        assert_subject_a_is_gone(&store, 150);
    }
}

/// A write that fails after an erasure's tombstone closes memory.redb; the
/// first write after the reopen finishes the erasure on the live store,
/// whose search index must then forget the subject too (not only after a
/// restart).
#[test]
fn an_erasure_finished_after_a_reopen_leaves_nothing_in_the_live_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::open(&dir.path().join("memory")).unwrap();
    fill_two_subjects(&store, 150);
    assert!(
        store
            .erase_subject_interrupted("subject-a", EraseStop::AfterTombstone)
            .is_err()
    );
    store.recover_as_after_reopen().unwrap();
    assert_subject_a_is_gone(&store, 150);
    assert_eq!(store.item_count().unwrap(), 150);
}

/// redb can report a commit failed after its data became durable. The
/// store closes memory.redb on the failure and the next request reopens it;
/// what the file then holds must be counted and searchable. Stands in for
/// that: a store that counts three items, closed as after a failed write,
/// over a file that holds a fourth (`tenant/shared/note-3`, found by the
/// returned query). The directory must outlive the store.
fn closed_over_a_landed_item() -> (tempfile::TempDir, MemoryStore, Vec<f32>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("memory");
    let db_file = data.join(sios_memory::DATABASE_FILE);
    {
        let store = MemoryStore::open(&data).unwrap();
        for i in 0..3 {
            store.put(&embedded_note(i)).unwrap();
        }
    }
    let three_items = std::fs::read(&db_file).unwrap();
    {
        let store = MemoryStore::open(&data).unwrap();
        store.put(&embedded_note(3)).unwrap();
    }
    let four_items = std::fs::read(&db_file).unwrap();
    std::fs::write(&db_file, &three_items).unwrap();

    let store = MemoryStore::open(&data).unwrap();
    assert_eq!(store.usage().items, 3);
    let mut query = vec![0.0f32; 8];
    query[3] = 1.0;
    assert!(!search(&store, &query, 4).contains(&landed_item()));
    // The failed commit: memory.redb closes, and the file holds the item.
    store.close_as_after_failure();
    std::fs::write(&db_file, &four_items).unwrap();
    (dir, store, query)
}

/// `tenant/shared/note-<i>`, for subject-a, embedded along axis `i` of 8.
fn embedded_note(i: usize) -> PutRequest {
    let mut embedding = vec![0.0f32; 8];
    embedding[i] = 1.0;
    put(
        "tenant/shared",
        &format!("note-{i}"),
        "subject-a",
        text(format!("note {i}")),
        &[],
        Some(embedding),
    )
}

fn landed_item() -> (String, String) {
    ("tenant/shared".into(), "note-3".into())
}

#[test]
fn the_first_write_after_a_reopen_counts_and_indexes_what_the_file_holds() {
    let (dir, store, query) = closed_over_a_landed_item();
    store.put(&embedded_note(4)).unwrap();
    assert_eq!(store.usage().items, 5, "the landed item is not counted");
    assert!(
        search(&store, &query, 4).contains(&landed_item()),
        "the landed item is not in the live search index"
    );
    let live = store.usage();
    drop(store);
    let reopened = MemoryStore::open(&dir.path().join("memory")).unwrap();
    assert_eq!(reopened.usage(), live);
}

/// No write needed: the request that reopens memory.redb (here the health
/// check `sios status` makes) takes in what it holds.
#[test]
fn a_reopen_by_a_read_counts_and_indexes_what_the_file_holds() {
    let (_dir, store, query) = closed_over_a_landed_item();
    assert_eq!(store.health(), None, "memory.redb did not reopen");
    assert_eq!(store.usage().items, 4, "the landed item is not counted");
    assert_eq!(store.indexed(), 4, "the landed item is not indexed");
    assert!(
        search(&store, &query, 4).contains(&landed_item()),
        "the landed item is not found by a search"
    );
}

/// A reopened memory.redb whose rows cannot be read (here: a file from
/// another store, sealed under other keys, put in place while closed) is
/// reported by the health check at once, and refuses writes with the row's
/// name, rather than passing for healthy memory.
#[test]
fn a_reopened_file_that_cannot_be_read_is_reported_and_refuses_writes() {
    let other = tempfile::tempdir().unwrap();
    let other_data = other.path().join("memory");
    {
        let store = MemoryStore::open(&other_data).unwrap();
        store.put(&embedded_note(0)).unwrap();
    }
    let foreign = std::fs::read(other_data.join(sios_memory::DATABASE_FILE)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("memory");
    let store = MemoryStore::open(&data).unwrap();
    store.put(&embedded_note(0)).unwrap();
    store.close_as_after_failure();
    std::fs::write(data.join(sios_memory::DATABASE_FILE), &foreign).unwrap();

    let health = store
        .health()
        .expect("an unreadable reopened file passed for healthy");
    assert!(
        health.contains("reopened after a failed write")
            && health.contains("`note-0`")
            && health.contains("cannot be read"),
        "{health}"
    );
    let refused = store.put(&embedded_note(1)).unwrap_err().to_string();
    assert!(
        refused.contains("`note-0`") && refused.contains("cannot be read"),
        "{refused}"
    );
    assert!(
        store.health().is_some(),
        "the fault was forgotten after a write"
    );
}

#[test]
fn a_damaged_file_at_reopen_is_blamed_on_the_file_and_the_good_one_serves_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("memory");
    let db_file = data.join(sios_memory::DATABASE_FILE);
    let store = MemoryStore::open(&data).unwrap();
    store.put(&embedded_note(0)).unwrap();
    store.close_as_after_failure();
    let good = std::fs::read(&db_file).unwrap();
    let garbage: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let cut_short = good[..good.len() / 3].to_vec();

    for (damage, contents, words) in [
        ("garbage", garbage, "Not a redb database"),
        ("a file cut short", cut_short, "truncated"),
    ] {
        std::fs::write(&db_file, &contents).unwrap();
        // A reopen is tried at most once a second.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let refused = store.put(&embedded_note(1)).unwrap_err().to_string();
        for told in [
            refused,
            store.health().expect("a closed store passed for healthy"),
        ] {
            assert!(
                told.contains(words)
                    && told.contains("cannot be read as its database")
                    && told.contains("put back the latest backup")
                    && told.contains(&db_file.display().to_string())
                    && !told.contains("free space")
                    && !told.contains("nothing stored is lost"),
                "{damage}: {told}"
            );
        }
        assert!(
            store.get("tenant/shared", "note-0").is_err(),
            "{damage}: a read was served from a closed store"
        );
    }

    std::fs::write(&db_file, &good).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    store.put(&embedded_note(1)).unwrap();
    assert_eq!(store.health(), None);
    assert_eq!(
        store.usage().items,
        2,
        "the restored file's item and the new one"
    );
    drop(store);

    // The same file damaged while the service is down: its start says so.
    std::fs::write(&db_file, b"not a database at all").unwrap();
    let Err(refused) = MemoryStore::open(&data) else {
        panic!("opened a damaged file");
    };
    let refused = refused.to_string();
    assert!(
        refused.contains("cannot be read as its database") && !refused.contains("free space"),
        "{refused}"
    );
}

#[test]
fn deleted_and_erased_items_never_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("memory");
    {
        let store = MemoryStore::open(&data).unwrap();
        fill_two_subjects(&store, 150);
        store.delete("subject/b-notes", "beta/item-1").unwrap();
        store.erase_subject("subject-a").unwrap();
        // The same keys written again under a new incarnation of A hold only the new data.
        store
            .put(&put(
                "tenant/shared",
                "alpha/item-0",
                "subject-a",
                text("fresh"),
                &[],
                None,
            ))
            .unwrap();
        let export = export_all(&store, ExportScope::Subject("subject-a".into())).unwrap();
        assert_eq!(export.len(), 1);
        assert_eq!(export[0].value, text("fresh"));
        store.erase_subject("subject-a").unwrap();
    }
    for _ in 0..2 {
        let store = MemoryStore::open(&data).unwrap();
        assert_subject_a_is_gone(&store, 149);
        assert!(matches!(
            store.get("subject/b-notes", "beta/item-1"),
            Err(MemoryError::NotFound { .. })
        ));
        assert!(
            !list_all(&store, "subject/b-notes", 1000)
                .iter()
                .any(|i| i.key == "beta/item-1")
        );
        let mut out = Vec::new();
        export_jsonl(
            &store,
            ExportScope::Namespace("tenant/shared".into()),
            0,
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("subject-a"));
    }
}

#[test]
fn export_then_import_restores_everything_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let source = MemoryStore::open(&dir.path().join("source")).unwrap();
    let mut rng = Rng(5);
    let mut expected = Vec::new();
    for i in 0..1200 {
        let mut it = item(
            "tenant/acme",
            &format!("doc/{i:04} ünïcode \"quoted\""),
            &format!("person-{}", i % 9),
            if i % 3 == 0 {
                Value::Bytes((0..(i % 50)).map(|_| rng.next_u64() as u8).collect())
            } else {
                text(format!("line one\nline two {i} \u{1F600}"))
            },
            (i % 2 == 0).then(|| (0..384).map(|_| rng.unit() * 3.0e-3).collect()),
        );
        it.metadata.insert("source".into(), format!("s{}", i % 4));
        it.metadata.insert("a:b".into(), "\"json\" \\ chars".into());
        it.created_ms = 1_600_000_000_000 + i as u64;
        it.updated_ms = 1_650_000_000_000 + i as u64;
        expected.push(it);
    }
    for chunk in sios_ipc::import_chunks(expected.clone()) {
        source.import(&chunk).unwrap();
    }
    let mut file = Vec::new();
    let count = export_jsonl(
        &source,
        ExportScope::Namespace("tenant/acme".into()),
        1_700_000_000_000,
        &mut file,
    )
    .unwrap();
    assert_eq!(count, 1200);
    let text = String::from_utf8(file.clone()).unwrap();
    assert!(text.starts_with(
        r#"{"type":"header","format":"sios-memory-export","version":1,"exported_at_ms":1700000000000,"scope":{"namespace":"tenant/acme"}}"#
    ));
    // Readable without sios: every line is plain JSON.
    for line in text.lines() {
        let _: serde_json::Value = serde_json::from_str(line).unwrap();
    }
    let target = MemoryStore::open(&dir.path().join("target")).unwrap();
    let report = import_jsonl(&target, &file[..]).unwrap();
    assert_eq!((report.created, report.replaced), (1200, 0));
    expected.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(list_all(&target, "tenant/acme", 1000), expected);
    // Bit-exact embeddings, and a second export is byte-identical.
    let mut again = Vec::new();
    export_jsonl(
        &target,
        ExportScope::Namespace("tenant/acme".into()),
        1_700_000_000_000,
        &mut again,
    )
    .unwrap();
    assert!(again == file, "re-export differs");
    // Importing again replaces in place.
    let report = import_jsonl(&target, &file[..]).unwrap();
    assert_eq!((report.created, report.replaced), (0, 1200));
    // A subject export holds just that subject, across namespaces.
    let person = export_all(&target, ExportScope::Subject("person-3".into())).unwrap();
    assert!(!person.is_empty() && person.iter().all(|i| i.subject == "person-3"));
    // A wrong version or a missing header is refused.
    assert!(
        import_jsonl(
            &target,
            text.replacen("\"version\":1", "\"version\":9", 1)
                .as_bytes()
        )
        .is_err()
    );
    let no_header: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
    assert!(import_jsonl(&target, no_header.as_bytes()).is_err());
    assert!(matches!(
        target.import(&ImportRequest {
            items: vec![expected[0].clone(); 1001]
        }),
        Err(MemoryError::TooLarge { .. })
    ));
}

#[test]
fn a_database_without_its_key_file_is_refused_not_served() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = MemoryStore::open(dir.path()).unwrap();
        store
            .put(&put("ns", "k", "alice", text("v"), &[], None))
            .unwrap();
    }
    std::fs::remove_file(dir.path().join("subject-keys")).unwrap();
    for _ in 0..2 {
        let err = MemoryStore::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("holds 1 items but"), "{err}");
    }
    // A key file that is not one is refused too, and left untouched.
    std::fs::write(dir.path().join("subject-keys"), b"not a key file at all").unwrap();
    let err = MemoryStore::open(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("not a sios subject-key file"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("subject-keys")).unwrap(),
        b"not a key file at all"
    );
}

/// `[memory]` limits: an owner's quota spans all its namespaces, the
/// store's item and byte limits bind everyone, a refused write (or import
/// chunk) stores nothing, freeing makes room, and the count survives a
/// restart and an erasure.
#[test]
fn quotas_bind_owners_and_the_store_and_refused_writes_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("memory");
    let kib = |n: usize| text("x".repeat(n * 1024));
    let quotas = sios_memory::Quotas {
        owner_bytes: 10 * 1024,
        total_bytes: 16 * 1024,
        total_items: 6,
    };
    let store = MemoryStore::open_with(&data, quotas).unwrap();
    let quota_refusal = |err: MemoryError, setting: &str| match err {
        MemoryError::QuotaExceeded {
            setting: got,
            would,
            limit,
            ..
        } => {
            assert_eq!(got, setting);
            assert!(would > limit, "{would} {limit}");
        }
        other => panic!("expected a quota refusal naming {setting}, got {other}"),
    };

    // client:a fills its quota across two namespaces.
    store
        .put(&put("client:a/one", "k1", "s1", kib(4), &[], None))
        .unwrap();
    store
        .put(&put("client:a/two", "k2", "s1", kib(4), &[], None))
        .unwrap();
    let err = store
        .put(&put("client:a/three", "k3", "s1", kib(4), &[], None))
        .unwrap_err();
    assert!(
        err.to_string().contains("[memory] owner_quota_mib"),
        "{err}"
    );
    quota_refusal(err, "owner_quota_mib");
    assert!(
        matches!(
            store.get("client:a/three", "k3"),
            Err(MemoryError::UnknownNamespace { .. })
        ),
        "a refused put left something"
    );
    // Nor does a refused put for a new subject leave that subject's key.
    quota_refusal(
        store
            .put(&put("client:a/three", "k3", "s-new", kib(8), &[], None))
            .unwrap_err(),
        "owner_quota_mib",
    );
    assert_eq!(
        store.subject_key_bytes("s-new"),
        None,
        "a refused put kept a key"
    );
    // Replacing an item with a smaller one always passes; growing it back
    // past the quota does not.
    store
        .put(&put("client:a/one", "k1", "s1", kib(1), &[], None))
        .unwrap();
    quota_refusal(
        store
            .put(&put("client:a/one", "k1", "s1", kib(6), &[], None))
            .unwrap_err(),
        "owner_quota_mib",
    );

    // Another owner has its own quota, but the store's bytes bind both.
    store
        .put(&put("client:b/x", "k", "s2", kib(6), &[], None))
        .unwrap();
    quota_refusal(
        store
            .put(&put("tenant/acme", "k", "s2", kib(6), &[], None))
            .unwrap_err(),
        "capacity_mib",
    );
    // An import chunk over a limit is refused whole.
    let chunk: Vec<Item> = (0..4)
        .map(|i| item("tenant/acme", &format!("i{i}"), "s2", text("small"), None))
        .collect();
    quota_refusal(
        store
            .import(&ImportRequest {
                items: chunk.clone(),
            })
            .unwrap_err(),
        "max_items",
    );
    assert!(matches!(
        store.get("tenant/acme", "i0"),
        Err(MemoryError::UnknownNamespace { .. })
    ));
    let before = store.usage();
    assert_eq!(before.items, 3);
    drop(store);

    // The count is measured again at open, and freeing makes room.
    let store = MemoryStore::open_with(&data, quotas).unwrap();
    assert_eq!(store.usage(), before);
    store.delete("client:b/x", "k").unwrap();
    store.import(&ImportRequest { items: chunk }).unwrap();
    assert_eq!(store.usage().items, 6);
    quota_refusal(
        store
            .put(&put("tenant/other", "k", "s3", text("one more"), &[], None))
            .unwrap_err(),
        "max_items",
    );
    let report = store.erase_subject("s2").unwrap();
    assert_eq!(report.items_erased, 4);
    let after = store.usage();
    assert_eq!(after.items, 2);
    assert_eq!(
        after.by_owner.keys().collect::<Vec<_>>(),
        ["client:a"],
        "an erased subject's bytes still counted"
    );
    store
        .put(&put("tenant/other", "k", "s3", text("one more"), &[], None))
        .unwrap();
    drop(store);
    let reopened = MemoryStore::open_with(&data, quotas).unwrap();
    assert_eq!(reopened.usage().items, 3);
    assert_eq!(reopened.usage().bytes, {
        let mut expect = after.bytes;
        expect += reopened.usage().by_owner["tenant/other"];
        expect
    });
}
