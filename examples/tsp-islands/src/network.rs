//! A run on a G2 network (in-process, or as a client with `--connect`):
//! creating the islands, watching their progress, collecting the best tour.

use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use crate::cli::Args;
use crate::client::client_node;
use crate::ga::{GaParams, Tour, better};
use crate::in_process::{StoreDirs, in_process_nodes};
use crate::island::{self, IslandInit, IslandRef, TspIsland};
use crate::run::Outcome;
use crate::tsplib::Instance;

/// The overlay `--routing` names (pastry or chord), with `--failure-timeout-ms`.
pub fn routing(args: &Args) -> Result<Box<dyn g2::OverlayFactory>, String> {
    let which = match args.routing.as_str() {
        "pastry" => g2_volunteer::Routing::Pastry,
        "chord" => g2_volunteer::Routing::Chord,
        other => {
            return Err(format!(
                "--routing {other}: expected pastry or chord (or test in-process)"
            ));
        }
    };
    g2_volunteer::overlay(
        which,
        Duration::from_millis((args.failure_timeout_ms / 3).max(1)),
        Duration::from_millis(args.failure_timeout_ms),
    )
    .map_err(|e| e.to_string())
}

/// An island's progress. `status` only reads, so a call that timed out (say,
/// lost with a volunteer that was leaving), found the island's volunteer down
/// (under `--ft local`, until it restarts) or reached a node whose view of the
/// ring is still settling (no such object) is simply asked again, a few times.
async fn status_of(island: &IslandRef) -> Result<island::Status, g2::CallError> {
    let quick = island.with_timeout(Duration::from_secs(5));
    let mut last = None;
    for _ in 0..4 {
        match quick.status().await {
            Err(
                e @ (g2::CallError::Timeout { .. }
                | g2::CallError::Unavailable { .. }
                | g2::CallError::ObjectNotFound(_)),
            ) => last = Some(e),
            other => return other,
        }
    }
    Err(last.unwrap_or(g2::CallError::NodeStopped))
}

/// How long to wait before asking the islands again, with `done` of `epochs`
/// done `elapsed` after the start: a quarter of the time left at the pace so
/// far, between 2 ms and 500 ms.
fn next_look(elapsed: Duration, done: u32, epochs: u32) -> Duration {
    let left = if done == 0 {
        elapsed * 2 // nothing to go by yet: back off
    } else {
        elapsed.mul_f64(f64::from(epochs.saturating_sub(done)) / f64::from(done))
    };
    (left / 4).clamp(Duration::from_millis(2), Duration::from_millis(500))
}

pub async fn run_network(
    args: &Args,
    instance: &Instance,
    params: GaParams,
    bar: &ProgressBar,
) -> Result<Outcome, String> {
    let mut dirs = StoreDirs(Vec::new());
    let nodes = match args.connect {
        Some(addr) => vec![client_node(args, addr).await?],
        None => in_process_nodes(args, &mut dirs).await?,
    };
    let client = &nodes[0];
    let started = Instant::now();
    let mut islands: Vec<IslandRef> = Vec::new();
    // Ring neighbours exchange migrants every epoch: their GUIDs are spaced
    // evenly round the ring from a random start, in island order, so that
    // neighbouring islands have neighbouring roots and mostly share a volunteer.
    // (Where an island runs never changes the result.)
    let base = g2::ObjectId::random().as_u128();
    let step = u128::MAX / u128::from(args.islands.max(1));
    for index in 0..args.islands {
        let init = IslandInit {
            instance: instance.clone(),
            params,
            seed: args.seed,
            index,
            islands: args.islands,
        };
        let id = g2::ObjectId::from_u128(base.wrapping_add(step * u128::from(index)));
        let isl = client
            .create_with_id::<TspIsland>(id, init)
            .await
            .map_err(|e| format!("creating island {index}: {e}"))?;
        islands.push(isl);
    }
    for isl in &islands {
        isl.set_peers(islands.clone())
            .await
            .map_err(|e| format!("set_peers on {isl}: {e}"))?;
    }
    for isl in &islands {
        isl.start(args.epochs)
            .await
            .map_err(|e| format!("start on {isl}: {e}"))?;
    }
    // watch progress; the result does not depend on when we look. Each look
    // is a call to every island, served between its epochs on the volunteers'
    // CPUs, so look about four times in the time the run still needs at its
    // pace so far, at most every 2 ms and at least every 500 ms.
    let watching = Instant::now();
    loop {
        let statuses = futures::future::try_join_all(islands.iter().map(status_of))
            .await
            .map_err(|e| format!("status: {e}"))?;
        let done = statuses.iter().map(|s| s.epochs_done).min().unwrap_or(0);
        let best = statuses.iter().map(|s| s.best_length).min().unwrap_or(0);
        bar.set_position(u64::from(done));
        bar.set_message(format!("best {best}"));
        if done >= args.epochs {
            break;
        }
        tokio::time::sleep(next_look(watching.elapsed(), done, args.epochs)).await;
    }
    let mut best: Option<(Tour, u64)> = None;
    for isl in &islands {
        let (tour, len) = isl.best().await.map_err(|e| format!("best: {e}"))?;
        if best
            .as_ref()
            .is_none_or(|(bt, bl)| better((&tour, len), (bt, *bl)))
        {
            best = Some((tour, len));
        }
    }
    let elapsed = started.elapsed();
    let calls = nodes.iter().map(|n| n.stats().calls_sent).sum();
    // with --connect: this node and the volunteers it knows of
    let network_size = match args.connect {
        Some(_) => nodes[0].status().neighbours.len() + 1,
        None => nodes.len(),
    };
    if args.connect.is_some() {
        // hand on whatever this node still hosts before going
        for n in &nodes {
            if let Err(e) = n.leave().await {
                eprintln!("tsp-islands: leaving: {e}");
            }
        }
    } else {
        for n in &nodes {
            n.shutdown();
        }
    }
    let (tour, length) = best.ok_or("no islands")?;
    Ok(Outcome {
        tour,
        length,
        calls,
        elapsed,
        nodes: network_size,
    })
}

#[cfg(test)]
mod tests {
    use super::next_look;
    use std::time::Duration;

    #[test]
    fn the_client_looks_rarely_mid_run_and_often_near_the_end() {
        let ms = Duration::from_millis;
        // a run that will take another 30 s: twice a second
        assert_eq!(next_look(Duration::from_secs(10), 50, 200), ms(500));
        // 40 ms left: every 10 ms
        assert_eq!(next_look(ms(7960), 199, 200), ms(10));
        // nothing done yet: back off from 2 ms
        assert_eq!(next_look(ms(0), 0, 200), ms(2));
        assert_eq!(next_look(ms(40), 0, 200), ms(20));
    }
}
