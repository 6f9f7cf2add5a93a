//! The wire format between nodes: versioned CBOR frames with a size cap.
//!
//! Every frame is a [`Frame`] (protocol version + body) encoded with ciborium. A
//! frame longer than [`MAX_FRAME`] is refused before it is parsed; decoding never
//! panics on hostile input, it returns a [`WireError`].

use serde::{Deserialize, Serialize};

use crate::id::{CallId, NodeId, ObjectId, Peer};

/// The protocol version this build speaks.
pub const WIRE_VERSION: u16 = 1;

/// Largest frame accepted or produced, in bytes (16 MiB).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Most overlay hops a request may take before it is dropped as looping.
pub const MAX_HOPS: u8 = 64;

/// One message between two nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// Protocol version ([`WIRE_VERSION`]).
    pub version: u16,
    /// What the frame carries.
    pub body: Body,
}

/// What a frame carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// An overlay protocol message, opaque to the runtime (the overlay encodes it).
    Overlay(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A request for an object, routed hop by hop towards the root of its GUID
    /// (or sent straight to the node the sender's location cache names).
    Request(Request),
    /// The answer to a [`Request`], sent straight back to its origin.
    Reply(Reply),
    /// A placement record: `host` hosts `object`. Hosts send it to the object's
    /// replica set so that whoever becomes root after a failure knows the object
    /// existed (and answers "lost", not "not found").
    Placement(Placement),
}

/// Where an object lives, as told to its replica set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The object.
    pub object: ObjectId,
    /// Its host.
    pub host: Peer,
    /// The fault-tolerance policy it carries.
    pub policy: String,
}

/// A request routed to the node hosting (or about to host) an object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Origin-local request number; the reply carries it back.
    pub id: u64,
    /// The node that sent the request and gets the reply.
    pub origin: Peer,
    /// The target object (the key the request is routed on).
    pub target: ObjectId,
    /// Overlay hops taken so far.
    pub hops: u8,
    /// Sent on by a root that does not host the object but holds its placement
    /// record: the named host answers itself and never routes it back.
    #[serde(default)]
    pub via_record: bool,
    /// What is asked.
    pub kind: RequestKind,
}

/// The two things one can ask of an object's node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RequestKind {
    /// Remote activation: build an object of `type_name` from `init`.
    Create {
        /// The registered type name.
        type_name: String,
        /// The CBOR-encoded `Object::Init`.
        #[serde(with = "serde_bytes")]
        init: Vec<u8>,
        /// The fault-tolerance policy the object carries.
        policy: String,
    },
    /// Migration (paper §3.4): host this object, whose state is `state`, from now
    /// on. Sent straight to the new host; acknowledged once installed.
    Migrate {
        /// The registered type name.
        type_name: String,
        /// The CBOR-encoded object state.
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
        /// The fault-tolerance policy the object carries.
        policy: String,
        /// The object's outgoing-call counter.
        next_call_seq: u64,
        /// Names this transfer: every retry of it carries the same value, so the
        /// new host installs it at most once, even after the object moved on.
        transfer: u64,
        /// What the policy's records carry with the object (`FaultPolicy::export`).
        #[serde(with = "serde_bytes")]
        carried: Vec<u8>,
    },
    /// A method call.
    Call {
        /// Method name.
        method: String,
        /// CBOR-encoded arguments (a tuple).
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
        /// The call's id.
        call_id: CallId,
        /// One-way: the reply acknowledges acceptance, not completion.
        oneway: bool,
    },
}

/// The answer to a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The request number from [`Request::id`].
    pub id: u64,
    /// The node that hosts the object (for the sender's location cache).
    pub host: Peer,
    /// The CBOR-encoded result, or why there is none.
    pub outcome: Result<ByteVec, RemoteError>,
}

/// A byte vector encoded as a CBOR byte string.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ByteVec(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// Why a node could not serve a request (carried in a [`Reply`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    /// The root of the GUID hosts no such object.
    #[error("no object {0} on this network")]
    ObjectNotFound(ObjectId),
    /// The object existed but its node failed and the run's policy cannot recover it.
    #[error("object {0} was lost with its volunteer")]
    ObjectLost(ObjectId),
    /// The object's volunteer is down, and the object's policy keeps it for
    /// when the volunteer returns: retry later.
    #[error(
        "object {object} is unavailable: its volunteer {host} is down (the object is kept, retry)"
    )]
    Unavailable {
        /// The object.
        object: ObjectId,
        /// The volunteer that hosts it.
        host: NodeId,
    },
    /// The node has no type of that name registered.
    #[error("unknown object type {type_name:?} on node {node}")]
    UnknownType {
        /// The requested type name.
        type_name: String,
        /// The node that refused.
        node: NodeId,
    },
    /// The object has no method of that name.
    #[error("object type {type_name} has no method {method:?}")]
    UnknownMethod {
        /// The object's type.
        type_name: String,
        /// The requested method.
        method: String,
    },
    /// The arguments or the init value did not decode.
    #[error("could not decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// The object's method panicked; the panic message.
    #[error("the method panicked: {0}")]
    Panicked(String),
    /// The node refuses the fault-tolerance policy the object carries.
    #[error("node {node} cannot serve fault-tolerance policy {policy:?}: {reason}")]
    PolicyRefused {
        /// The requested policy.
        policy: String,
        /// The node that refused.
        node: NodeId,
        /// Why.
        reason: String,
    },
    /// An object with that GUID already exists.
    #[error("object {0} already exists")]
    AlreadyExists(ObjectId),
    /// No node on the way could pass the request on.
    #[error("no route to {target}: {reason}")]
    NoRoute {
        /// The target object.
        target: ObjectId,
        /// Why.
        reason: String,
    },
    /// The request went round more than [`MAX_HOPS`] nodes.
    #[error(
        "request for {target} dropped after {hops} hops (a routing loop while the overlay repairs itself?)"
    )]
    TooManyHops {
        /// The target object.
        target: ObjectId,
        /// Hops taken.
        hops: u8,
    },
}

