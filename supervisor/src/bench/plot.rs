//! The SVG charts of `mate bench …`, drawn with `plotters` (SVG backend only, text as
//! `<text>`): lines, latency distributions and timelines. The profiles chart, which is specific
//! to its bench, stays beside it in `profiles/chart.rs`.

use std::path::Path;

use plotters::{
    coord::{types::RangedCoordf64, Shift},
    prelude::*,
};

const COLOURS: [RGBColor; 6] = [BLUE, RED, GREEN, MAGENTA, CYAN, RGBColor(230, 140, 0)];

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A white 900×540 SVG at `path`.
fn canvas(path: &Path) -> anyhow::Result<DrawingArea<SVGBackend<'_>, Shift>> {
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    Ok(root)
}

/// A titled chart over `root` with these ranges.
fn chart_on<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> anyhow::Result<Chart<'a, 'b>> {
    Ok(ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)?)
}

/// Draws the legend at `position` and writes the file.
fn finish<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .label_font(("sans-serif", 15))
        .draw()?;
    chart.plotting_area().present()?;
    Ok(())
}

/// A line chart of `series` (name, points).
pub fn line_svg(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> anyhow::Result<()> {
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (x_max, y_max) = points.fold((1.0f64, 1.0f64), |(x, y), (px, py)| {
        (x.max(*px), y.max(*py))
    });
    let root = canvas(path)?;
    let mut chart = chart_on(&root, title, 0.0..x_max * 1.05, 0.0..y_max * 1.15)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 15))
        .draw()?;
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, colour.filled())))?;
    }
    finish(&mut chart, SeriesLabelPosition::UpperRight)
}

