//! Tables on stdout, CSV files and SVG plots of a [`Report`].

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::SimError;
use crate::experiments::{ChurnRow, CompareRow, FailRow, HopsRow, Report};

/// A result row that prints as a table row and a CSV line.
pub trait Row {
    /// Column names.
    fn header() -> Vec<&'static str>;
    /// This row's cells.
    fn cells(&self) -> Vec<String>;
}

impl Row for HopsRow {
    fn header() -> Vec<&'static str> {
        vec![
            "nodes",
            "build",
            "lookups",
            "mean_hops",
            "expected_hops",
            "max_hops",
            "delivered_pct",
            "mean_delay_stretch",
            "total_delay_stretch",
            "routing_entries_mean",
        ]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.nodes.to_string(),
            self.build.to_owned(),
            self.lookups.to_string(),
            format!("{:.3}", self.mean_hops),
            format!("{:.2}", self.expected_hops),
            self.max_hops.to_string(),
            format!("{:.3}", self.delivered_pct),
            format!("{:.3}", self.mean_delay_stretch),
            format!("{:.3}", self.total_delay_stretch),
            format!("{:.1}", self.routing_entries_mean),
        ]
    }
}

impl Row for FailRow {
    fn header() -> Vec<&'static str> {
        vec![
            "nodes",
            "fail_fraction",
            "mean_hops_initial",
            "mean_hops_before",
            "mean_hops_after",
            "delivered_pct_before",
            "delivered_pct_after",
            "root_died_pct",
            "failed_root_died_pct",
            "failed_other_pct",
            "over_4_attempts_pct",
            "repair_messages_per_failed_node",
        ]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.nodes.to_string(),
            self.fail_fraction.to_string(),
            format!("{:.3}", self.mean_hops_initial),
            format!("{:.3}", self.mean_hops_before),
            format!("{:.3}", self.mean_hops_after),
            format!("{:.3}", self.delivered_pct_before),
            format!("{:.3}", self.delivered_pct_after),
            format!("{:.3}", self.root_died_pct),
            format!("{:.3}", self.failed_root_died_pct_before),
            format!("{:.3}", self.failed_other_pct_before),
            format!("{:.3}", self.over_runtime_attempts_pct_before),
            format!("{:.1}", self.repair_messages_per_failed_node),
        ]
    }
}

impl Row for ChurnRow {
    fn header() -> Vec<&'static str> {
        vec![
            "nodes",
            "rate",
            "failed_lookup_pct",
            "maintenance_msgs_per_node_s",
        ]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.nodes.to_string(),
            self.rate.to_string(),
            format!("{:.3}", self.failed_lookup_pct),
            format!("{:.3}", self.maintenance_msgs_per_node_s),
        ]
    }
}

impl Row for CompareRow {
    fn header() -> Vec<&'static str> {
        vec![
            "overlay",
            "nodes",
            "build",
            "mean_hops",
            "expected_hops",
            "max_hops",
            "delivered_pct",
            "delay_stretch",
            "routing_state",
            "(routing+neighbours)",
            "maint_msgs_node_s",
            "fail_fraction",
            "failed_pct",
            "failed_root_died_pct",
            "failed_other_pct",
            "failed_after_repair_pct",
        ]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.overlay.clone(),
            self.nodes.to_string(),
            self.build.to_owned(),
            format!("{:.3}", self.mean_hops),
            format!("{:.2}", self.expected_hops),
            self.max_hops.to_string(),
            format!("{:.3}", self.delivered_pct),
            format!("{:.3}", self.mean_delay_stretch),
            format!("{:.1}", self.routing_state),
            format!("{:.1}+{}", self.routing_entries, self.neighbourhood_entries),
            format!("{:.3}", self.maintenance_msgs_per_node_s),
            self.fail_fraction.to_string(),
            format!("{:.3}", self.failed_pct),
            format!("{:.3}", self.failed_root_died_pct),
            format!("{:.3}", self.failed_other_pct),
            format!("{:.3}", self.failed_pct_after_repair),
        ]
    }
}

/// The report as an aligned text table.
pub fn table<R: Row>(report: &Report<R>) -> String {
    let header = R::header();
    let rows: Vec<Vec<String>> = report.results.iter().map(Row::cells).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].len())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = if report.overlay.is_empty() {
        format!("{}\n", report.experiment)
    } else {
        format!("{} / {}\n", report.overlay, report.experiment)
    };
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let _ = writeln!(
        out,
        "{}",
        line(header.iter().map(|s| s.to_string()).collect())
    );
    for r in rows {
        let _ = writeln!(out, "{}", line(r));
    }
    out
}

/// Writes the report's rows as CSV.
pub fn write_csv<R: Row>(report: &Report<R>, path: &Path) -> Result<(), SimError> {
    let mut out = R::header().join(",");
    out.push('\n');
    for r in &report.results {
        out.push_str(&r.cells().join(","));
        out.push('\n');
    }
    std::fs::write(path, out).map_err(|e| SimError::Output(format!("{}: {e}", path.display())))
}

