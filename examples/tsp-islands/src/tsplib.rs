//! TSPLIB loader for symmetric `EUC_2D` instances.
//!
//! Reads the subset of the TSPLIB format that the sample application needs:
//! a header of `KEY: VALUE` lines (`NAME`, `TYPE`, `COMMENT`, `DIMENSION`,
//! `EDGE_WEIGHT_TYPE`, and any other key, which is ignored), then a
//! `NODE_COORD_SECTION` with one `<index> <x> <y>` line per city, optionally
//! closed by `EOF`.
//!
//! Cities are renumbered from TSPLIB's 1-based indices to 0-based `u32`s, and
//! distances follow TSPLIB's `EUC_2D` rule: the Euclidean distance rounded to
//! the nearest integer (`nint`).
//!
//! ```ignore
//! let inst = tsplib::parse("NAME: tri\nTYPE: TSP\nDIMENSION: 3\nEDGE_WEIGHT_TYPE: EUC_2D\n\
//!                           NODE_COORD_SECTION\n1 0 0\n2 3 0\n3 3 4\nEOF\n")?;
//! assert_eq!(inst.tour_length(&[0, 1, 2]), 12);
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Largest `DIMENSION` accepted, so that a hostile header cannot make the
/// loader (or the full distance matrix) allocate without bound.
pub const MAX_DIMENSION: usize = 50_000;

/// A symmetric TSP instance with 2-D Euclidean coordinates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// The `NAME` field (empty when absent).
    pub name: String,
    /// The `COMMENT` field (several `COMMENT` lines are joined with `"\n"`).
    pub comment: String,
    /// The best known tour length, read from the comment text
    /// `best known tour length N`, when present.
    pub best_known: Option<u64>,
    /// City coordinates; city `i` (0-based) is TSPLIB node `i + 1`.
    pub coords: Vec<(f64, f64)>,
}

/// Why an instance could not be loaded.
#[derive(Debug)]
pub enum TsplibError {
    /// The file could not be read.
    Io {
        /// The file that was being read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The text is not a supported TSPLIB instance.
    Parse {
        /// 1-based line number the problem was found at.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl fmt::Display for TsplibError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TsplibError::Io { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            TsplibError::Parse { line, message } => write!(f, "line {line}: {message}"),
        }
    }
}

impl std::error::Error for TsplibError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TsplibError::Io { source, .. } => Some(source),
            TsplibError::Parse { .. } => None,
        }
    }
}

fn parse_error(line: usize, message: impl Into<String>) -> TsplibError {
    TsplibError::Parse {
        line,
        message: message.into(),
    }
}

/// Reads and parses a TSPLIB file.
pub fn load(path: &Path) -> Result<Instance, TsplibError> {
    let text = std::fs::read_to_string(path).map_err(|source| TsplibError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text)
}

