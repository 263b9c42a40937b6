//! The TinyTelemetry v1 design document's plots, as SVG: `bytes_per_report` vs reporting interval and duplicate rate
//! vs loss, each point the median across runs with a min–max bar. Text is written as SVG
//! `<text>` elements (plotters without its font features only estimates text widths for
//! layout, which is all an SVG needs).

use std::path::Path;

use plotters::prelude::*;

use super::measure::Spread;
use super::report::{Outcome, SITE};

/// One point: x, the spread across runs, and its label (scenario and median).
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: Spread,
    pub label: String,
}

/// A plot: the file name, its title and axis descriptions, and where the points come from.
#[derive(Debug, Clone, Copy)]
pub struct Plot {
    pub file: &'static str,
    pub title: &'static str,
    pub x_desc: &'static str,
    pub y_desc: &'static str,
    /// The key of the plotted metric in [`SITE`].
    pub metric: &'static str,
    /// The smallest top of the y axis (so that all-zero data still gets a scale).
    pub min_top: f64,
    /// Which scenarios give a point, and at which x.
    pub x: fn(&Outcome) -> Option<f64>,
    /// What to say when no scenario gives a point.
    pub empty: &'static str,
}

/// `bytes_per_report` vs `reporting_interval`: the unimpaired (baseline) scenarios.
pub const BYTES_PER_REPORT: Plot = Plot {
    file: "bytes_per_report_vs_interval.svg",
    title: "bytes per report vs reporting interval (site a, no impairment)",
    x_desc: "reporting interval (s)",
    y_desc: "bytes per report (UDP payload)",
    metric: "bytes_per_report",
    min_top: 1.0,
    x: |o| {
        o.scenario
            .is_unimpaired()
            .then_some(o.scenario.interval.as_secs_f64())
    },
    empty: "no data: run a baseline scenario",
};

/// `duplicate_rate` vs `loss_percentage`: the 1 s scenarios whose relay only drops.
pub const DUPLICATE_RATE: Plot = Plot {
    file: "duplicate_rate_vs_loss.svg",
    title: "duplicate rate vs random loss (site a, 1 s interval)",
    x_desc: "random loss (%)",
    y_desc: "duplicate rate (duplicates / datagrams received)",
    metric: "duplicate_rate",
    min_top: 0.01,
    x: |o| {
        let i = &o.scenario.impairment;
        let loss_only = i.delay_ns == 0
            && i.jitter_ns == 0
            && i.duplicate == 0.0
            && i.reorder == 0.0
            && i.burst.is_none();
        (loss_only && o.scenario.interval.as_secs_f64() == 1.0).then(|| o.scenario.loss_percent())
    },
    empty: "no data: run baseline-1s or loss-1s",
};

/// Both plots.
pub const ALL: [Plot; 2] = [BYTES_PER_REPORT, DUPLICATE_RATE];

impl Plot {
    /// The points the outcomes give, by x.
    pub fn points(&self, outcomes: &[Outcome]) -> Vec<Point> {
        let Some(metric) = SITE.iter().find(|m| m.key == self.metric) else {
            return Vec::new();
        };
        let mut points: Vec<Point> = outcomes
            .iter()
            .filter_map(|o| {
                let y = o.spread(metric)?;
                Some(Point {
                    x: (self.x)(o)?,
                    label: format!("{} ({:.*})", o.scenario.name(), metric.decimals, y.median),
                    y,
                })
            })
            .collect();
        points.sort_by(|a, b| a.x.total_cmp(&b.x));
        points
    }

    /// Draws the points into `dir/<file>`.
    pub fn write(&self, dir: &Path, outcomes: &[Outcome]) -> anyhow::Result<std::path::PathBuf> {
        let path = dir.join(self.file);
        draw(&path, self, &self.points(outcomes))?;
        Ok(path)
    }
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plot: {e}")
}

/// Draws `points` as medians joined by a line, with min–max bars and labels.
pub fn draw(path: &Path, plot: &Plot, points: &[Point]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let x_max = points.iter().map(|p| p.x).fold(0.0, f64::max);
    let y_max = points.iter().map(|p| p.y.max).fold(0.0, f64::max);
    let x_top = if x_max > 0.0 { x_max * 1.15 } else { 1.0 };
    let y_top = (y_max * 1.2).max(plot.min_top);
    let mut chart = ChartBuilder::on(&root)
        .caption(plot.title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_top, 0.0..y_top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(plot.x_desc)
        .y_desc(plot.y_desc)
        .draw()
        .map_err(err)?;
    let color = RGBColor(31, 119, 180);
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.x, p.y.median)),
            color,
        ))
        .map_err(err)?;
    for p in points {
        let bar = PathElement::new(vec![(p.x, p.y.min), (p.x, p.y.max)], color.stroke_width(2));
        let cap = |y: f64| {
            EmptyElement::at((p.x, y))
                + PathElement::new(vec![(-6, 0), (6, 0)], color.stroke_width(2))
        };
        chart.draw_series([bar]).map_err(err)?;
        chart
            .draw_series([cap(p.y.min), cap(p.y.max)])
            .map_err(err)?;
        chart
            .draw_series([Circle::new((p.x, p.y.median), 5, color.filled())])
            .map_err(err)?;
        chart
            .draw_series([EmptyElement::at((p.x, p.y.median))
                + Text::new(p.label.clone(), (8, -18), ("sans-serif", 14))])
            .map_err(err)?;
    }
    if points.is_empty() {
        root.draw(&Text::new(plot.empty, (330, 270), ("sans-serif", 18)))
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::report::tests::outcome;

    #[test]
    fn points_come_from_the_right_scenarios() {
        let outcomes = [
            outcome("baseline-30s", &[10]),
            outcome("baseline-1s", &[100, 98]),
            outcome("loss-1s", &[95]),
            outcome("delay-1s", &[100]),
        ];
        let bytes = BYTES_PER_REPORT.points(&outcomes);
        assert_eq!(bytes.iter().map(|p| p.x).collect::<Vec<_>>(), [1.0, 30.0]);
        assert_eq!(bytes[0].label, "baseline-1s (29.90)");
        assert_eq!((bytes[0].y.min, bytes[0].y.max), (29.8, 30.0));
        let dup = DUPLICATE_RATE.points(&outcomes);
        assert_eq!(dup.iter().map(|p| p.x).collect::<Vec<_>>(), [0.0, 5.0]);
        assert_eq!(dup[1].label, "loss-1s (0.0000)");
    }

    #[test]
    fn svg_is_written_with_its_axis_labels_and_points() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outcomes = [
            outcome("baseline-1s", &[100]),
            outcome("baseline-5s", &[90]),
        ];
        let path = BYTES_PER_REPORT.write(dir.path(), &outcomes).expect("plot");
        let svg = std::fs::read_to_string(&path).expect("read");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        for text in [
            "reporting interval (s)",
            "bytes per report (UDP payload)",
            "bytes per report vs reporting interval",
            "baseline-1s (30.00)",
            "baseline-5s (29.00)",
        ] {
            assert!(svg.contains(text), "{text} not in the SVG");
        }
        assert!(svg.contains("<circle"), "the points are drawn");

        let empty = DUPLICATE_RATE
            .write(dir.path(), &outcomes[..0])
            .expect("plot");
        let svg = std::fs::read_to_string(empty).expect("read");
        assert!(svg.contains("random loss (%)"));
        assert!(svg.contains("no data: run baseline-1s or loss-1s"));
    }
}
