//! Code stored on the network itself (the paper's pure P2P option, §3.3): the
//! manifests of a type at the roots of `blake3(type name)`, and each chunk of a
//! binary at keys derived from its content hash, each in [`COPIES`] copies
//! whose GUIDs differ, so their roots are different volunteers. The records
//! are objects of two built-in types that every volunteer links: they move to
//! their new roots when volunteers join and leave, like any object, so a
//! volunteer leaving loses no code, and one failing loses one copy.
//!
//! A volunteer that fetched a binary serves its chunks too (PAST's caching,
//! which spreads the rush of a new bundle's first creations): it tells the
//! manifest records it holds the binary, and the next fetchers ask holders
//! first, straight (`Node::fetch_block`), then the chunk records.

use futures::StreamExt;
use g2::prelude::*;
use g2::{CallError, ObjectId, Peer};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::bundle::{Bundle, CodeError, Manifest, PublisherKey, SignedManifest};

/// Copies of every code record.
pub const COPIES: u8 = 3;

/// At most this many manifests are kept per type (the newest).
const MAX_MANIFESTS: usize = 16;

/// Chunk transfers in flight at once, publishing or fetching.
const PARALLEL: usize = 4;

/// Holders a manifest record remembers per binary (the newest).
pub const MAX_HOLDERS: usize = 32;

/// Holders a fetcher asks for one chunk before the chunk records.
const HOLDERS_TRIED: usize = 2;

/// How long a fetcher waits for a holder (a holder is a volunteer that may be
/// busy or gone: the records remain).
const HOLDER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The built-in type of a chunk record.
pub const CHUNK_TYPE: &str = "g2.code.Chunk";
/// The built-in type of a type's manifest record.
pub const MANIFESTS_TYPE: &str = "g2.code.Manifests";

/// A chunk of a bundle's binary.
#[g2::remote]
pub trait ChunkRecord {
    /// Its bytes.
    async fn bytes(&mut self) -> serde_bytes::ByteBuf;
}

/// The signed manifests published for one type.
#[g2::remote]
pub trait ManifestRecord {
    /// Adds a manifest (its signature must verify and it must name the type).
    async fn put(&mut self, manifest: SignedManifest) -> Result<(), String>;
    /// The manifests kept.
    async fn list(&mut self) -> Vec<SignedManifest>;
    /// `holder` keeps the binary whose blake3 is `binary` (hex) and serves
    /// its chunks; `binary` must be one of the manifests kept.
    async fn add_holder(&mut self, binary: String, holder: Peer) -> Result<(), String>;
    /// The holders of `binary` known here, the newest last.
    async fn holders(&mut self, binary: String) -> Vec<Peer>;
}

/// A volunteer that said it serves a binary's chunks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    /// The binary's blake3, hex.
    pub binary: String,
    /// The volunteer.
    pub peer: Peer,
}

/// State of a chunk record.
#[derive(Serialize, Deserialize)]
pub struct Chunk {
    #[serde(with = "serde_bytes")]
    bytes: Vec<u8>,
}

impl Chunk {
    /// A chunk record holding `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self { bytes }
    }
}

impl Object for Chunk {
    const TYPE_NAME: &'static str = CHUNK_TYPE;
    type Init = Chunk;
    type Ref = ChunkRecordRef;
    fn activate(init: Chunk) -> Self {
        init
    }
    const PASSIVE: bool = true;
}

impl ChunkRecord for Chunk {
    async fn bytes(&mut self) -> serde_bytes::ByteBuf {
        serde_bytes::ByteBuf::from(self.bytes.clone())
    }
}

/// State of a type's manifest record.
#[derive(Serialize, Deserialize)]
pub struct Manifests {
    type_name: String,
    entries: Vec<SignedManifest>,
    #[serde(default)]
    holders: Vec<Holder>,
}

impl Object for Manifests {
    const TYPE_NAME: &'static str = MANIFESTS_TYPE;
    type Init = String;
    type Ref = ManifestRecordRef;
    fn activate(type_name: String) -> Self {
        Manifests {
            type_name,
            entries: Vec::new(),
            holders: Vec::new(),
        }
    }
    const PASSIVE: bool = true;
}

