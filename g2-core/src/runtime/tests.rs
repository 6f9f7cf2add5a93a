//! Runtime unit tests against mocked strategies (given / when / then).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fault::{Admission, MockFaultPolicy};
use crate::overlay::{MockOverlay, Overlay, OverlayFactory, Route};
use crate::store::MockStore;
use crate::transport::{Incoming, MockTransport, TransportError};
use crate::wire::{Body, Frame, RemoteError, Request, RequestKind, from_cbor, to_cbor};
use crate::{
    CallError, Dispatch, DispatchFuture, Node, NodeAddr, NodeId, Object, ObjectHandle, ObjectId,
    Peer, RemoteRef, decode_args, encode_result,
};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Echo {
    calls: u32,
}

#[derive(Clone)]
struct EchoRef(ObjectHandle);

impl RemoteRef for EchoRef {
    fn from_handle(h: ObjectHandle) -> Self {
        EchoRef(h)
    }
    fn handle(&self) -> &ObjectHandle {
        &self.0
    }
}

impl Dispatch<Echo> for EchoRef {
    fn dispatch<'a>(
        obj: &'a mut Echo,
        type_name: &'static str,
        method: &'a str,
        args: &'a [u8],
    ) -> DispatchFuture<'a> {
        Box::pin(async move {
            match method {
                "echo" => {
                    let (s,): (String,) = decode_args(type_name, method, args)?;
                    obj.calls += 1;
                    encode_result(method, &s)
                }
                other => Err(RemoteError::UnknownMethod {
                    type_name: type_name.into(),
                    method: other.into(),
                }),
            }
        })
    }
}

impl Object for Echo {
    const TYPE_NAME: &'static str = "test.Echo";
    type Init = ();
    type Ref = EchoRef;
    fn activate(_: ()) -> Self {
        Echo { calls: 0 }
    }
}

/// An overlay factory handing out one prepared mock.
struct Given(Mutex<Option<MockOverlay>>);

impl OverlayFactory for Given {
    fn build(self: Box<Self>, _local: Peer) -> Box<dyn Overlay> {
        let mock = self.0.lock().unwrap().take().expect("built once");
        Box::new(mock)
    }
    fn name(&self) -> &'static str {
        "mock"
    }
}

fn peer(n: u128) -> Peer {
    Peer::new(NodeId::from_u128(n), NodeAddr::new(format!("mock:{n}")))
}

/// An overlay that has joined, sends nothing and routes as `route` says.
fn overlay(route: impl Fn(crate::Key) -> Route + Send + 'static) -> Given {
    let mut o = MockOverlay::new();
    o.expect_join().return_const(());
    o.expect_leave().return_const(());
    o.expect_is_joined().return_const(true);
    o.expect_poll_transmit().returning(|| None);
    o.expect_poll_timeout().returning(|| None);
    o.expect_poll_event().returning(|| None);
    o.expect_peer_unreachable().return_const(());
    o.expect_route().returning(route);
    // a lone node: its replica sets hold only itself
    o.expect_replica_set().returning(|_, _| vec![peer(1)]);
    o.expect_is_root().return_const(true);
    Given(Mutex::new(Some(o)))
}

/// A transport at `me` whose receive side yields `frames` and then closes.
fn transport(me: Peer, frames: Vec<Incoming>) -> MockTransport {
    let mut t = MockTransport::new();
    t.expect_local_peer().return_const(me);
    let frames = Mutex::new(frames.into_iter());
    t.expect_recv()
        .returning(move || frames.lock().unwrap().next().ok_or(TransportError::Closed));
    t.expect_close().return_const(());
    t.expect_serve().return_const(false);
    t
}