/// A plot: named series of (x, y) points.
pub struct Plot {
    /// Title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// The lines.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

/// The plot of a `hops` report: mean and max hops against log10 N, with the
/// paper's prediction (log16 N for Pastry, ½·log2 N for Chord).
pub fn hops_plot(r: &Report<HopsRow>) -> Plot {
    let pts = |f: &dyn Fn(&HopsRow) -> f64| {
        r.results
            .iter()
            .map(|x| ((x.nodes as f64).log10(), f(x)))
            .collect()
    };
    Plot {
        title: format!("{}: hops per lookup", r.overlay),
        x_label: "log10 nodes".into(),
        y_label: "hops".into(),
        series: vec![
            ("mean hops".into(), pts(&|x| x.mean_hops)),
            ("max hops".into(), pts(&|x| f64::from(x.max_hops))),
            ("predicted".into(), pts(&|x| x.expected_hops)),
        ],
    }
}

/// The plot of a `fail` report: lookups failed right after the failures,
/// against the fraction failed (the Chord paper's Fig. 11 set-up).
pub fn fail_plot(r: &Report<FailRow>) -> Plot {
    let pts =
        |f: &dyn Fn(&FailRow) -> f64| r.results.iter().map(|x| (x.fail_fraction, f(x))).collect();
    Plot {
        title: format!(
            "{}: lookups right after simultaneous failures ({} nodes)",
            r.overlay,
            r.results.first().map_or(0, |x| x.nodes)
        ),
        x_label: "fraction of nodes failed".into(),
        y_label: "% of lookups".into(),
        series: vec![
            ("keys whose root died".into(), pts(&|x| x.root_died_pct)),
            (
                "failed, root died".into(),
                pts(&|x| x.failed_root_died_pct_before),
            ),
            ("failed, other".into(), pts(&|x| x.failed_other_pct_before)),
        ],
    }
}

/// The plot of a `churn` report: failed lookups against the event rate.
pub fn churn_plot(r: &Report<ChurnRow>) -> Plot {
    Plot {
        title: format!("{}: lookups failed under churn", r.overlay),
        x_label: "membership events per second".into(),
        y_label: "failed lookups (%)".into(),
        series: vec![(
            "failed lookups".into(),
            r.results
                .iter()
                .map(|x| (x.rate, x.failed_lookup_pct))
                .collect(),
        )],
    }
}

/// Draws `plot` to an SVG file.
pub fn write_svg(plot: &Plot, path: &Path) -> Result<(), SimError> {
    let err = |e: String| SimError::Output(format!("{}: {e}", path.display()));
    let all = plot.series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        (x0, x1) = (x0 - 0.5, x1 + 0.5);
    }
    let y1 = if y1 <= 0.0 { 1.0 } else { y1 * 1.15 };
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&plot.title, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(x0..x1, 0.0..y1)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc(&plot.x_label)
        .y_desc(&plot.y_label)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let colours = [BLUE, RED, BLACK, GREEN, MAGENTA, CYAN];
    for (i, (name, pts)) in plot.series.iter().enumerate() {
        let colour = colours[i % colours.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// Bar panels: one per metric, one bar per overlay.
pub struct Bars {
    /// Title.
    pub title: String,
    /// The bars' names (overlays), in order.
    pub names: Vec<String>,
    /// `(metric, one value per name)`.
    pub panels: Vec<(String, Vec<f64>)>,
}

/// The bar chart of a `compare` report: a panel per metric.
pub fn compare_bars(r: &Report<CompareRow>) -> Bars {
    let col = |f: &dyn Fn(&CompareRow) -> f64| r.results.iter().map(f).collect();
    let fail = r.results.first().map_or(0.0, |x| x.fail_fraction * 100.0);
    Bars {
        title: format!(
            "overlays side by side ({} nodes)",
            r.results.first().map_or(0, |x| x.nodes)
        ),
        names: r.results.iter().map(|x| x.overlay.clone()).collect(),
        panels: vec![
            ("mean hops".into(), col(&|x| x.mean_hops)),
            ("max hops".into(), col(&|x| f64::from(x.max_hops))),
            ("delay stretch".into(), col(&|x| x.mean_delay_stretch)),
            ("routing state per node".into(), col(&|x| x.routing_state)),
            (
                "maintenance msgs / node / s".into(),
                col(&|x| x.maintenance_msgs_per_node_s),
            ),
            (
                format!("failed lookups (%) after {fail}% failed"),
                col(&|x| x.failed_pct),
            ),
        ],
    }
}

/// Draws `bars` to an SVG file: a grid of small bar charts.
pub fn write_bars_svg(bars: &Bars, path: &Path) -> Result<(), SimError> {
    let err = |e: String| SimError::Output(format!("{}: {e}", path.display()));
    let cols = 3usize;
    let rows = bars.panels.len().div_ceil(cols).max(1);
    let root =
        SVGBackend::new(path, (300 * cols as u32, 260 * rows as u32 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let root = root
        .titled(&bars.title, ("sans-serif", 20))
        .map_err(|e| err(e.to_string()))?;
    let colours = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    let n = bars.names.len().max(1);
    for (area, (metric, values)) in root.split_evenly((rows, cols)).iter().zip(&bars.panels) {
        let top = values.iter().copied().fold(0.0f64, f64::max);
        let top = if top > 0.0 { top * 1.2 } else { 1.0 };
        let mut chart = ChartBuilder::on(area)
            .caption(metric, ("sans-serif", 14))
            .margin(10)
            .x_label_area_size(25)
            .y_label_area_size(45)
            .build_cartesian_2d(0.0..n as f64, 0.0..top)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(values.iter().enumerate().map(|(i, &v)| {
                let c = colours[i % colours.len()];
                Rectangle::new([(i as f64 + 0.2, 0.0), (i as f64 + 0.8, v)], c.filled())
            }))
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(values.iter().enumerate().map(|(i, &v)| {
                let name = bars.names.get(i).map_or("", String::as_str);
                Text::new(
                    format!("{name} {v:.2}"),
                    (i as f64 + 0.15, v + top * 0.08),
                    ("sans-serif", 12),
                )
            }))
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}
