//! `bench.png`: the POST → COMPLETED latency distribution (beside Celery's
//! best confirmed pool when the peer ran), and create throughput against
//! client concurrency beside the broker's limit.
//!
//! Drawn with plotters' bitmap backend; text uses DejaVu Sans embedded in
//! the binary (through `ab_glyph`), so no fontconfig or system font is needed.

use std::path::Path;

use anyhow::Context;
use plotters::{
    prelude::*,
    style::{register_font, FontStyle},
};

use crate::{report::Results, stats};

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

pub(crate) fn draw(r: &Results, levels: &[usize], path: &Path) -> anyhow::Result<()> {
    register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| anyhow::anyhow!("the embedded font does not load"))?;
    let root = BitMapBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(700);
    latency(r, &left).context("drawing the latency panel")?;
    throughput(r, levels, &right).context("drawing the throughput panel")?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Celery's dispatch samples with the lowest p50 among the confirmed
/// variants (Taskforge always confirms): its label and samples.
fn celery_dispatch(r: &Results) -> Option<(String, &Vec<f64>)> {
    crate::peer::Pool::ALL
        .iter()
        .filter_map(|p| {
            let s = r
                .samples
                .get(&format!("celery.{}.confirm.dispatch", p.name()))?;
            (!s.is_empty()).then(|| (p.name(), s))
        })
        .min_by(|a, b| stats::percentile(a.1, 50.0).total_cmp(&stats::percentile(b.1, 50.0)))
        .map(|(pool, s)| (format!("Celery {pool} pool, confirms"), s))
}

fn histogram(samples: &[f64], width: f64, bins: usize) -> Vec<u32> {
    let mut counts = vec![0u32; bins];
    for &x in samples {
        counts[((x / width) as usize).min(bins - 1)] += 1;
    }
    counts
}

fn latency(r: &Results, area: &Area<'_>) -> anyhow::Result<()> {
    let lat = &r.dispatch_latencies;
    let celery = celery_dispatch(r);
    let p50 = stats::percentile(lat, 50.0);
    let p99 = stats::percentile(lat, 99.0);
    let hi = lat
        .iter()
        .chain(celery.iter().flat_map(|c| c.1.iter()))
        .copied()
        .collect::<Vec<f64>>();
    let hi = if hi.is_empty() {
        10.0
    } else {
        (stats::percentile(&hi, 99.9) * 1.15).max(6.0)
    };
    let bins = 60usize;
    let width = hi / bins as f64;
    let counts = histogram(lat, width, bins);
    let celery_counts = celery.as_ref().map(|c| histogram(c.1, width, bins));
    let top = f64::from(
        counts
            .iter()
            .chain(celery_counts.iter().flatten())
            .copied()
            .max()
            .unwrap_or(1),
    ) * 1.15;
    let caption = match &celery {
        Some(_) => {
            "POST → COMPLETED beside Celery's apply_async → SUCCESS, 1 stage of 0 ms".to_owned()
        }
        None => format!(
            "POST → COMPLETED, 1 stage of 0 ms, sequential ({} samples)",
            lat.len()
        ),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..hi, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms)")
        .y_desc("tasks")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .draw()?;
    let bars = |counts: &[u32], color: RGBColor| {
        counts
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let x0 = i as f64 * width;
                Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.92, f64::from(c))],
                    color.mix(0.5).filled(),
                )
            })
            .collect::<Vec<_>>()
    };
    chart
        .draw_series(bars(&counts, BLUE))?
        .label(format!("Taskforge ({} samples)", lat.len()))
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], BLUE.mix(0.5).filled()));
    let orange = RGBColor(230, 120, 0);
    let mut lines = vec![
        (p50, format!("Taskforge p50 {p50:.2} ms"), GREEN),
        (p99, format!("Taskforge p99 {p99:.2} ms"), RED),
    ];
    if let (Some((label, samples)), Some(cc)) = (&celery, &celery_counts) {
        chart
            .draw_series(bars(cc, orange))?
            .label(format!("{label} ({} samples)", samples.len()))
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 20, y + 5)], orange.mix(0.5).filled())
            });
        let (c50, c99) = (
            stats::percentile(samples, 50.0),
            stats::percentile(samples, 99.0),
        );
        lines.push((c50, format!("Celery p50 {c50:.2} ms"), orange));
        lines.push((c99, format!("Celery p99 {c99:.2} ms"), MAGENTA));
    }
    lines.push((5.0, "goal: p99 < 5 ms".to_owned(), BLACK));
    for (x, label, color) in lines {
        if x.is_nan() || x > hi {
            continue;
        }
        chart
            .draw_series(LineSeries::new([(x, 0.0), (x, top)], color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}

fn throughput(r: &Results, levels: &[usize], area: &Area<'_>) -> anyhow::Result<()> {
    let limit = r.median("limit.publish_w64");
    let redis = r.median("limit.redis_create");
    // x is log2(clients), labelled with the client count.
    let points: Vec<(f64, f64, f64, f64)> = levels
        .iter()
        .filter_map(|&c| {
            let runs = r.values.get(&format!("create.c{c}.rate"))?;
            let (lo, hi) = stats::min_max(runs);
            Some(((c as f64).log2(), stats::median(runs), lo, hi))
        })
        .collect();
    let top = points
        .iter()
        .map(|p| p.3)
        .chain(limit)
        .chain(redis)
        .fold(1.0f64, f64::max)
        * 1.15;
    let (x0, x1) = (-0.3f64, 6.6f64);
    let mut chart = ChartBuilder::on(area)
        .caption(
            "POST /tasks per second against client concurrency",
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(65)
        .build_cartesian_2d(x0..x1, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients (log scale)")
        .y_desc("tasks/s")
        .x_labels(8)
        .x_label_formatter(&|x| format!("{:.0}", x.exp2()))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.0, p.1)),
            BLUE.stroke_width(2),
        ))?
        .label("Taskforge create (median of runs)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart.draw_series(
        points
            .iter()
            .map(|p| Circle::new((p.0, p.1), 5, BLUE.filled())),
    )?;
    chart.draw_series(
        points
            .iter()
            .map(|p| PathElement::new([(p.0, p.2), (p.0, p.3)], BLUE.stroke_width(1))),
    )?;
    chart.draw_series(points.iter().map(|p| {
        Text::new(
            format!("{:.0}", p.1),
            (p.0 + 0.1, p.1),
            ("sans-serif", 13).into_font(),
        )
    }))?;
    let mut lines = Vec::new();
    if let Some(l) = limit {
        lines.push((
            l,
            format!("RabbitMQ publish+confirm, window 64: {l:.0}/s"),
            RED,
        ));
        lines.push((
            0.6 * l,
            format!("goal at 64 clients: 60 % = {:.0}/s", 0.6 * l),
            MAGENTA,
        ));
    }
    if let Some(rd) = redis {
        lines.push((rd, format!("Redis create commands alone: {rd:.0}/s"), GREEN));
    }
    for (y, label, color) in lines {
        chart
            .draw_series(LineSeries::new([(x0, y), (x1, y)], color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::MiddleRight)
        .draw()?;
    Ok(())
}
