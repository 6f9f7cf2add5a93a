//! Bundles: an application binary cut into chunks, described by a manifest
//! that its publisher signs with an Ed25519 key.

use std::path::Path;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The manifest format this build writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// Chunks of a bundle's binary are this long (the last one shorter).
pub const CHUNK_SIZE: usize = 1024 * 1024;

/// The largest binary a volunteer accepts (a bound on what a manifest can make
/// it fetch and store).
pub const MAX_BINARY: u64 = 1024 * 1024 * 1024;

/// The target triple this volunteer runs (bundles for another are refused).
pub const TARGET: &str = env!("G2_TARGET");

/// What a publisher says about a binary, signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The target triple the binary runs on.
    pub target: String,
    /// The object types it serves in worker mode.
    pub types: Vec<String>,
    /// blake3 of the whole binary, hex.
    pub binary_blake3: String,
    /// Its size in bytes.
    pub size: u64,
    /// blake3 of each [`CHUNK_SIZE`] chunk, hex, in order.
    pub chunks: Vec<String>,
    /// The publisher's Ed25519 public key, hex.
    pub publisher: String,
    /// When it was published (milliseconds since the Unix epoch): the newest
    /// bundle of a trusted publisher wins.
    pub published_ms: u64,
}

/// A manifest as its publisher signed it: the exact CBOR bytes and the
/// signature over them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    /// The CBOR encoding of a [`Manifest`].
    #[serde(with = "serde_bytes")]
    pub manifest: Vec<u8>,
    /// Ed25519 signature of `manifest` by the key it names.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Why code could not be published, fetched, trusted or run.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    /// A manifest did not decode or is malformed.
    #[error("malformed manifest: {0}")]
    Malformed(String),
    /// A signature did not verify.
    #[error("the manifest's signature does not verify against publisher {0}")]
    BadSignature(String),
    /// A key file is missing or malformed.
    #[error("publisher key {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Reading or writing a file.
    #[error("{0}")]
    Io(String),
}

/// A publisher's signing key (kept in the publisher's data dir, apart from any
/// node key).
pub struct PublisherKey(SigningKey);

impl PublisherKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut secret = [0u8; 32];
        secret[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        secret[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Self(SigningKey::from_bytes(&secret))
    }

    /// The key in `path` (64 hex digits), or a new one written there (mode
    /// 0600) when the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, CodeError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|reason| CodeError::Key {
                path: path.display().to_string(),
                reason,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                key.save(path)?;
                Ok(key)
            }
            Err(e) => Err(CodeError::Key {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// The key in `path`, which must exist.
    pub fn load(path: &Path) -> Result<Self, CodeError> {
        let text = std::fs::read_to_string(path).map_err(|e| CodeError::Key {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text).map_err(|reason| CodeError::Key {
            path: path.display().to_string(),
            reason,
        })
    }

    fn parse(text: &str) -> Result<Self, String> {
        let bytes = hex::decode(text.trim()).map_err(|e| format!("not hex: {e}"))?;
        let secret: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "expected 32 bytes (64 hex digits)".to_string())?;
        Ok(Self(SigningKey::from_bytes(&secret)))
    }

    /// Writes the key to `path` (mode 0600), creating its directory.
    pub fn save(&self, path: &Path) -> Result<(), CodeError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let err = |e: std::io::Error| CodeError::Key {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        f.write_all(hex::encode(self.0.to_bytes()).as_bytes())
            .map_err(err)
    }

    /// The public key, hex: what volunteers list in `trusted-publishers`.
    pub fn public_hex(&self) -> String {
        hex::encode(self.0.verifying_key().to_bytes())
    }

    /// Signs `manifest` (whose `publisher` is set to this key).
    pub fn sign(&self, mut manifest: Manifest) -> Result<SignedManifest, CodeError> {
        manifest.publisher = self.public_hex();
        let bytes = cbor(&manifest)?;
        let signature = self.0.sign(&bytes).to_bytes().to_vec();
        Ok(SignedManifest {
            manifest: bytes,
            signature,
        })
    }
}

pub(crate) fn cbor<T: Serialize>(v: &T) -> Result<Vec<u8>, CodeError> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).map_err(|e| CodeError::Malformed(e.to_string()))?;
    Ok(out)
}

