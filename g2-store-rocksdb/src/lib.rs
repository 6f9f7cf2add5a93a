//! A durable [`g2_core::Store`] on RocksDB: one column family per
//! [`Space`], atomic [`WriteBatch`]es, prefix scans.
//!
//! What a write survives depends on [`WriteBatch::sync`]:
//!
//! - unsynced (the default): the batch is in RocksDB's write-ahead log before
//!   [`Store::write`] returns, so it survives the process being killed (`kill -9`,
//!   a panic, an OOM kill), but not a machine crash or power loss;
//! - synced: the log is fsynced before `write` returns, so it also survives a
//!   machine crash. Concurrent synced writers share one fsync (RocksDB's write
//!   group is the group commit).
//!
//! A directory that is not a G2 store — another program's files, another RocksDB
//! database, a store of a newer format, a corrupt database — is refused at
//! [`RocksStore::open`] with an [`OpenError`] saying which, and nothing in it is
//! changed.
//!
//! ```
//! use g2_core::store::{Space, Store, StoreExt};
//! let dir = tempfile::tempdir().unwrap();
//! let store = g2_store_rocksdb::RocksStore::open(dir.path().join("store")).unwrap();
//! store.put(Space::Checkpoints, b"obj", b"state").unwrap();
//! assert_eq!(store.get(Space::Checkpoints, b"obj").unwrap().unwrap(), b"state");
//! ```

use std::path::{Path, PathBuf};

use g2_core::store::{BatchOp, Pairs, Space, Store, StoreError, WriteBatch};
use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, ReadOptions, WriteOptions,
};

/// The format marker, kept in RocksDB's default column family (no [`Space`]
/// maps to it, so no batch can remove it).
const FORMAT_KEY: &[u8] = b"g2/store-format";
/// This crate's on-disk format.
pub const FORMAT: &str = "g2-store-rocksdb/1";
const FORMAT_PREFIX: &str = "g2-store-rocksdb/";

/// Why a store could not be opened. Nothing in the directory was changed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The path exists and holds files, but no RocksDB database.
    #[error(
        "{path} is not a G2 store: the directory is not empty and holds no RocksDB database; refusing to write into it"
    )]
    NotAStore {
        /// The directory.
        path: PathBuf,
    },
    /// A RocksDB database, but not one written by G2.
    #[error("{path} is a RocksDB database of another program ({reason}); refusing to use it")]
    Foreign {
        /// The directory.
        path: PathBuf,
        /// What gave it away.
        reason: String,
    },
    /// A G2 store of a format this build does not read.
    #[error("{path} is a G2 store of format {found:?}; this build reads {FORMAT:?}")]
    Version {
        /// The directory.
        path: PathBuf,
        /// The format found.
        found: String,
    },
    /// Another process (or another handle in this one) has the store open.
    #[error(
        "{path} is in use by another process (a volunteer already running with this data dir?): stop it, or pass another data dir ({reason})"
    )]
    Locked {
        /// The directory.
        path: PathBuf,
        /// RocksDB's message.
        reason: String,
    },
    /// RocksDB found the database damaged.
    #[error("{path} is corrupt: {reason}")]
    Corrupt {
        /// The directory.
        path: PathBuf,
        /// RocksDB's message.
        reason: String,
    },
    /// Any other failure (permissions, disk).
    #[error("cannot open store {path}: {reason}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// A [`Store`] kept in a RocksDB database.