/// Parses the text of a TSPLIB `EUC_2D` instance.
pub fn parse(text: &str) -> Result<Instance, TsplibError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut name = String::new();
    let mut comments: Vec<&str> = Vec::new();
    let mut dimension: Option<usize> = None;
    let mut edge_weight_type: Option<&str> = None;
    // Per city: the coordinates and the line they were given on.
    let mut nodes: Vec<Option<((f64, f64), usize)>> = Vec::new();
    let mut in_coords = false;
    let mut seen_section = false;
    let mut last_line = 0;

    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        last_line = line_no;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if line == "EOF" {
            break;
        }
        if in_coords && !starts_keyword(line) {
            parse_node(line, line_no, &mut nodes)?;
            continue;
        }
        in_coords = false;

        let (key, value) = match line.split_once(':') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (line, ""),
        };
        match key {
            "NAME" => name = value.to_string(),
            "COMMENT" => comments.push(value),
            "TYPE" => {
                if value != "TSP" {
                    return Err(parse_error(
                        line_no,
                        format!("unsupported TYPE `{value}` (only TSP is supported)"),
                    ));
                }
            }
            "DIMENSION" => {
                let dim: usize = value.parse().map_err(|_| {
                    parse_error(
                        line_no,
                        format!("DIMENSION `{value}` is not a non-negative integer"),
                    )
                })?;
                if !(3..=MAX_DIMENSION).contains(&dim) {
                    return Err(parse_error(
                        line_no,
                        format!("DIMENSION {dim} is out of range (3..={MAX_DIMENSION})"),
                    ));
                }
                dimension = Some(dim);
            }
            "EDGE_WEIGHT_TYPE" => {
                if value != "EUC_2D" {
                    return Err(parse_error(
                        line_no,
                        format!(
                            "unsupported EDGE_WEIGHT_TYPE `{value}` (only EUC_2D is supported)"
                        ),
                    ));
                }
                edge_weight_type = Some(value);
            }
            "NODE_COORD_SECTION" => {
                if seen_section {
                    return Err(parse_error(line_no, "NODE_COORD_SECTION given twice"));
                }
                let Some(dim) = dimension else {
                    return Err(parse_error(
                        line_no,
                        "missing DIMENSION before NODE_COORD_SECTION",
                    ));
                };
                if edge_weight_type.is_none() {
                    return Err(parse_error(
                        line_no,
                        "missing EDGE_WEIGHT_TYPE before NODE_COORD_SECTION",
                    ));
                }
                nodes = vec![None; dim];
                in_coords = true;
                seen_section = true;
            }
            _ if key.ends_with("_SECTION") => {
                return Err(parse_error(line_no, format!("unsupported section {key}")));
            }
            _ if line.contains(':') => {
                // Other specification keys (DISPLAY_DATA_TYPE, ...) do not matter here.
            }
            _ => {
                return Err(parse_error(
                    line_no,
                    format!("expected `KEY: VALUE`, found `{}`", shorten(line)),
                ));
            }
        }
    }

    let end_line = last_line.max(1);
    if !seen_section {
        return Err(parse_error(end_line, "missing NODE_COORD_SECTION"));
    }
    let mut coords = Vec::with_capacity(nodes.len());
    let mut missing = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        match node {
            Some((xy, _)) => coords.push(*xy),
            None => missing.push(i + 1),
        }
    }
    if !missing.is_empty() {
        let shown: Vec<String> = missing.iter().take(5).map(|i| i.to_string()).collect();
        let more = if missing.len() > 5 { ", ..." } else { "" };
        return Err(parse_error(
            end_line,
            format!(
                "only {} of DIMENSION {} nodes given (missing {}{more})",
                nodes.len() - missing.len(),
                nodes.len(),
                shown.join(", "),
            ),
        ));
    }
    let comment = comments.join("\n");
    let best_known = best_known_from_comment(&comment);
    Ok(Instance {
        name,
        comment,
        best_known,
        coords,
    })
}

/// Whether a line in the coordinate section starts a new keyword rather than a node.
fn starts_keyword(line: &str) -> bool {
    line.starts_with(|c: char| c.is_ascii_uppercase())
}

fn parse_node(
    line: &str,
    line_no: usize,
    nodes: &mut [Option<((f64, f64), usize)>],
) -> Result<(), TsplibError> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() != 3 {
        return Err(parse_error(
            line_no,
            format!(
                "expected `<index> <x> <y>`, found {} fields in `{line}`",
                fields.len()
            ),
        ));
    }
    let index: usize = fields[0].parse().map_err(|_| {
        parse_error(
            line_no,
            format!("node index `{}` is not a positive integer", fields[0]),
        )
    })?;
    let coord = |s: &str| -> Result<f64, TsplibError> {
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(parse_error(
                line_no,
                format!("coordinate `{s}` is not a finite number"),
            )),
        }
    };
    let x = coord(fields[1])?;
    let y = coord(fields[2])?;
    if index == 0 || index > nodes.len() {
        return Err(parse_error(
            line_no,
            format!("node index {index} is out of range 1..={}", nodes.len()),
        ));
    }
    match nodes[index - 1] {
        Some((_, first)) => Err(parse_error(
            line_no,
            format!("node {index} duplicated (first given on line {first})"),
        )),
        None => {
            nodes[index - 1] = Some(((x, y), line_no));
            Ok(())
        }
    }
}

