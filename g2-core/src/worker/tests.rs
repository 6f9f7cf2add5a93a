//! The worker protocol over an in-memory socket: both sides of it, and what
//! each does with garbage.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use crate::{Dispatch, DispatchFuture, ObjectHandle, RemoteRef, decode_args, encode_result};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Tally {
    total: u64,
}

#[derive(Clone)]
struct TallyRef(ObjectHandle);

impl RemoteRef for TallyRef {
    fn from_handle(h: ObjectHandle) -> Self {
        TallyRef(h)
    }
    fn handle(&self) -> &ObjectHandle {
        &self.0
    }
}

impl Dispatch<Tally> for TallyRef {
    fn dispatch<'a>(
        obj: &'a mut Tally,
        type_name: &'static str,
        method: &'a str,
        args: &'a [u8],
    ) -> DispatchFuture<'a> {
        Box::pin(async move {
            match method {
                "add" => {
                    let (n,): (u64,) = decode_args(type_name, method, args)?;
                    obj.total += n;
                    encode_result(method, &obj.total)
                }
                "whoami" => encode_result(method, &crate::current_object()),
                "ask" => {
                    // calls another object: only a parent's node can send it
                    let (uri,): (ObjectUri,) = decode_args(type_name, method, args)?;
                    let r: Result<String, CallError> =
                        ObjectHandle::new(uri).call("echo", &("hi",)).await;
                    encode_result(method, &r.map_err(|e| e.to_string()))
                }
                "boom" => panic!("tally exploded"),
                other => Err(RemoteError::UnknownMethod {
                    type_name: type_name.into(),
                    method: other.into(),
                }),
            }
        })
    }
}

impl crate::Object for Tally {
    const TYPE_NAME: &'static str = "test.Tally";
    type Init = u64;
    type Ref = TallyRef;
    fn activate(start: u64) -> Self {
        Tally { total: start }
    }
}

fn cbor<T: Serialize>(v: &T) -> Vec<u8> {
    crate::wire::to_cbor(v).unwrap()
}

/// A worker serving `Tally` on one end of an in-memory socket; the parent's
/// connection on the other.
async fn pair() -> (WorkerConn, tokio::task::JoinHandle<Result<(), WorkerError>>) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let worker = tokio::spawn(serve(b, WorkerBuilder::default().register::<Tally>()));
    let conn = WorkerConn::connect(a, "unit", "test".into()).await.unwrap();
    (conn, worker)
}

#[tokio::test]
async fn a_worker_activates_runs_snapshots_and_restores_objects() {
    // given a worker serving Tally
    let (conn, _worker) = pair().await;
    assert_eq!(conn.types(), ["test.Tally"]);
    assert_eq!(conn.pid(), std::process::id());
    // when an object is activated with 10 and called twice
    let id = ObjectId::from_u128(5);
    let mut obj = conn
        .activate(id, "test.Tally", &cbor(&10u64))
        .await
        .unwrap();
    assert_eq!(conn.objects(), 1);
    obj.invoke("add", &cbor(&(5u64,))).await.unwrap();
    let total = obj.invoke("add", &cbor(&(7u64,))).await.unwrap();
    // then it ran in the worker, knows who it is, and its state travels
    assert_eq!(crate::wire::from_cbor::<u64>(&total).unwrap(), 22);
    let who = obj.invoke("whoami", &cbor(&())).await.unwrap();
    assert_eq!(
        crate::wire::from_cbor::<Option<ObjectId>>(&who).unwrap(),
        Some(id)
    );
    let state = obj.snapshot().await.unwrap();
    assert_eq!(
        crate::wire::from_cbor::<Tally>(&state).unwrap(),
        Tally { total: 22 }
    );
    drop(obj);
    assert_eq!(conn.objects(), 0);
    let mut back = conn.restore(id, "test.Tally", &state).await.unwrap();
    let total = back.invoke("add", &cbor(&(1u64,))).await.unwrap();
    assert_eq!(crate::wire::from_cbor::<u64>(&total).unwrap(), 23);
}

#[tokio::test]
async fn a_panicking_method_fails_its_call_only() {
    let (conn, _worker) = pair().await;
    let mut a = conn
        .activate(ObjectId::from_u128(1), "test.Tally", &cbor(&0u64))
        .await
        .unwrap();
    let mut b = conn
        .activate(ObjectId::from_u128(2), "test.Tally", &cbor(&0u64))
        .await
        .unwrap();
    let err = a.invoke("boom", &cbor(&())).await.unwrap_err();
    assert!(
        matches!(&err, RemoteError::Panicked(m) if m.contains("tally exploded")),
        "{err}"
    );
    // the other object, and the one that panicked, keep answering
    assert!(b.invoke("add", &cbor(&(1u64,))).await.is_ok());
    assert!(a.invoke("add", &cbor(&(1u64,))).await.is_ok());
}

#[tokio::test]
async fn unknown_types_methods_and_bad_init_are_errors() {
    let (conn, _worker) = pair().await;
    let err = conn
        .activate(ObjectId::from_u128(1), "test.Nope", &cbor(&0u64))
        .await
        .err()
        .unwrap();
    assert!(err.contains("does not serve"), "{err}");
    let err = conn
        .activate(ObjectId::from_u128(1), "test.Tally", b"\xff\xff")
        .await
        .err()
        .unwrap();
    assert!(!err.is_empty());
    let mut a = conn
        .activate(ObjectId::from_u128(1), "test.Tally", &cbor(&0u64))
        .await
        .unwrap();
    let err = a.invoke("fly", &cbor(&())).await.unwrap_err();
    assert!(matches!(err, RemoteError::UnknownMethod { .. }), "{err}");
}