fn echo_args(s: &str) -> Vec<u8> {
    to_cbor(&(s,)).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_call_for_a_remote_key_goes_to_the_overlays_next_hop() {
    // given an overlay that sends every key to peer 7
    let me = peer(1);
    let next = peer(7);
    let target = ObjectId::from_u128(1000);
    let mut t = transport(me.clone(), vec![]);
    let expected = next.clone();
    t.expect_send()
        .withf(move |to, frame| {
            let Ok(Frame { body: Body::Request(req), .. }) = Frame::decode(frame) else {
                return false;
            };
            *to == expected
                && req.target == target
                && req.hops == 1
                && matches!(&req.kind, RequestKind::Call { method, oneway: false, .. } if method == "echo")
        })
        .times(1)
        .returning(|_, _| Ok(()));
    let node = Node::builder()
        .network("unit")
        .overlay(overlay(move |_| Route::Forward(peer(7))))
        .transport(t)
        .build()
        .await
        .unwrap();

    // when a client calls an object there and nobody answers
    let err = node
        .call_raw(
            target,
            "echo",
            echo_args("hi"),
            false,
            Some(Duration::from_millis(50)),
        )
        .await
        .unwrap_err();

    // then the request went to peer 7, one hop, and the call ends at its deadline
    assert!(matches!(err, CallError::Timeout { method, .. } if method == "echo"));
    node.shutdown();
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_next_hop_is_reported_to_the_overlay_and_the_caller() {
    // given a next hop whose transport always fails
    let me = peer(1);
    let mut t = transport(me.clone(), vec![]);
    t.expect_send()
        .returning(|to, _| Err(TransportError::Unreachable(to.addr.to_string())));
    let mut o = MockOverlay::new();
    o.expect_join().return_const(());
    o.expect_leave().return_const(());
    o.expect_is_joined().return_const(true);
    o.expect_poll_transmit().returning(|| None);
    o.expect_poll_timeout().returning(|| None);
    o.expect_poll_event().returning(|| None);
    o.expect_route().returning(|_| Route::Forward(peer(9)));
    o.expect_replica_set().returning(|_, _| vec![peer(9)]);
    o.expect_is_root().return_const(false);
    o.expect_peer_unreachable()
        .withf(|_, id| *id == NodeId::from_u128(9))
        .times(4..)
        .return_const(());
    let node = Node::builder()
        .network("unit")
        .overlay(Given(Mutex::new(Some(o))))
        .transport(t)
        .build()
        .await
        .unwrap();

    // when a client calls through it
    let target = ObjectId::from_u128(5);
    let err = node
        .call_raw(
            target,
            "echo",
            echo_args("x"),
            false,
            Some(Duration::from_millis(200)),
        )
        .await
        .unwrap_err();

    // then the overlay hears of each failure, the call is retried while its
    // deadline allows (it never ran), and the caller gets Unreachable
    assert!(
        matches!(err, CallError::Unreachable { target: t, .. } if t == target),
        "{err:?}"
    );
    node.shutdown();
}

#[tokio::test(start_paused = true)]
async fn the_fault_policy_sees_each_call_and_can_answer_from_its_cache() {
    // given a node that is root of every key, with a policy that runs the first
    // call, asks for a checkpoint after it, and answers the second from a cache
    let me = peer(1);
    let mut policy = MockFaultPolicy::new();
    policy.expect_name().return_const("test-policy".to_string());
    policy.expect_attach().return_const(());
    policy.expect_on_neighbours_changed().return_const(());
    policy.expect_on_peer_failed().return_const(());
    policy
        .expect_on_activate()
        .withf(|_, type_name, state, next_seq| {
            type_name == "test.Echo"
                && from_cbor::<Echo>(state).ok() == Some(Echo { calls: 0 })
                && *next_seq == 0
        })
        .times(1)
        .returning(|_, _, _, _| Ok(()));
    // nothing to recover at start; both calls are logged as they arrive
    policy
        .expect_held_objects()
        .times(1)
        .returning(|| Ok(Vec::new()));
    policy
        .expect_on_arrival()
        .times(2)
        .returning(|_, _| Ok(Admission::Run));
    let mut seq = mockall::Sequence::new();
    policy
        .expect_before_call()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Admission::Run));
    policy
        .expect_after_call()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(true));
    policy
        .expect_checkpoint()
        .withf(|_, _, state, next_seq| {
            from_cbor::<Echo>(state).ok() == Some(Echo { calls: 1 }) && *next_seq == 0
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Ok(()));
    policy
        .expect_before_call()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Admission::Answer(Ok(to_cbor(&"cached").unwrap()))));
    // (after_call is for calls that ran: a second one would fail the mock)
    let node = Node::builder()
        .network("unit")
        .overlay(overlay(|_| Route::Local))
        .transport(transport(me, vec![]))
        .fault_tolerance(policy)
        .register::<Echo>()
        .build()
        .await
        .unwrap();
    assert_eq!(node.run_policy(), "test-policy");

    // when an object is created and called twice
    let echo: EchoRef = node.create::<Echo>(()).await.unwrap();
    let first: String = echo.0.call("echo", &("hi",)).await.unwrap();
    let second: String = echo.0.call("echo", &("hi again",)).await.unwrap();

    // then the first ran and the second came from the policy's cache
    assert_eq!(first, "hi");
    assert_eq!(second, "cached");
    node.shutdown();
}

#[tokio::test(start_paused = true)]
async fn under_policy_none_the_store_is_never_touched() {
    // given a store that fails the test on any use
    let store = MockStore::new();
    let node = Node::builder()
        .network("unit")
        .overlay(overlay(|_| Route::Local))
        .transport(transport(peer(1), vec![]))
        .store(store)
        .register::<Echo>()
        .build()
        .await
        .unwrap();

    // when objects are created and called
    for i in 0..5 {
        let e: EchoRef = node.create::<Echo>(()).await.unwrap();
        let s: String = e.0.call("echo", &(format!("{i}"),)).await.unwrap();
        assert_eq!(s, format!("{i}"));
    }

    // then nothing was checkpointed or logged: zero overhead
    assert_eq!(node.run_policy(), "none");
    assert_eq!(node.stats().objects_hosted, 5);
    node.shutdown();
}

