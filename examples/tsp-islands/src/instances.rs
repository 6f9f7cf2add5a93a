//! The TSP instance of a run: a TSPLIB file, or one shipped inside the example.

use std::path::Path;

use crate::tsplib::{self, Instance};

/// TSPLIB instances shipped inside the example.
const EMBEDDED: &[(&str, &str)] = &[
    ("berlin52", include_str!("../data/berlin52.tsp")),
    ("eil51", include_str!("../data/eil51.tsp")),
    ("st70", include_str!("../data/st70.tsp")),
    ("ch150", include_str!("../data/ch150.tsp")),
];

pub fn load_instance(spec: &str) -> Result<Instance, String> {
    let path = Path::new(spec);
    let shipped = EMBEDDED
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ");
    if path.exists() {
        return tsplib::load(path).map_err(|e| match e {
            tsplib::TsplibError::Io { source, .. } => format!(
                "{}: cannot read it ({source}): pass a TSPLIB .tsp file or a shipped instance ({shipped})",
                path.display()
            ),
            e @ tsplib::TsplibError::Parse { .. } => format!(
                "{} is not a TSPLIB instance this program reads ({e}): pass a .tsp file with NAME, TYPE: TSP, DIMENSION, EDGE_WEIGHT_TYPE and NODE_COORD_SECTION, or a shipped instance ({shipped})",
                path.display()
            ),
        });
    }
    let name = spec.trim_end_matches(".tsp");
    match EMBEDDED.iter().find(|(n, _)| *n == name) {
        Some((n, text)) => tsplib::parse(text).map_err(|e| format!("{n}.tsp: {e}")),
        None => Err(format!(
            "no file {spec:?} and no shipped instance of that name (shipped: {shipped})"
        )),
    }
}
