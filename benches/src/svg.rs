//! Line charts as standalone SVG, drawn by `plotters` (SVG backend only):
//! axes with round ticks, optional log scales, one coloured line with
//! markers per series, and a legend. Enough for latency distributions and
//! throughput curves. What stays here is choosing each axis's range and
//! naming category positions (percentiles).

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use crate::report::{Chart, number};

const WIDTH: u32 = 720;
const HEIGHT: u32 = 400;
const COLOURS: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
];

/// One axis: its range in data units and whether it is logarithmic.
struct Axis {
    low: f64,
    high: f64,
    log: bool,
}

impl Axis {
    fn fit(values: impl Iterator<Item = f64>, log: bool) -> Self {
        let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
            low = low.min(v);
            high = high.max(v);
        }
        if !low.is_finite() {
            return Self {
                low: if log { 1.0 } else { 0.0 },
                high: 10.0,
                log,
            };
        }
        if log {
            low = 10f64.powf(low.log10().floor());
            high = 10f64.powf(high.log10().ceil().max(low.log10() + 1.0));
        } else {
            // Linear axes start at zero: ratios read honestly.
            low = low.min(0.0);
            high = if high <= low { low + 1.0 } else { high * 1.08 };
        }
        Self { low, high, log }
    }
}

/// The chart as an SVG document.
pub fn render(chart: &Chart) -> anyhow::Result<String> {
    let points = || chart.series.iter().flat_map(|s| s.points.iter());
    let x = Axis::fit(points().map(|p| p.0), chart.log_x);
    let y = Axis::fit(points().map(|p| p.1), chart.log_y);
    let (xr, yr) = (x.low..x.high, y.low..y.high);
    let mut svg = String::new();
    // Each combination of scales is its own coordinate type in plotters.
    match (x.log, y.log) {
        (false, false) => draw(chart, &mut svg, xr, yr),
        (true, false) => draw(chart, &mut svg, xr.log_scale(), yr),
        (false, true) => draw(chart, &mut svg, xr, yr.log_scale()),
        (true, true) => draw(chart, &mut svg, xr.log_scale(), yr.log_scale()),
    }
    .map_err(|e| anyhow::anyhow!("cannot draw chart {}: {e}", chart.name))?;
    Ok(svg)
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw<X, Y>(chart: &Chart, svg: &mut String, x: X, y: Y) -> DrawResult
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut plot = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(76)
        .build_cartesian_2d(x, y)?;
    let x_label = |v: &f64| {
        chart
            .x_ticks
            .iter()
            .find(|(at, _)| (at - v).abs() <= 1e-9 * at.abs().max(1.0))
            .map_or_else(|| number(*v), |(_, name)| name.clone())
    };
    let y_label = |v: &f64| number(*v);
    // Category positions (percentiles) get one label each.
    let x_labels = if chart.x_ticks.is_empty() {
        8
    } else {
        chart.x_ticks.len()
    };
    plot.configure_mesh()
        .x_labels(x_labels)
        .y_labels(6)
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .bold_line_style(RGBColor(0xe5, 0xe5, 0xe5))
        .light_line_style(WHITE)
        .draw()?;
    for (i, series) in chart.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let visible: Vec<(f64, f64)> = series
            .points
            .iter()
            .copied()
            .filter(|(a, b)| {
                a.is_finite()
                    && b.is_finite()
                    && (!chart.log_x || *a > 0.0)
                    && (!chart.log_y || *b > 0.0)
            })
            .collect();
        plot.draw_series(LineSeries::new(
            visible.iter().copied(),
            colour.stroke_width(2),
        ))?
        .label(series.name.as_str())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(3)));
        plot.draw_series(visible.iter().map(|p| Circle::new(*p, 3, colour.filled())))?;
    }
    if !chart.series.is_empty() {
        plot.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Series;

    /// The contents of every `<text>` element, trimmed (plotters puts them
    /// on lines of their own).
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = t.split_once('>')?.1;
                Some(body.split_once("</text>")?.0.trim().to_owned())
            })
            .collect()
    }

    fn chart(log_y: bool) -> Chart {
        Chart {
            name: "c".into(),
            title: "A & B".into(),
            x_label: "concurrency".into(),
            y_label: "ops/s".into(),
            log_x: true,
            log_y,
            x_ticks: Vec::new(),
            series: vec![
                Series {
                    name: "create".into(),
                    points: vec![(1.0, 100.0), (16.0, 1000.0), (64.0, 5000.0)],
                },
                Series {
                    name: "echo".into(),
                    points: vec![(1.0, 300.0), (16.0, 9000.0)],
                },
            ],
        }
    }

    #[test]
    fn draws_each_series_with_its_points_and_escapes_text() {
        let svg = render(&chart(false)).unwrap();
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<circle").count(), 5);
        assert!(svg.contains("A &amp; B"));
        let texts = texts(&svg);
        assert!(
            texts.iter().any(|t| t == "echo") && texts.iter().any(|t| t == "create"),
            "{texts:?}"
        );
    }

    #[test]
    fn log_axes_have_decade_ticks_and_drop_non_positive_points() {
        let mut c = chart(true);
        c.series[0].points.push((128.0, 0.0));
        let svg = render(&c).unwrap();
        assert_eq!(
            svg.matches("<circle").count(),
            5,
            "the zero point cannot be drawn on a log axis"
        );
        let texts = texts(&svg);
        for decade in ["100", "1,000", "10,000"] {
            assert!(
                texts.iter().any(|t| t == decade),
                "tick {decade} in {texts:?}"
            );
        }
    }

    #[test]
    fn category_positions_carry_their_names() {
        let mut c = chart(false);
        c.log_x = false;
        c.x_ticks = vec![
            (0.0, "p50".into()),
            (1.0, "p99".into()),
            (2.0, "max".into()),
        ];
        c.series = vec![Series {
            name: "create".into(),
            points: vec![(0.0, 1.0), (1.0, 3.0), (2.0, 9.0)],
        }];
        let svg = render(&c).unwrap();
        let texts = texts(&svg);
        for name in ["p50", "p99", "max"] {
            assert!(texts.iter().any(|t| t == name), "{name} in {texts:?}");
        }
    }

    #[test]
    fn empty_chart_still_renders() {
        let mut c = chart(false);
        c.series.clear();
        assert!(render(&c).unwrap().trim_end().ends_with("</svg>"));
    }
}
