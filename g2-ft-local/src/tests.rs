use super::*;
use g2_core::store::{MemStore, StoreExt};

fn call(seq: u64, method: &str, oneway: bool) -> IncomingCall {
    IncomingCall {
        call_id: CallId {
            caller: ObjectId::from_u128(7),
            seq,
        },
        method: method.to_string(),
        args: vec![seq as u8],
        oneway,
    }
}

fn policy(store: &Arc<MemStore>, every: u32) -> LocalPolicy {
    LocalPolicy::new(
        store.clone(),
        LocalConfig {
            checkpoint_every_calls: every,
            checkpoint_every: Duration::from_secs(3600),
            ..LocalConfig::default()
        },
    )
}

const OBJ: ObjectId = ObjectId::from_u128(42);

/// Arrives and runs a call the way the runtime does; returns whether a checkpoint is due.
async fn run(p: &LocalPolicy, c: &IncomingCall, result: &[u8]) -> bool {
    assert_eq!(p.on_arrival(OBJ, c).await.unwrap(), Admission::Run);
    assert_eq!(p.before_call(OBJ, c).await.unwrap(), Admission::Run);
    p.after_call(OBJ, c, &Ok(result.to_vec())).await.unwrap()
}

#[tokio::test]
async fn calls_logged_since_the_checkpoint_are_replayed_in_arrival_order_after_a_crash() {
    let store = Arc::new(MemStore::new());
    let p = policy(&store, 100);
    p.on_activate(OBJ, "Counter", b"s0", 5).await.unwrap();
    run(&p, &call(1, "add", false), b"r1").await;
    run(&p, &call(2, "add", true), b"r2").await;
    // a third call arrived but did not run before the crash
    p.on_arrival(OBJ, &call(3, "add", false)).await.unwrap();
    drop(p);

    let p = policy(&store, 100);
    assert_eq!(p.held_objects().await.unwrap(), vec![OBJ]);
    let rec = p.recover(OBJ).await.unwrap().unwrap();
    assert_eq!(rec.type_name, "Counter");
    assert_eq!(rec.state, b"s0");
    assert_eq!(rec.next_call_seq, 5);
    let order: Vec<u64> = rec.replay.iter().map(|c| c.call_id.seq).collect();
    assert_eq!(order, vec![1, 2, 3]);
    assert_eq!(rec.replay[1], call(2, "add", true));
    // replayed calls run again, even those whose results were kept
    for c in &rec.replay {
        assert_eq!(p.before_call(OBJ, c).await.unwrap(), Admission::Run);
        p.after_call(OBJ, c, &Ok(b"again".to_vec())).await.unwrap();
    }
    // a caller that sends call 1 again gets the result it would have got first
    assert_eq!(
        p.on_arrival(OBJ, &call(1, "add", false)).await.unwrap(),
        Admission::Answer(Ok(b"r1".to_vec()))
    );
}

#[tokio::test]
async fn a_checkpoint_truncates_the_log_but_keeps_queued_calls() {
    let store = Arc::new(MemStore::new());
    let p = policy(&store, 2);
    p.on_activate(OBJ, "Counter", b"s0", 0).await.unwrap();
    assert!(!run(&p, &call(1, "add", false), b"r1").await);
    // call 3 arrives while call 2 runs
    let c2 = call(2, "add", false);
    p.on_arrival(OBJ, &c2).await.unwrap();
    p.on_arrival(OBJ, &call(3, "add", false)).await.unwrap();
    p.before_call(OBJ, &c2).await.unwrap();
    let due = p.after_call(OBJ, &c2, &Ok(b"r2".to_vec())).await.unwrap();
    assert!(due, "a checkpoint is due every 2 calls");
    p.checkpoint(OBJ, "Counter", b"s2", 9).await.unwrap();
    drop(p);

    let p = policy(&store, 2);
    let rec = p.recover(OBJ).await.unwrap().unwrap();
    assert_eq!(rec.state, b"s2");
    assert_eq!(rec.next_call_seq, 9);
    assert_eq!(rec.replay, vec![call(3, "add", false)]);
    assert_eq!(
        store.scan_prefix(Space::Log, &obj_key(OBJ)).unwrap().len(),
        1,
        "only the queued call is still logged"
    );
    // the restarted host replays call 3, logs call 4 and checkpoints: the log
    // is empty again, the record logged before the restart included
    let c3 = call(3, "add", false);
    p.before_call(OBJ, &c3).await.unwrap();
    p.after_call(OBJ, &c3, &Ok(b"r3".to_vec())).await.unwrap();
    assert!(run(&p, &call(4, "add", false), b"r4").await);
    p.checkpoint(OBJ, "Counter", b"s4", 9).await.unwrap();
    assert!(
        store
            .scan_prefix(Space::Log, &obj_key(OBJ))
            .unwrap()
            .is_empty(),
        "every call that ran is covered by the checkpoint"
    );
}