pub struct RocksStore {
    db: DB,
    path: PathBuf,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn db_options() -> Options {
    let mut o = Options::default();
    o.set_paranoid_checks(true);
    // small footprint: a volunteer's store holds checkpoints and short logs
    o.set_max_background_jobs(2);
    o.set_keep_log_file_num(4);
    o
}

fn our_families() -> Vec<String> {
    let mut v = vec![rocksdb::DEFAULT_COLUMN_FAMILY_NAME.to_string()];
    v.extend(Space::ALL.iter().map(|s| s.name().to_string()));
    v
}

fn classify(path: &Path, e: rocksdb::Error) -> OpenError {
    let reason = e.to_string();
    let path = path.to_path_buf();
    match e.kind() {
        rocksdb::ErrorKind::Corruption => OpenError::Corrupt { path, reason },
        rocksdb::ErrorKind::IOError if reason.contains("lock") => {
            OpenError::Locked { path, reason }
        }
        _ => OpenError::Io { path, reason },
    }
}

impl RocksStore {
    /// Opens the store at `path`, creating it when the path does not exist or is
    /// an empty directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        let path = path.as_ref().to_path_buf();
        let io = |e: std::io::Error| OpenError::Io {
            path: path.clone(),
            reason: e.to_string(),
        };
        let fresh = match std::fs::read_dir(&path) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(io(e)),
        };
        if fresh {
            std::fs::create_dir_all(&path).map_err(io)?;
            return Self::create(path);
        }
        if !path.join("CURRENT").is_file() {
            return Err(OpenError::NotAStore { path });
        }
        let mut opts = db_options();
        opts.create_if_missing(false);
        let found = DB::list_cf(&opts, &path).map_err(|e| classify(&path, e))?;
        let mut missing: Vec<&str> = Space::ALL
            .iter()
            .map(|s| s.name())
            .filter(|n| !found.iter().any(|f| f == n))
            .collect();
        if !missing.is_empty() {
            // a damaged manifest can also hide the families: a read-only open
            // (which writes nothing) tells the two apart
            if let Err(e) = DB::open_cf_for_read_only(&opts, &path, &found, false) {
                return Err(classify(&path, e));
            }
            missing.sort_unstable();
            return Err(OpenError::Foreign {
                path,
                reason: format!("no column families {}", missing.join(", ")),
            });
        }
        // open every family it has (RocksDB requires it), ours among them
        opts.create_missing_column_families(false);
        let cfs = found
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, &path, cfs).map_err(|e| classify(&path, e))?;
        let format = db.get(FORMAT_KEY).map_err(|e| classify(&path, e))?;
        match format {
            None => Err(OpenError::Foreign {
                path,
                reason: "no G2 format marker".into(),
            }),
            Some(f) if f == FORMAT.as_bytes() => Ok(Self { db, path }),
            Some(f) => {
                let found = String::from_utf8_lossy(&f).into_owned();
                if found.starts_with(FORMAT_PREFIX) {
                    Err(OpenError::Version { path, found })
                } else {
                    Err(OpenError::Foreign {
                        path,
                        reason: format!("format marker {found:?}"),
                    })
                }
            }
        }
    }

    fn create(path: PathBuf) -> Result<Self, OpenError> {
        let mut opts = db_options();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_error_if_exists(true);
        let cfs = our_families()
            .into_iter()
            .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, &path, cfs).map_err(|e| classify(&path, e))?;
        let mut w = WriteOptions::default();
        w.set_sync(true);
        let mut b = rocksdb::WriteBatch::default();
        b.put(FORMAT_KEY, FORMAT.as_bytes());
        db.write_opt(b, &w).map_err(|e| classify(&path, e))?;
        tracing::debug!(path = %path.display(), "created G2 store");
        Ok(Self { db, path })
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, space: Space) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db
            .cf_handle(space.name())
            .ok_or_else(|| StoreError::Backend(format!("column family {} missing", space.name())))
    }
}

fn backend(e: rocksdb::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// The smallest key greater than every key starting with `prefix`, if any.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl Store for RocksStore {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(self.cf(space)?, key).map_err(backend)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut b = rocksdb::WriteBatch::default();
        for (i, op) in batch.ops.iter().enumerate() {
            match op {
                BatchOp::Put { space, key, value } => b.put_cf(self.cf(*space)?, key, value),
                BatchOp::Delete { space, key } => b.delete_cf(self.cf(*space)?, key),
                BatchOp::DeleteRange { space, from, to } => {
                    if from < to {
                        b.delete_range_cf(self.cf(*space)?, from.as_slice(), to.as_slice())
                    }
                }
                BatchOp::DeletePrefix { space, prefix } => match prefix_end(prefix) {
                    Some(end) => b.delete_range_cf(self.cf(*space)?, prefix.as_slice(), &end),
                    None => {
                        // the prefix is empty or all 0xff: no upper bound, so delete
                        // one by one what the store holds and what this batch put
                        let cf = self.cf(*space)?;
                        for (k, _) in self.scan_prefix(*space, prefix)? {
                            b.delete_cf(cf, k);
                        }
                        for earlier in &batch.ops[..i] {
                            if let BatchOp::Put { space: s, key, .. } = earlier
                                && s == space
                                && key.starts_with(prefix)
                            {
                                b.delete_cf(cf, key);
                            }
                        }
                    }
                },
            }
        }
        let mut w = WriteOptions::default();
        w.set_sync(batch.sync);
        self.db.write_opt(b, &w).map_err(backend)
    }

    fn scan_prefix(&self, space: Space, prefix: &[u8]) -> Result<Pairs, StoreError> {
        let mut ro = ReadOptions::default();
        if let Some(end) = prefix_end(prefix) {
            ro.set_iterate_upper_bound(end);
        }
        let iter = self.db.iterator_cf_opt(
            self.cf(space)?,
            ro,
            IteratorMode::From(prefix, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item.map_err(backend)?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
