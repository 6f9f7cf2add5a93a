//! The QUIC transport (quinn + rustls) with self-certifying node ids.
//!
//! * Each node has an Ed25519 key pair kept in its data dir ([`NodeKey`]); its
//!   [`NodeId`] is the first 128 bits of blake3 of its public key (the DER
//!   SubjectPublicKeyInfo). Certificates are self-signed (rcgen).
//! * Both sides present certificates. A client that dials a peer expecting id X
//!   refuses a server whose key does not hash to X; a server learns the client's id
//!   from the client's key. Nobody can claim an id without its private key.
//! * The network name is the ALPN protocol (`g2/<network>`), so a node of another
//!   network fails the handshake.
//! * One connection per peer, reused; frames travel on a long-lived unidirectional
//!   stream per direction as a 4-byte big-endian length and the bytes. A frame over
//!   [`MAX_FRAME`] closes the connection with a logged reason; so does a peer the
//!   runtime reports as misbehaving ([`Transport::disconnect`]). Streams per peer
//!   are bounded, and a bounded inbox applies back-pressure through QUIC flow
//!   control.
//! * Once the runtime asks ([`Transport::serve`]), each stream's reader task hands
//!   its frames to the runtime's handler itself, one after another: a peer's frames
//!   keep their order, a slow peer holds up only its own stream, and no task switch
//!   sits between reading a frame and handling it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use g2_core::sync::lock;
use std::time::Duration;

use async_trait::async_trait;
use g2_core::transport::{FrameHandler, Incoming, Transport, TransportError};
use g2_core::wire::MAX_FRAME;
use g2_core::{NodeAddr, NodeId, Peer};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio::sync::{Notify, mpsc};
use tracing::{debug, info, warn};

/// Application error code sent when closing a connection to a misbehaving peer.
pub const CLOSE_MISBEHAVING: u32 = 1;
/// How long each step of a graceful close waits for peers at most.
pub const GOODBYE_WAIT: Duration = Duration::from_secs(1);
/// Application error code of an orderly shutdown.
pub const CLOSE_SHUTDOWN: u32 = 0;
/// How long a graceful close waits, at most, for its close to reach the peers.
pub const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// Why the QUIC transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// Reading or writing the key file failed.
    #[error("node key {path}: {reason}")]
    Key {
        /// The key file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// TLS or QUIC configuration failed.
    #[error("QUIC configuration: {0}")]
    Config(String),
    /// Binding the UDP socket failed.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A query of another node (`g2 status`) got no answer.
    #[error("{0}")]
    Query(String),
}

/// What a dial that got no answer says: a QUIC client cannot tell nothing
/// listening from a port of another protocol or a firewall that drops UDP.
fn no_answer(addr: impl std::fmt::Display, after: Duration) -> String {
    format!(
        "no G2 node answered at {addr} within {} s (nothing listening there, a port that is not G2's, or UDP blocked on the way): check the address and port",
        after.as_secs()
    )
}

/// How long a dial waits for the handshake.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The id that a public key (DER SubjectPublicKeyInfo) certifies.
pub fn node_id_of_public_key(spki_der: &[u8]) -> NodeId {
    let hash = blake3::hash(spki_der);
    let mut b = [0u8; 16];
    b.copy_from_slice(&hash.as_bytes()[..16]);
    NodeId::from_u128(u128::from_be_bytes(b))
}

/// The id that a certificate's key certifies.
pub fn node_id_of_certificate(cert: &CertificateDer<'_>) -> Result<NodeId, String> {
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| format!("bad certificate: {e}"))?;
    Ok(node_id_of_public_key(ee.subject_public_key_info().as_ref()))
}

/// A node's key pair, and the self-signed certificate that presents it.
pub struct NodeKey {
    pkcs8: Vec<u8>,
    cert: CertificateDer<'static>,
    id: NodeId,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl NodeKey {
    /// A fresh Ed25519 key.
    pub fn generate() -> Result<Self, QuicError> {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| QuicError::Config(format!("generating a key: {e}")))?;
        Self::from_key_pair(kp)
    }

    fn from_key_pair(kp: rcgen::KeyPair) -> Result<Self, QuicError> {
        let id = node_id_of_public_key(&kp.public_key_der());
        let params = rcgen::CertificateParams::new(vec![format!("{:032x}.id.g2", id.as_u128())])
            .map_err(|e| QuicError::Config(format!("certificate parameters: {e}")))?;
        let cert = params
            .self_signed(&kp)
            .map_err(|e| QuicError::Config(format!("self-signing: {e}")))?;
        Ok(Self {
            pkcs8: kp.serialize_der(),
            cert: cert.der().clone(),
            id,
        })
    }