#[tokio::test(start_paused = true)]
async fn garbage_from_a_peer_is_dropped_and_the_node_keeps_serving() {
    // given a peer that sends garbage, then a valid activation request
    let me = peer(1);
    let remote = peer(2);
    let id = ObjectId::from_u128(77);
    let create = Frame::new(Body::Request(Request {
        id: 5,
        origin: remote.clone(),
        target: id,
        hops: 1,
        via_record: false,
        past_forwarding: false,
        kind: RequestKind::Create {
            type_name: "test.Echo".into(),
            init: to_cbor(&()).unwrap(),
            policy: "none".into(),
        },
    }))
    .encode()
    .unwrap();
    let frames = vec![
        Incoming {
            from: remote.clone(),
            frame: vec![0xff, 0x00, 0x13, 0x37],
        },
        Incoming {
            from: remote.clone(),
            frame: create,
        },
    ];
    let mut t = transport(me, frames);
    let liar = remote.id;
    t.expect_disconnect()
        .withf(move |id, reason| *id == liar && reason.contains("malformed"))
        .times(1)
        .return_const(());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Mutex::new(Some(tx));
    let expected = remote.clone();
    t.expect_send()
        .withf(move |to, _| *to == expected)
        .times(1)
        .returning(move |_, frame| {
            if let Some(tx) = tx.lock().unwrap().take() {
                let _ = tx.send(frame);
            }
            Ok(())
        });

    // when the node receives them
    let node = Node::builder()
        .network("unit")
        .overlay(overlay(|_| Route::Local))
        .transport(t)
        .register::<Echo>()
        .build()
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("a reply is sent")
        .unwrap();

    // then the garbage gets its sender disconnected, and the activation succeeds and is acknowledged
    let Ok(Frame {
        body: Body::Reply(reply),
        ..
    }) = Frame::decode(&reply)
    else {
        panic!("a reply frame");
    };
    assert_eq!(reply.id, 5);
    assert!(reply.outcome.is_ok(), "{:?}", reply.outcome);
    assert_eq!(node.hosted_objects(), vec![(id, "test.Echo")]);
    node.shutdown();
}

#[test]
fn a_long_computation_in_compute_leaves_the_worker_free_for_other_tasks() {
    // one worker thread: without the hand-off, the spinning computation would
    // hold the only worker and the other task could never set the flag
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let saw_other_task = rt.block_on(async {
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let computing = tokio::spawn({
            let flag = flag.clone();
            async move {
                crate::compute(|| {
                    let deadline = std::time::Instant::now() + Duration::from_secs(5);
                    while std::time::Instant::now() < deadline {
                        if flag.load(std::sync::atomic::Ordering::Acquire) {
                            return true;
                        }
                        std::hint::spin_loop();
                    }
                    false
                })
            }
        });
        // let the computation start first, then ask for the other task
        tokio::task::yield_now().await;
        tokio::spawn(async move { flag.store(true, std::sync::atomic::Ordering::Release) });
        computing.await.unwrap()
    });
    assert!(saw_other_task, "another task ran while the computation did");
}

#[tokio::test(start_paused = true)]
async fn compute_runs_inline_on_a_current_thread_runtime() {
    assert_eq!(crate::compute(|| 6 * 7), 42);
}

/// Runs `work(i)` inside [`crate::compute`] on `tasks` tasks of a
/// multi-threaded runtime at once; `None` if they had not all finished after
/// 10 s (the runtime is then dropped without waiting for them).
fn computations<T: Send + 'static>(
    tasks: usize,
    work: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Option<Vec<T>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(tasks)
        .enable_all()
        .build()
        .unwrap();
    let work = Arc::new(work);
    let done = rt.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|i| {
                let work = work.clone();
                tokio::spawn(async move { crate::compute(|| work(i)) })
            })
            .collect();
        tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(handles)).await
    });
    rt.shutdown_timeout(Duration::from_millis(100));
    done.ok()
        .map(|results| results.into_iter().map(|r| r.unwrap()).collect())
}

#[test]
fn no_more_computations_run_at_once_than_the_process_has_cpus() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (r, m) = (running.clone(), most.clone());
    let finished = computations(cpus + 2, move |_| {
        let now = r.fetch_add(1, SeqCst) + 1;
        m.fetch_max(now, SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        r.fetch_sub(1, SeqCst);
    });
    assert!(
        finished.is_some(),
        "computations waited over 10 s for a turn"
    );
    // every one ran, never more than one per CPU at a time (other tests in
    // this process may hold turns too, so fewer is possible)
    assert_eq!(running.load(SeqCst), 0);
    let most = most.load(SeqCst);
    assert!(
        (1..=cpus).contains(&most),
        "{most} computations at once on {cpus} CPU(s)"
    );
}

#[test]
fn a_computation_inside_a_computation_runs_in_the_outer_ones_turn() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // as many outer computations as there are turns, each starting an inner one:
    // were the inner ones to wait for a turn of their own, none would come
    let results = computations(cpus, |i| {
        std::thread::sleep(Duration::from_millis(20));
        crate::compute(|| i * 2)
    })
    .expect("nested computations finished");
    assert_eq!(results, (0..cpus).map(|i| i * 2).collect::<Vec<_>>());
}