#[tokio::test]
async fn duplicates_are_answered_dropped_or_queued_behind_their_original() {
    let store = Arc::new(MemStore::new());
    let p = policy(&store, 100);
    p.on_activate(OBJ, "T", b"s", 0).await.unwrap();
    // a one-way call queued, then sent again: accepted without queueing twice
    let ow = call(1, "tell", true);
    assert_eq!(p.on_arrival(OBJ, &ow).await.unwrap(), Admission::Run);
    assert_eq!(p.on_arrival(OBJ, &ow).await.unwrap(), Admission::Drop);
    // a two-way call and its copy: both queued, the copy answered from the original
    let tw = call(2, "ask", false);
    assert_eq!(p.on_arrival(OBJ, &tw).await.unwrap(), Admission::Run);
    assert_eq!(p.on_arrival(OBJ, &tw).await.unwrap(), Admission::Run);
    for c in [&ow, &tw] {
        assert_eq!(p.before_call(OBJ, c).await.unwrap(), Admission::Run);
        let r = if c.oneway {
            Ok(Vec::new())
        } else {
            Err(RemoteError::Panicked("boom".into()))
        };
        p.after_call(OBJ, c, &r).await.unwrap();
    }
    assert_eq!(
        p.before_call(OBJ, &tw).await.unwrap(),
        Admission::Answer(Err(RemoteError::Panicked("boom".into())))
    );
    assert_eq!(
        p.on_arrival(OBJ, &tw).await.unwrap(),
        Admission::Answer(Err(RemoteError::Panicked("boom".into())))
    );
}

#[tokio::test]
async fn outgoing_calls_are_answered_from_the_log_until_a_checkpoint_covers_them() {
    let store = Arc::new(MemStore::new());
    let p = policy(&store, 100);
    p.on_activate(OBJ, "T", b"s", 0).await.unwrap();
    let out = OutgoingCall {
        call_id: CallId {
            caller: OBJ,
            seq: 0,
        },
        target: ObjectId::from_u128(9),
        method: "m".into(),
        args: vec![],
        oneway: false,
    };
    assert_eq!(
        p.before_outgoing(OBJ, &out).await.unwrap(),
        OutgoingDecision::Send
    );
    p.after_outgoing(OBJ, out.call_id, &Ok(b"answer".to_vec()))
        .await
        .unwrap();
    // a restart: the replay's outgoing call is answered from the log, once
    let p2 = policy(&store, 100);
    p2.recover(OBJ).await.unwrap().expect("a checkpoint");
    assert_eq!(
        p2.before_outgoing(OBJ, &out).await.unwrap(),
        OutgoingDecision::Answer(Ok(b"answer".to_vec()))
    );
    // a checkpoint covering the call truncates its record
    p.checkpoint(OBJ, "T", b"s", 1).await.unwrap();
    assert_eq!(
        p.before_outgoing(OBJ, &out).await.unwrap(),
        OutgoingDecision::Send
    );
    let p3 = policy(&store, 100);
    p3.recover(OBJ).await.unwrap().expect("a checkpoint");
    assert_eq!(
        p3.before_outgoing(OBJ, &out).await.unwrap(),
        OutgoingDecision::Send
    );
}