    /// Loads the key in `dir/node.key`, creating the directory and a new key when
    /// there is none. The same data dir always gives the same node id.
    pub fn load_or_create(dir: &Path) -> Result<Self, QuicError> {
        let path = dir.join("node.key");
        let err = |reason: String| QuicError::Key {
            path: path.display().to_string(),
            reason,
        };
        if path.exists() {
            let pem = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
            let kp = rcgen::KeyPair::from_pem(&pem)
                .map_err(|e| err(format!("not a private key in PEM: {e}")))?;
            return Self::from_key_pair(kp);
        }
        std::fs::create_dir_all(dir).map_err(|e| err(format!("creating the data dir: {e}")))?;
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| err(format!("generating: {e}")))?;
        let tmp = dir.join("node.key.tmp");
        std::fs::write(&tmp, kp.serialize_pem()).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, &path).map_err(|e| err(e.to_string()))?;
        Self::from_key_pair(kp)
    }

    /// The node id this key certifies.
    pub fn id(&self) -> NodeId {
        self.id
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.clone()))
    }
}

/// The ALPN protocol of status queries (`g2 status`), accepted whatever the
/// network: such a connection gets one status frame and nothing else.
pub const STATUS_ALPN: &[u8] = b"g2-status";

/// The ALPN protocol that asks a node which network it is on, accepted
/// whatever the network: the answer is its network name and nothing else
/// (a dial refused for another network says which one to pass).
pub const NETWORK_ALPN: &[u8] = b"g2-network";

/// The ALPN protocol of a network.
pub fn alpn(network: &str) -> Vec<u8> {
    format!("g2/{network}").into_bytes()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server name under which a client expects node `id` (checked by the verifier).
fn server_name_for(id: Option<NodeId>) -> String {
    match id {
        Some(id) => format!("{:032x}.id.g2", id.as_u128()),
        None => "unknown.id.g2".to_string(),
    }
}

fn expected_id(name: &ServerName<'_>) -> Option<NodeId> {
    let ServerName::DnsName(dns) = name else {
        return None;
    };
    let hex = dns.as_ref().strip_suffix(".id.g2")?;
    u128::from_str_radix(hex, 16).ok().map(NodeId::from_u128)
}

/// Accepts any self-signed certificate whose key hashes to the expected node id
/// (when one is expected). Possession of the key is proven by the TLS handshake
/// signature, which is verified normally.
#[derive(Debug)]
struct SelfCertifyingServer {
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SelfCertifyingServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual = node_id_of_certificate(end_entity).map_err(rustls::Error::General)?;
        match expected_id(server_name) {
            Some(expected) if expected != actual => Err(rustls::Error::General(format!(
                "peer key hashes to {actual}, not the claimed {expected}"
            ))),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }
    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Requires a client certificate (any self-signed one: the id comes from its key).
#[derive(Debug)]
struct SelfCertifyingClient {
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for SelfCertifyingClient {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        node_id_of_certificate(end_entity).map_err(rustls::Error::General)?;
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

fn transport_config(max_streams: u32) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_uni_streams(max_streams.into());
    t.max_concurrent_bidi_streams(0u8.into());
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(30)) {
        t.max_idle_timeout(Some(idle));
    }
    Arc::new(t)
}

/// Client-side TLS presenting `key` and offering one ALPN protocol.
fn client_tls(key: &NodeKey, alpn: Vec<u8>) -> Result<QuicClientConfig, QuicError> {
    let p = provider();
    let algs = p.signature_verification_algorithms;
    let mut tls = rustls::ClientConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| QuicError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SelfCertifyingServer { algs }))
        .with_client_auth_cert(vec![key.cert.clone()], key.private_key())
        .map_err(|e| QuicError::Config(e.to_string()))?;
    tls.alpn_protocols = vec![alpn];
    QuicClientConfig::try_from(tls).map_err(|e| QuicError::Config(e.to_string()))
}

/// The client side of a node's TLS: presents `key`, expects peers of `network`.
pub fn client_config(network: &str, key: &NodeKey) -> Result<quinn::ClientConfig, QuicError> {
    let crypto = client_tls(key, alpn(network))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(transport_config(8));
    Ok(cfg)
}