/// Reads `best known tour length N` (case-insensitive) from a comment.
fn best_known_from_comment(comment: &str) -> Option<u64> {
    const PHRASE: &str = "best known tour length";
    let lower = comment.to_ascii_lowercase();
    let at = lower.find(PHRASE)?;
    let rest = lower[at + PHRASE.len()..]
        .trim_start_matches(|c: char| c.is_whitespace() || c == ':' || c == '=');
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// TSPLIB `EUC_2D` distance: `nint(sqrt(dx² + dy²))`.
pub fn euc_2d(a: (f64, f64), b: (f64, f64)) -> u32 {
    let dx = a.0 - b.0;
    let dy = a.1 - b.1;
    // `as` saturates, so absurdly distant points cannot wrap around.
    ((dx * dx + dy * dy).sqrt() + 0.5) as u32
}

impl Instance {
    /// Number of cities.
    pub fn len(&self) -> usize {
        self.coords.len()
    }

    /// Whether the instance has no cities.
    #[allow(dead_code, reason = "pairs with `len`; a binary may not need it")]
    pub fn is_empty(&self) -> bool {
        self.coords.is_empty()
    }

    /// The full matrix of `EUC_2D` distances.
    pub fn distance_matrix(&self) -> DistMatrix {
        DistMatrix::from_coords(&self.coords)
    }

    /// Length of the closed tour visiting `tour`'s cities in order (the edge
    /// from the last city back to the first included).
    ///
    /// # Panics
    /// If a city index is out of range.
    pub fn tour_length(&self, tour: &[u32]) -> u64 {
        closed_length(tour, |a, b| {
            euc_2d(self.coords[a as usize], self.coords[b as usize])
        })
    }
}

fn closed_length(tour: &[u32], d: impl Fn(u32, u32) -> u32) -> u64 {
    let (Some(&first), Some(&last)) = (tour.first(), tour.last()) else {
        return 0;
    };
    let open: u64 = tour.windows(2).map(|w| u64::from(d(w[0], w[1]))).sum();
    open + u64::from(d(last, first))
}

/// A dense, symmetric matrix of integer distances between `n` cities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistMatrix {
    n: usize,
    d: Vec<u32>,
}

impl DistMatrix {
    /// Builds the `EUC_2D` matrix of the given points.
    pub fn from_coords(coords: &[(f64, f64)]) -> DistMatrix {
        let n = coords.len();
        let mut d = vec![0u32; n * n];
        for i in 0..n {
            for j in (i + 1)..n {
                let v = euc_2d(coords[i], coords[j]);
                d[i * n + j] = v;
                d[j * n + i] = v;
            }
        }
        DistMatrix { n, d }
    }

    /// Number of cities.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Distance between cities `i` and `j`.
    ///
    /// # Panics
    /// If `i` or `j` is not below [`n`](Self::n).
    #[inline]
    pub fn d(&self, i: u32, j: u32) -> u32 {
        let (i, j) = (i as usize, j as usize);
        assert!(i < self.n && j < self.n, "city index out of range");
        self.d[i * self.n + j]
    }

    /// The row of distances from city `i` to every city.
    ///
    /// # Panics
    /// If `i` is not below [`n`](Self::n).
    #[inline]
    pub fn row(&self, i: u32) -> &[u32] {
        let i = i as usize;
        &self.d[i * self.n..(i + 1) * self.n]
    }

    /// Length of the closed tour visiting `tour`'s cities in order.
    ///
    /// # Panics
    /// If a city index is out of range.
    pub fn tour_length(&self, tour: &[u32]) -> u64 {
        closed_length(tour, |a, b| self.d(a, b))
    }
}

