//! The benchmark object: it echoes its argument and holds ballast, the state
//! moved by the migration measurement.

use g2::prelude::*;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

#[g2::remote]
pub trait Bench {
    /// Returns its argument.
    async fn echo(&mut self, data: ByteBuf) -> ByteBuf;
    /// The size of the object's state.
    async fn ballast_len(&mut self) -> u64;
}

#[derive(Serialize, Deserialize)]
pub struct BenchObject {
    #[serde(with = "serde_bytes")]
    ballast: Vec<u8>,
}

impl Object for BenchObject {
    const TYPE_NAME: &'static str = "netbench.Object";
    type Init = u64;
    type Ref = BenchRef;
    fn activate(bytes: u64) -> Self {
        BenchObject {
            ballast: (0..bytes).map(|i| (i % 251) as u8).collect(),
        }
    }
}

impl Bench for BenchObject {
    async fn echo(&mut self, data: ByteBuf) -> ByteBuf {
        data
    }
    async fn ballast_len(&mut self) -> u64 {
        self.ballast.len() as u64
    }
}
