use super::*;
use g2_core::store::{MemStore, StoreExt};
use proptest::prelude::*;

fn fresh() -> (tempfile::TempDir, RocksStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path().join("store")).unwrap();
    (dir, store)
}

/// Every file under `dir` with its bytes, to check that a refused open changed nothing.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn batches_scans_and_spaces() {
    let (_d, s) = fresh();
    let mut b = WriteBatch::new();
    b.put(Space::Log, b"obj1/1".to_vec(), b"a".to_vec());
    b.put(Space::Log, b"obj1/2".to_vec(), b"b".to_vec());
    b.put(Space::Log, b"obj2/1".to_vec(), b"c".to_vec());
    b.put(Space::Checkpoints, b"obj1".to_vec(), b"state".to_vec());
    s.write(b).unwrap();
    let scan = s.scan_prefix(Space::Log, b"obj1/").unwrap();
    assert_eq!(
        scan,
        vec![
            (b"obj1/1".to_vec(), b"a".to_vec()),
            (b"obj1/2".to_vec(), b"b".to_vec())
        ]
    );
    assert_eq!(s.get(Space::Log, b"obj1").unwrap(), None);
    assert_eq!(s.get(Space::Results, b"obj1").unwrap(), None);

    let mut b = WriteBatch::synced();
    b.delete_prefix(Space::Log, b"obj1/".to_vec());
    b.put(Space::Log, b"obj1/3".to_vec(), b"d".to_vec());
    s.write(b).unwrap();
    assert_eq!(
        s.scan_prefix(Space::Log, b"obj1/").unwrap(),
        vec![(b"obj1/3".to_vec(), b"d".to_vec())]
    );
    assert_eq!(s.scan_prefix(Space::Log, b"").unwrap().len(), 2);
    s.delete(Space::Checkpoints, b"obj1").unwrap();
    assert_eq!(s.get(Space::Checkpoints, b"obj1").unwrap(), None);
}

#[test]
fn prefix_of_all_ff_and_empty_prefix_delete() {
    let (_d, s) = fresh();
    s.put(Space::Log, &[0xff, 0xff, 1], b"x").unwrap();
    s.put(Space::Log, &[0xff, 0xfe], b"y").unwrap();
    assert_eq!(s.scan_prefix(Space::Log, &[0xff, 0xff]).unwrap().len(), 1);
    let mut b = WriteBatch::new();
    b.delete_prefix(Space::Log, vec![0xff, 0xff]);
    s.write(b).unwrap();
    assert_eq!(s.scan_prefix(Space::Log, &[0xff]).unwrap().len(), 1);
    let mut b = WriteBatch::new();
    b.delete_prefix(Space::Log, Vec::new());
    s.write(b).unwrap();
    assert!(s.scan_prefix(Space::Log, b"").unwrap().is_empty());
}

#[test]
fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let s = RocksStore::open(&path).unwrap();
        s.put(Space::Checkpoints, b"k", b"v").unwrap();
    }
    let s = RocksStore::open(&path).unwrap();
    assert_eq!(s.get(Space::Checkpoints, b"k").unwrap().unwrap(), b"v");
}

#[test]
fn an_empty_existing_directory_becomes_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let s = RocksStore::open(dir.path()).unwrap();
    s.put(Space::Meta, b"a", b"b").unwrap();
}

#[test]
fn a_directory_of_other_files_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("thesis.tex"), b"\\documentclass{article}").unwrap();
    let before = snapshot(dir.path());
    let err = RocksStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, OpenError::NotAStore { .. }), "{err}");
    assert!(err.to_string().contains("not a G2 store"), "{err}");
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn another_programs_rocksdb_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut o = Options::default();
        o.create_if_missing(true);
        let db = DB::open(&o, dir.path()).unwrap();
        db.put(b"their", b"data").unwrap();
    }
    let before = snapshot(dir.path());
    let err = RocksStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, OpenError::Foreign { .. }), "{err}");
    assert_eq!(snapshot(dir.path()), before);
    // their data is still there
    let db = DB::open_default(dir.path()).unwrap();
    assert_eq!(db.get(b"their").unwrap().unwrap(), b"data");
}

#[test]
fn a_newer_format_is_named() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = RocksStore::open(dir.path()).unwrap();
        s.db.put(FORMAT_KEY, b"g2-store-rocksdb/9").unwrap();
    }
    let err = RocksStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, OpenError::Version { found, .. } if found == "g2-store-rocksdb/9"),
        "{err}"
    );
}

