//! The wire format between nodes: versioned binary frames with a size cap.
//!
//! Every frame is a [`Frame`] (protocol version + body) in a compact positional
//! layout ([`codec`]); the values users pass (arguments, results, object state,
//! init values) are CBOR inside it. A frame longer than [`MAX_FRAME`] is refused
//! before it is parsed; decoding never panics on hostile input, it returns a
//! [`WireError`].

use serde::{Deserialize, Serialize};

use crate::id::{CallId, NodeId, ObjectId, Peer};

/// The protocol version this build speaks.
pub const WIRE_VERSION: u16 = 5;

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
    /// How loaded the sender is, told to its leaf set now and then: a node
    /// places objects on less-loaded neighbours (paper §3.5).
    Load(LoadReport),
}

/// A node's load, as it tells its neighbours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReport {
    /// The objects it runs (frozen copies on their way out not counted).
    pub objects: u32,
    /// Whether it takes objects at all (a client that only calls does not).
    pub hosting: bool,
    /// A number the sender drew when it started: a new one from a known peer
    /// means it restarted (and lost what it kept in memory, such as the
    /// placement records of the objects it is root of).
    pub boot: u64,
    /// The sender is about to move objects by this report's figures and asks
    /// for the receiver's own load at once (a load that changed since the
    /// receiver's last periodic report would otherwise make both sides move
    /// objects to each other).
    pub ask: bool,
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
    /// A forwarding address on its way led to a node that could not be
    /// reached: the nodes it passes now route it to the root and follow the
    /// root's placement record, not their own (older) forwarding addresses.
    #[serde(default)]
    pub past_forwarding: bool,
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
        /// Sent by load balancing to a node that is not the object's root: the
        /// new host keeps it (the root's placement record points there) rather
        /// than pass it on to the root.
        #[serde(default)]
        placed: bool,
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
    /// A message to fault-tolerance policy `policy` on the node the request
    /// is sent to (not routed); the reply carries its answer.
    Policy {
        /// The policy's name.
        policy: String,
        /// What the policy makes of it.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// A content-addressed block from the node the request is sent to (not
    /// routed): the bytes whose blake3 is `key`, if that node keeps them (a
    /// volunteer serving chunks of the code it fetched, PAST-style).
    Block {
        /// The block's blake3.
        key: [u8; 32],
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
    /// The node was not built with the type and could not get its code (the
    /// publisher is not trusted there, the code is for another platform, or
    /// fetching it failed).
    #[error("node {node} cannot host {type_name:?}: {reason}")]
    CodeUnavailable {
        /// The requested type name.
        type_name: String,
        /// The node that refused.
        node: NodeId,
        /// Why, naming the publisher where one is known.
        reason: String,
    },
    /// The worker process that ran the object's code failed (crashed, was
    /// killed, or broke the worker protocol); calls in flight in it fail with
    /// this, and the volunteer keeps serving.
    #[error("the worker process running the object failed: {0}")]
    WorkerFailed(String),
    /// The node asked for a block does not keep it (any more).
    #[error("node {node} keeps no block {key}")]
    NoBlock {
        /// The block's blake3, hex.
        key: String,
        /// The node asked.
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
    ///
    /// The layout is compact and positional (see [`codec`]): the version as two
    /// big-endian bytes, a body tag, then the body's fields in declaration order,
    /// integers as LEB128 varints, ids as 16 bytes, strings and byte strings with a
    /// varint length. User values inside (arguments, results, state) stay CBOR.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::with_capacity(64 + self.body.payload_len());
        codec::put_frame(&mut out, self)?;
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
        codec::get_frame(bytes)
    }
}

impl Body {
    /// Bytes of the opaque payloads the body carries (for sizing buffers).
    fn payload_len(&self) -> usize {
        match self {
            Body::Overlay(b) => b.len(),
            Body::Request(r) => match &r.kind {
                RequestKind::Create { init, .. } => init.len(),
                RequestKind::Migrate { state, carried, .. } => state.len() + carried.len(),
                RequestKind::Call { args, .. } => args.len(),
                RequestKind::Block { .. } => 32,
                RequestKind::Policy { body, .. } => body.len(),
            },
            Body::Reply(r) => r.outcome.as_ref().map_or(0, |b| b.0.len()),
            Body::Placement(_) | Body::Load(_) => 0,
        }
    }
}

/// The positional binary layout of frames.
///
/// Every read is bounds-checked against what is left of the input, so a declared
/// length larger than the frame is an error, never an allocation, and nothing here
/// panics on hostile bytes. Trailing bytes after a frame are an error too.
pub mod codec {
    use super::*;

    const TAG_OVERLAY: u8 = 0;
    const TAG_REQUEST: u8 = 1;
    const TAG_REPLY: u8 = 2;
    const TAG_PLACEMENT: u8 = 3;
    const TAG_LOAD: u8 = 4;
    const KIND_CREATE: u8 = 0;
    const KIND_MIGRATE: u8 = 1;
    const KIND_CALL: u8 = 2;
    const KIND_BLOCK: u8 = 3;
    const KIND_POLICY: u8 = 4;
    const OUTCOME_OK: u8 = 0;
    const OUTCOME_ERR: u8 = 1;
    const FLAG_VIA_RECORD: u8 = 1;
    const FLAG_PAST_FORWARDING: u8 = 2;
    const FLAG_ONEWAY: u8 = 1;

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
        put_varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }

    fn put_id(out: &mut Vec<u8>, v: u128) {
        out.extend_from_slice(&v.to_be_bytes());
    }

    fn put_peer(out: &mut Vec<u8>, p: &Peer) {
        put_id(out, p.id.as_u128());
        put_bytes(out, p.addr.as_str().as_bytes());
    }

    /// Appends `frame`'s encoding to `out`.
    pub fn put_frame(out: &mut Vec<u8>, frame: &Frame) -> Result<(), WireError> {
        out.extend_from_slice(&frame.version.to_be_bytes());
        match &frame.body {
            Body::Overlay(b) => {
                out.push(TAG_OVERLAY);
                put_bytes(out, b);
            }
            Body::Request(r) => {
                out.push(TAG_REQUEST);
                put_varint(out, r.id);
                put_peer(out, &r.origin);
                put_id(out, r.target.as_u128());
                out.push(r.hops);
                out.push(
                    (if r.via_record { FLAG_VIA_RECORD } else { 0 })
                        | (if r.past_forwarding {
                            FLAG_PAST_FORWARDING
                        } else {
                            0
                        }),
                );
                match &r.kind {
                    RequestKind::Create {
                        type_name,
                        init,
                        policy,
                    } => {
                        out.push(KIND_CREATE);
                        put_bytes(out, type_name.as_bytes());
                        put_bytes(out, init);
                        put_bytes(out, policy.as_bytes());
                    }
                    RequestKind::Migrate {
                        type_name,
                        state,
                        policy,
                        next_call_seq,
                        transfer,
                        carried,
                        placed,
                    } => {
                        out.push(KIND_MIGRATE);
                        put_bytes(out, type_name.as_bytes());
                        put_bytes(out, state);
                        put_bytes(out, policy.as_bytes());
                        put_varint(out, *next_call_seq);
                        put_varint(out, *transfer);
                        put_bytes(out, carried);
                        out.push(u8::from(*placed));
                    }
                    RequestKind::Call {
                        method,
                        args,
                        call_id,
                        oneway,
                    } => {
                        out.push(KIND_CALL);
                        put_bytes(out, method.as_bytes());
                        put_bytes(out, args);
                        put_id(out, call_id.caller.as_u128());
                        put_varint(out, call_id.seq);
                        out.push(if *oneway { FLAG_ONEWAY } else { 0 });
                    }
                    RequestKind::Block { key } => {
                        out.push(KIND_BLOCK);
                        out.extend_from_slice(key);
                    }
                    RequestKind::Policy { policy, body } => {
                        out.push(KIND_POLICY);
                        put_bytes(out, policy.as_bytes());
                        put_bytes(out, body);
                    }
                }
            }
            Body::Reply(r) => {
                out.push(TAG_REPLY);
                put_varint(out, r.id);
                put_peer(out, &r.host);
                match &r.outcome {
                    Ok(b) => {
                        out.push(OUTCOME_OK);
                        put_bytes(out, &b.0);
                    }
                    Err(e) => {
                        // errors are rare and varied: CBOR keeps them extensible
                        out.push(OUTCOME_ERR);
                        let bytes = to_cbor(e).map_err(WireError::Encode)?;
                        put_bytes(out, &bytes);
                    }
                }
            }
            Body::Placement(p) => {
                out.push(TAG_PLACEMENT);
                put_id(out, p.object.as_u128());
                put_peer(out, &p.host);
                put_bytes(out, p.policy.as_bytes());
            }
            Body::Load(l) => {
                out.push(TAG_LOAD);
                put_varint(out, u64::from(l.objects));
                out.push(u8::from(l.hosting));
                put_varint(out, l.boot);
                out.push(u8::from(l.ask));
            }
        }
        Ok(())
    }

    /// A cursor over untrusted bytes.
    struct Reader<'a> {
        b: &'a [u8],
        at: usize,
    }

    fn malformed(what: &str, at: usize) -> WireError {
        WireError::Malformed(format!("{what} at byte {at}"))
    }

    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], WireError> {
            let left = self.b.len() - self.at;
            if n > left {
                return Err(WireError::Malformed(format!(
                    "{what} at byte {} needs {n} bytes, {left} left",
                    self.at
                )));
            }
            let s = &self.b[self.at..self.at + n];
            self.at += n;
            Ok(s)
        }

        fn u8(&mut self, what: &str) -> Result<u8, WireError> {
            Ok(self.take(1, what)?[0])
        }

        fn flag(&mut self, what: &str) -> Result<bool, WireError> {
            match self.u8(what)? {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(malformed(&format!("{what}: not 0 or 1"), self.at - 1)),
            }
        }

        fn varint(&mut self, what: &str) -> Result<u64, WireError> {
            let mut v = 0u64;
            for i in 0..10 {
                let byte = self.u8(what)?;
                let bits = u64::from(byte & 0x7f);
                if i == 9 && byte > 1 {
                    return Err(malformed(
                        &format!("{what}: varint overflows 64 bits"),
                        self.at,
                    ));
                }
                v |= bits << (7 * i);
                if byte & 0x80 == 0 {
                    return Ok(v);
                }
            }
            Err(malformed(&format!("{what}: varint too long"), self.at))
        }

        fn id(&mut self, what: &str) -> Result<u128, WireError> {
            let b = self.take(16, what)?;
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            Ok(u128::from_be_bytes(a))
        }

        fn bytes(&mut self, what: &str) -> Result<&'a [u8], WireError> {
            let n = self.varint(what)?;
            let n = usize::try_from(n).map_err(|_| malformed(what, self.at))?;
            self.take(n, what)
        }

        fn string(&mut self, what: &str) -> Result<String, WireError> {
            let at = self.at;
            let b = self.bytes(what)?;
            std::str::from_utf8(b)
                .map(str::to_string)
                .map_err(|_| malformed(&format!("{what}: not UTF-8"), at))
        }

        fn peer(&mut self, what: &str) -> Result<Peer, WireError> {
            let id = NodeId::from_u128(self.id(what)?);
            let addr = self.string(what)?;
            Ok(Peer::new(id, crate::id::NodeAddr(addr)))
        }
    }

    /// Decodes one whole frame.
    pub fn get_frame(bytes: &[u8]) -> Result<Frame, WireError> {
        let mut r = Reader { b: bytes, at: 0 };
        let v = r.take(2, "version")?;
        let version = u16::from_be_bytes([v[0], v[1]]);
        if version != WIRE_VERSION {
            return Err(WireError::Version { got: version });
        }
        let body = match r.u8("body tag")? {
            TAG_OVERLAY => Body::Overlay(r.bytes("overlay message")?.to_vec()),
            TAG_REQUEST => {
                let id = r.varint("request id")?;
                let origin = r.peer("origin")?;
                let target = ObjectId::from_u128(r.id("target")?);
                let hops = r.u8("hops")?;
                let at = r.at;
                let flags = r.u8("request flags")?;
                if flags & !(FLAG_VIA_RECORD | FLAG_PAST_FORWARDING) != 0 {
                    return Err(malformed(&format!("unknown request flags {flags:#x}"), at));
                }
                let via_record = flags & FLAG_VIA_RECORD != 0;
                let past_forwarding = flags & FLAG_PAST_FORWARDING != 0;
                let kind = match r.u8("request kind")? {
                    KIND_CREATE => RequestKind::Create {
                        type_name: r.string("type name")?,
                        init: r.bytes("init")?.to_vec(),
                        policy: r.string("policy")?,
                    },
                    KIND_MIGRATE => RequestKind::Migrate {
                        type_name: r.string("type name")?,
                        state: r.bytes("state")?.to_vec(),
                        policy: r.string("policy")?,
                        next_call_seq: r.varint("next_call_seq")?,
                        transfer: r.varint("transfer")?,
                        carried: r.bytes("carried")?.to_vec(),
                        placed: r.flag("placed")?,
                    },
                    KIND_CALL => RequestKind::Call {
                        method: r.string("method")?,
                        args: r.bytes("args")?.to_vec(),
                        call_id: CallId {
                            caller: ObjectId::from_u128(r.id("caller")?),
                            seq: r.varint("call seq")?,
                        },
                        oneway: r.flag("oneway")?,
                    },
                    KIND_BLOCK => {
                        let mut key = [0u8; 32];
                        key.copy_from_slice(r.take(32, "block key")?);
                        RequestKind::Block { key }
                    }
                    KIND_POLICY => RequestKind::Policy {
                        policy: r.string("policy")?,
                        body: r.bytes("policy message")?.to_vec(),
                    },
                    k => return Err(malformed(&format!("unknown request kind {k}"), r.at - 1)),
                };
                Body::Request(Request {
                    id,
                    origin,
                    target,
                    hops,
                    via_record,
                    past_forwarding,
                    kind,
                })
            }
            TAG_REPLY => {
                let id = r.varint("reply id")?;
                let host = r.peer("host")?;
                let outcome = match r.u8("outcome")? {
                    OUTCOME_OK => Ok(ByteVec(r.bytes("result")?.to_vec())),
                    OUTCOME_ERR => {
                        let at = r.at;
                        let e = from_cbor::<RemoteError>(r.bytes("error")?)
                            .map_err(|e| malformed(&format!("error value: {e}"), at))?;
                        Err(e)
                    }
                    t => return Err(malformed(&format!("unknown outcome tag {t}"), r.at - 1)),
                };
                Body::Reply(Reply { id, host, outcome })
            }
            TAG_PLACEMENT => Body::Placement(Placement {
                object: ObjectId::from_u128(r.id("object")?),
                host: r.peer("host")?,
                policy: r.string("policy")?,
            }),
            TAG_LOAD => {
                let at = r.at;
                let objects = u32::try_from(r.varint("load")?)
                    .map_err(|_| malformed("load: more than 2^32 objects", at))?;
                Body::Load(LoadReport {
                    objects,
                    hosting: r.flag("hosting")?,
                    boot: r.varint("boot")?,
                    ask: r.flag("ask")?,
                })
            }
            t => return Err(malformed(&format!("unknown body tag {t}"), r.at - 1)),
        };
        if r.at != bytes.len() {
            return Err(malformed(
                &format!("{} trailing bytes", bytes.len() - r.at),
                r.at,
            ));
        }
        Ok(Frame { version, body })
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
            past_forwarding: false,
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
        // this version, Overlay, length 2^62 as a varint, no payload
        let mut bytes = WIRE_VERSION.to_be_bytes().to_vec();
        bytes.push(0);
        let mut n = 1u64 << 62;
        while n >= 0x80 {
            bytes.push((n as u8) | 0x80);
            n >>= 7;
        }
        bytes.push(n as u8);
        let e = Frame::decode(&bytes).unwrap_err();
        assert!(
            matches!(&e, WireError::Malformed(m) if m.contains("overlay message")),
            "{e}"
        );
    }

    #[test]
    fn every_kind_of_body_round_trips() {
        let peer = Peer::new(NodeId::from_u128(u128::MAX), NodeAddr::new("127.0.0.1:9"));
        let bodies = vec![
            Body::Overlay(vec![9; 300]),
            Body::Request(Request {
                id: u64::MAX,
                origin: peer.clone(),
                target: ObjectId::from_u128(1 << 100),
                hops: 64,
                via_record: true,
                past_forwarding: true,
                kind: RequestKind::Create {
                    type_name: "Ledger".into(),
                    init: vec![1, 2],
                    policy: "local".into(),
                },
            }),
            Body::Request(Request {
                id: 0,
                origin: peer.clone(),
                target: ObjectId::from_u128(0),
                hops: 0,
                via_record: false,
                past_forwarding: false,
                kind: RequestKind::Migrate {
                    type_name: "Äpfel".into(),
                    state: vec![0; 70_000],
                    policy: String::new(),
                    next_call_seq: 1 << 35,
                    transfer: 127,
                    carried: vec![],
                    placed: true,
                },
            }),
            Body::Request(Request {
                id: 3,
                origin: peer.clone(),
                target: ObjectId::from_u128(5),
                hops: 0,
                via_record: false,
                past_forwarding: false,
                kind: RequestKind::Block { key: [0xab; 32] },
            }),
            Body::Request(Request {
                id: 4,
                origin: peer.clone(),
                target: ObjectId::from_u128(6),
                hops: 0,
                via_record: false,
                past_forwarding: false,
                kind: RequestKind::Policy {
                    policy: "replicated".into(),
                    body: vec![1, 2, 3],
                },
            }),
            Body::Reply(Reply {
                id: 128,
                host: peer.clone(),
                outcome: Ok(ByteVec(vec![7; 3])),
            }),
            Body::Reply(Reply {
                id: 5,
                host: peer.clone(),
                outcome: Err(RemoteError::UnknownMethod {
                    type_name: "T".into(),
                    method: "m".into(),
                }),
            }),
            Body::Placement(Placement {
                object: ObjectId::from_u128(42),
                host: peer,
                policy: "replicated".into(),
            }),
            Body::Load(LoadReport {
                objects: u32::MAX,
                hosting: false,
                boot: u64::MAX,
                ask: true,
            }),
            Body::Load(LoadReport {
                objects: 3,
                hosting: true,
                boot: 7,
                ask: false,
            }),
        ];
        for b in bodies {
            let f = Frame::new(b);
            assert_eq!(Frame::decode(&f.encode().unwrap()).unwrap(), f);
        }
    }

    #[test]
    fn a_call_frame_is_compact() {
        // no field names on the wire: three 16-byte ids, the method, the address
        let f = sample();
        let n = f.encode().unwrap().len();
        let cbor = to_cbor(&f).unwrap().len();
        assert!(n * 2 < cbor, "{n} bytes against {cbor} as a CBOR map");
        assert!(n < 80, "{n} bytes");
    }

    #[test]
    fn trailing_bytes_and_unknown_tags_are_named() {
        let mut bytes = sample().encode().unwrap();
        bytes.push(0);
        let e = Frame::decode(&bytes).unwrap_err();
        assert!(e.to_string().contains("trailing"), "{e}");
        let mut bytes = sample().encode().unwrap();
        bytes[2] = 77;
        let e = Frame::decode(&bytes).unwrap_err();
        assert!(e.to_string().contains("unknown body tag 77"), "{e}");
    }

    #[test]
    fn a_cbor_frame_of_version_1_is_not_taken_for_a_frame() {
        // what a v1 node sent: a CBOR map { "version": 1, ... }
        let e = Frame::decode(&[0xa2, 0x67, b'v', b'e']).unwrap_err();
        assert!(matches!(e, WireError::Version { .. }), "{e}");
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