/// The server side of a node's TLS: presents `key`, admits peers of `network`.
pub fn server_config(
    network: &str,
    key: &NodeKey,
    max_streams: u32,
) -> Result<quinn::ServerConfig, QuicError> {
    let p = provider();
    let algs = p.signature_verification_algorithms;
    let mut tls = rustls::ServerConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| QuicError::Config(e.to_string()))?
        .with_client_cert_verifier(Arc::new(SelfCertifyingClient { algs }))
        .with_single_cert(vec![key.cert.clone()], key.private_key())
        .map_err(|e| QuicError::Config(e.to_string()))?;
    tls.alpn_protocols = vec![alpn(network), STATUS_ALPN.to_vec(), NETWORK_ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| QuicError::Config(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(transport_config(max_streams));
    Ok(cfg)
}

/// Settings of a [`QuicTransport`].
#[derive(Debug)]
pub struct QuicConfig {
    /// The network name (checked through ALPN).
    pub network: String,
    /// The UDP address to listen on (port 0 picks one).
    pub listen: SocketAddr,
    /// The node's key.
    pub key: NodeKey,
    /// Most concurrent streams a peer may open to this node.
    pub max_streams_per_peer: u32,
    /// Frames buffered for the runtime before readers stop reading.
    pub inbox_capacity: usize,
}

impl QuicConfig {
    /// Defaults for `network` on `listen` with `key`.
    pub fn new(network: impl Into<String>, listen: SocketAddr, key: NodeKey) -> Self {
        Self {
            network: network.into(),
            listen,
            key,
            max_streams_per_peer: 4,
            inbox_capacity: 4096,
        }
    }
}

/// The stream this node sends its frames to a peer on.
enum SendSlot {
    /// None opened yet (or the last one failed).
    Idle,
    /// Open.
    Open(quinn::SendStream),
    /// The peer said goodbye on this connection: nothing more is sent on it.
    Gone,
}

type Slot = Arc<tokio::sync::Mutex<SendSlot>>;

fn new_slot() -> Slot {
    Arc::new(tokio::sync::Mutex::new(SendSlot::Idle))
}

struct Conn {
    conn: quinn::Connection,
    send: Slot,
}

/// The length prefix that, instead of a frame, says "this node is leaving: send
/// nothing more on this connection" (beyond [`MAX_FRAME`], so never a length).
const GOODBYE: u32 = u32::MAX;
/// The answer to [`GOODBYE`], written after the last frame on the stream the
/// frames went on: whoever reads it has read everything the peer sent before.
const GOODBYE_ACK: u32 = u32::MAX - 1;

/// A record of a peer this node disconnected, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disconnection {
    /// The peer (its verified id).
    pub peer: NodeId,
    /// The logged reason.
    pub reason: String,
}

struct Inner {
    endpoint: quinn::Endpoint,
    me: Peer,
    network: String,
    client: quinn::ClientConfig,
    conns: Mutex<HashMap<NodeId, Conn>>,
    inbox_tx: mpsc::Sender<Incoming>,
    inbox_rx: tokio::sync::Mutex<mpsc::Receiver<Incoming>>,
    closed: AtomicBool,
    closing: Notify,
    disconnections: Mutex<Vec<Disconnection>>,
    status: Mutex<Option<StatusProvider>>,
    /// Where frames go instead of the inbox, once the runtime asked ([`Transport::serve`]).
    handler: std::sync::OnceLock<FrameHandler>,
    /// Every connection being read, by stable id (dialled and accepted).
    live: Mutex<HashMap<usize, quinn::Connection>>,
    /// Stream readers running.
    readers: std::sync::atomic::AtomicUsize,
    /// Signalled when a reader ends or a goodbye is answered.
    goodbye_progress: Notify,
    /// Saying goodbye: new connections are refused.
    leaving: AtomicBool,
    /// Connections (stable ids) whose peer answered this node's goodbye.
    acked: Mutex<std::collections::HashSet<usize>>,
    /// Incoming connections accepted but not yet in `live`.
    accepting: std::sync::atomic::AtomicUsize,
}

/// Produces the bytes a status query gets.
pub type StatusProvider = Arc<dyn Fn() -> Vec<u8> + Send + Sync>;

/// A node's QUIC endpoint; cheap to clone (clones share the endpoint).
#[derive(Clone)]
pub struct QuicTransport {
    inner: Arc<Inner>,
}

fn peer_id(conn: &quinn::Connection) -> Result<NodeId, String> {
    let identity = conn.peer_identity().ok_or("no peer certificate")?;
    let certs = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| "unexpected peer identity type".to_string())?;
    let cert = certs.first().ok_or("empty certificate chain")?;
    node_id_of_certificate(cert)
}