impl ManifestRecord for Manifests {
    async fn put(&mut self, manifest: SignedManifest) -> Result<(), String> {
        let m = manifest.open().map_err(|e| e.to_string())?;
        if !m.types.contains(&self.type_name) {
            return Err(format!("the manifest does not name {}", self.type_name));
        }
        if self.entries.contains(&manifest) {
            return Ok(());
        }
        // one per publisher and target: the newest
        let same = |e: &SignedManifest| {
            e.open()
                .is_ok_and(|o| o.publisher == m.publisher && o.target == m.target)
        };
        if let Some(pos) = self.entries.iter().position(same) {
            let kept = self.entries[pos]
                .open()
                .map(|o| o.published_ms)
                .unwrap_or(0);
            if kept >= m.published_ms {
                return Ok(()); // the one kept is as new
            }
            self.entries.remove(pos);
        }
        self.entries.push(manifest);
        if self.entries.len() > MAX_MANIFESTS {
            self.entries.remove(0);
        }
        Ok(())
    }
    async fn list(&mut self) -> Vec<SignedManifest> {
        self.entries.clone()
    }
    async fn add_holder(&mut self, binary: String, holder: Peer) -> Result<(), String> {
        let known = self
            .entries
            .iter()
            .any(|e| e.open().is_ok_and(|m| m.binary_blake3 == binary));
        if !known {
            return Err(format!(
                "no manifest of {} names binary {binary}",
                self.type_name
            ));
        }
        self.holders
            .retain(|h| !(h.binary == binary && h.peer.id == holder.id));
        self.holders.push(Holder {
            binary: binary.clone(),
            peer: holder,
        });
        let of_it = self.holders.iter().filter(|h| h.binary == binary).count();
        if of_it > MAX_HOLDERS
            && let Some(oldest) = self.holders.iter().position(|h| h.binary == binary)
        {
            self.holders.remove(oldest);
        }
        // holders of binaries no manifest names any more are forgotten
        let entries = &self.entries;
        self.holders.retain(|h| {
            entries
                .iter()
                .any(|e| e.open().is_ok_and(|m| m.binary_blake3 == h.binary))
        });
        Ok(())
    }
    async fn holders(&mut self, binary: String) -> Vec<Peer> {
        self.holders
            .iter()
            .filter(|h| h.binary == binary)
            .map(|h| h.peer.clone())
            .collect()
    }
}

/// The GUID of copy `copy` of the manifest record of `type_name`.
pub fn manifest_id(type_name: &str, copy: u8) -> ObjectId {
    derive_id(&[b"g2.code.manifest\0", type_name.as_bytes(), &[0, copy]])
}

/// The GUID of copy `copy` of the chunk whose blake3 is `hash`.
pub fn chunk_id(hash: &[u8; 32], copy: u8) -> ObjectId {
    derive_id(&[b"g2.code.chunk\0", hash, &[copy]])
}

fn derive_id(parts: &[&[u8]]) -> ObjectId {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p);
    }
    let bytes: [u8; 16] = h.finalize().as_bytes()[..16]
        .try_into()
        .expect("16 of 32 bytes");
    ObjectId::from_u128(u128::from_be_bytes(bytes))
}

/// Creates a record, or finds it already there (content-addressed records
/// are the same whoever stored them first).
async fn create_once<T: Object>(node: &Node, id: ObjectId, init: T::Init) -> Result<(), CallError> {
    let init = ciborium_bytes(&init)?;
    match node
        .create_raw_under(id, T::TYPE_NAME, init, g2::POLICY_NONE)
        .await
    {
        Ok(()) | Err(CallError::Remote(g2::RemoteError::AlreadyExists(_))) => Ok(()),
        Err(e) => Err(e),
    }
}

fn ciborium_bytes<T: Serialize>(v: &T) -> Result<Vec<u8>, CallError> {
    super::bundle::cbor(v).map_err(|e| CallError::Encode {
        what: "a code record".into(),
        reason: e.to_string(),
    })
}

/// What [`publish`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The binary's blake3, hex.
    pub binary_blake3: String,
    /// Its size.
    pub size: u64,
    /// Whether the network already had this binary's manifest (nothing sent).
    pub already: bool,
}

