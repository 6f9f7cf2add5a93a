//! Sender-based message logging (Johnson and Zwaenepoel), the bookkeeping
//! half: what a caller keeps of its calls until the callee's checkpoint
//! covers them ([`SenderLog`]), what a callee keeps to answer a call sent
//! again instead of running it twice and to number the calls in the order
//! it ran them ([`DedupTable`]), and the order a rebuilt callee replays the
//! calls its callers send again ([`replay_order`]): the order it first ran
//! them, not the order they happen to arrive in.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// A call as its caller logged it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedCall {
    /// The caller's sequence number of the call (its call id).
    pub seq: u64,
    /// The callee's receive number, once the callee said it (with the reply).
    pub received: Option<u64>,
    /// The method.
    pub method: String,
    /// The CBOR arguments.
    #[serde(with = "serde_bytes")]
    pub args: Vec<u8>,
}

/// One caller's log of its calls, per callee.
#[derive(Debug, Default)]
pub struct SenderLog {
    by_callee: HashMap<u128, BTreeMap<u64, LoggedCall>>,
}

impl SenderLog {
    /// Logs call `seq` to `callee` before it is sent.
    pub fn record(&mut self, callee: u128, seq: u64, method: &str, args: &[u8]) {
        self.by_callee.entry(callee).or_default().insert(
            seq,
            LoggedCall {
                seq,
                received: None,
                method: method.to_string(),
                args: args.to_vec(),
            },
        );
    }

    /// The callee ran call `seq` as its `received`-th call.
    pub fn received(&mut self, callee: u128, seq: u64, received: u64) {
        if let Some(c) = self
            .by_callee
            .get_mut(&callee)
            .and_then(|l| l.get_mut(&seq))
        {
            c.received = Some(received);
        }
    }

    /// The callee's checkpoint covers its calls up to receive number
    /// `covered`: those are dropped. How many were.
    pub fn trim(&mut self, callee: u128, covered: u64) -> usize {
        let Some(log) = self.by_callee.get_mut(&callee) else {
            return 0;
        };
        let before = log.len();
        log.retain(|_, c| c.received.is_none_or(|r| r > covered));
        let dropped = before - log.len();
        if log.is_empty() {
            self.by_callee.remove(&callee);
        }
        dropped
    }