pub(crate) fn from_cbor<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    ciborium::from_reader(bytes).map_err(|e| e.to_string())
}

/// Of `list` (from `source`, named in the logs), the manifests of
/// `type_name` whose signatures verify, added to `out` unless already there;
/// the others are logged and left out.
pub fn keep_manifests_of(
    type_name: &str,
    list: Vec<SignedManifest>,
    source: &dyn std::fmt::Display,
    out: &mut Vec<(Manifest, SignedManifest)>,
) {
    for s in list {
        match s.open() {
            Ok(m) if m.types.iter().any(|t| t == type_name) => {
                if !out.iter().any(|(_, o)| *o == s) {
                    out.push((m, s));
                }
            }
            Ok(_) => {
                tracing::warn!(%source, %type_name, "a manifest of other types; ignored")
            }
            Err(e) => tracing::warn!(%source, %type_name, "a bad manifest: {e}"),
        }
    }
}

impl SignedManifest {
    /// The manifest, once its signature verifies against the key it names
    /// and its fields are well-formed.
    pub fn open(&self) -> Result<Manifest, CodeError> {
        let m: Manifest = from_cbor(&self.manifest).map_err(CodeError::Malformed)?;
        if m.format != MANIFEST_FORMAT {
            return Err(CodeError::Malformed(format!(
                "manifest format {} (this volunteer reads {MANIFEST_FORMAT})",
                m.format
            )));
        }
        let key = parse_public(&m.publisher).map_err(CodeError::Malformed)?;
        let sig: [u8; 64] = self
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| CodeError::BadSignature(m.publisher.clone()))?;
        key.verify_strict(&self.manifest, &ed25519_dalek::Signature::from_bytes(&sig))
            .map_err(|_| CodeError::BadSignature(m.publisher.clone()))?;
        if m.size > MAX_BINARY {
            return Err(CodeError::Malformed(format!(
                "binary of {} bytes exceeds the {MAX_BINARY}-byte limit",
                m.size
            )));
        }
        let expected_chunks = m.size.div_ceil(CHUNK_SIZE as u64);
        if m.chunks.len() as u64 != expected_chunks {
            return Err(CodeError::Malformed(format!(
                "{} chunk hashes for {} bytes",
                m.chunks.len(),
                m.size
            )));
        }
        for h in m.chunks.iter().chain([&m.binary_blake3]) {
            parse_hash(h).map_err(CodeError::Malformed)?;
        }
        if m.types.is_empty() {
            return Err(CodeError::Malformed("it names no type".into()));
        }
        Ok(m)
    }
}

/// An Ed25519 public key from hex.
pub fn parse_public(hex_key: &str) -> Result<VerifyingKey, String> {
    let bytes = hex::decode(hex_key.trim()).map_err(|e| format!("publisher key not hex: {e}"))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "publisher key: expected 32 bytes (64 hex digits)".to_string())?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("publisher key: {e}"))
}

/// A blake3 hash from hex.
pub fn parse_hash(h: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(h).map_err(|e| format!("hash not hex: {e}"))?;
    bytes
        .try_into()
        .map_err(|_| "hash: expected 32 bytes".to_string())
}

/// A binary cut into chunks, with its (unsigned) manifest.
pub struct Bundle {
    /// The manifest (publisher and time set when signed).
    pub manifest: Manifest,
    /// The chunks, in order.
    pub chunks: Vec<Vec<u8>>,
}

