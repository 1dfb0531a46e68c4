//! The suite's plots, rendered to SVG with plotters: latency CDF, latency against call rate,
//! memory against connected agents.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

const COLOURS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
];

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("plot: {e}")
}

/// Draws the series' legend, boxed, at `position`.
fn legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()
        .map_err(err)
}

/// Latency CDF (log latency axis), one line per series.
pub fn cdf(path: &Path, series: &[(String, Histogram<u64>)], title: &str) -> anyhow::Result<()> {
    let lo = series
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(_, h)| h.min())
        .min()
        .unwrap_or(1)
        .max(1) as f64;
    let hi = series
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(_, h)| h.max())
        .max()
        .unwrap_or(10)
        .max(10) as f64;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((lo * 0.8..hi * 1.25).log_scale(), 0.0..100.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("latency (µs, log scale)")
        .y_desc("calls at or below (%)")
        .draw()
        .map_err(err)?;
    for (i, (name, h)) in series.iter().enumerate() {
        if h.is_empty() {
            continue;
        }
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<(f64, f64)> = h
            .iter_quantiles(8)
            .map(|v| {
                (
                    v.value_iterated_to().max(1) as f64,
                    v.quantile_iterated_to() * 100.0,
                )
            })
            .collect();
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(err)?
            .label(format!(
                "{name}: p50 {} µs, p99 {} µs",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99)
            ))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(err)?;
    Ok(())
}

/// One run of a rate ladder: (achieved calls/s, p50 µs, p99 µs, pops lost).
pub type RatePoint = (f64, u64, u64, usize);

/// p50 and p99 latency against the achieved call rate; one pair of lines per target.
pub fn by_rate(path: &Path, series: &[(String, Vec<RatePoint>)]) -> anyhow::Result<()> {
    let all = series.iter().flat_map(|(_, p)| p.iter());
    let (mut rmax, mut lmax, mut lmin) = (100.0f64, 10.0f64, f64::MAX);
    for &(r, p50, p99, _) in all {
        rmax = rmax.max(r);
        lmax = lmax.max(p99 as f64);
        lmin = lmin.min(p50.max(1) as f64);
    }
    let lmin = if lmin == f64::MAX { 1.0 } else { lmin };
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "INVITE → ringing against call rate (UDP, 1,000 agents)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (100.0..rmax * 1.3).log_scale(),
            (lmin * 0.7..lmax * 1.5).log_scale(),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("calls per second (log scale)")
        .y_desc("latency (µs, log scale)")
        .draw()
        .map_err(err)?;
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        for (q, dashed) in [("p50", false), ("p99", true)] {
            let line: Vec<(f64, f64)> = points
                .iter()
                .map(|&(r, p50, p99, _)| (r, if q == "p50" { p50 } else { p99 }.max(1) as f64))
                .collect();
            let style = if dashed {
                colour.mix(0.6).stroke_width(2)
            } else {
                colour.stroke_width(2)
            };
            chart
                .draw_series(LineSeries::new(line.clone(), style))
                .map_err(err)?
                .label(format!("{name} {q}"))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], style));
            chart
                .draw_series(
                    line.iter()
                        .map(|&(x, y)| Circle::new((x, y), 3, style.filled())),
                )
                .map_err(err)?;
        }
        // Runs that lost pops: marked with a cross on the p99 line.
        chart
            .draw_series(points.iter().filter(|p| p.3 > 0).map(|&(r, _, p99, _)| {
                Cross::new((r, p99.max(1) as f64), 7, colour.stroke_width(2))
            }))
            .map_err(err)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Process RSS against connected idle agents; one line per target.
pub fn memory(path: &Path, series: &[(String, Vec<(usize, f64)>)]) -> anyhow::Result<()> {
    let nmax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.0))
        .max()
        .unwrap_or(10) as f64;
    let mmax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.1))
        .fold(1.0f64, f64::max);
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Process RSS against idle agent WebSockets",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..nmax * 1.05, 0.0..mmax * 1.15)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("connected, authenticated agents")
        .y_desc("RSS (MiB)")
        .draw()
        .map_err(err)?;
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let line: Vec<(f64, f64)> = points.iter().map(|&(n, m)| (n as f64, m)).collect();
        chart
            .draw_series(LineSeries::new(line.clone(), colour.stroke_width(2)))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
        chart
            .draw_series(
                line.iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, colour.filled())),
            )
            .map_err(err)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(err)?;
    Ok(())
}