#[test]
fn a_second_open_of_the_same_store_is_refused() {
    let (d, _s) = fresh();
    let err = RocksStore::open(d.path().join("store")).unwrap_err();
    assert!(matches!(err, OpenError::Locked { .. }), "{err}");
}

#[test]
fn a_damaged_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = RocksStore::open(dir.path()).unwrap();
        s.put(Space::Checkpoints, b"k", b"v").unwrap();
    }
    let manifest = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("MANIFEST")
        })
        .unwrap();
    let len = std::fs::metadata(&manifest).unwrap().len() as usize;
    std::fs::write(&manifest, vec![0x5a; len]).unwrap();
    let before = snapshot(dir.path());
    let err = RocksStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, OpenError::Corrupt { .. } | OpenError::Io { .. }),
        "{err}"
    );
    assert_eq!(snapshot(dir.path()), before);
}

/// Not a test on its own: the child process of `unsynced_writes_survive_kill_9`.
#[test]
fn kill_child_writer() {
    let Ok(path) = std::env::var("G2_STORE_KILL_CHILD") else {
        return;
    };
    use std::io::Write;
    let s = RocksStore::open(&path).unwrap();
    let mut out = std::io::stdout();
    for i in 0u32..500 {
        let mut b = WriteBatch::new();
        b.put(Space::Log, i.to_be_bytes().to_vec(), vec![7; 100]);
        b.put(
            Space::Checkpoints,
            b"last".to_vec(),
            i.to_be_bytes().to_vec(),
        );
        s.write(b).unwrap();
    }
    writeln!(out, "G2-WRITTEN 500").unwrap();
    out.flush().unwrap();
    // wait to be killed (bounded)
    std::thread::sleep(std::time::Duration::from_secs(60));
}

#[test]
fn unsynced_writes_survive_kill_9() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "tests::kill_child_writer", "--nocapture"])
        .env("G2_STORE_KILL_CHILD", &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut written = false;
    for line in std::io::BufReader::new(stdout).lines() {
        if line.unwrap().contains("G2-WRITTEN 500") {
            written = true;
            break;
        }
    }
    assert!(written, "the child never finished writing");
    // SIGKILL: no destructor, no flush
    child.kill().unwrap();
    child.wait().unwrap();
    let s = RocksStore::open(&path).unwrap();
    assert_eq!(s.scan_prefix(Space::Log, b"").unwrap().len(), 500);
    assert_eq!(
        s.get(Space::Checkpoints, b"last").unwrap().unwrap(),
        499u32.to_be_bytes()
    );
}

#[derive(Clone, Debug)]
enum Op {
    Put(Space, Vec<u8>, Vec<u8>),
    Delete(Space, Vec<u8>),
    DeletePrefix(Space, Vec<u8>),
    DeleteRange(Space, Vec<u8>, Vec<u8>),
}

fn space() -> impl Strategy<Value = Space> {
    prop::sample::select(Space::ALL.to_vec())
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(vec![0u8, 1, 2, 0xfe, 0xff]), 0..4)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (space(), key(), prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(s, k, v)| Op::Put(s, k, v)),
        (space(), key()).prop_map(|(s, k)| Op::Delete(s, k)),
        (space(), key()).prop_map(|(s, k)| Op::DeletePrefix(s, k)),
        (space(), key(), key()).prop_map(|(s, a, b)| Op::DeleteRange(s, a, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// RocksStore and the in-memory reference agree on every batch sequence.
    #[test]
    fn behaves_like_mem_store(batches in prop::collection::vec(prop::collection::vec(op(), 1..6), 1..8),
                              probe in key()) {
        let (_d, rocks) = fresh();
        let mem = MemStore::new();
        for ops in batches {
            let mut b = WriteBatch::new();
            for o in ops {
                match o {
                    Op::Put(s, k, v) => b.put(s, k, v),
                    Op::Delete(s, k) => b.delete(s, k),
                    Op::DeletePrefix(s, k) => b.delete_prefix(s, k),
                    Op::DeleteRange(s, from, to) => b.delete_range(s, from, to),
                }
            }
            rocks.write(b.clone()).unwrap();
            mem.write(b).unwrap();
        }
        for s in Space::ALL {
            prop_assert_eq!(rocks.scan_prefix(s, &probe).unwrap(), mem.scan_prefix(s, &probe).unwrap());
            prop_assert_eq!(rocks.get(s, &probe).unwrap(), mem.get(s, &probe).unwrap());
        }
    }
}
