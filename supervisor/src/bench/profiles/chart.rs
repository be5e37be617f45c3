//! The chart of `mate bench profiles`: a bar chart per metric with a bar per rung, and the
//! downgrade reaction of every run for each GPU sampling interval.

use std::path::Path;

use super::{
    downgrade::{DowngradeRun, DowngradeSeries},
    RungSummary,
};

/// Draws the report: a bar chart per metric with a bar per profile, and below them the
/// downgrade reaction of every run for each sampling interval. SVG only, text as `<text>`.
pub(super) fn plot(
    path: &Path,
    rungs: &[RungSummary],
    downgrades: &[DowngradeSeries],
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};

    let root = SVGBackend::new(path, (1200, 960)).into_drawing_area();
    root.fill(&WHITE)?;
    let (metrics_area, downgrade_area) = root.split_vertically(620);

    type Metric = (&'static str, fn(&RungSummary) -> Option<f64>);
    let metrics: [Metric; 6] = [
        ("generation tok/s (higher is better)", |r| {
            Some(r.gen_tokens_per_s)
        }),
        ("time to first token, ms (lower is better)", |r| {
            Some(r.ttft_ms)
        }),
        ("load ms (model + context)", |r| Some(r.load_ms)),
        ("LLM worker RSS, MiB", |r| r.rss_mib),
        ("LLM VRAM, MiB (measured; GPU only)", |r| r.vram_mib),
        ("LLM VRAM, MiB (the ladder's estimate)", |r| {
            Some(r.estimated_vram_mib)
        }),
    ];
    let names: Vec<&str> = rungs.iter().map(|r| r.profile.as_str()).collect();
    let last = names.len().saturating_sub(1);
    let label_style =
        TextStyle::from(("sans-serif", 15).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (area, (title, value)) in metrics_area.split_evenly((2, 3)).iter().zip(metrics) {
        let values: Vec<Option<f64>> = rungs
            .iter()
            .map(|r| value(r).filter(|v| v.is_finite()))
            .collect();
        let highest = values.iter().flatten().copied().fold(0.0, f64::max);
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(56)
            .build_cartesian_2d((0..last).into_segmented(), 0.0..(highest * 1.2).max(1.0))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .label_style(("sans-serif", 16))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                    names.get(*i).map_or_else(String::new, |n| (*n).to_string())
                }
                SegmentValue::Last => String::new(),
            })
            .draw()?;
        let bars = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| Some((i, (*v)?)));
        chart.draw_series(bars.clone().map(|(i, v)| {
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), v),
                ],
                BLUE.mix(0.55).filled(),
            );
            bar.set_margin(0, 0, 14, 14);
            bar
        }))?;
        chart.draw_series(bars.map(|(i, v)| {
            Text::new(
                format!("{v:.1}"),
                (SegmentValue::CenterOf(i), v),
                label_style.clone(),
            )
        }))?;
    }

    let n_runs = downgrades.iter().map(|d| d.runs.len()).max().unwrap_or(0) as i32;
    let highest = downgrades
        .iter()
        .flat_map(|d| &d.runs)
        .map(|r| r.ready_ms)
        .fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(&downgrade_area)
        .caption(
            "downgrade reaction, ms from VRAM critical to Downgraded (detection) and to the \
             lower profile Loaded (serving)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        // Head room above the lines for the legend.
        .build_cartesian_2d(0..n_runs + 1, 0.0..(highest * 1.6).max(1.0))?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .label_style(("sans-serif", 16))
        .x_desc("run")
        .x_label_formatter(&|x| {
            if (1..=n_runs).contains(x) {
                x.to_string()
            } else {
                String::new()
            }
        })
        .draw()?;
    let colors = [BLUE, RED, GREEN, MAGENTA];
    for (series, color) in downgrades.iter().zip(colors) {
        let points = |value: fn(&DowngradeRun) -> f64| -> Vec<(i32, f64)> {
            series
                .runs
                .iter()
                .zip(1..)
                .map(|(r, x)| (x, value(r)))
                .collect()
        };
        let lines = [
            (
                "detection",
                points(|r| r.detection_ms),
                color.mix(0.5).stroke_width(2),
            ),
            ("serving", points(|r| r.ready_ms), color.stroke_width(2)),
        ];
        for (what, points, style) in lines {
            chart
                .draw_series(LineSeries::new(points, style).point_size(4))?
                .label(format!("sample_ms = {}: {what}", series.sample_ms))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::profiles::{summarize, tests::fake_rung};

    #[test]
    fn the_plot_names_every_profile_and_sampling_interval() {
        let rungs = summarize(&[
            fake_rung("performance", [31.5; 3], [100.0; 3]),
            fake_rung("low_memory", [25.0; 3], [120.0; 3]),
            fake_rung("cpu", [20.0; 3], [140.0; 3]),
        ]);
        let run = |detection_ms: f64| DowngradeRun {
            from: "performance".into(),
            to: "balanced".into(),
            cause: "Critical".into(),
            used_percent: Some(97.0),
            detection_ms,
            old_exited_ms: Some(detection_ms + 50.0),
            spawned_ms: Some(detection_ms + 55.0),
            ready_ms: detection_ms + 800.0,
            reload_ms: 800.0,
            load_ms: 700.0,
            warmup_ms: 40.0,
        };
        let downgrades = [
            DowngradeSeries {
                sample_ms: 100,
                runs: vec![run(50.0), run(80.0)],
            },
            DowngradeSeries {
                sample_ms: 500,
                runs: vec![run(250.0), run(400.0)],
            },
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("profiles.svg");
        plot(&path, &rungs, &downgrades).expect("plots");
        let svg = std::fs::read_to_string(&path).expect("read");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        // plotters writes each text on a line of its own.
        let texts: Vec<&str> = svg.lines().map(str::trim).collect();
        for name in ["performance", "low_memory", "cpu"] {
            assert!(texts.contains(&name), "no label {name} in the SVG");
        }
        for sample_ms in [100, 500] {
            let legend = format!("sample_ms = {sample_ms}: detection");
            assert!(texts.contains(&legend.as_str()), "no legend {legend}");
        }
        // Each bar's value is written on it (not a tick of the axis).
        assert!(texts.contains(&"31.5"));
        assert!(
            texts.contains(&"LLM VRAM, MiB (measured; GPU only)"),
            "a VRAM panel, empty without a GPU"
        );
    }
}