impl QuicTransport {
    /// Binds the UDP socket and starts accepting peers. Must run inside tokio.
    pub async fn bind(cfg: QuicConfig) -> Result<Self, QuicError> {
        let server = server_config(&cfg.network, &cfg.key, cfg.max_streams_per_peer)?;
        let client = client_config(&cfg.network, &cfg.key)?;
        let endpoint =
            quinn::Endpoint::server(server, cfg.listen).map_err(|e| QuicError::Bind {
                addr: cfg.listen,
                reason: e.to_string(),
            })?;
        let local = endpoint.local_addr().map_err(|e| QuicError::Bind {
            addr: cfg.listen,
            reason: e.to_string(),
        })?;
        let (tx, rx) = mpsc::channel(cfg.inbox_capacity.max(1));
        let inner = Arc::new(Inner {
            endpoint,
            me: Peer::new(cfg.key.id(), NodeAddr::new(local.to_string())),
            network: cfg.network.clone(),
            client,
            conns: Mutex::new(HashMap::new()),
            inbox_tx: tx,
            inbox_rx: tokio::sync::Mutex::new(rx),
            closed: AtomicBool::new(false),
            closing: Notify::new(),
            disconnections: Mutex::new(Vec::new()),
            status: Mutex::new(None),
            handler: std::sync::OnceLock::new(),
            live: Mutex::new(HashMap::new()),
            readers: std::sync::atomic::AtomicUsize::new(0),
            goodbye_progress: Notify::new(),
            leaving: AtomicBool::new(false),
            acked: Mutex::new(std::collections::HashSet::new()),
            accepting: std::sync::atomic::AtomicUsize::new(0),
        });
        tokio::spawn(accept_loop(Arc::downgrade(&inner), inner.endpoint.clone()));
        info!(node = %inner.me.id, addr = %local, network = %cfg.network, "QUIC endpoint listening");
        Ok(Self { inner })
    }

    /// The UDP address this endpoint listens on.
    pub fn local_addr(&self) -> SocketAddr {
        // bind() read it successfully; the socket does not change afterwards
        self.inner
            .endpoint
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Answers status queries (`g2 status`) with what `provider` returns.
    pub fn set_status_provider(&self, provider: impl Fn() -> Vec<u8> + Send + Sync + 'static) {
        *lock(&self.inner.status) = Some(Arc::new(provider));
    }

    /// Peers disconnected so far for misbehaving, with the reasons.
    pub fn disconnections(&self) -> Vec<Disconnection> {
        lock(&self.inner.disconnections).clone()
    }

    /// Peers with an open connection.
    pub fn connected_peers(&self) -> Vec<NodeId> {
        let mut v: Vec<_> = lock(&self.inner.conns)
            .iter()
            .filter(|(_, c)| c.conn.close_reason().is_none())
            .map(|(id, _)| *id)
            .collect();
        v.sort();
        v
    }

    async fn connection(
        &self,
        to: &Peer,
    ) -> Result<(NodeId, Slot, quinn::Connection), TransportError> {
        if let Some(c) = lock(&self.inner.conns).get(&to.id)
            && c.conn.close_reason().is_none()
        {
            return Ok((to.id, c.send.clone(), c.conn.clone()));
        }
        let (id, conn) = self.dial(&to.addr, Some(to.id)).await?;
        let send = self.inner.register(id, conn.clone());
        Ok((id, send, conn))
    }

    async fn dial(
        &self,
        addr: &NodeAddr,
        expected: Option<NodeId>,
    ) -> Result<(NodeId, quinn::Connection), TransportError> {
        let sock: SocketAddr = addr.as_str().parse().map_err(|e| {
            TransportError::Unreachable(format!("{addr}: not a socket address ({e})"))
        })?;
        let connecting = self
            .inner
            .endpoint
            .connect_with(self.inner.client.clone(), sock, &server_name_for(expected))
            .map_err(|e| TransportError::Unreachable(format!("{addr}: {e}")))?;
        let conn = match tokio::time::timeout(DIAL_TIMEOUT, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) if refused_protocol(&e) => {
                // another network's node: ask it which, to say what to pass
                let theirs = query_network(sock).await;
                if let Err(e) = &theirs {
                    debug!(%addr, "could not learn the network of a node of another network: {e}");
                }
                return Err(TransportError::WrongNetwork {
                    addr: addr.to_string(),
                    ours: self.inner.network.clone(),
                    theirs: theirs.ok(),
                });
            }
            Ok(Err(e)) => {
                let msg = e.to_string();
                if let Some(expected) = expected
                    && msg.contains("not the claimed")
                {
                    return Err(TransportError::WrongPeer {
                        addr: addr.to_string(),
                        expected: expected.to_string(),
                        actual: msg,
                    });
                }
                return Err(TransportError::Unreachable(format!("{addr}: {msg}")));
            }
            Err(_) => {
                return Err(TransportError::Unreachable(format!(
                    "{addr}: {}",
                    no_answer(addr, DIAL_TIMEOUT)
                )));
            }
        };
        let id = peer_id(&conn).map_err(TransportError::Other)?;
        lock(&self.inner.live).insert(conn.stable_id(), conn.clone());
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(read_connection(weak, conn.clone(), id));
        Ok((id, conn))
    }
}

