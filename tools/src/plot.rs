//! Line charts as SVG (plotters, no font files: text is written as SVG `<text>`), for the
//! benchmarks' "one line per scheme" plots.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

/// One line: its legend name and its (x, y) points in x order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Colours of the lines, in series order (then repeated).
const COLOURS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// Writes an 800 × 500 SVG with one line (and its points) per series. The axes start at
/// 0 and end a little above the largest value; non-finite points are left out.
pub fn lines(path: &Path, title: &str, x_desc: &str, y_desc: &str, series: &[Series]) -> anyhow::Result<()> {
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.points.iter().filter(finite).copied()).collect();
    let top = |v: f64| if v > 0.0 { v * 1.08 } else { 1.0 };
    let x_max = top(all.iter().map(|p| p.0).fold(0.0, f64::max));
    let y_max = top(all.iter().map(|p| p.1).fold(0.0, f64::max));
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw()?;
        for (i, s) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let points: Vec<(f64, f64)> = s.points.iter().filter(finite).copied().collect();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
            chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, colour.filled())))?;
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("{e}")).with_context(|| format!("cannot draw {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_svg_with_title_axes_and_one_line_per_series_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.svg");
        let series = [
            Series { name: "telemesh".into(), points: vec![(0.0, 1.0), (5.0, 1.2), (10.0, f64::NAN)] },
            Series { name: "ARQ".into(), points: vec![(0.0, 1.5), (5.0, 2.0)] },
        ];
        lines(&path, "overhead vs loss", "loss (%)", "bytes / byte", &series).expect("drawn");
        let svg = std::fs::read_to_string(&path).expect("written");
        for text in ["overhead vs loss", "loss (%)", "bytes / byte", "telemesh", "ARQ"] {
            assert!(svg.contains(text), "{text} missing");
        }
        // Each series: its line and its legend mark, in its own colour.
        for colour in ["#1F77B4", "#D62728"] {
            assert_eq!(svg.matches(&format!("stroke=\"{colour}\" stroke-width=\"2\"")).count(), 2, "{colour}");
        }
        // The NaN point is left out: telemesh's line has two points.
        assert!(svg.contains("stroke=\"#1F77B4\" stroke-width=\"2\" points=\"85,255 732,218 \""), "{svg}");
    }
}