#[tokio::test]
async fn a_call_out_of_the_worker_without_a_node_says_so() {
    // outside a node's actor there is no node to send the object's call
    let (conn, _worker) = pair().await;
    let mut a = conn
        .activate(ObjectId::from_u128(1), "test.Tally", &cbor(&0u64))
        .await
        .unwrap();
    let uri: ObjectUri = "g2p2p://unit/fccf281d-47bd-45c7-8f2b-a48d462d171b"
        .parse()
        .unwrap();
    let r = a.invoke("ask", &cbor(&(uri,))).await.unwrap();
    let r: Result<String, String> = crate::wire::from_cbor(&r).unwrap();
    assert!(r.unwrap_err().contains("no G2 node"));
    // a proxy of another network is refused inside the worker
    let uri: ObjectUri = "g2p2p://other/fccf281d-47bd-45c7-8f2b-a48d462d171b"
        .parse()
        .unwrap();
    let r = a.invoke("ask", &cbor(&(uri,))).await.unwrap();
    let r: Result<String, String> = crate::wire::from_cbor(&r).unwrap();
    assert!(r.unwrap_err().contains("not on this node's network"));
}

#[tokio::test]
async fn when_the_worker_dies_calls_in_flight_and_later_fail_clearly() {
    let (conn, worker) = pair().await;
    let mut a = conn
        .activate(ObjectId::from_u128(1), "test.Tally", &cbor(&0u64))
        .await
        .unwrap();
    worker.abort();
    let _ = worker.await;
    let err = a.invoke("add", &cbor(&(1u64,))).await.unwrap_err();
    assert!(
        matches!(&err, RemoteError::WorkerFailed(m) if m.contains("test")),
        "{err}"
    );
    assert!(conn.failure().is_some());
    assert!(a.snapshot().await.is_err());
}

async fn raw_worker() -> (
    DuplexStream,
    tokio::task::JoinHandle<Result<(), WorkerError>>,
) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let worker = tokio::spawn(serve(b, WorkerBuilder::default().register::<Tally>()));
    (a, worker)
}

#[tokio::test]
async fn garbage_to_a_worker_is_an_error_not_a_panic() {
    // bytes that are no frame
    let (mut a, worker) = raw_worker().await;
    a.write_all(&[0, 0, 0, 3, 0xff, 0xfe, 0xfd]).await.unwrap();
    let err = worker.await.unwrap().unwrap_err();
    assert!(matches!(err, WorkerError::Malformed(_)), "{err}");
    // an oversize length
    let (mut a, worker) = raw_worker().await;
    a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    assert!(matches!(
        worker.await.unwrap(),
        Err(WorkerError::TooLarge { .. })
    ));
    // a first frame that is not Hello
    let (mut a, worker) = raw_worker().await;
    a.write_all(&encode_frame(&ToWorker::Drop { slot: 1 }).unwrap())
        .await
        .unwrap();
    assert!(matches!(
        worker.await.unwrap(),
        Err(WorkerError::Protocol(_))
    ));
    // another protocol version: refused, with a reason
    let (mut a, worker) = raw_worker().await;
    a.write_all(
        &encode_frame(&ToWorker::Hello {
            version: 99,
            network: "unit".into(),
        })
        .unwrap(),
    )
    .await
    .unwrap();
    let reply: Option<FromWorker> = read_frame(&mut a).await.unwrap();
    assert!(matches!(reply, Some(FromWorker::Refused { .. })));
    assert!(matches!(
        worker.await.unwrap(),
        Err(WorkerError::Protocol(_))
    ));
    // the parent closing at once is a clean end
    let (a, worker) = raw_worker().await;
    drop(a);
    assert!(worker.await.unwrap().is_ok());
}

#[tokio::test]
async fn garbage_from_a_worker_ends_its_connection_not_the_volunteer() {
    // a "worker" that says hello, then sends junk
    let (a, mut b) = tokio::io::duplex(1 << 16);
    let fake = tokio::spawn(async move {
        let _: Option<ToWorker> = read_frame(&mut b).await.unwrap();
        let hello = FromWorker::Hello {
            version: PROTOCOL_VERSION,
            types: vec!["t".into()],
            pid: 1,
        };
        b.write_all(&encode_frame(&hello).unwrap()).await.unwrap();
        let _: Option<ToWorker> = read_frame(&mut b).await.unwrap(); // Activate
        b.write_all(&[0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
        let mut rest = Vec::new();
        let _ = b.read_to_end(&mut rest).await;
    });
    let conn = WorkerConn::connect(a, "unit", "junk".into()).await.unwrap();
    let err = conn
        .activate(ObjectId::from_u128(1), "t", &cbor(&0u64))
        .await
        .err()
        .unwrap();
    assert!(err.contains("malformed"), "{err}");
    assert!(conn.failure().unwrap().contains("malformed"));
    fake.abort();
    // a binary that exits without a hello is named as such
    let (a, b) = tokio::io::duplex(64);
    drop(b);
    let err = WorkerConn::connect(a, "unit", "x".into())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("serve_if_worker") || matches!(err, WorkerError::Io(_)),
        "{err}"
    );
}