impl Inner {
    /// Keeps `conn` as the connection to `id` (unless a live one exists) and
    /// returns the send-stream slot to use.
    fn register(&self, id: NodeId, conn: quinn::Connection) -> Slot {
        let mut conns = lock(&self.conns);
        if let Some(c) = conns.get(&id)
            && c.conn.close_reason().is_none()
            && c.conn.stable_id() != conn.stable_id()
        {
            return c.send.clone();
        }
        let send = new_slot();
        conns.insert(
            id,
            Conn {
                conn,
                send: send.clone(),
            },
        );
        send
    }

    /// Keeps a connection the peer opened as the one to send on: a peer that
    /// dials in again may have restarted (same key, same address), and the old
    /// connection then leads nowhere until it times out.
    fn register_accepted(&self, id: NodeId, conn: quinn::Connection) {
        lock(&self.conns).insert(
            id,
            Conn {
                conn,
                send: new_slot(),
            },
        );
    }

    /// `id` said goodbye on `conn`: stop sending there. The stream the frames
    /// went on gets the answer after them and is finished, which tells the peer
    /// that everything from here has arrived; later sends fail (the peer refuses
    /// new connections), so the runtime routes around it.
    fn peer_leaving(&self, id: NodeId, conn: &quinn::Connection) {
        let slot = {
            let mut conns = lock(&self.conns);
            match conns.get(&id) {
                Some(c) if c.conn.stable_id() == conn.stable_id() => {
                    conns.remove(&id).map(|c| c.send)
                }
                _ => None,
            }
        };
        // a peer that said goodbye sends nothing more here: if this node leaves
        // too, the connection needs no answer to its own goodbye
        lock(&self.acked).insert(conn.stable_id());
        debug!(peer = %id, "the peer is leaving; no more frames to it on this connection");
        let conn = conn.clone();
        tokio::spawn(async move {
            let ack = GOODBYE_ACK.to_be_bytes();
            if let Some(slot) = slot {
                let mut guard = slot.lock().await;
                let old = std::mem::replace(&mut *guard, SendSlot::Gone);
                if let SendSlot::Open(mut s) = old {
                    if s.write_all(&ack).await.is_ok() {
                        let _ = s.finish();
                    }
                    return;
                }
            }
            // nothing sent on this connection's stream yet: answer on a new one
            write_marker(&conn, GOODBYE_ACK).await;
        });
    }

    fn drop_peer(&self, id: NodeId, reason: &str) {
        if let Some(c) = lock(&self.conns).remove(&id) {
            c.conn.close(CLOSE_MISBEHAVING.into(), reason.as_bytes());
        }
        lock(&self.disconnections).push(Disconnection {
            peer: id,
            reason: reason.to_string(),
        });
    }
}

async fn accept_loop(inner: std::sync::Weak<Inner>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if strong.leaving.load(Ordering::Acquire) {
            incoming.refuse();
            continue;
        }
        // counted until the connection is in `live` (or failed)
        strong.accepting.fetch_add(1, Ordering::AcqRel);
        drop(strong);
        let inner = inner.clone();
        tokio::spawn(async move {
            let accepting = AcceptGuard(inner.clone());
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    debug!("refused an incoming connection: {e}");
                    return;
                }
            };
            let protocol = conn
                .handshake_data()
                .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|h| h.protocol);
            let is_status = protocol.as_deref() == Some(STATUS_ALPN);
            let is_network = protocol.as_deref() == Some(NETWORK_ALPN);
            if !is_status
                && !is_network
                && let Some(i) = inner.upgrade()
            {
                lock(&i.live).insert(conn.stable_id(), conn.clone());
            }
            drop(accepting);
            if is_status {
                let provider = inner.upgrade().and_then(|i| lock(&i.status).clone());
                let body = match provider {
                    Some(p) => p(),
                    None => Vec::new(),
                };
                answer_once(conn, body).await;
                return;
            }
            if is_network {
                let body = inner
                    .upgrade()
                    .map(|i| i.network.clone().into_bytes())
                    .unwrap_or_default();
                answer_once(conn, body).await;
                return;
            }
            let id = match peer_id(&conn) {
                Ok(id) => id,
                Err(e) => {
                    warn!(remote = %conn.remote_address(), "refused a peer: {e}");
                    conn.close(CLOSE_MISBEHAVING.into(), e.as_bytes());
                    if let Some(i) = inner.upgrade() {
                        lock(&i.live).remove(&conn.stable_id());
                    }
                    return;
                }
            };
            let Some(strong) = inner.upgrade() else {
                return;
            };
            strong.register_accepted(id, conn.clone());
            drop(strong);
            read_connection(inner, conn, id).await;
        });
    }
}

