//! The repair benchmark's outputs: a markdown table, CSV, and SVG plots (plotters), from
//! [`Point`]s and one [`Measure`] per scheme (telemesh first, then the baselines).

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use super::{Measure, Pattern, Point};
use telemesh_proto::window;

fn pct(x: f64) -> String {
    format!("{}%", (x * 100.0).round())
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}", a / b)
    } else {
        "—".into()
    }
}

fn secs(ms: f64) -> String {
    if ms.is_finite() {
        format!("{:.2}", ms / 1e3)
    } else {
        "—".into()
    }
}

fn overhead(m: &Measure) -> String {
    if m.lacked == 0 {
        format!("({} B)", m.repair_bytes)
    } else {
        format!("{:.2}", m.overhead())
    }
}

/// The markdown table (one row per point, the schemes side by side) and the goals.
pub fn markdown(rows: &[(Point, Vec<Measure>)]) -> String {
    let mut s = String::new();
    let names: Vec<&str> = rows
        .first()
        .map(|(_, m)| m.iter().map(|m| m.scheme).collect())
        .unwrap_or_default();
    let _ = writeln!(s, "Schemes in each cell: {}.\n", names.join(" · "));
    s.push_str(
        "| sensor loss | pattern | sites | overlay loss | records / window | records lacked | repair B ÷ B lacked | telemesh ÷ ARQ, ÷ whole | \
         round trips mean / max | same root p50 (s) | same root max (s) | repair requests | symbols rx ÷ missing | decode failures | gossip B / record | not converged |\n",
    );
    s.push_str("|---:|---|---:|---:|---:|---:|---|---|---|---|---|---|---:|---:|---:|---|\n");
    for (p, ms) in rows {
        let join =
            |f: &dyn Fn(&Measure) -> String| ms.iter().map(f).collect::<Vec<_>>().join(" · ");
        let (t, a, w) = (&ms[0], &ms[1], &ms[2]);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} · {} | {} | {} | {} | {} | {:.3} | {} | {:.1} | {} |",
            pct(p.sensor_loss),
            p.pattern.name(),
            p.sites,
            pct(p.overlay_loss),
            p.per_window,
            t.lacked,
            join(&overhead),
            ratio(t.overhead(), a.overhead()),
            ratio(t.overhead(), w.overhead()),
            join(&|m| format!("{:.1} / {}", m.mean_round_trips(), m.max_round_trips())),
            join(&|m| secs(m.time_ms(0.5))),
            join(&|m| secs(m.time_ms(1.0))),
            join(&|m| m.repair_requests.to_string()),
            t.received_per_missing(),
            t.decode_failures,
            t.gossip_per_record(),
            join(&|m| m.unconverged.to_string()),
        );
    }
    s.push('\n');
    s.push_str(&goals(rows));
    s
}

/// The goals, checked over the sweep.
pub fn goals(rows: &[(Point, Vec<Measure>)]) -> String {
    let mut s = String::new();
    let at5: Vec<f64> = rows
        .iter()
        .filter(|(p, _)| (p.sensor_loss - 0.05).abs() < 1e-9)
        .map(|(_, m)| m[0].overhead())
        .collect();
    let (lo, hi) = at5
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        });
    let met = at5.iter().filter(|x| **x <= 1.10).count();
    let _ = writeln!(
        s,
        "- Repair bytes ≤ 1.10 × bytes lacked at 5% sensor loss: telemesh {lo:.2} to {hi:.2} (median {:.2}) over {} points; met at {met}.",
        super::percentile(&at5, 0.5),
        at5.len()
    );
    let lossy: Vec<&(Point, Vec<Measure>)> = rows
        .iter()
        .filter(|(p, m)| p.overlay_loss >= 0.2 && m[0].lacked > 0)
        .collect();
    let fewer = lossy
        .iter()
        .filter(|(_, m)| m[0].mean_round_trips() < m[1].mean_round_trips())
        .count();
    let _ = writeln!(
        s,
        "- Fewer round trips than ARQ at ≥ 20% overlay loss (mean per window): {fewer} of {} points (telemesh ÷ ARQ median {:.2}).",
        lossy.len(),
        super::percentile(&lossy.iter().map(|(_, m)| m[0].mean_round_trips() / m[1].mean_round_trips()).collect::<Vec<_>>(), 0.5)
    );
    let worse: Vec<String> = rows
        .iter()
        .filter(|(_, m)| m[0].lacked > 0 && m[0].repair_bytes > m[2].repair_bytes)
        .map(|(p, m)| {
            format!(
                "{} {} {} sites {} overlay {}/win ({:.2} vs {:.2})",
                pct(p.sensor_loss),
                p.pattern.name(),
                p.sites,
                pct(p.overlay_loss),
                p.per_window,
                m[0].overhead(),
                m[2].overhead()
            )
        })
        .collect();
    let slower = rows
        .iter()
        .filter(|(_, m)| m[0].lacked > 0 && m[0].time_ms(0.5) > m[2].time_ms(0.5))
        .count();
    let _ = writeln!(
        s,
        "- Never worse than whole-window fetch: more repair bytes at {} of {} points{}; a slower median time to the same root at {slower}.",
        worse.len(),
        rows.iter().filter(|(_, m)| m[0].lacked > 0).count(),
        if worse.is_empty() { String::new() } else { format!(" ({})", worse.join("; ")) }
    );
    s
}

