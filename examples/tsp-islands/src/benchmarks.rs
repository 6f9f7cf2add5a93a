//! The benchmarks `--overhead` (the framework against plain sequential Rust)
//! and `--ft-overhead` (`--ft local` against `--ft none`).

use indicatif::ProgressBar;

use crate::cli::Args;
use crate::ga::{GaParams, tour_blake3};
#[cfg(not(feature = "rocksdb"))]
use crate::in_process::NO_ROCKSDB;
use crate::run::run_once;
use crate::tsplib::Instance;

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `a` and `b` (each `(args, sequential)`) one after the other `--repeat`
/// times, so both see the same machine conditions; fails with `differ` if they
/// find different tours; the median wall times of each, in ms.
fn alternate(
    a: (&Args, bool),
    b: (&Args, bool),
    instance: &Instance,
    params: GaParams,
    differ: &str,
) -> Result<(f64, f64), String> {
    let hidden = ProgressBar::hidden();
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..a.0.repeat.max(1) {
        let ra = run_once(a.0, a.1, instance, params, &hidden)?;
        let rb = run_once(b.0, b.1, instance, params, &hidden)?;
        if tour_blake3(&ra.tour) != tour_blake3(&rb.tour) {
            return Err(differ.into());
        }
        ta.push(ra.elapsed.as_secs_f64() * 1000.0);
        tb.push(rb.elapsed.as_secs_f64() * 1000.0);
    }
    Ok((median_ms(ta), median_ms(tb)))
}

/// A benchmark's `--json` line: the run's shape and `figures`.
fn experiment_json(
    name: &str,
    args: &Args,
    instance: &Instance,
    figures: serde_json::Value,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "experiment": name,
        "instance": instance.name,
        "nodes": args.nodes.max(1),
        "islands": args.islands,
        "epochs": args.epochs,
        "generations": args.generations,
        "repeat": args.repeat.max(1),
    });
    if let (Some(all), serde_json::Value::Object(more)) = (v.as_object_mut(), figures) {
        all.extend(more);
    }
    v
}

/// `--overhead`: the framework against plain sequential Rust, same parameters,
/// alternating so both see the same machine conditions.
pub fn overhead(args: &Args, instance: &Instance, params: GaParams) -> Result<(), String> {
    let (s, n) = alternate(
        (args, true),
        (args, false),
        instance,
        params,
        "the network run and the sequential run found different tours",
    )?;
    println!(
        "{}: {} islands x {} epochs x {} generations, {} repeats: sequential {s:.1} ms, {} in-process node(s) {n:.1} ms, ratio {:.3}",
        instance.name,
        args.islands,
        args.epochs,
        args.generations,
        args.repeat.max(1),
        args.nodes.max(1),
        n / s
    );
    if args.json {
        println!(
            "{}",
            experiment_json(
                "overhead",
                args,
                instance,
                serde_json::json!({
                    "sequential_ms": s,
                    "network_ms": n,
                    "ratio": n / s,
                }),
            )
        );
    }
    Ok(())
}

/// `--ft-overhead`: the same in-process run under `none` and under `local`,
/// alternating so both see the same machine conditions.
pub fn ft_overhead(args: &Args, instance: &Instance, params: GaParams) -> Result<(), String> {
    #[cfg(not(feature = "rocksdb"))]
    {
        let _ = (args, instance, params);
        Err(NO_ROCKSDB.into())
    }
    #[cfg(feature = "rocksdb")]
    {
        let none = Args {
            ft: "none".into(),
            ..args.clone()
        };
        let local = Args {
            ft: "local".into(),
            ..args.clone()
        };
        let (n, l) = alternate(
            (&none, false),
            (&local, false),
            instance,
            params,
            "the run under local found a different tour than under none",
        )?;
        println!(
            "{}: {} islands x {} epochs x {} generations on {} in-process node(s), {} repeats: none {n:.1} ms, local (checkpoint every {} calls, durability {}) {l:.1} ms, ratio {:.3}",
            instance.name,
            args.islands,
            args.epochs,
            args.generations,
            args.nodes.max(1),
            args.repeat.max(1),
            args.checkpoint_every,
            args.durability,
            l / n
        );
        if args.json {
            println!(
                "{}",
                experiment_json(
                    "ft_overhead",
                    args,
                    instance,
                    serde_json::json!({
                        "checkpoint_every": args.checkpoint_every,
                        "durability": args.durability.to_string(),
                        "none_ms": n,
                        "local_ms": l,
                        "ratio": l / n,
                    }),
                )
            );
        }
        Ok(())
    }
}
