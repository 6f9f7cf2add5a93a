//! The outcome of a run: the printed summary, the `--json` line, the `--svg`
//! drawing.

use std::path::Path;

use crate::cli::Args;
use crate::ga::tour_blake3;
use crate::run::Outcome;
use crate::tsplib::Instance;

/// Checks the best tour's length and prints the run's outcome (with `--svg`,
/// draws it; with `--json`, ends with one JSON line).
pub fn report(args: &Args, instance: &Instance, outcome: &Outcome) -> Result<(), String> {
    let measured = instance.tour_length(&outcome.tour);
    if measured != outcome.length {
        return Err(format!(
            "internal error: the best tour measures {measured}, not the reported {}",
            outcome.length
        ));
    }
    let hash = tour_blake3(&outcome.tour);
    let gap = instance
        .best_known
        .map(|b| (outcome.length as f64 - b as f64) / b as f64 * 100.0);
    let nodes = outcome.nodes;
    let mode = match (args.sequential, args.connect) {
        (true, _) => "sequential (no framework)".to_string(),
        (false, Some(addr)) => format!("client of the network at {addr} ({nodes} nodes known)"),
        (false, None) => format!("{nodes} in-process nodes ({} routing)", args.routing),
    };
    println!(
        "{}: {} cities, {} islands x {} epochs x {} generations, seed {}, {mode}",
        instance.name,
        instance.len(),
        args.islands,
        args.epochs,
        args.generations,
        args.seed
    );
    match (instance.best_known, gap) {
        (Some(b), Some(g)) => println!(
            "best length {} (best known {b}, gap {g:.2}%)",
            outcome.length
        ),
        _ => println!("best length {}", outcome.length),
    }
    println!(
        "time {:.3} s, {} remote calls, tour blake3 {hash}",
        outcome.elapsed.as_secs_f64(),
        outcome.calls
    );
    if let Some(path) = &args.svg {
        draw_svg(path, instance, &outcome.tour, outcome.length)?;
        println!("tour drawn to {}", path.display());
    }
    if args.json {
        let json = serde_json::json!({
            "instance": instance.name,
            "nodes": nodes,
            "islands": args.islands,
            "seed": args.seed,
            "best_length": outcome.length,
            "best_known": instance.best_known,
            "gap_pct": gap,
            "tour_blake3": hash,
            "elapsed_ms": outcome.elapsed.as_secs_f64() * 1000.0,
            "calls": outcome.calls,
        });
        println!("{json}");
    }
    Ok(())
}

fn draw_svg(path: &Path, instance: &Instance, tour: &[u32], length: u64) -> Result<(), String> {
    use plotters::prelude::*;
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &instance.coords {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let pad = ((x1 - x0).max(y1 - y0) * 0.05).max(1.0);
    let root = SVGBackend::new(path, (800, 800)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{} — tour length {length}", instance.name),
            ("sans-serif", 20),
        )
        .margin(20)
        .build_cartesian_2d((x0 - pad)..(x1 + pad), (y0 - pad)..(y1 + pad))
        .map_err(|e| err(&e))?;
    let mut pts: Vec<(f64, f64)> = tour.iter().map(|&c| instance.coords[c as usize]).collect();
    if let Some(first) = pts.first().copied() {
        pts.push(first);
    }
    chart
        .draw_series(LineSeries::new(pts.iter().copied(), &BLUE))
        .map_err(|e| err(&e))?;
    chart
        .draw_series(pts.iter().map(|&p| Circle::new(p, 3, RED.filled())))
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