/// A line of a file that may be anything, fit to quote in one line of an
/// error: at most 60 characters, control characters escaped.
fn shorten(line: &str) -> String {
    let mut out: String = line.chars().take(60).flat_map(char::escape_debug).collect();
    if line.chars().count() > 60 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "NAME: t\nTYPE: TSP\nCOMMENT: test\nDIMENSION: 3\nEDGE_WEIGHT_TYPE: EUC_2D\n";

    /// The shipped instances live in the example's `data/` directory.
    fn data_path(name: &str) -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data")).join(name)
    }

    fn parse_err(text: &str) -> (usize, String) {
        match parse(text) {
            Err(TsplibError::Parse { line, message }) => (line, message),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_small_instance() {
        let text = format!("{HEADER}NODE_COORD_SECTION\n1 0 0\n3 3 4\n2 3.0 0e0\nEOF\n");
        let inst = parse(&text).expect("valid instance");
        assert_eq!(inst.name, "t");
        assert_eq!(inst.comment, "test");
        assert_eq!(inst.best_known, None);
        assert_eq!(inst.coords, vec![(0.0, 0.0), (3.0, 0.0), (3.0, 4.0)]);
        assert_eq!(inst.len(), 3);
        assert!(!inst.is_empty());
        assert_eq!(inst.tour_length(&[0, 1, 2]), 12);
        let m = inst.distance_matrix();
        assert_eq!(m.n(), 3);
        assert_eq!(m.d(0, 2), 5);
        assert_eq!(m.d(2, 0), 5);
        assert_eq!(m.d(1, 1), 0);
        assert_eq!(m.tour_length(&[2, 1, 0]), 12);
        assert_eq!(m.tour_length(&[]), 0);
        assert_eq!(m.tour_length(&[1]), 0);
    }

    #[test]
    fn accepts_spaces_around_colon_crlf_and_missing_eof() {
        let text = "NAME : t\r\nTYPE : TSP\r\nDIMENSION : 3\r\nEDGE_WEIGHT_TYPE : EUC_2D\r\n\
                    DISPLAY_DATA_TYPE : COORD_DISPLAY\r\nNODE_COORD_SECTION\r\n1 0 0\r\n2 1 0\r\n3 0 1\r\n";
        let inst = parse(text).expect("valid instance");
        assert_eq!(inst.len(), 3);
        assert_eq!(inst.name, "t");
    }

    #[test]
    fn euc_2d_rounds_to_nearest() {
        assert_eq!(euc_2d((0.0, 0.0), (1.0, 1.0)), 1); // 1.414
        assert_eq!(euc_2d((0.0, 0.0), (1.5, 0.0)), 2); // 1.5 rounds up
        assert_eq!(euc_2d((0.0, 0.0), (1.49, 0.0)), 1);
    }

    #[test]
    fn best_known_from_comment_text() {
        assert_eq!(
            best_known_from_comment(
                "52 locations in Berlin (Groetschel); best known tour length 7542"
            ),
            Some(7542)
        );
        assert_eq!(
            best_known_from_comment("Best known tour length: 426."),
            Some(426)
        );
        assert_eq!(best_known_from_comment("no hint here"), None);
        assert_eq!(
            best_known_from_comment("best known tour length unknown"),
            None
        );
    }

    #[test]
    fn error_unsupported_edge_weight_type() {
        let text = "NAME: t\nTYPE: TSP\nDIMENSION: 3\nEDGE_WEIGHT_TYPE: GEO\nNODE_COORD_SECTION\n";
        let (line, msg) = parse_err(text);
        assert_eq!(line, 4);
        assert!(
            msg.contains("EDGE_WEIGHT_TYPE") && msg.contains("GEO"),
            "{msg}"
        );
    }

    #[test]
    fn error_unsupported_type() {
        let (line, msg) = parse_err("NAME: t\nTYPE: ATSP\n");
        assert_eq!(line, 2);
        assert!(msg.contains("ATSP"), "{msg}");
    }

    #[test]
    fn error_missing_dimension() {
        let text = "NAME: t\nTYPE: TSP\nEDGE_WEIGHT_TYPE: EUC_2D\nNODE_COORD_SECTION\n1 0 0\n";
        let (line, msg) = parse_err(text);
        assert_eq!(line, 4);
        assert!(msg.contains("missing DIMENSION"), "{msg}");
    }

    #[test]
    fn error_bad_dimension() {
        let (line, msg) = parse_err("NAME: t\nDIMENSION: many\n");
        assert_eq!(line, 2);
        assert!(msg.contains("DIMENSION") && msg.contains("many"), "{msg}");
        let (line, msg) = parse_err("NAME: t\nDIMENSION: 99999999999\n");
        assert_eq!(line, 2);
        assert!(msg.contains("out of range"), "{msg}");
    }

    #[test]
    fn error_missing_edge_weight_type() {
        let text = "NAME: t\nDIMENSION: 3\nNODE_COORD_SECTION\n1 0 0\n";
        let (line, msg) = parse_err(text);
        assert_eq!(line, 3);
        assert!(msg.contains("missing EDGE_WEIGHT_TYPE"), "{msg}");
    }

    #[test]
    fn error_non_number_coordinate() {
        let text = format!("{HEADER}NODE_COORD_SECTION\n1 0 0\n2 abc 0\n3 1 1\nEOF\n");
        let (line, msg) = parse_err(&text);
        assert_eq!(line, 8);
        assert!(msg.contains("`abc` is not a finite number"), "{msg}");
        let text = format!("{HEADER}NODE_COORD_SECTION\n1 0 0\n2 1 NaN\n3 1 1\nEOF\n");
        let (line, msg) = parse_err(&text);
        assert_eq!(line, 8);
        assert!(msg.contains("`NaN`"), "{msg}");
    }

    #[test]
    fn error_non_number_index() {
        let text = format!("{HEADER}NODE_COORD_SECTION\n1 0 0\nx2 1 0\n");
        let (line, msg) = parse_err(&text);
        assert_eq!(line, 8);
        assert!(msg.contains("node index `x2`"), "{msg}");
    }

    #[test]
    fn error_wrong_field_count() {
        let text = format!("{HEADER}NODE_COORD_SECTION\n1 0 0\n2 1\n3 1 1\nEOF\n");
        let (line, msg) = parse_err(&text);
        assert_eq!(line, 8);
        assert!(msg.contains("found 2 fields"), "{msg}");
        let text = format!("{HEADER}NODE_COORD_SECTION\n1 0 0 0\n");
        let (line, msg) = parse_err(&text);
        assert_eq!(line, 7);
        assert!(msg.contains("found 4 fields"), "{msg}");
    }

    #[test]
    fn error_index_out_of_range() {
        let text = format!("{HEADER}NODE_COORD_SECTION\n1 0 0\n2 1 0\n4 1 1\nEOF\n");
        let (line, msg) = parse_err(&text);
        assert_eq!(line, 9);
        assert!(msg.contains("node index 4 is out of range 1..=3"), "{msg}");
        let text = format!("{HEADER}NODE_COORD_SECTION\n0 0 0\n");
        let (line, msg) = parse_err(&text);
        assert_eq!(line, 7);
        assert!(msg.contains("node index 0 is out of range"), "{msg}");
    }

    #[test]
    fn error_duplicated_node() {
        let text = format!("{HEADER}NODE_COORD_SECTION\n1 0 0\n2 1 0\n1 1 1\nEOF\n");
        let (line, msg) = parse_err(&text);
        assert_eq!(line, 9);
        assert!(
            msg.contains("node 1 duplicated (first given on line 7)"),
            "{msg}"
        );
    }

    #[test]
    fn error_fewer_nodes_than_dimension() {
        let text = format!("{HEADER}NODE_COORD_SECTION\n1 0 0\n3 1 0\nEOF\n");
        let (line, msg) = parse_err(&text);
        assert_eq!(line, 9);
        assert!(
            msg.contains("only 2 of DIMENSION 3 nodes given (missing 2)"),
            "{msg}"
        );
    }

    #[test]
    fn error_missing_node_coord_section() {
        let (line, msg) = parse_err(&format!("{HEADER}EOF\n"));
        assert_eq!(line, 6);
        assert!(msg.contains("missing NODE_COORD_SECTION"), "{msg}");
        let (line, msg) = parse_err("");
        assert_eq!(line, 1);
        assert!(msg.contains("missing NODE_COORD_SECTION"), "{msg}");
    }

    #[test]
    fn error_unsupported_section_and_garbage() {
        let text = format!("{HEADER}EDGE_WEIGHT_SECTION\n");
        let (line, msg) = parse_err(&text);
        assert_eq!(line, 6);
        assert!(
            msg.contains("unsupported section EDGE_WEIGHT_SECTION"),
            "{msg}"
        );
        let (line, msg) = parse_err("NAME: t\nhello world\n");
        assert_eq!(line, 2);
        assert!(msg.contains("expected `KEY: VALUE`"), "{msg}");
    }

    #[test]
    fn display_shows_line_number() {
        let err = parse_error(7, "bad thing");
        assert_eq!(err.to_string(), "line 7: bad thing");
    }

    #[test]
    fn load_reports_missing_file() {
        let path = data_path("no-such-instance.tsp");
        match load(&path) {
            Err(err @ TsplibError::Io { .. }) => {
                assert!(err.to_string().contains("no-such-instance.tsp"));
                assert!(std::error::Error::source(&err).is_some());
            }
            other => panic!("expected an I/O error, got {other:?}"),
        }
    }

    #[test]
    fn loads_berlin52() {
        let inst = load(&data_path("berlin52.tsp")).expect("berlin52 loads");
        assert_eq!(inst.name, "berlin52");
        assert_eq!(inst.len(), 52);
        assert_eq!(inst.best_known, Some(7542));
        assert_eq!(inst.coords[0], (565.0, 575.0));
        assert_eq!(inst.coords[51], (1740.0, 245.0));
    }

    #[test]
    fn berlin52_identity_and_optimal_tours() {
        let inst = load(&data_path("berlin52.tsp")).expect("berlin52 loads");
        let m = inst.distance_matrix();
        let identity: Vec<u32> = (0..52).collect();
        let len = inst.tour_length(&identity);
        assert_eq!(len, m.tour_length(&identity));
        assert_eq!(len, 22205);
        assert!(len > 7542);
        // The optimal tour from TSPLIB's berlin52.opt.tour (1-based there).
        let opt: [u32; 52] = [
            1, 49, 32, 45, 19, 41, 8, 9, 10, 43, 33, 51, 11, 52, 14, 13, 47, 26, 27, 28, 12, 25, 4,
            6, 15, 5, 24, 48, 38, 37, 40, 39, 36, 35, 34, 44, 46, 16, 29, 50, 20, 23, 30, 2, 7, 42,
            21, 17, 3, 18, 31, 22,
        ];
        let opt: Vec<u32> = opt.iter().map(|c| c - 1).collect();
        assert_eq!(m.tour_length(&opt), 7542);
    }

    #[test]
    fn loads_all_shipped_instances() {
        for (file, n, best) in [
            ("berlin52.tsp", 52, 7542),
            ("eil51.tsp", 51, 426),
            ("st70.tsp", 70, 675),
            ("ch150.tsp", 150, 6528),
        ] {
            let inst = load(&data_path(file)).expect("instance loads");
            assert_eq!(inst.len(), n, "{file}");
            assert_eq!(inst.best_known, Some(best), "{file}");
        }
    }
}
