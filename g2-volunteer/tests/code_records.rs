//! Code records on an in-process network: a published bundle is found and
//! fetched whole; an altered chunk copy is detected and another copy used;
//! a bundle whose every copy of a chunk is altered is refused; manifests of
//! untrusted publishers or of another target are refused with the reason;
//! a volunteer that fetched a bundle serves its chunks to the next fetchers,
//! and a holder that is gone or serves damaged bytes costs nothing but time;
//! code servers (HTTP, a directory) are tried first, with the same checks.

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
    let fetched = fetch_binary(&other, &found[0].0, &[]).await.unwrap();
    assert_eq!(fetched.bytes, bytes);
    assert_eq!((fetched.from_records, fetched.from_holders), (3, 0));
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
        fetch_binary(&node, m, &[]).await.unwrap().bytes,
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
    let err = fetch_binary(&node, m, &[]).await.unwrap_err().to_string();
    assert!(
        err.contains("chunk 1") && err.contains("does not match"),
        "{err}"
    );
}

fn provider(dir: &std::path::Path, trusted: Vec<String>) -> Arc<NetworkCode> {
    NetworkCode::new(settings(dir, trusted))
}

fn settings(dir: &std::path::Path, trusted: Vec<String>) -> CodeSettings {
    CodeSettings {
        trusted_publishers: trusted,
        trust_any_publisher: false,
        cache_dir: dir.join("bundles"),
        cache_max_bytes: 1 << 30,
        scratch_dir: dir.join("scratch"),
        sandbox: Default::default(),
        code_servers: Vec::new(),
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volunteer_that_fetched_a_bundle_serves_its_chunks_to_the_next_ones() {
    let net = network(4).await;
    let nodes = net.live();
    let key = PublisherKey::generate();
    let bytes = binary(7);
    let bundle = Bundle::new(&bytes, vec!["app.T".into()]);
    records::publish(&nodes[0], &key, &bundle).await.unwrap();
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let codes: Vec<_> = (0..4)
        .map(|i| {
            let c = provider(dirs[i].path(), vec![key.public_hex()]);
            c.attach(nodes[i].clone());
            c
        })
        .collect();
    // (these bytes are no program: each volunteer fetches, caches and starts
    // to serve them, then fails to start a worker)
    let resolve = |i: usize| {
        let c = codes[i].clone();
        async move {
            let err = c.resolve("app.T").await.err().expect("not a program");
            assert!(err.contains("starting the worker"), "{err}");
            c.status()
        }
    };
    // the first fetcher reads the chunk records; it then holds the bundle
    let first = resolve(1).await;
    assert_eq!((first.fetches, first.chunks_from_holders), (1, 0));
    let m = &list_manifests(&nodes[0], "app.T").await[0].0;
    let mut holders = Vec::new();
    for _ in 0..100 {
        holders = records::list_holders(&nodes[2], m).await;
        if !holders.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        holders.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![nodes[1].id()],
        "the first fetcher is listed as a holder"
    );
    // the next one gets every chunk from it
    let second = resolve(2).await;
    assert_eq!((second.fetches, second.chunks_from_holders), (1, 3));
    assert_eq!(codes[1].status().chunks_served, 3);

    // both holders' copies damaged on disk: they serve nothing (the runtime
    // checks the hash before sending), and the third fetcher reads the records
    for d in &dirs[1..3] {
        let path = d.path().join("bundles").join(&m.binary_blake3).join("app");
        let mut b = std::fs::read(&path).unwrap();
        for chunk in 0..3 {
            b[chunk * CHUNK_SIZE + 10] ^= 0xff;
        }
        std::fs::write(&path, b).unwrap();
    }
    let third = resolve(3).await;
    assert_eq!((third.fetches, third.chunks_from_holders), (1, 0));
    assert_eq!(codes[1].status().chunks_served, 3);

    // a holder that is gone is passed over: fetched whole from what remains
    net.crash(nodes[3].id());
    let fetched = fetch_binary(&nodes[0], m, &[nodes[3].peer().clone()])
        .await
        .unwrap();
    assert_eq!(fetched.bytes, bytes);
    assert_eq!(fetched.from_holders, 0);
}

/// A static HTTP server for `dir` under `/base` on 127.0.0.1: what any web
/// server does with a code-server directory. Counts the requests it served.
async fn http_server(dir: std::path::PathBuf) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/base", listener.local_addr().unwrap());
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (dir, count) = (dir.clone(), count.clone());
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&req)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let path = line.split(' ').nth(1).unwrap_or("");
                let file = path.strip_prefix("/base/").map(|rel| dir.join(rel));
                let reply = match file.and_then(|f| std::fs::read(f).ok()) {
                    Some(body) => {
                        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend(body);
                        r
                    }
                    None => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = s.write_all(&reply).await;
            });
        }
    });
    (url, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_servers_are_tried_first_with_the_same_checks_and_the_network_after() {
    let net = network(3).await;
    let nodes = net.live();
    let key = PublisherKey::generate();
    let bytes = binary(9);
    let bundle = Bundle::new(&bytes, vec!["app.T".into()]);
    let signed = key.sign(bundle.manifest.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let served_dir = dir.path().join("served");
    g2_volunteer::code::servers::export(&served_dir, &bundle, &signed).unwrap();
    let (url, requests) = http_server(served_dir.clone()).await;
    let with_servers = |i: usize, servers: Vec<String>| {
        let mut settings = settings(&dir.path().join(format!("v{i}")), vec![key.public_hex()]);
        settings.code_servers = servers.iter().map(|u| u.parse().unwrap()).collect();
        let c = NetworkCode::new(settings);
        c.attach(nodes[i % nodes.len()].clone());
        c
    };
    // (the bytes are no program: fetched, cached, then the worker fails)
    let resolve = |c: Arc<NetworkCode>| async move {
        let err = c.resolve("app.T").await.err().expect("not a program");
        assert!(err.contains("starting the worker"), "{err}");
        c.status()
    };

    // the code is on the HTTP server only (not on the network): fetched there
    let s = resolve(with_servers(0, vec![url.clone()])).await;
    assert_eq!((s.fetches, s.from_servers), (1, 1));
    assert_eq!(
        requests.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "manifests and binary"
    );
    // and from a directory
    let file_url = format!("file://{}", served_dir.display());
    let s = resolve(with_servers(1, vec![file_url])).await;
    assert_eq!((s.fetches, s.from_servers), (1, 1));

    // the server's binary altered: refused, and the network's copy used
    records::publish(&nodes[0], &key, &bundle).await.unwrap();
    let on_server = served_dir.join(g2_volunteer::code::servers::binary_path(
        &signed.open().unwrap().binary_blake3,
    ));
    let mut altered = std::fs::read(&on_server).unwrap();
    altered[5] ^= 1;
    std::fs::write(&on_server, altered).unwrap();
    let s = resolve(with_servers(2, vec![url.clone()])).await;
    assert_eq!((s.fetches, s.from_servers), (1, 0));
    assert_eq!(
        std::fs::read(
            dir.path()
                .join("v2/bundles")
                .join(&signed.open().unwrap().binary_blake3)
                .join("app")
        )
        .unwrap(),
        bytes,
        "what was cached is the published binary"
    );

    // a server that does not answer is passed over
    let dead = "http://127.0.0.1:9/base".to_string();
    let s = resolve(with_servers(3, vec![dead])).await;
    assert_eq!((s.fetches, s.from_servers), (1, 0));
}
