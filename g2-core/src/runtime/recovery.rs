//! Recovery at start (paper §4.2): the objects a fault-tolerance policy kept on
//! this node's store are hosted again from their checkpoints, with the calls
//! logged since queued to replay once the node has joined; a transfer the
//! crash cut short is resumed.

use std::sync::Arc;

use tracing::warn;

use crate::runtime::node::NodeInner;
use crate::sync::lock;

impl NodeInner {
    /// Hosts again every object a fault-tolerance policy kept on this node's
    /// store (a restart after a crash): checkpoint, then the logged calls to
    /// replay. An object whose records fail their checks is reported lost.
    pub(super) async fn recover_objects(self: &Arc<Self>) {
        let mut names: Vec<&String> = self.policies.keys().collect();
        names.sort();
        for name in names {
            let policy = self.policies[name].clone();
            let held = match policy.held_objects().await {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(policy = %name, "cannot list the objects to recover: {e}");
                    continue;
                }
            };
            for id in held {
                if lock(&self.catalog).is_hosted(&id) {
                    continue;
                }
                let rec = match policy.recover(id).await {
                    Ok(Some(rec)) => rec,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::error!(object = %id, policy = %name, "object lost: {e}");
                        lock(&self.catalog).mark_lost(id);
                        continue;
                    }
                };
                let entry = match self.types.get(&rec.type_name, self.me.id).await {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::error!(object = %id, r#type = %rec.type_name, "object lost: {e}");
                        lock(&self.catalog).mark_lost(id);
                        continue;
                    }
                };
                let obj = match entry.restore(id, &rec.state).await {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::error!(object = %id, r#type = %rec.type_name, "object lost: its checkpoint does not decode: {e}");
                        lock(&self.catalog).mark_lost(id);
                        continue;
                    }
                };
                let replayed = rec.replay.len();
                let departing = match policy.departing(id).await {
                    Ok(d) => d,
                    Err(e) => {
                        warn!(object = %id, "could not read whether it was leaving when this node stopped: {e}; it runs here");
                        None
                    }
                };
                let (replay, held) = match departing {
                    Some(_) => (Vec::new(), rec.replay),
                    None => (rec.replay, Vec::new()),
                };
                self.host(
                    id,
                    entry,
                    obj,
                    Some(policy.clone()),
                    name,
                    rec.next_call_seq,
                    replay,
                    true,
                    false,
                    None,
                );
                tracing::info!(object = %id, r#type = %rec.type_name, replay = replayed, "recovered object from its checkpoint");
                if let Some((to, transfer)) = departing {
                    self.resume_departure(id, to, transfer, held);
                }
            }
        }
    }
}