impl Bundle {
    /// The binary `bytes`, serving `types`.
    pub fn new(bytes: &[u8], types: Vec<String>) -> Self {
        let chunks: Vec<Vec<u8>> = bytes.chunks(CHUNK_SIZE).map(<[u8]>::to_vec).collect();
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            target: TARGET.to_string(),
            types,
            binary_blake3: blake3::hash(bytes).to_hex().to_string(),
            size: bytes.len() as u64,
            chunks: chunks
                .iter()
                .map(|c| blake3::hash(c).to_hex().to_string())
                .collect(),
            publisher: String::new(),
            published_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        Self { manifest, chunks }
    }

    /// The binary at `path`.
    pub fn from_file(path: &Path, types: Vec<String>) -> Result<Self, CodeError> {
        let bytes = std::fs::read(path)
            .map_err(|e| CodeError::Io(format!("reading {}: {e}", path.display())))?;
        Ok(Self::new(&bytes, types))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(types: &[&str]) -> (PublisherKey, SignedManifest, Bundle) {
        let key = PublisherKey::generate();
        let bytes: Vec<u8> = (0..(CHUNK_SIZE * 2 + 5)).map(|i| (i % 251) as u8).collect();
        let bundle = Bundle::new(&bytes, types.iter().map(|s| s.to_string()).collect());
        let s = key.sign(bundle.manifest.clone()).unwrap();
        (key, s, bundle)
    }

    #[test]
    fn a_signed_manifest_opens_and_names_its_publisher_and_chunks() {
        let (key, s, bundle) = signed(&["app.Island"]);
        let m = s.open().unwrap();
        assert_eq!(m.publisher, key.public_hex());
        assert_eq!(m.types, ["app.Island"]);
        assert_eq!(m.chunks.len(), 3);
        assert_eq!(bundle.chunks.len(), 3);
        assert_eq!(bundle.chunks[2].len(), 5);
        assert_eq!(m.target, TARGET);
        for (h, c) in m.chunks.iter().zip(&bundle.chunks) {
            assert_eq!(*h, blake3::hash(c).to_hex().to_string());
        }
    }

    #[test]
    fn an_altered_manifest_or_signature_does_not_open() {
        let (_, s, _) = signed(&["app.Island"]);
        // one byte of the manifest changed
        let mut bad = s.clone();
        let last = bad.manifest.len() - 1;
        bad.manifest[last] ^= 1;
        assert!(bad.open().is_err());
        // the signature changed
        let mut bad = s.clone();
        bad.signature[0] ^= 1;
        assert!(matches!(bad.open(), Err(CodeError::BadSignature(_))));
        // another key's signature over the same bytes
        let other = PublisherKey::generate();
        let mut m: Manifest = from_cbor(&s.manifest).unwrap();
        m.types.push("app.Extra".into());
        let forged = SignedManifest {
            manifest: cbor(&m).unwrap(),
            signature: other.sign(m.clone()).unwrap().signature,
        };
        assert!(matches!(forged.open(), Err(CodeError::BadSignature(_))));
        // garbage
        let junk = SignedManifest {
            manifest: vec![0xff; 10],
            signature: vec![1; 3],
        };
        assert!(matches!(junk.open(), Err(CodeError::Malformed(_))));
    }

    #[test]
    fn a_manifest_whose_chunk_list_does_not_match_its_size_is_refused() {
        let key = PublisherKey::generate();
        let mut b = Bundle::new(&[1, 2, 3], vec!["t".into()]);
        b.manifest.chunks.push(b.manifest.chunks[0].clone());
        let s = key.sign(b.manifest).unwrap();
        assert!(matches!(s.open(), Err(CodeError::Malformed(m)) if m.contains("chunk hashes")));
    }

    #[test]
    fn keys_round_trip_through_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/publisher.key");
        let a = PublisherKey::load_or_create(&path).unwrap();
        let b = PublisherKey::load(&path).unwrap();
        assert_eq!(a.public_hex(), b.public_hex());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "zz").unwrap();
        assert!(PublisherKey::load(&path).is_err());
        assert!(parse_public(&a.public_hex()).is_ok());
        assert!(parse_public("abc").is_err());
    }
}
