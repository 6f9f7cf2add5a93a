//! The task-local caller context: while a hosted object runs a call, proxies it
//! uses call through its node and get call ids from its counter.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::fault::FaultPolicy;
use crate::id::{CallId, ObjectId};
use crate::runtime::node::Node;

#[derive(Clone)]
pub(crate) struct CallContext {
    pub(crate) node: Node,
    pub(crate) object: ObjectId,
    pub(crate) seq: Arc<AtomicU64>,
    pub(crate) policy: Option<Arc<dyn FaultPolicy>>,
}

impl CallContext {
    pub(crate) fn next_call_id(&self) -> CallId {
        CallId {
            caller: self.object,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
        }
    }
}

tokio::task_local! {
    pub(crate) static CURRENT: CallContext;
}

pub(crate) fn current() -> Option<CallContext> {
    CURRENT.try_with(|c| c.clone()).ok()
}

pub(crate) fn current_node() -> Option<Node> {
    CURRENT.try_with(|c| c.node.clone()).ok()
}

/// The object whose call is running on this task, if any.
pub fn current_object() -> Option<ObjectId> {
    CURRENT
        .try_with(|c| c.object)
        .ok()
        .or_else(crate::worker::outlet_object)
}

/// Runs a long computation inside an object's method without holding up the
/// node. A method runs on one of the runtime's worker threads; a computation of
/// many milliseconds there would hold up whatever else that thread serves: the
/// node's network reads and replies, other objects' calls. On a multi-threaded
/// runtime this hands those to another thread for the duration
/// ([`tokio::task::block_in_place`]); on a current-thread runtime it just runs
/// `f`.
///
/// At most as many computations run at once, in the whole process, as it may
/// use CPUs ([`std::thread::available_parallelism`], which honours `taskset`
/// and cgroup quotas); the others wait their turn, first come first served.
/// Ten objects computing at once on one CPU would otherwise all finish late,
/// each holding back whoever waits for its result, where one after the other
/// the first finishes after a tenth of the time. `f` should only compute: a
/// computation that waits for another to finish could wait for a turn that
/// never comes. A computation started inside another runs in the outer one's
/// turn.
///
/// ```
/// # fn evolve(_: &mut Vec<u32>) {}
/// # let mut population = vec![1u32];
/// let best = g2_core::compute(|| {
///     evolve(&mut population);
///     population.iter().copied().min()
/// });
/// # assert_eq!(best, Some(1));
/// ```
pub fn compute<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| {
            // (a computation inside another runs in the outer one's turn)
            let _turn = (!HOLDS_TURN.get()).then(CpuTurn::take);
            f()
        }),
        _ => f(),
    }
}

/// One of the process's computation slots, held by this thread.
struct CpuTurn {
    _permit: Option<tokio::sync::SemaphorePermit<'static>>,
}

thread_local! {
    static HOLDS_TURN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl CpuTurn {
    fn take() -> CpuTurn {
        static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
        let slots = SLOTS.get_or_init(|| {
            tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
        });
        // (never closed; the semaphore is fair: first come, first served)
        let permit = futures::executor::block_on(slots.acquire()).ok();
        HOLDS_TURN.set(true);
        CpuTurn { _permit: permit }
    }
}

impl Drop for CpuTurn {
    fn drop(&mut self) {
        HOLDS_TURN.set(false);
    }
}