/// Where telemesh's repair bytes go, over the points with 5% random sensor loss and no
/// overlay loss, by records per window.
pub fn breakdown(rows: &[(Point, Vec<Measure>)]) -> String {
    let mut s = String::from(
        "\nWhere telemesh's repair bytes go at 5% random sensor loss, no overlay loss (all site counts), in bytes per byte lacked:\n\n\
         | records / window | symbol data (slots) | symbol ids | redundant symbols | symbols requests | symbols responses' headers | \
         index requests | index responses | … of which exchanges answered NotFound | total | per window repaired: index exchanges (found nothing lacked, NotFound) |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    let mut sizes: Vec<u64> = rows.iter().map(|(p, _)| p.per_window).collect();
    sizes.sort_unstable();
    sizes.dedup();
    for size in sizes {
        let picked: Vec<&Measure> = rows
            .iter()
            .filter(|(p, m)| {
                p.per_window == size
                    && p.overlay_loss == 0.0
                    && p.pattern == Pattern::Random
                    && (p.sensor_loss - 0.05).abs() < 1e-9
                    && m[0].lacked > 0
            })
            .map(|(_, m)| &m[0])
            .collect();
        if picked.is_empty() {
            continue;
        }
        let sum = |f: &dyn Fn(&Measure) -> u64| picked.iter().map(|m| f(m)).sum::<u64>() as f64;
        let kind = |m: &Measure, k: &str| {
            m.repair_by_kind
                .iter()
                .find(|(n, ..)| *n == k)
                .map_or((0, 0, 0), |(_, b, r, n)| (*b, *r, *n))
        };
        let lacked = sum(&|m| m.lacked * m.record_bytes);
        let slot = picked[0].record_bytes - window::INDEX_ENTRY_LEN as u64;
        let data = sum(&|m| m.repaired * slot);
        let ids = sum(&|m| m.repaired * 4);
        let redundant = sum(&|m| m.symbols_received.saturating_sub(m.repaired) * (4 + slot));
        let sym_req = sum(&|m| kind(m, "symbols").1);
        let sym_headers =
            sum(&|m| kind(m, "symbols").0 - kind(m, "symbols").1 - m.symbols_received * (4 + slot));
        let idx_req = sum(&|m| kind(m, "index").1);
        let idx_resp = sum(&|m| kind(m, "index").0 - kind(m, "index").1);
        let nf = sum(&|m| m.index_not_found_bytes);
        let total = sum(&|m| m.repair_bytes);
        let repaired = sum(&|m| m.windows_repaired).max(1.0);
        let f = |x: f64| format!("{:.3}", x / lacked);
        let _ = writeln!(
            s,
            "| {size} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} ({:.2}, {:.2}) |",
            f(data),
            f(ids),
            f(redundant),
            f(sym_req),
            f(sym_headers),
            f(idx_req),
            f(idx_resp),
            f(nf),
            f(total),
            sum(&|m| kind(m, "index").2) / repaired,
            sum(&|m| m.windows_covered) / repaired,
            sum(&|m| m.index_not_found) / repaired,
        );
    }
    s
}

const CSV_HEADER: &str = "pattern,sensor_loss,sites,overlay_loss,records_per_window,scheme,union,lacked,repaired,record_bytes,datagram_bytes,\
repair_bytes,index_bytes,symbols_bytes,records_bytes,blob_bytes,index_request_bytes,symbols_request_bytes,records_request_bytes,blob_request_bytes,overhead,overhead_per_datagram_byte,repair_requests,request_failures,\
symbols_requested,symbols_received,received_per_missing,decode_failures,verification_failures,index_not_found,index_not_found_bytes,windows_repaired,windows_covered,gossip_bytes,summary_bytes,provenance_bytes,\
gossip_per_record,windows,unconverged,round_trips_mean,round_trips_max,same_root_p50_ms,same_root_p99_ms,same_root_max_ms,wall_ms";

/// One CSV row (no line end).
pub fn csv_row(p: &Point, m: &Measure) -> String {
    let kind = |k: &str| {
        m.repair_by_kind
            .iter()
            .find(|(n, ..)| *n == k)
            .map_or(0, |(_, b, ..)| *b)
    };
    let request = |k: &str| {
        m.repair_by_kind
            .iter()
            .find(|(n, ..)| *n == k)
            .map_or(0, |(_, _, r, _)| *r)
    };
    let burst = match p.pattern {
        Pattern::Random => "random".to_owned(),
        Pattern::Burst(b) => format!("bursty{b}"),
    };
    format!(
        "{burst},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.4},{:.4},{},{},{},{},{:.4},{},{},{},{},{},{},{},{},{},{:.2},{},{},{:.3},{},{:.1},{:.1},{:.1},{:.0}",
        p.sensor_loss,
        p.sites,
        p.overlay_loss,
        p.per_window,
        m.scheme,
        m.union,
        m.lacked,
        m.repaired,
        m.record_bytes,
        m.datagram_bytes,
        m.repair_bytes,
        kind("index"),
        kind("symbols"),
        kind("records"),
        kind("blob"),
        request("index"),
        request("symbols"),
        request("records"),
        request("blob"),
        m.overhead(),
        m.overhead_datagram(),
        m.repair_requests,
        m.request_failures,
        m.symbols_requested,
        m.symbols_received,
        m.received_per_missing(),
        m.decode_failures,
        m.verification_failures,
        m.index_not_found,
        m.index_not_found_bytes,
        m.windows_repaired,
        m.windows_covered,
        m.gossip_bytes,
        m.summary_bytes,
        m.provenance_bytes,
        m.gossip_per_record(),
        m.windows,
        m.unconverged,
        m.mean_round_trips(),
        m.max_round_trips(),
        m.time_ms(0.5),
        m.time_ms(0.99),
        m.time_ms(1.0),
        // Wall time varies from run to run; everything before it does not.
        m.wall_ms,
    )
}

pub fn csv(rows: &[(Point, Vec<Measure>)]) -> String {
    let mut s = String::from(CSV_HEADER);
    s.push('\n');
    for (p, ms) in rows {
        for m in ms {
            s.push_str(&csv_row(p, m));
            s.push('\n');
        }
    }
    s
}

const COLORS: [RGBColor; 3] = [
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
];

/// The panels of a plot: the points with 3 sites (or the most common count) and random
/// sensor loss, one panel per (records per window, overlay loss).
fn panels(rows: &[(Point, Vec<Measure>)]) -> (usize, Vec<u64>, Vec<f64>) {
    let sites = if rows.iter().any(|(p, _)| p.sites == 3) {
        3
    } else {
        rows.first().map_or(3, |(p, _)| p.sites)
    };
    let mut sizes: Vec<u64> = rows.iter().map(|(p, _)| p.per_window).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut overlays: Vec<f64> = rows.iter().map(|(p, _)| p.overlay_loss).collect();
    overlays.sort_by(f64::total_cmp);
    overlays.dedup();
    (sites, sizes, overlays)
}

type Series = Vec<(f64, f64)>;

/// What a plot draws of a measure: the solid line's value and the dashed one's.
type Values = dyn Fn(&Measure) -> (Option<f64>, Option<f64>);

/// An axis label: as many decimals as the value's size needs (log axes land on values
/// like 0.6000000000000001).
fn tick(v: f64) -> String {
    match v.abs() {
        a if a >= 10.0 => format!("{v:.0}"),
        a if a >= 1.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

fn sorted(series: &Series) -> Series {
    let mut s = series.clone();
    s.sort_by(|a, b| a.0.total_cmp(&b.0));
    s
}

fn plot(
    rows: &[(Point, Vec<Measure>)],
    path: &Path,
    title: &str,
    y_desc: &str,
    log: bool,
    goal: Option<f64>,
    values: &Values,
) -> anyhow::Result<()> {
    let (sites, sizes, overlays) = panels(rows);
    let root = SVGBackend::new(
        path,
        (
            420 * overlays.len().max(1) as u32,
            330 * sizes.len().max(1) as u32 + 40,
        ),
    )
    .into_drawing_area();
    root.fill(&WHITE)?;
    let (top, body) = root.split_vertically(40);
    top.draw(&Text::new(
        format!("{title} — {sites} sites, random sensor loss"),
        (12, 12),
        ("sans-serif", 20).into_font(),
    ))?;
    let areas = body.split_evenly((sizes.len().max(1), overlays.len().max(1)));
    let names: Vec<&str> = rows
        .first()
        .map(|(_, m)| m.iter().map(|m| m.scheme).collect())
        .unwrap_or_default();
    for (i, area) in areas.iter().enumerate() {
        let (size, overlay) = (sizes[i / overlays.len()], overlays[i % overlays.len()]);
        let picked: Vec<&(Point, Vec<Measure>)> = rows
            .iter()
            .filter(|(p, _)| {
                p.sites == sites
                    && p.pattern == Pattern::Random
                    && p.per_window == size
                    && p.overlay_loss == overlay
            })
            .collect();
        let mut solid: Vec<Series> = vec![Vec::new(); names.len()];
        let mut dashed: Vec<Series> = vec![Vec::new(); names.len()];
        for (p, ms) in &picked {
            for (k, m) in ms.iter().enumerate() {
                let (a, b) = values(m);
                if let Some(a) = a.filter(|v| v.is_finite() && *v > 0.0) {
                    solid[k].push((p.sensor_loss * 100.0, a));
                }
                if let Some(b) = b.filter(|v| v.is_finite() && *v > 0.0) {
                    dashed[k].push((p.sensor_loss * 100.0, b));
                }
            }
        }
        let ys = solid.iter().chain(&dashed).flatten().map(|(_, y)| *y);
        let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
            (lo.min(y), hi.max(y))
        });
        let (lo, hi) = if lo.is_finite() {
            (lo, hi)
        } else {
            (0.1, 10.0)
        };
        let (lo, hi) = match goal {
            Some(g) => (lo.min(g), hi.max(g)),
            None => (lo, hi),
        };
        let x_hi = picked
            .iter()
            .map(|(p, _)| p.sensor_loss * 100.0)
            .fold(1.0, f64::max)
            + 1.0;
        let mut builder = ChartBuilder::on(area);
        builder
            .caption(
                format!("{size} records / window, overlay loss {}", pct(overlay)),
                ("sans-serif", 15),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55);
        // Later schemes are drawn first and wider, so that lines which coincide stay visible.
        let width = |k: usize| 2 + 2 * k as u32;
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc("sensor loss (%)")
                    .y_desc(y_desc)
                    .y_label_formatter(&|v| tick(*v))
                    .light_line_style(WHITE.mix(0.0))
                    .draw()?;
                if let Some(g) = goal {
                    chart
                        .draw_series(DashedLineSeries::new(
                            vec![(0.0, g), (x_hi, g)],
                            6,
                            4,
                            BLACK.stroke_width(1),
                        ))?
                        .label(format!("goal {g:.2}"))
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 18, y)], BLACK.stroke_width(1))
                        });
                }
                for k in (0..names.len()).rev() {
                    let color = COLORS[k % COLORS.len()];
                    let series = sorted(&solid[k]);
                    chart
                        .draw_series(LineSeries::new(
                            series.clone(),
                            color.stroke_width(width(k)),
                        ))?
                        .label(names[k])
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                        });
                    chart.draw_series(series.iter().map(|c| Circle::new(*c, 3, color.filled())))?;
                    chart.draw_series(DashedLineSeries::new(
                        sorted(&dashed[k]),
                        4,
                        4,
                        color.stroke_width(1),
                    ))?;
                }
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperRight)
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .draw()?;
            }};
        }
        if log {
            // At least a decade, so that the axis has labels.
            draw!(builder.build_cartesian_2d(
                0f64..x_hi,
                ((lo / 1.5).min(hi / 15.0)..hi * 1.5).log_scale()
            )?);
        } else {
            draw!(builder.build_cartesian_2d(0f64..x_hi, 0f64..hi * 1.15)?);
        }
    }
    root.present()?;
    Ok(())
}

/// Repair bytes per byte lacked against sensor loss, one line per scheme.
pub fn plot_overhead(rows: &[(Point, Vec<Measure>)], path: &Path) -> anyhow::Result<()> {
    plot(
        rows,
        path,
        "Repair bytes ÷ bytes lacked (log scale)",
        "repair B ÷ B lacked",
        true,
        Some(1.10),
        &|m| {
            (
                if m.lacked > 0 {
                    Some(m.overhead())
                } else {
                    None
                },
                None,
            )
        },
    )
}

/// Time from a window's seal until every site holds the same root (median solid, max
/// dashed), against sensor loss, one colour per scheme.
pub fn plot_time(rows: &[(Point, Vec<Measure>)], path: &Path) -> anyhow::Result<()> {
    plot(
        rows,
        path,
        "Window seal → same root on every site, s (median solid, max dashed; log scale)",
        "seconds",
        true,
        None,
        &|m| (Some(m.time_ms(0.5) / 1e3), Some(m.time_ms(1.0) / 1e3)),
    )
}