/// Publishes `bundle`, signed with `key`, through `node`: the chunks first,
/// then the manifest of each of its types (so a manifest found is complete).
pub async fn publish(
    node: &Node,
    key: &PublisherKey,
    bundle: &Bundle,
) -> Result<Published, String> {
    let signed = key
        .sign(bundle.manifest.clone())
        .map_err(|e| e.to_string())?;
    let manifest = signed.open().map_err(|e| e.to_string())?;
    let done = Published {
        binary_blake3: manifest.binary_blake3.clone(),
        size: manifest.size,
        already: true,
    };
    // the manifest records first: reading one that does not exist would make
    // a client whose calls are re-sent (a run under a fault-tolerance policy)
    // ask again for a while
    for t in &manifest.types {
        for copy in 0..COPIES {
            let id = manifest_id(t, copy);
            if let Err(e) = create_once::<Manifests>(node, id, t.clone()).await {
                debug!(record = %id, "could not create a manifest record: {e}");
            }
        }
    }
    // the same binary by the same publisher already there: nothing to send
    let mut have_all = true;
    for t in &manifest.types {
        let found = list_manifests(node, t).await;
        let there = found.iter().any(|(m, _)| {
            m.publisher == manifest.publisher
                && m.binary_blake3 == manifest.binary_blake3
                && m.target == manifest.target
        });
        have_all &= there;
    }
    if have_all {
        return Ok(done);
    }
    let jobs = bundle.chunks.iter().flat_map(|c| {
        let hash = *blake3::hash(c).as_bytes();
        (0..COPIES).map(move |copy| (chunk_id(&hash, copy), c))
    });
    let mut sends = futures::stream::iter(jobs.map(|(id, c)| async move {
        create_once::<Chunk>(node, id, Chunk::new(c.clone()))
            .await
            .map_err(|e| format!("storing chunk record {id}: {e}"))
    }))
    .buffer_unordered(PARALLEL);
    while let Some(r) = sends.next().await {
        r?;
    }
    for t in &manifest.types {
        let mut stored = 0;
        let mut last = String::new();
        for copy in 0..COPIES {
            let id = manifest_id(t, copy);
            let r = async {
                create_once::<Manifests>(node, id, t.clone()).await?;
                let rec = node.reference::<ManifestRecordRef>(id);
                rec.put(signed.clone()).await
            }
            .await;
            match r {
                Ok(Ok(())) => stored += 1,
                Ok(Err(e)) => last = e,
                Err(e) => last = e.to_string(),
            }
        }
        if stored == 0 {
            return Err(format!("storing the manifest of {t}: {last}"));
        }
    }
    Ok(Published {
        already: false,
        ..done
    })
}

/// The manifests the network holds for `type_name` whose signatures verify,
/// from every copy that answers (duplicates removed).
pub async fn list_manifests(node: &Node, type_name: &str) -> Vec<(Manifest, SignedManifest)> {
    let mut out: Vec<(Manifest, SignedManifest)> = Vec::new();
    for (copy, rec) in manifest_records(node, type_name) {
        match rec.list().await {
            Ok(list) => super::bundle::keep_manifests_of(
                type_name,
                list,
                &format_args!("manifest record {copy}"),
                &mut out,
            ),
            Err(CallError::ObjectNotFound(_)) => {}
            Err(e) => debug!(%type_name, copy, "manifest record did not answer: {e}"),
        }
    }
    out
}

/// The copies of the manifest record of `type_name`, numbered.
fn manifest_records(node: &Node, type_name: &str) -> impl Iterator<Item = (u8, ManifestRecordRef)> {
    let node = node.clone();
    let type_name = type_name.to_string();
    (0..COPIES).map(move |copy| {
        let rec = node
            .reference::<ManifestRecordRef>(manifest_id(&type_name, copy))
            .with_timeout(std::time::Duration::from_secs(10));
        (copy, rec)
    })
}

