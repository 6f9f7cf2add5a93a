//! The ring of stations the worker tests run: a type no test node links,
//! served by a worker loop on an in-memory socket (the protocol a worker
//! process speaks on its Unix socket).

use std::sync::Arc;

use g2::prelude::*;
use g2::worker::{WorkerBuilder, WorkerConn, WorkerType};
use g2::{DynamicType, TypeProvider};
use serde::{Deserialize, Serialize};

#[g2::remote]
pub trait Link {
    /// Counts a visit, then passes the token on `hops` more times round the ring.
    async fn pass(&mut self, hops: u32) -> u32;
    async fn set_next(&mut self, next: LinkRef);
    async fn visits(&mut self) -> u64;
}

#[derive(Serialize, Deserialize)]
pub struct Station {
    index: u32,
    visits: u64,
    next: Option<LinkRef>,
}

impl Object for Station {
    const TYPE_NAME: &'static str = "test.Station";
    type Init = u32;
    type Ref = LinkRef;
    fn activate(index: u32) -> Self {
        Station {
            index,
            visits: 0,
            next: None,
        }
    }
}

impl Link for Station {
    async fn pass(&mut self, hops: u32) -> u32 {
        self.visits += 1;
        match (&self.next, hops) {
            (Some(next), h) if h > 0 => match next.pass(h - 1).await {
                Ok(n) => n + 1,
                Err(e) => panic!("station {} could not pass on: {e}", self.index),
            },
            _ => 1,
        }
    }
    async fn set_next(&mut self, next: LinkRef) {
        self.next = Some(next);
    }
    async fn visits(&mut self) -> u64 {
        self.visits
    }
}

/// Runs `Station` in a worker on an in-memory socket, started on first use.
#[derive(Default)]
pub struct InMemoryWorker {
    conn: tokio::sync::OnceCell<WorkerConn>,
}

#[async_trait::async_trait]
impl TypeProvider for InMemoryWorker {
    async fn resolve(&self, type_name: &str) -> Result<Arc<dyn DynamicType>, String> {
        if type_name != Station::TYPE_NAME {
            return Err(format!("no worker serves {type_name}"));
        }
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let (a, b) = tokio::io::duplex(1 << 16);
                tokio::spawn(g2::worker::serve(
                    b,
                    WorkerBuilder::default().register::<Station>(),
                ));
                WorkerConn::connect(a, "workers.test", "stations".into())
                    .await
                    .map_err(|e| e.to_string())
            })
            .await?;
        Ok(Arc::new(WorkerType::new(conn.clone(), type_name)))
    }
}