#[tokio::test]
async fn a_damaged_checkpoint_or_log_record_is_reported_not_replayed() {
    let store = Arc::new(MemStore::new());
    let p = policy(&store, 100);
    p.on_activate(OBJ, "T", b"state", 0).await.unwrap();
    p.on_arrival(OBJ, &call(1, "m", false)).await.unwrap();

    // flip one byte of the logged call
    let (key, mut value) = store
        .scan_prefix(Space::Log, &obj_key(OBJ))
        .unwrap()
        .remove(0);
    let last = value.len() - 1;
    value[last] ^= 0x01;
    store.put(Space::Log, &key, &value).unwrap();
    let err = policy(&store, 100).recover(OBJ).await.unwrap_err();
    assert!(
        matches!(&err, PolicyError::Corrupt { object, reason } if *object == OBJ && reason.contains("checksum")),
        "{err}"
    );

    // a truncated checkpoint
    let ck = store
        .get(Space::Checkpoints, &obj_key(OBJ))
        .unwrap()
        .unwrap();
    store
        .put(Space::Checkpoints, &obj_key(OBJ), &ck[..10])
        .unwrap();
    let p = policy(&store, 100);
    assert_eq!(
        p.held_objects().await.unwrap(),
        vec![OBJ],
        "still listed, to be reported"
    );
    let err = p.recover(OBJ).await.unwrap_err();
    assert!(matches!(err, PolicyError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("checkpoint"), "{err}");
}

#[tokio::test]
async fn a_departed_object_leaves_nothing_behind() {
    let store = Arc::new(MemStore::new());
    let p = policy(&store, 100);
    p.on_activate(OBJ, "T", b"s", 0).await.unwrap();
    run(&p, &call(1, "m", false), b"r").await;
    p.on_departed(OBJ).await.unwrap();
    assert!(p.held_objects().await.unwrap().is_empty());
    for space in Space::ALL {
        assert!(store.scan_prefix(space, &obj_key(OBJ)).unwrap().is_empty());
    }
    assert!(p.recover(OBJ).await.unwrap().is_none());
}

#[tokio::test]
async fn each_durability_serves_its_own_objects() {
    let store = Arc::new(MemStore::new());
    let process = policy(&store, 100);
    let machine = LocalPolicy::new(
        store.clone(),
        LocalConfig {
            durability: Durability::Machine,
            ..LocalConfig::default()
        },
    );
    assert_eq!(process.name(), "local");
    assert_eq!(machine.name(), "local-machine");
    let other = ObjectId::from_u128(43);
    process.on_activate(OBJ, "T", b"s", 0).await.unwrap();
    machine.on_activate(other, "T", b"s", 0).await.unwrap();
    assert_eq!(process.held_objects().await.unwrap(), vec![OBJ]);
    assert_eq!(machine.held_objects().await.unwrap(), vec![other]);
}

#[tokio::test]
async fn machine_durability_syncs_every_write() {
    let mut store = g2_core::store::MockStore::new();
    store.expect_write().times(3).returning(|b| {
        assert!(b.sync, "an unsynced write under machine durability");
        Ok(())
    });
    let p = LocalPolicy::new(
        Arc::new(store),
        LocalConfig {
            durability: Durability::Machine,
            ..LocalConfig::default()
        },
    );
    p.on_activate(OBJ, "T", b"s", 0).await.unwrap();
    let c = call(1, "m", false);
    p.on_arrival(OBJ, &c).await.unwrap();
    p.after_call(OBJ, &c, &Ok(vec![])).await.unwrap();
}

#[tokio::test]
async fn old_results_are_forgotten_at_checkpoints() {
    let store = Arc::new(MemStore::new());
    let p = LocalPolicy::new(
        store.clone(),
        LocalConfig {
            checkpoint_every_calls: 1,
            results_kept: 3,
            ..LocalConfig::default()
        },
    );
    p.on_activate(OBJ, "T", b"s", 0).await.unwrap();
    for seq in 0..10 {
        if run(&p, &call(seq, "m", false), &[seq as u8]).await {
            p.checkpoint(OBJ, "T", b"s", 0).await.unwrap();
        }
    }
    assert_eq!(
        store
            .scan_prefix(Space::Results, &obj_key(OBJ))
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        p.on_arrival(OBJ, &call(9, "m", false)).await.unwrap(),
        Admission::Answer(Ok(vec![9]))
    );
}

/// The policies of an object's old and new host; the new host's store too.
/// Two hosts' stores, here and there, with a policy on each.
fn two_hosts() -> (Arc<MemStore>, Arc<MemStore>, LocalPolicy, LocalPolicy) {
    let (here, there) = (Arc::new(MemStore::new()), Arc::new(MemStore::new()));
    let (a, b) = (policy(&here, 100), policy(&there, 100));
    (here, there, a, b)
}

#[tokio::test]
async fn kept_results_travel_with_a_migrating_object_so_a_resent_call_does_not_run_twice() {
    let (_, there, a, b) = two_hosts();
    a.on_activate(OBJ, "Counter", b"s0", 0).await.unwrap();
    run(&a, &call(1, "add", false), b"r1").await;
    run(&a, &call(2, "add", false), b"r2").await;
    let carried = a.export(OBJ).await.unwrap();
    a.on_departed(OBJ).await.unwrap();

    b.on_activate(OBJ, "Counter", b"s2", 0).await.unwrap();
    b.import(OBJ, &carried).await.unwrap();
    // the caller of call 2 missed its reply and sends it again to the new host
    assert_eq!(
        b.on_arrival(OBJ, &call(2, "add", false)).await.unwrap(),
        Admission::Answer(Ok(b"r2".to_vec()))
    );
    assert_eq!(
        b.on_arrival(OBJ, &call(3, "add", false)).await.unwrap(),
        Admission::Run
    );
    // and the imported results are durable at the new host
    drop(b);
    let b = policy(&there, 100);
    b.recover(OBJ).await.unwrap().unwrap();
    assert_eq!(
        b.on_arrival(OBJ, &call(1, "add", false)).await.unwrap(),
        Admission::Answer(Ok(b"r1".to_vec()))
    );
}

#[tokio::test]
async fn damaged_carried_records_refuse_the_transfer() {
    let (_, _, a, b) = two_hosts();
    a.on_activate(OBJ, "Counter", b"s0", 0).await.unwrap();
    run(&a, &call(1, "add", false), b"r1").await;
    let mut carried = a.export(OBJ).await.unwrap();
    let last = carried.len() - 1;
    carried[last] ^= 0x40;
    b.on_activate(OBJ, "Counter", b"s1", 0).await.unwrap();
    assert!(matches!(
        b.import(OBJ, &carried).await,
        Err(PolicyError::Corrupt { .. })
    ));
}

#[tokio::test]
async fn a_departure_mark_survives_a_restart_until_the_object_leaves_or_stays() {
    let store = Arc::new(MemStore::new());
    let p = policy(&store, 100);
    p.on_activate(OBJ, "Counter", b"s0", 0).await.unwrap();
    run(&p, &call(1, "add", false), b"r1").await;
    assert_eq!(p.departing(OBJ).await.unwrap(), None);
    let to = Peer {
        id: g2_core::NodeId::from_u128(9),
        addr: g2_core::NodeAddr::new("127.0.0.1:4000"),
    };
    p.on_departing(OBJ, to.clone(), 77).await.unwrap();
    drop(p);

    // restarted before the departure was confirmed: the object and the mark
    let p = policy(&store, 100);
    assert_eq!(p.held_objects().await.unwrap(), vec![OBJ]);
    let rec = p.recover(OBJ).await.unwrap().unwrap();
    assert_eq!(rec.replay.len(), 1, "the mark is not a logged call");
    assert_eq!(p.departing(OBJ).await.unwrap(), Some((to.clone(), 77)));
    // the transfer failed: the object stays, unmarked
    p.on_stayed(OBJ).await.unwrap();
    assert_eq!(p.departing(OBJ).await.unwrap(), None);
    // marked again, then gone: nothing is left, the mark included
    p.on_departing(OBJ, to, 78).await.unwrap();
    p.on_departed(OBJ).await.unwrap();
    assert_eq!(p.departing(OBJ).await.unwrap(), None);
    assert!(p.held_objects().await.unwrap().is_empty());

    // a damaged mark is reported, not followed
    let mut b = WriteBatch::new();
    b.put(Space::Log, tagged(OBJ, DEPARTING), b"garbage".to_vec());
    store.write(b).unwrap();
    assert!(matches!(
        p.departing(OBJ).await,
        Err(PolicyError::Corrupt { object, .. }) if object == OBJ
    ));
}

#[tokio::test]
async fn a_restarted_host_sends_no_results_for_the_calls_it_logged_since_its_checkpoint() {
    let (here, _, a, b) = two_hosts();
    a.on_activate(OBJ, "Counter", b"s0", 0).await.unwrap();
    run(&a, &call(1, "add", false), b"r1").await;
    a.checkpoint(OBJ, "Counter", b"s1", 0).await.unwrap();
    run(&a, &call(2, "add", false), b"r2").await;
    drop(a);

    // restarted: call 2 is logged after the checkpoint, so it travels as a
    // call; the state sent (the checkpoint) does not include it
    let a = policy(&here, 100);
    let rec = a.recover(OBJ).await.unwrap().unwrap();
    assert_eq!(rec.state, b"s1");
    assert_eq!(rec.replay, vec![call(2, "add", false)]);
    let carried = a.export(OBJ).await.unwrap();
    b.on_activate(OBJ, "Counter", &rec.state, 0).await.unwrap();
    b.import(OBJ, &carried).await.unwrap();
    assert_eq!(
        b.on_arrival(OBJ, &call(2, "add", false)).await.unwrap(),
        Admission::Run,
        "the new host runs call 2 on the checkpointed state"
    );
    assert_eq!(
        b.on_arrival(OBJ, &call(1, "add", false)).await.unwrap(),
        Admission::Answer(Ok(b"r1".to_vec())),
        "call 1, in the checkpoint, is answered from its result"
    );
}