/// Tells the manifest records of every type of `manifest` that this node
/// holds its binary and serves its chunks. Returns how many records took it.
pub async fn announce_holder(node: &Node, manifest: &Manifest) -> usize {
    let mut took = 0;
    for t in &manifest.types {
        for (copy, rec) in manifest_records(node, t) {
            match rec
                .add_holder(manifest.binary_blake3.clone(), node.peer().clone())
                .await
            {
                Ok(Ok(())) => took += 1,
                Ok(Err(e)) => debug!(r#type = %t, copy, "holder not recorded: {e}"),
                Err(e) => debug!(r#type = %t, copy, "manifest record did not answer: {e}"),
            }
        }
    }
    took
}

/// The holders of `manifest`'s binary the records know, other than `node`
/// itself, in random order.
pub async fn list_holders(node: &Node, manifest: &Manifest) -> Vec<Peer> {
    let mut out: Vec<Peer> = Vec::new();
    for t in &manifest.types {
        for (_, rec) in manifest_records(node, t) {
            if let Ok(list) = rec.holders(manifest.binary_blake3.clone()).await {
                for p in list {
                    if p.id != node.id() && !out.iter().any(|o| o.id == p.id) {
                        out.push(p);
                    }
                }
            }
        }
    }
    shuffle(&mut out);
    out
}

fn shuffle<T>(v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let r = u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().expect("8"));
        v.swap(i, (r % (i as u64 + 1)) as usize);
    }
}

/// A binary fetched, and where its chunks came from.
#[derive(Debug)]
pub struct Fetched {
    /// The binary, checked against the manifest.
    pub bytes: Vec<u8>,
    /// Chunks served by holders (volunteers that fetched it before).
    pub from_holders: usize,
    /// Chunks read from the chunk records.
    pub from_records: usize,
}

/// Fetches the binary `manifest` describes, chunk by chunk: each from up to
/// two of `holders` (picked at random per chunk, so the load spreads over
/// them), then from the chunk records, starting at a random copy. A chunk
/// that does not match its hash is reported and another source used. The
/// whole binary's hash is checked at the end.
pub async fn fetch_binary(
    node: &Node,
    manifest: &Manifest,
    holders: &[Peer],
) -> Result<Fetched, CodeError> {
    let jobs: Vec<(usize, String)> = manifest.chunks.iter().cloned().enumerate().collect();
    let binary = &manifest.binary_blake3;
    let mut chunks = futures::stream::iter(jobs.into_iter().map(|(i, h)| async move {
        let hash = super::bundle::parse_hash(&h).map_err(CodeError::Malformed)?;
        let mut why = Vec::new();
        let mut asked: Vec<&Peer> = holders.iter().collect();
        shuffle(&mut asked);
        for holder in asked.into_iter().take(HOLDERS_TRIED) {
            match node.fetch_block(holder, hash, Some(HOLDER_TIMEOUT)).await {
                Ok(b) => return Ok((i, b, true)),
                Err(e) => {
                    debug!(chunk = i, holder = %holder.id, "holder did not serve the chunk: {e}");
                    why.push(format!("holder {}: {e}", holder.id));
                }
            }
        }
        // starting from a random copy spreads many volunteers' first fetch of
        // a new bundle over the copies' hosts
        let first = uuid::Uuid::new_v4().as_bytes()[0] % COPIES;
        for copy in (0..COPIES).map(|c| (first + c) % COPIES) {
            let id = chunk_id(&hash, copy);
            let rec = node
                .reference::<ChunkRecordRef>(id)
                .with_timeout(std::time::Duration::from_secs(20));
            match rec.bytes().await {
                Ok(b) if blake3::hash(&b) == blake3::Hash::from(hash) => {
                    return Ok((i, b.into_vec(), false));
                }
                Ok(_) => {
                    warn!(chunk = i, copy, record = %id, "a chunk record does not match its hash: altered or corrupt; trying another copy");
                    why.push(format!("copy {copy}: does not match its hash"));
                }
                Err(e) => why.push(format!("copy {copy}: {e}")),
            }
        }
        Err(CodeError::Io(format!("chunk {i} of {binary}: no good copy ({})", why.join("; "))))
    }))
    .buffer_unordered(PARALLEL);
    let mut parts: Vec<Option<Vec<u8>>> = vec![None; manifest.chunks.len()];
    let (mut from_holders, mut from_records) = (0, 0);
    while let Some(r) = chunks.next().await {
        let (i, bytes, holder) = r?;
        if holder {
            from_holders += 1;
        } else {
            from_records += 1;
        }
        parts[i] = Some(bytes);
    }
    let bytes: Vec<u8> = parts.into_iter().flatten().flatten().collect();
    if bytes.len() as u64 != manifest.size
        || blake3::hash(&bytes).to_hex().as_str() != manifest.binary_blake3
    {
        return Err(CodeError::Io(format!(
            "the fetched binary does not match {}",
            manifest.binary_blake3
        )));
    }
    Ok(Fetched {
        bytes,
        from_holders,
        from_records,
    })
}