/// Why bytes are not a frame.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The frame is larger than [`MAX_FRAME`].
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The frame is from another protocol version.
    #[error("unsupported protocol version {got} (this node speaks {WIRE_VERSION})")]
    Version {
        /// The version the peer sent.
        got: u16,
    },
    /// The bytes are not valid CBOR for a frame.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// Encoding failed (only on a value that cannot be represented).
    #[error("could not encode frame: {0}")]
    Encode(String),
}

impl Frame {
    /// A frame of this build's version.
    pub fn new(body: Body) -> Self {
        Self {
            version: WIRE_VERSION,
            body,
        }
    }

    /// Encodes the frame; fails if it would exceed [`MAX_FRAME`].
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::with_capacity(256);
        ciborium::into_writer(self, &mut out).map_err(|e| WireError::Encode(e.to_string()))?;
        if out.len() > MAX_FRAME {
            return Err(WireError::TooLarge {
                len: out.len(),
                max: MAX_FRAME,
            });
        }
        Ok(out)
    }

    /// Decodes a frame from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() > MAX_FRAME {
            return Err(WireError::TooLarge {
                len: bytes.len(),
                max: MAX_FRAME,
            });
        }
        // Peek at the version first so that a future version's body is reported as
        // a version mismatch, not as garbage.
        #[derive(Deserialize)]
        struct Header {
            version: u16,
        }
        if let Ok(h) = ciborium::from_reader::<Header, _>(bytes)
            && h.version != WIRE_VERSION
        {
            return Err(WireError::Version { got: h.version });
        }
        let frame: Frame =
            ciborium::from_reader(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
        Ok(frame)
    }
}

/// Encodes a value as CBOR (arguments, results, object state).
pub fn to_cbor<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Decodes a CBOR value (arguments, results, object state) from untrusted bytes.
pub fn from_cbor<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    ciborium::from_reader(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeAddr;
    use proptest::prelude::*;

    fn sample() -> Frame {
        Frame::new(Body::Request(Request {
            id: 7,
            origin: Peer::new(NodeId::from_u128(1), NodeAddr::new("mem:1")),
            target: ObjectId::from_u128(99),
            hops: 2,
            via_record: false,
            kind: RequestKind::Call {
                method: "evolve".into(),
                args: vec![1, 2, 3],
                call_id: CallId {
                    caller: ObjectId::from_u128(5),
                    seq: 3,
                },
                oneway: false,
            },
        }))
    }

    #[test]
    fn frames_round_trip() {
        let f = sample();
        assert_eq!(Frame::decode(&f.encode().unwrap()).unwrap(), f);
        let r = Frame::new(Body::Reply(Reply {
            id: 7,
            host: Peer::new(NodeId::from_u128(2), NodeAddr::new("mem:2")),
            outcome: Err(RemoteError::ObjectNotFound(ObjectId::from_u128(3))),
        }));
        assert_eq!(Frame::decode(&r.encode().unwrap()).unwrap(), r);
    }

    #[test]
    fn other_versions_are_named() {
        let mut f = sample();
        f.version = 9;
        let bytes = f.encode().unwrap();
        let e = Frame::decode(&bytes).unwrap_err();
        assert!(matches!(e, WireError::Version { got: 9 }), "{e}");
    }

    #[test]
    fn oversize_frames_are_refused_before_parsing() {
        let big = vec![0u8; MAX_FRAME + 1];
        assert!(matches!(
            Frame::decode(&big),
            Err(WireError::TooLarge { .. })
        ));
        let f = Frame::new(Body::Overlay(vec![0; MAX_FRAME]));
        assert!(matches!(f.encode(), Err(WireError::TooLarge { .. })));
    }

    #[test]
    fn a_huge_declared_length_is_an_error_not_an_allocation() {
        // map(2) { "version": 1, "body": { "Overlay": bytes(2^62) } } with no payload
        let mut bytes = Vec::new();
        bytes.push(0xa2);
        bytes.push(0x67);
        bytes.extend_from_slice(b"version");
        bytes.push(0x01);
        bytes.push(0x64);
        bytes.extend_from_slice(b"body");
        bytes.push(0xa1);
        bytes.push(0x67);
        bytes.extend_from_slice(b"Overlay");
        bytes.push(0x5b);
        bytes.extend_from_slice(&(1u64 << 62).to_be_bytes());
        assert!(matches!(
            Frame::decode(&bytes),
            Err(WireError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Frame::decode(&bytes);
        }

        #[test]
        fn corrupted_frames_never_panic(flip in 0usize..200, byte: u8, cut in 0usize..200) {
            let mut bytes = sample().encode().unwrap();
            let i = flip % bytes.len();
            bytes[i] = byte;
            bytes.truncate(cut.max(1).min(bytes.len()));
            let _ = Frame::decode(&bytes);
        }
    }
}