    /// What to send again to a callee rebuilt from a checkpoint covering
    /// receive numbers up to `covered`: every call it may not have run, in
    /// the caller's order.
    pub fn resend(&self, callee: u128, covered: u64) -> Vec<LoggedCall> {
        self.by_callee
            .get(&callee)
            .map(|l| {
                l.values()
                    .filter(|c| c.received.is_none_or(|r| r > covered))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Calls logged in all (for bounds and tests).
    pub fn len(&self) -> usize {
        self.by_callee.values().map(BTreeMap::len).sum()
    }

    /// Whether nothing is logged.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a callee does with an arriving call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Run it; it is the callee's `n`-th call.
    Run(u64),
    /// It ran before: answer with the kept result.
    Answer(Vec<u8>),
    /// It ran before, and its result is no longer kept (the caller had it:
    /// it sent a newer call since).
    Old,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Caller {
    /// The newest call id run.
    last: u64,
    /// Results of the newest calls, oldest first: (call id, result).
    results: VecDeque<(u64, Vec<u8>)>,
}

/// A callee's table of what each caller's calls did; part of its checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DedupTable {
    /// The receive number of the next call run.
    next: u64,
    callers: HashMap<u128, Caller>,
    /// Results kept per caller.
    keep: usize,
}

impl DedupTable {
    /// An empty table keeping the `keep` newest results per caller.
    pub fn new(keep: usize) -> Self {
        DedupTable {
            next: 1,
            callers: HashMap::new(),
            keep: keep.max(1),
        }
    }

    /// The receive number the next call run gets.
    pub fn next_received(&self) -> u64 {
        self.next
    }

    /// Call `seq` of `caller` arrives.
    pub fn admit(&mut self, caller: u128, seq: u64) -> Admit {
        if let Some(c) = self.callers.get(&caller)
            && seq <= c.last
        {
            return match c.results.iter().find(|(s, _)| *s == seq) {
                Some((_, r)) => Admit::Answer(r.clone()),
                None => Admit::Old,
            };
        }
        let n = self.next;
        self.next += 1;
        Admit::Run(n)
    }

    /// Call `seq` of `caller` ran and gave `result`.
    pub fn finished(&mut self, caller: u128, seq: u64, result: Vec<u8>) {
        let c = self.callers.entry(caller).or_default();
        c.last = c.last.max(seq);
        c.results.push_back((seq, result));
        while c.results.len() > self.keep {
            c.results.pop_front();
        }
    }
}

/// A gap in the calls sent again: receive numbers from `after + 1` on must
/// all be there, or replaying would run a later call before an earlier one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("replay after call {after}: call {missing} was not sent again (its caller is gone?)")]
pub struct Gap {
    /// The watermark.
    pub after: u64,
    /// The first receive number missing.
    pub missing: u64,
}

/// The order a callee rebuilt from a checkpoint covering receive numbers up
/// to `after` replays the calls its callers sent again (caller, call): by
/// receive number, which must run on from `after + 1` without a gap; calls
/// that never had one (sent but not run before the loss) follow, each
/// caller's in its own order. Duplicates are dropped.
pub fn replay_order(
    after: u64,
    calls: Vec<(u128, LoggedCall)>,
) -> Result<Vec<(u128, LoggedCall)>, Gap> {
    let mut numbered: BTreeMap<u64, (u128, LoggedCall)> = BTreeMap::new();
    let mut fresh: BTreeMap<(u128, u64), (u128, LoggedCall)> = BTreeMap::new();
    for (caller, c) in calls {
        match c.received {
            Some(r) if r <= after => {}
            Some(r) => {
                numbered.entry(r).or_insert((caller, c));
            }
            None => {
                fresh.entry((caller, c.seq)).or_insert((caller, c));
            }
        }
    }
    for (expect, r) in (after + 1..).zip(numbered.keys()) {
        if *r != expect {
            return Err(Gap {
                after,
                missing: expect,
            });
        }
    }
    Ok(numbered.into_values().chain(fresh.into_values()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(seq: u64, received: Option<u64>) -> LoggedCall {
        LoggedCall {
            seq,
            received,
            method: format!("m{seq}"),
            args: vec![seq as u8],
        }
    }

    #[test]
    fn a_caller_keeps_its_calls_until_the_callees_checkpoint_covers_them() {
        let mut log = SenderLog::default();
        for seq in 1..=5 {
            log.record(7, seq, "add", &[seq as u8]);
        }
        log.record(8, 1, "add", &[9]);
        // the callee ran calls 1-4 as its receive numbers 10-13
        for (seq, r) in [(1, 10), (2, 11), (3, 12), (4, 13)] {
            log.received(7, seq, r);
        }
        // its checkpoint covers up to 11: calls 1 and 2 go
        assert_eq!(log.trim(7, 11), 2);
        let again: Vec<u64> = log.resend(7, 11).iter().map(|c| c.seq).collect();
        assert_eq!(again, [3, 4, 5], "run after the checkpoint, or never run");
        assert_eq!(log.len(), 4);
        assert_eq!(
            log.trim(7, 100),
            2,
            "call 5 has no receive number yet: kept"
        );
        assert_eq!(log.resend(7, 100).len(), 1);
        assert_eq!(log.trim(9, 1), 0, "an unknown callee");
    }

    #[test]
    fn a_call_sent_again_is_answered_not_run_twice() {
        let mut t = DedupTable::new(2);
        assert_eq!(t.admit(1, 1), Admit::Run(1));
        t.finished(1, 1, b"r1".to_vec());
        assert_eq!(t.admit(2, 1), Admit::Run(2), "another caller's call 1");
        t.finished(2, 1, b"x".to_vec());
        assert_eq!(t.admit(1, 1), Admit::Answer(b"r1".to_vec()));
        assert_eq!(t.admit(1, 2), Admit::Run(3));
        t.finished(1, 2, b"r2".to_vec());
        assert_eq!(t.admit(1, 3), Admit::Run(4));
        t.finished(1, 3, b"r3".to_vec());
        // two results kept: call 1's is gone, and it is still not run again
        assert_eq!(t.admit(1, 1), Admit::Old);
        assert_eq!(t.admit(1, 2), Admit::Answer(b"r2".to_vec()));
        assert_eq!(t.next_received(), 5);
        // the table travels in the checkpoint
        let bytes = {
            let mut v = Vec::new();
            ciborium::into_writer(&t, &mut v).unwrap();
            v
        };
        let mut back: DedupTable = ciborium::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(back.admit(1, 3), Admit::Answer(b"r3".to_vec()));
        assert_eq!(back.admit(1, 4), Admit::Run(5));
    }

    #[test]
    fn replay_runs_calls_in_the_order_the_callee_first_ran_them() {
        // callers 1 and 2 send again, each in its own order; the callee had
        // run 2's call 5 (receive 11) before 1's call 3 (receive 12)
        let sent = vec![
            (1, call(3, Some(12))),
            (1, call(4, None)),
            (2, call(5, Some(11))),
            (2, call(6, Some(13))),
            (1, call(2, Some(10))), // covered by the checkpoint
            (2, call(5, Some(11))), // sent twice
        ];
        let order: Vec<(u128, u64)> = replay_order(10, sent)
            .unwrap()
            .into_iter()
            .map(|(c, l)| (c, l.seq))
            .collect();
        assert_eq!(order, [(2, 5), (1, 3), (2, 6), (1, 4)]);
        // receive 12 missing (its caller is gone): a gap, not a wrong order
        let gap = replay_order(10, vec![(2, call(5, Some(11))), (2, call(6, Some(13)))]);
        assert_eq!(
            gap.unwrap_err(),
            Gap {
                after: 10,
                missing: 12
            }
        );
        assert!(replay_order(10, vec![]).unwrap().is_empty());
    }
}