/// Answers a one-question connection (status, network) with `body`.
async fn answer_once(conn: quinn::Connection, body: Vec<u8>) {
    let res = async {
        let mut s = conn.open_uni().await?;
        s.write_all(&(body.len() as u32).to_be_bytes()).await?;
        s.write_all(&body).await?;
        s.finish()?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
    .await;
    if let Err(e) = res {
        debug!("query not answered: {e}");
    }
    // the client closes once it has read the answer
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
}

/// Asks the node at `addr` for its status (whatever its network).
pub async fn query_status(addr: SocketAddr) -> Result<Vec<u8>, QuicError> {
    query(addr, STATUS_ALPN, Duration::from_secs(10), MAX_FRAME).await
}

/// Asks the node at `addr` which network it is on. The answer is checked to
/// be a valid network name (it comes from a stranger and may be printed).
pub async fn query_network(addr: SocketAddr) -> Result<String, QuicError> {
    let bytes = query(addr, NETWORK_ALPN, Duration::from_secs(3), 256).await?;
    let name = String::from_utf8(bytes).map_err(|_| {
        QuicError::Query(format!(
            "{addr} named its network in bytes that are not UTF-8"
        ))
    })?;
    g2_core::validate_network_name(&name)
        .map_err(|e| QuicError::Query(format!("{addr} named its network {name:?}: {e}")))?;
    Ok(name)
}

/// One question to the node at `addr` over `protocol`: the one stream it
/// answers on, at most `max` bytes.
async fn query(
    addr: SocketAddr,
    protocol: &[u8],
    within: Duration,
    max: usize,
) -> Result<Vec<u8>, QuicError> {
    let key = NodeKey::generate()?;
    let crypto = client_tls(&key, protocol.to_vec())?;
    let local: SocketAddr = if addr.is_ipv6() {
        "[::]:0"
            .parse()
            .map_err(|e| QuicError::Config(format!("{e}")))?
    } else {
        SocketAddr::from(([0, 0, 0, 0], 0))
    };
    let endpoint = quinn::Endpoint::client(local).map_err(|e| QuicError::Bind {
        addr: local,
        reason: e.to_string(),
    })?;
    let fail = |e: String| QuicError::Query(format!("asking {addr}: {e}"));
    let conn = tokio::time::timeout(
        within,
        endpoint
            .connect_with(
                quinn::ClientConfig::new(Arc::new(crypto)),
                addr,
                &server_name_for(None),
            )
            .map_err(|e| fail(e.to_string()))?,
    )
    .await
    .map_err(|_| QuicError::Query(no_answer(addr, within)))?
    .map_err(|e| {
        if refused_protocol(&e) {
            fail("it is a G2 node too old to answer this question".into())
        } else {
            fail(e.to_string())
        }
    })?;
    let read = async {
        let mut s = conn.accept_uni().await.map_err(|e| fail(e.to_string()))?;
        let mut len = [0u8; 4];
        s.read_exact(&mut len)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let len = u32::from_be_bytes(len) as usize;
        if len > max {
            return Err(fail(format!("oversize answer ({len} bytes)")));
        }
        let mut body = vec![0u8; len];
        s.read_exact(&mut body)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(body)
    };
    let body = tokio::time::timeout(within, read)
        .await
        .map_err(|_| fail(format!("no answer within {} s", within.as_secs())))??;
    conn.close(CLOSE_SHUTDOWN.into(), b"done");
    endpoint.wait_idle().await;
    Ok(body)
}

/// Whether a handshake failed because the peer speaks none of the protocols
/// offered (TLS alert 120, no_application_protocol): for a G2 node, it is on
/// another network.
fn refused_protocol(e: &quinn::ConnectionError) -> bool {
    matches!(e, quinn::ConnectionError::ConnectionClosed(c)
        if c.error_code == quinn::TransportErrorCode::crypto(120))
}

/// Reads frames from every stream the peer opens on `conn`.
async fn read_connection(inner: std::sync::Weak<Inner>, conn: quinn::Connection, id: NodeId) {
    let from = Peer::new(id, NodeAddr::new(conn.remote_address().to_string()));
    loop {
        let stream = match conn.accept_uni().await {
            Ok(s) => s,
            Err(e) => {
                debug!(peer = %id, "connection ended: {e}");
                if let Some(i) = inner.upgrade() {
                    lock(&i.live).remove(&conn.stable_id());
                }
                return;
            }
        };
        tokio::spawn(read_stream(
            inner.clone(),
            conn.clone(),
            from.clone(),
            stream,
        ));
    }
}

/// Writes `marker` ([`GOODBYE`] or [`GOODBYE_ACK`]) on a stream of its own.
async fn write_marker(conn: &quinn::Connection, marker: u32) {
    if let Ok(mut s) = conn.open_uni().await
        && s.write_all(&marker.to_be_bytes()).await.is_ok()
    {
        let _ = s.finish();
    }
}

/// Counts an incoming connection until it is in `live` (see `close_gracefully`).
struct AcceptGuard(std::sync::Weak<Inner>);

impl Drop for AcceptGuard {
    fn drop(&mut self) {
        if let Some(i) = self.0.upgrade() {
            i.accepting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Counts a running stream reader (see `close_gracefully`).
struct ReaderGuard(std::sync::Weak<Inner>);

impl ReaderGuard {
    fn new(inner: &std::sync::Weak<Inner>) -> Self {
        if let Some(i) = inner.upgrade() {
            i.readers.fetch_add(1, Ordering::AcqRel);
        }
        Self(inner.clone())
    }
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        if let Some(i) = self.0.upgrade() {
            i.readers.fetch_sub(1, Ordering::AcqRel);
            i.goodbye_progress.notify_waiters();
        }
    }
}

async fn read_stream(
    inner: std::sync::Weak<Inner>,
    conn: quinn::Connection,
    from: Peer,
    mut stream: quinn::RecvStream,
) {
    let _counted = ReaderGuard::new(&inner);
    loop {
        let mut len = [0u8; 4];
        match stream.read_exact(&mut len).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return,
            Err(e) => {
                debug!(peer = %from.id, "stream ended: {e}");
                return;
            }
        }
        let len = u32::from_be_bytes(len);
        if len == GOODBYE {
            if let Some(inner) = inner.upgrade() {
                inner.peer_leaving(from.id, &conn);
            }
            continue;
        }
        if len == GOODBYE_ACK {
            if let Some(inner) = inner.upgrade() {
                lock(&inner.acked).insert(conn.stable_id());
                inner.goodbye_progress.notify_waiters();
            }
            continue;
        }
        let len = len as usize;
        if len > MAX_FRAME {
            let reason = format!("oversize frame: {len} bytes (limit {MAX_FRAME})");
            warn!(peer = %from, "{reason}; disconnecting");
            if let Some(inner) = inner.upgrade() {
                inner.drop_peer(from.id, &reason);
            } else {
                conn.close(CLOSE_MISBEHAVING.into(), reason.as_bytes());
            }
            return;
        }
        let mut frame = vec![0u8; len];
        if let Err(e) = stream.read_exact(&mut frame).await {
            debug!(peer = %from.id, "stream ended mid-frame: {e}");
            return;
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let incoming = Incoming {
            from: from.clone(),
            frame,
        };
        if let Some(handler) = strong.handler.get().cloned() {
            // handled here, in order: the next frame of this stream waits
            drop(strong);
            handler(incoming).await;
            continue;
        }
        let tx = strong.inbox_tx.clone();
        drop(strong);
        if tx.send(incoming).await.is_err() {
            return;
        }
    }
}

#[async_trait]
impl Transport for QuicTransport {
    fn local_peer(&self) -> Peer {
        self.inner.me.clone()
    }

    async fn send(&self, to: &Peer, frame: Vec<u8>) -> Result<(), TransportError> {
        if frame.len() > MAX_FRAME {
            return Err(TransportError::TooLarge(frame.len()));
        }
        // one write per frame, the length prefix and the bytes together, handed to
        // quinn without copying the frame
        let prefix = bytes::Bytes::copy_from_slice(&(frame.len() as u32).to_be_bytes());
        let body = bytes::Bytes::from(frame);
        // one retry on a fresh connection if the cached one died
        for attempt in 0..2 {
            let (id, slot, conn) = self.connection(to).await?;
            let mut guard = slot.lock().await;
            match &*guard {
                SendSlot::Gone => {
                    return Err(TransportError::Unreachable(format!(
                        "{}: the peer is leaving",
                        to.addr
                    )));
                }
                SendSlot::Idle => match conn.open_uni().await {
                    Ok(s) => *guard = SendSlot::Open(s),
                    Err(e) => {
                        drop(guard);
                        lock(&self.inner.conns).remove(&id);
                        if attempt == 1 {
                            return Err(TransportError::Unreachable(format!("{}: {e}", to.addr)));
                        }
                        continue;
                    }
                },
                SendSlot::Open(_) => {}
            }
            let SendSlot::Open(stream) = &mut *guard else {
                continue;
            };
            match stream
                .write_all_chunks(&mut [prefix.clone(), body.clone()])
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => {
                    *guard = SendSlot::Idle;
                    drop(guard);
                    lock(&self.inner.conns).remove(&id);
                    if attempt == 1 {
                        return Err(TransportError::Unreachable(format!("{}: {e}", to.addr)));
                    }
                }
            }
        }
        Err(TransportError::Unreachable(to.addr.to_string()))
    }

    async fn recv(&self) -> Result<Incoming, TransportError> {
        let closing = self.inner.closing.notified();
        tokio::pin!(closing);
        closing.as_mut().enable();
        let mut rx = self.inner.inbox_rx.lock().await;
        if !self.inner.closed.load(Ordering::Acquire) {
            tokio::select! {
                m = rx.recv() => return m.ok_or(TransportError::Closed),
                _ = &mut closing => {}
            }
        }
        // closing: hand over what had already arrived, then stop
        rx.try_recv().map_err(|_| TransportError::Closed)
    }

    async fn identify(&self, addr: &NodeAddr) -> Result<Peer, TransportError> {
        let (id, conn) = self.dial(addr, None).await?;
        self.inner.register(id, conn);
        Ok(Peer::new(id, addr.clone()))
    }

    fn disconnect(&self, peer: NodeId, reason: &str) {
        warn!(node = %self.inner.me.id, %peer, "disconnecting peer: {reason}");
        self.inner.drop_peer(peer, reason);
    }

    fn serve(&self, handler: FrameHandler) -> bool {
        // frames already queued for recv stay there; the runtime asks before it
        // joins, when nothing has arrived yet
        self.inner.handler.set(handler).is_ok()
    }

    async fn close_gracefully(&self) {
        if self.inner.closed.load(Ordering::Acquire) {
            return;
        }
        let inner = &self.inner;
        inner.leaving.store(true, Ordering::Release);
        // 1. goodbye on every connection, on a stream of its own, and 2. each
        // peer answers after its last frame, on the stream it sends on: wait
        // until every connection answered (or closed) and every reader has
        // handled what it read. Connections still being accepted when the
        // goodbye began (their peers may be sending already) are greeted as
        // they appear.
        let mut greeted: HashMap<usize, quinn::Connection> = HashMap::new();
        let drained = tokio::time::timeout(GOODBYE_WAIT, async {
            loop {
                let ended = inner.goodbye_progress.notified();
                tokio::pin!(ended);
                ended.as_mut().enable();
                let new: Vec<quinn::Connection> = lock(&inner.live)
                    .iter()
                    .filter(|(id, _)| !greeted.contains_key(id))
                    .map(|(_, c)| c.clone())
                    .collect();
                for c in new {
                    greeted.insert(c.stable_id(), c.clone());
                    tokio::spawn(async move { write_marker(&c, GOODBYE).await });
                }
                let all_answered = {
                    let acked = lock(&inner.acked);
                    greeted
                        .iter()
                        .all(|(id, c)| acked.contains(id) || c.close_reason().is_some())
                };
                if all_answered
                    && inner.readers.load(Ordering::Acquire) == 0
                    && inner.accepting.load(Ordering::Acquire) == 0
                {
                    return;
                }
                // a connection being accepted says nothing when it is ready
                tokio::select! {
                    _ = &mut ended => {}
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
        })
        .await;
        if drained.is_err() {
            let acked = lock(&inner.acked).clone();
            let silent: Vec<String> = greeted
                .iter()
                .filter(|(id, c)| !acked.contains(id) && c.close_reason().is_none())
                .map(|(_, c)| {
                    peer_id(c).map_or_else(|e| e, |p| p.to_string())
                        + "@"
                        + &c.remote_address().to_string()
                })
                .collect();
            debug!(
                node = %inner.me.id,
                readers = inner.readers.load(Ordering::Acquire),
                accepting = inner.accepting.load(Ordering::Acquire),
                ?silent,
                "not every peer answered the goodbye in time"
            );
        }
        // 3. this node's own last frames: finish its streams, wait until read
        let slots: Vec<Slot> = lock(&inner.conns)
            .values()
            .map(|c| c.send.clone())
            .collect();
        let finishing = slots.into_iter().map(|slot| async move {
            let mut guard = slot.lock().await;
            let stopped = match &mut *guard {
                SendSlot::Open(s) => {
                    let _ = s.finish();
                    Some(s.stopped())
                }
                _ => None,
            };
            *guard = SendSlot::Gone;
            drop(guard);
            if let Some(stopped) = stopped {
                let _ = stopped.await;
            }
        });
        let _ = tokio::time::timeout(GOODBYE_WAIT, futures::future::join_all(finishing)).await;
        self.close();
        // let the close reach the peers before the process may exit: a peer that
        // never hears it keeps a dead connection until its idle timeout
        let _ = tokio::time::timeout(CLOSE_GRACE, inner.endpoint.wait_idle()).await;
    }

    fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner
            .endpoint
            .close(CLOSE_SHUTDOWN.into(), b"node stopping");
        self.inner.closing.notify_waiters();
    }
}
