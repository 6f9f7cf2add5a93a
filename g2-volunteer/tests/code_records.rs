//! Code records on an in-process network: a published bundle is found and
//! fetched whole; an altered chunk copy is detected and another copy used;
//! a bundle whose every copy of a chunk is altered is refused; manifests of
//! untrusted publishers or of another target are refused with the reason.

use std::sync::Arc;
use std::time::Duration;

use g2::TypeProvider;
use g2::testing::{Routing, TestNet};
use g2_volunteer::code::bundle::{Bundle, CHUNK_SIZE, PublisherKey, TARGET};
use g2_volunteer::code::records::{self, Chunk, chunk_id, fetch_binary, list_manifests};
use g2_volunteer::code::{CodeSettings, NetworkCode, register_records};

async fn network(n: usize) -> TestNet {
    TestNet::new(
        Routing::Pastry,
        "code.test",
        n,
        Duration::from_secs(20),
        register_records,
    )
    .await
}

/// 2.5 chunks of bytes that differ per `salt`.
fn binary(salt: u8) -> Vec<u8> {
    (0..CHUNK_SIZE * 5 / 2)
        .map(|i| (i % 251) as u8 ^ salt)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_bundle_is_listed_and_fetched_whole() {
    let net = network(4).await;
    let node = net.live()[0].clone();
    let key = PublisherKey::generate();
    let bytes = binary(1);
    let bundle = Bundle::new(&bytes, vec!["app.T".into()]);
    let p = records::publish(&node, &key, &bundle).await.unwrap();
    assert!(!p.already);
    assert_eq!(p.size, bytes.len() as u64);
    // every copy of every record exists, spread over the nodes
    let hosted: usize = net.live().iter().map(|n| n.hosted_objects().len()).sum();
    assert_eq!(hosted, 3 * 3 + 3, "3 chunks and 1 manifest, 3 copies each");
    // fetched from another node, whole
    let other = net.live()[3].clone();
    let found = list_manifests(&other, "app.T").await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0.publisher, key.public_hex());
    let fetched = fetch_binary(&other, &found[0].0).await.unwrap();
    assert_eq!(fetched, bytes);
    // publishing again sends nothing
    let again = records::publish(&node, &key, &bundle).await.unwrap();
    assert!(again.already);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_chunk_is_detected_and_another_copy_used_and_all_altered_is_refused() {
    let net = network(3).await;
    let node = net.live()[0].clone();
    let key = PublisherKey::generate();
    let bytes = binary(2);
    let bundle = Bundle::new(&bytes, vec!["app.T".into()]);
    // a node stores altered bytes under copy 0 of chunk 1 before the publisher
    // does (the publisher finds the record there and leaves it)
    let hash = *blake3::hash(&bundle.chunks[1]).as_bytes();
    let mut altered = bundle.chunks[1].clone();
    altered[100] ^= 0xff;
    node.create_with_id::<Chunk>(chunk_id(&hash, 0), Chunk::new(altered.clone()))
        .await
        .unwrap();
    records::publish(&node, &key, &bundle).await.unwrap();
    let m = &list_manifests(&node, "app.T").await[0].0;
    assert_eq!(
        fetch_binary(&node, m).await.unwrap(),
        bytes,
        "copy 1 or 2 used"
    );
    // every copy of chunk 1 altered: refused, saying which chunk
    let bytes = binary(3);
    let bundle = Bundle::new(&bytes, vec!["app.U".into()]);
    let hash = *blake3::hash(&bundle.chunks[1]).as_bytes();
    let mut altered = bundle.chunks[1].clone();
    altered[0] ^= 1;
    for copy in 0..3 {
        node.create_with_id::<Chunk>(chunk_id(&hash, copy), Chunk::new(altered.clone()))
            .await
            .unwrap();
    }
    records::publish(&node, &key, &bundle).await.unwrap();
    let m = &list_manifests(&node, "app.U").await[0].0;
    let err = fetch_binary(&node, m).await.unwrap_err().to_string();
    assert!(
        err.contains("chunk 1") && err.contains("does not match"),
        "{err}"
    );
}

fn provider(dir: &std::path::Path, trusted: Vec<String>) -> Arc<NetworkCode> {
    NetworkCode::new(CodeSettings {
        trusted_publishers: trusted,
        trust_any_publisher: false,
        cache_dir: dir.join("bundles"),
        cache_max_bytes: 1 << 30,
        scratch_dir: dir.join("scratch"),
        sandbox: Default::default(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_publishers_and_other_targets_are_refused_with_the_reason() {
    let net = network(3).await;
    let node = net.live()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let publisher = PublisherKey::generate();
    let trusted = PublisherKey::generate();
    // a type with no code at all
    let code = provider(dir.path(), vec![trusted.public_hex()]);
    code.attach(node.clone());
    let err = code.resolve("app.None").await.err().unwrap();
    assert!(err.contains("no code"), "{err}");
    // published by a key this volunteer does not trust
    let bundle = Bundle::new(&binary(4), vec!["app.T".into()]);
    records::publish(&node, &publisher, &bundle).await.unwrap();
    let err = code.resolve("app.T").await.err().unwrap();
    assert!(
        err.contains(&publisher.public_hex()) && err.contains("not trusted"),
        "{err}"
    );
    // by a trusted key, for another target
    let mut other = Bundle::new(&binary(5), vec!["app.V".into()]);
    other.manifest.target = "riscv64gc-unknown-none-elf".into();
    records::publish(&node, &trusted, &other).await.unwrap();
    let err = code.resolve("app.V").await.err().unwrap();
    assert!(
        err.contains("riscv64gc-unknown-none-elf") && err.contains(TARGET),
        "{err}"
    );
    // nothing was fetched for any of them
    assert_eq!(code.fetches(), 0);
    assert!(code.status().bundles.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_bundle_that_is_no_g2_worker_fails_to_start_clearly() {
    // a binary that exits at once (`true`): fetched, cached, then refused
    let net = network(3).await;
    let node = net.live()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate();
    let path = ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("true(1)");
    let bundle = Bundle::from_file(std::path::Path::new(path), vec!["app.T".into()]).unwrap();
    records::publish(&node, &key, &bundle).await.unwrap();
    let code = provider(dir.path(), vec![key.public_hex()]);
    code.attach(node.clone());
    let err = code.resolve("app.T").await.err().unwrap();
    assert!(err.contains("serve_if_worker"), "{err}");
    assert_eq!(code.fetches(), 1);
    // a second request uses the cache
    let _ = code.resolve("app.T").await;
    assert_eq!(code.fetches(), 1);
}
