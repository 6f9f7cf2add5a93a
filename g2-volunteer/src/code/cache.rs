//! The bundle cache under a volunteer's data dir: binaries by content hash,
//! bounded in size, the least recently used evicted first.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tracing::{info, warn};

use super::bundle::Manifest;

/// Binaries a volunteer fetched, in `<dir>/<blake3 hex>/app`.
pub struct BundleCache {
    dir: PathBuf,
    max_bytes: u64,
}

/// One cached binary.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CachedBundle {
    /// blake3 of the binary, hex.
    pub blake3: String,
    /// Its size.
    pub size: u64,
}

impl BundleCache {
    /// A cache in `dir` holding at most `max_bytes` of binaries (the newest
    /// one is kept even when larger).
    pub fn new(dir: PathBuf, max_bytes: u64) -> Self {
        Self { dir, max_bytes }
    }

    fn binary(&self, hash: &str) -> PathBuf {
        self.dir.join(hash).join("app")
    }

    /// Where the binary whose blake3 is `hash` (hex) is kept, if it is.
    pub fn path_of(&self, hash: &str) -> PathBuf {
        self.binary(hash)
    }

    /// The cached binary of `m`, checked against its hash (a file that does
    /// not match is removed); marks it used.
    pub fn get(&self, m: &Manifest) -> Option<PathBuf> {
        let path = self.binary(&m.binary_blake3);
        let bytes = std::fs::read(&path).ok()?;
        if bytes.len() as u64 != m.size || blake3::hash(&bytes).to_hex().as_str() != m.binary_blake3
        {
            warn!(path = %path.display(), "cached binary does not match its hash; removed");
            let _ = std::fs::remove_dir_all(self.dir.join(&m.binary_blake3));
            return None;
        }
        if let Ok(f) = std::fs::File::options().append(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Some(path)
    }

    /// Stores the binary of `m` (executable), then evicts the least recently
    /// used others until the cache fits.
    pub fn put(&self, m: &Manifest, bytes: &[u8]) -> std::io::Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(
            ".{}.{}",
            m.binary_blake3,
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&tmp)?;
        let file = tmp.join("app");
        let mut f = std::fs::File::create(&file)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))?;
        let dest = self.dir.join(&m.binary_blake3);
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::rename(&tmp, &dest)?;
        info!(blake3 = %m.binary_blake3, size = m.size, "bundle cached");
        self.evict(&m.binary_blake3);
        Ok(self.binary(&m.binary_blake3))
    }

    /// The cached binaries.
    pub fn entries(&self) -> Vec<CachedBundle> {
        self.scan()
            .into_iter()
            .map(|(blake3, size, _)| CachedBundle { blake3, size })
            .collect()
    }

    fn scan(&self) -> Vec<(String, u64, SystemTime)> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            if let Ok(meta) = std::fs::metadata(self.binary(&name)) {
                out.push((
                    name,
                    meta.len(),
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                ));
            }
        }
        out
    }

    fn evict(&self, keep: &str) {
        let mut all = self.scan();
        all.sort_by_key(|(_, _, used)| *used);
        let mut total: u64 = all.iter().map(|(_, size, _)| size).sum();
        for (hash, size, _) in all {
            if total <= self.max_bytes {
                break;
            }
            if hash == keep {
                continue;
            }
            // (a worker still running from it keeps its open file)
            if std::fs::remove_dir_all(self.dir.join(&hash)).is_ok() {
                info!(blake3 = %hash, size, "evicted from the bundle cache");
                total -= size;
            }
        }
    }

    /// The cache's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::bundle::Bundle;

    fn manifest(bytes: &[u8]) -> Manifest {
        Bundle::new(bytes, vec!["t".into()]).manifest
    }

    #[test]
    fn a_cached_binary_is_found_by_hash_and_a_tampered_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BundleCache::new(dir.path().join("bundles"), 1 << 20);
        let m = manifest(b"binary one");
        assert!(cache.get(&m).is_none());
        let path = cache.put(&m, b"binary one").unwrap();
        assert_eq!(cache.get(&m), Some(path.clone()));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o111,
            0o111
        );
        std::fs::write(&path, b"binary two").unwrap();
        assert!(cache.get(&m).is_none());
        assert!(cache.entries().is_empty());
    }

    #[test]
    fn the_least_recently_used_binaries_are_evicted_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BundleCache::new(dir.path().to_path_buf(), 25);
        let (a, b, c) = (vec![1u8; 10], vec![2u8; 10], vec![3u8; 10]);
        let (ma, mb, mc) = (manifest(&a), manifest(&b), manifest(&c));
        cache.put(&ma, &a).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        cache.put(&mb, &b).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        // a used again: b is now the least recently used
        assert!(cache.get(&ma).is_some());
        std::thread::sleep(std::time::Duration::from_millis(20));
        cache.put(&mc, &c).unwrap();
        assert!(cache.get(&mb).is_none(), "b evicted");
        assert!(cache.get(&ma).is_some());
        assert!(cache.get(&mc).is_some());
        assert_eq!(cache.entries().len(), 2);
    }
}