/// Latency distributions, one line per series of [`quantiles`](super::quantiles): the share
/// of samples (y, percent) at or below a latency (x), so medians and tails of several senders
/// read off one chart. The x axis ends a little after the largest p99, so one outlier does not
/// squash the rest (each series' p50, p99 and max are in the legend), and it is logarithmic
/// when the series lie orders of magnitude apart.
pub fn cdf_svg(
    path: &Path,
    title: &str,
    x_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> anyhow::Result<()> {
    let at = |q: &[(f64, f64)], percent: f64| q.iter().find(|p| p.1 >= percent).map(|p| p.0);
    let lo = series
        .iter()
        .filter_map(|(_, q)| q.first().map(|p| p.0))
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let hi = series
        .iter()
        .filter_map(|(_, q)| at(q, 99.0))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let log = lo.is_finite() && hi > 20.0 * lo;
    // On a log axis the chart is drawn in log10 units and labelled back in the data's.
    let scale = |v: f64| if log { v.max(lo).log10() } else { v };
    let (lo, hi) = if lo.is_finite() && hi > lo {
        let (lo, hi) = (scale(lo), scale(hi));
        ((lo - (hi - lo) * 0.05).max(0.0), hi + (hi - lo) * 0.15)
    } else {
        (0.0, 1.0)
    };
    let root = canvas(path)?;
    let mut chart = chart_on(&root, title, lo..hi, 0.0..100.0)?;
    let unscale = |v: &f64| {
        let v = if log { 10f64.powf(*v) } else { *v };
        format!("{v:.*}", if v < 10.0 { 2 } else { 0 })
    };
    chart
        .configure_mesh()
        .x_desc(if log {
            format!("{x_label} (log scale)")
        } else {
            x_label.to_string()
        })
        .y_desc("% of samples at or below")
        .x_label_formatter(&unscale)
        .label_style(("sans-serif", 15))
        .draw()?;
    for (i, (name, q)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let shown = q
            .iter()
            .map(|p| (scale(p.0), p.1))
            .filter(|p| p.0.is_finite() && p.0 <= hi);
        let figure = |v: Option<f64>| v.map_or_else(|| "–".into(), |v| format!("{v:.3}"));
        chart
            .draw_series(LineSeries::new(shown, colour.stroke_width(2)))?
            .label(format!(
                "{name} (p50 {}, p99 {}, max {})",
                figure(at(q, 50.0)),
                figure(at(q, 99.0)),
                figure(q.last().map(|p| p.0)),
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    finish(&mut chart, SeriesLabelPosition::LowerRight)
}

/// A timeline per row (e.g. one restart): each row is split into `phases`, given as (start,
/// end) on a shared x axis; a missing or empty phase is left out of its row.
pub fn timeline_svg(
    path: &Path,
    title: &str,
    x_label: &str,
    phases: &[&str],
    rows: &[Vec<Option<(f64, f64)>>],
) -> anyhow::Result<()> {
    let end = rows
        .iter()
        .flatten()
        .flatten()
        .map(|p| p.1)
        .fold(1.0f64, f64::max);
    let n = rows.len().max(1) as f64;
    let root =
        SVGBackend::new(path, (1000, (140 + 26 * rows.len()).min(1400) as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(48)
        // Head room on the right for the legend.
        .build_cartesian_2d(0.0..end * 1.75, 0.0..n + 0.5)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(x_label)
        .y_desc("run")
        .y_labels(rows.len().min(25))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 14))
        .draw()?;
    for (j, phase) in phases.iter().enumerate() {
        let colour = COLOURS[j % COLOURS.len()];
        let bars = rows.iter().enumerate().filter_map(|(i, row)| {
            let (start, stop) = (*row.get(j)?)?;
            let y = i as f64 + 1.0;
            (stop > start).then(|| {
                Rectangle::new(
                    [(start, y - 0.35), (stop, y + 0.35)],
                    colour.mix(0.7).filled(),
                )
            })
        });
        chart
            .draw_series(bars)?
            .label(*phase)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.filled()));
    }
    finish(&mut chart, SeriesLabelPosition::UpperRight)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::quantiles;

    fn draw_svg(draw: impl FnOnce(&Path) -> anyhow::Result<()>) -> String {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.svg");
        draw(&path).expect("plot");
        let svg = std::fs::read_to_string(&path).expect("read");
        assert!(svg.starts_with("<svg"), "{svg:.80}");
        svg
    }

    #[test]
    fn a_line_chart_has_its_title_and_legend() {
        let svg = draw_svg(|p| {
            line_svg(
                p,
                "speed by threads",
                "threads",
                "tok/s",
                &[("generation", vec![(1.0, 20.0), (2.0, 38.0)])],
            )
        });
        assert!(svg.contains("speed by threads") && svg.contains("generation"));
    }

    #[test]
    fn a_distribution_names_each_series_with_its_median_and_tail() {
        let fast: Vec<f64> = (1..=100).map(f64::from).collect();
        let slow: Vec<f64> = fast.iter().map(|v| v * 10.0).collect();
        let series = [("fast", quantiles(&fast)), ("slow", quantiles(&slow))];
        let svg = draw_svg(|p| cdf_svg(p, "round trips", "µs", &series));
        assert!(
            svg.contains("fast (p50 50.000, p99 99.000, max 100.000)"),
            "{svg}"
        );
        assert!(svg.contains("slow (p50 500.000, p99 990.000, max 1000.000)"));
        assert!(
            svg.contains("(log scale)"),
            "10× apart, and the tail further"
        );
        let (a, b): (Vec<f64>, Vec<f64>) = (100..200)
            .map(|v| (f64::from(v), f64::from(v) * 1.5))
            .unzip();
        let near = [("a", quantiles(&a)), ("b", quantiles(&b))];
        assert!(!draw_svg(|p| cdf_svg(p, "near", "µs", &near)).contains("(log scale)"));
        // Empty and degenerate series still draw.
        let series = [("none", Vec::new()), ("zero", quantiles(&[0.0]))];
        draw_svg(|p| cdf_svg(p, "nothing", "µs", &series));
    }

    #[test]
    fn a_timeline_draws_a_bar_per_phase_and_row() {
        let rows = vec![
            vec![Some((0.0, 35.0)), Some((35.0, 900.0))],
            vec![Some((0.0, 40.0)), None],
        ];
        let svg = draw_svg(|p| timeline_svg(p, "restarts", "ms", &["detection", "load"], &rows));
        assert!(svg.contains("restarts") && svg.contains("detection") && svg.contains("load"));
        // Three bars (drawn at 0.7 opacity; the legend's swatches are solid).
        assert_eq!(svg.matches("opacity=\"0.7\"").count(), 3, "{svg}");
    }
}
