//! The [`Store`] strategy: a small synchronous key-value store in named spaces,
//! with atomic batches and prefix scans. [`MemStore`] is the in-memory reference;
//! `g2-store-rocksdb` is the durable one.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// A named space of keys (a RocksDB column family, a prefix elsewhere).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Space {
    /// Object checkpoints.
    Checkpoints,
    /// Incoming and outgoing call logs.
    Log,
    /// Results kept for duplicate suppression.
    Results,
    /// The code cache of the volunteer.
    Code,
    /// Node metadata (identity, version).
    Meta,
}

impl Space {
    /// Every space.
    pub const ALL: [Space; 5] = [
        Space::Checkpoints,
        Space::Log,
        Space::Results,
        Space::Code,
        Space::Meta,
    ];

    /// The space's stable name (used as a column-family name).
    pub fn name(self) -> &'static str {
        match self {
            Space::Checkpoints => "checkpoints",
            Space::Log => "log",
            Space::Results => "results",
            Space::Code => "code",
            Space::Meta => "meta",
        }
    }
}

/// One write in a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Set `key` to `value`.
    Put {
        /// The space.
        space: Space,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// The space.
        space: Space,
        /// The key.
        key: Vec<u8>,
    },
    /// Remove every key starting with `prefix`.
    DeletePrefix {
        /// The space.
        space: Space,
        /// The prefix.
        prefix: Vec<u8>,
    },
    /// Remove every key `k` with `from <= k < to`.
    DeleteRange {
        /// The space.
        space: Space,
        /// The first key removed.
        from: Vec<u8>,
        /// The first key kept.
        to: Vec<u8>,
    },
}

/// Writes applied all together or not at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// The writes, in order.
    pub ops: Vec<BatchOp>,
    /// Whether the write must reach stable storage (fsync) before it returns, so
    /// that it survives a machine crash or power loss. Without it a durable store
    /// still survives the process being killed (the write is in its log).
    pub sync: bool,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }
    /// An empty batch that is synced to stable storage when written.
    pub fn synced() -> Self {
        Self {
            ops: Vec::new(),
            sync: true,
        }
    }
    /// Whether the batch has no writes.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    /// Adds a put.
    pub fn put(&mut self, space: Space, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Put {
            space,
            key: key.into(),
            value: value.into(),
        });
    }
    /// Adds a delete.
    pub fn delete(&mut self, space: Space, key: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Delete {
            space,
            key: key.into(),
        });
    }
    /// Adds a range delete: every key `k` with `from <= k < to`.
    pub fn delete_range(&mut self, space: Space, from: impl Into<Vec<u8>>, to: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::DeleteRange {
            space,
            from: from.into(),
            to: to.into(),
        });
    }
    /// Adds a prefix delete.
    pub fn delete_prefix(&mut self, space: Space, prefix: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::DeletePrefix {
            space,
            prefix: prefix.into(),
        });
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, corruption), with its message.
    #[error("store backend: {0}")]
    Backend(String),
    /// A stored value failed its checksum or did not decode.
    #[error("corrupt record in {space:?}: {reason}")]
    Corrupt {
        /// The space.
        space: Space,
        /// What is wrong.
        reason: String,
    },
}

/// Key-value pairs, in key order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

type Table = BTreeMap<(Space, Vec<u8>), Vec<u8>>;

/// A small synchronous KV store in named spaces.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
pub trait Store: Send + Sync + 'static {
    /// The value at `key`, if any.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Applies a batch atomically.
    fn write(&self, batch: WriteBatch) -> Result<(), StoreError>;
    /// Every `(key, value)` whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, space: Space, prefix: &[u8]) -> Result<Pairs, StoreError>;
}

/// Convenience writes on any store.
pub trait StoreExt: Store {
    /// Sets one key.
    fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let mut b = WriteBatch::new();
        b.put(space, key, value);
        self.write(b)
    }
    /// Removes one key.
    fn delete(&self, space: Space, key: &[u8]) -> Result<(), StoreError> {
        let mut b = WriteBatch::new();
        b.delete(space, key);
        self.write(b)
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// The in-memory reference [`Store`] (the builder's default).
#[derive(Debug, Default)]
pub struct MemStore {
    data: Mutex<Table>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // a panic while holding this lock cannot leave the map half-written: every
        // batch is applied to a clone first
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for MemStore {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().get(&(space, key.to_vec())).cloned())
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut data = self.lock();
        let mut next = data.clone();
        for op in batch.ops {
            match op {
                BatchOp::Put { space, key, value } => {
                    next.insert((space, key), value);
                }
                BatchOp::Delete { space, key } => {
                    next.remove(&(space, key));
                }
                BatchOp::DeletePrefix { space, prefix } => {
                    next.retain(|(s, k), _| !(*s == space && k.starts_with(&prefix)));
                }
                BatchOp::DeleteRange { space, from, to } => {
                    next.retain(|(s, k), _| !(*s == space && *k >= from && *k < to));
                }
            }
        }
        *data = next;
        Ok(())
    }

    fn scan_prefix(&self, space: Space, prefix: &[u8]) -> Result<Pairs, StoreError> {
        Ok(self
            .lock()
            .range((space, prefix.to_vec())..)
            .take_while(|((s, k), _)| *s == space && k.starts_with(prefix))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_scans_and_spaces() {
        let s = MemStore::new();
        let mut b = WriteBatch::new();
        b.put(Space::Log, b"obj1/1".to_vec(), b"a".to_vec());
        b.put(Space::Log, b"obj1/2".to_vec(), b"b".to_vec());
        b.put(Space::Log, b"obj2/1".to_vec(), b"c".to_vec());
        b.put(Space::Checkpoints, b"obj1".to_vec(), b"state".to_vec());
        s.write(b).unwrap();
        let scan = s.scan_prefix(Space::Log, b"obj1/").unwrap();
        assert_eq!(scan.len(), 2);
        assert_eq!(scan[1], (b"obj1/2".to_vec(), b"b".to_vec()));
        assert_eq!(
            s.get(Space::Checkpoints, b"obj1").unwrap().unwrap(),
            b"state"
        );
        assert_eq!(s.get(Space::Log, b"obj1").unwrap(), None);

        let mut b = WriteBatch::new();
        b.delete_prefix(Space::Log, b"obj1/".to_vec());
        s.write(b).unwrap();
        assert!(s.scan_prefix(Space::Log, b"obj1/").unwrap().is_empty());
        assert_eq!(s.scan_prefix(Space::Log, b"").unwrap().len(), 1);
        s.delete(Space::Checkpoints, b"obj1").unwrap();
        assert_eq!(s.get(Space::Checkpoints, b"obj1").unwrap(), None);

        let mut b = WriteBatch::new();
        for k in [b"a1", b"a2", b"a3", b"b1"] {
            b.put(Space::Results, k.to_vec(), b"x".to_vec());
        }
        b.delete_range(Space::Results, b"a2".to_vec(), b"b1".to_vec());
        s.write(b).unwrap();
        let keys: Vec<_> = s
            .scan_prefix(Space::Results, b"")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![b"a1".to_vec(), b"b1".to_vec()]);
    }
}
