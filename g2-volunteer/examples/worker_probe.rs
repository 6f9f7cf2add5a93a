//! A G2 application for the worker-confinement tests: its one type's methods
//! try what a confined worker must not do (open a network socket, write
//! outside its scratch dir) and report what happened, or abort the process.
//! Run by a volunteer as a worker; run directly it only says so.

use g2::prelude::*;
use serde::{Deserialize, Serialize};

#[g2::remote]
pub trait Probe {
    /// Connects to `addr` over TCP.
    async fn connect(&mut self, addr: String) -> Result<(), String>;
    /// Opens an IPv4 UDP socket.
    async fn udp(&mut self) -> Result<(), String>;
    /// Writes a file at `path`.
    async fn write(&mut self, path: String) -> Result<(), String>;
    /// Reads a file at `path`.
    async fn read(&mut self, path: String) -> Result<usize, String>;
    /// This process's nice value.
    async fn nice(&mut self) -> Result<i64, String>;
    /// Aborts the worker process.
    async fn abort(&mut self);
    /// Counts calls.
    async fn ping(&mut self) -> u64;
}

#[derive(Serialize, Deserialize)]
struct ProbeObject {
    pings: u64,
}

impl Object for ProbeObject {
    const TYPE_NAME: &'static str = "test.Probe";
    type Init = ();
    type Ref = ProbeRef;
    fn activate(_: ()) -> Self {
        ProbeObject { pings: 0 }
    }
}

impl Probe for ProbeObject {
    async fn connect(&mut self, addr: String) -> Result<(), String> {
        std::net::TcpStream::connect(addr)
            .map(drop)
            .map_err(|e| e.to_string())
    }
    async fn udp(&mut self) -> Result<(), String> {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .map(drop)
            .map_err(|e| e.to_string())
    }
    async fn write(&mut self, path: String) -> Result<(), String> {
        std::fs::write(path, b"escaped").map_err(|e| e.to_string())
    }
    async fn read(&mut self, path: String) -> Result<usize, String> {
        std::fs::read(path)
            .map(|b| b.len())
            .map_err(|e| e.to_string())
    }
    async fn nice(&mut self) -> Result<i64, String> {
        // field 19 of /proc/self/stat, after the command name in parentheses
        let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| e.to_string())?;
        let after = stat.rsplit_once(')').ok_or("no )")?.1;
        after
            .split_whitespace()
            .nth(16)
            .ok_or("short stat")?
            .parse()
            .map_err(|e: std::num::ParseIntError| e.to_string())
    }
    async fn abort(&mut self) {
        std::process::abort();
    }
    async fn ping(&mut self) -> u64 {
        self.pings += 1;
        self.pings
    }
}

fn main() {
    g2::worker::serve_if_worker(|w| w.register::<ProbeObject>());
    eprintln!("worker_probe: a volunteer runs this as a G2 worker");
}
