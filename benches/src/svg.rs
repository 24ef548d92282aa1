//! Line charts as standalone SVG: axes with round ticks, optional log
//! scales, one coloured line with markers per series, and a legend. Enough
//! for latency distributions and throughput curves; no dependency.

use std::fmt::Write as _;

use crate::report::{Chart, number};

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLOURS: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

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
            return Self { low: if log { 1.0 } else { 0.0 }, high: 10.0, log };
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

    /// Where `v` falls, from 0 (low) to 1 (high).
    fn unit(&self, v: f64) -> f64 {
        if self.log {
            (v.max(self.low).log10() - self.low.log10()) / (self.high.log10() - self.low.log10())
        } else {
            (v - self.low) / (self.high - self.low)
        }
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let mut ticks = Vec::new();
            let mut t = self.low;
            while t <= self.high * 1.0001 {
                ticks.push(t);
                t *= 10.0;
            }
            return ticks;
        }
        let raw = (self.high - self.low) / 5.0;
        let magnitude = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(raw);
        let mut ticks = Vec::new();
        let mut t = (self.low / step).ceil() * step;
        while t <= self.high + step * 1e-9 {
            ticks.push(t);
            t += step;
        }
        ticks
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The chart as an SVG document.
pub fn render(chart: &Chart) -> String {
    let points = || chart.series.iter().flat_map(|s| s.points.iter());
    let x = Axis::fit(points().map(|p| p.0), chart.log_x);
    let y = Axis::fit(points().map(|p| p.1), chart.log_y);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let px = |v: f64| LEFT + x.unit(v) * plot_w;
    let py = |v: f64| TOP + (1.0 - y.unit(v)) * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(svg, r#"<text x="{}" y="22" font-size="15" font-weight="bold">{}</text>"#, LEFT, escape(&chart.title));
    // Grid and ticks.
    for t in y.ticks() {
        let at = py(t);
        let _ = writeln!(svg, r##"<line x1="{LEFT}" x2="{}" y1="{at:.1}" y2="{at:.1}" stroke="#e5e5e5"/>"##, LEFT + plot_w);
        let _ = writeln!(svg, r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#, LEFT - 6.0, at + 4.0, number(t));
    }
    let x_ticks: Vec<(f64, String)> =
        if chart.x_ticks.is_empty() { x.ticks().into_iter().map(|t| (t, number(t))).collect() } else { chart.x_ticks.clone() };
    for (t, label) in &x_ticks {
        let at = px(*t);
        let _ = writeln!(svg, r##"<line x1="{at:.1}" x2="{at:.1}" y1="{TOP}" y2="{}" stroke="#f0f0f0"/>"##, TOP + plot_h);
        let _ = writeln!(svg, r#"<text x="{at:.1}" y="{}" text-anchor="middle">{}</text>"#, TOP + plot_h + 18.0, escape(label));
    }
    let _ = writeln!(
        svg,
        r#"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 14.0,
        escape(&chart.x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + plot_h / 2.0,
        escape(&chart.y_label)
    );
    // Series and legend.
    for (i, series) in chart.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let visible: Vec<(f64, f64)> = series
            .points
            .iter()
            .copied()
            .filter(|(a, b)| a.is_finite() && b.is_finite() && (!chart.log_x || *a > 0.0) && (!chart.log_y || *b > 0.0))
            .collect();
        let path: Vec<String> = visible.iter().map(|(a, b)| format!("{:.1},{:.1}", px(*a), py(*b))).collect();
        if path.len() > 1 {
            let _ = writeln!(svg, r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#, path.join(" "));
        }
        for (a, b) in &visible {
            let _ = writeln!(svg, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#, px(*a), py(*b));
        }
        let ly = TOP + 10.0 + 20.0 * i as f64;
        let lx = WIDTH - RIGHT + 14.0;
        let _ = writeln!(svg, r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="3"/>"#, lx + 18.0);
        let _ = writeln!(svg, r#"<text x="{}" y="{}">{}</text>"#, lx + 24.0, ly + 4.0, escape(&series.name));
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Series;

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
                Series { name: "create".into(), points: vec![(1.0, 100.0), (16.0, 1000.0), (64.0, 5000.0)] },
                Series { name: "echo".into(), points: vec![(1.0, 300.0), (16.0, 9000.0)] },
            ],
        }
    }

    #[test]
    fn draws_each_series_with_its_points_and_escapes_text() {
        let svg = render(&chart(false));
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 5);
        assert!(svg.contains("A &amp; B"));
        assert!(svg.contains(">echo<"));
    }

    #[test]
    fn log_axes_have_decade_ticks_and_drop_non_positive_points() {
        let mut c = chart(true);
        c.series[0].points.push((128.0, 0.0));
        let svg = render(&c);
        assert_eq!(svg.matches("<circle").count(), 5, "the zero point cannot be drawn on a log axis");
        for decade in ["100", "1,000", "10,000"] {
            assert!(svg.contains(&format!(">{decade}<")), "tick {decade} in {svg}");
        }
    }

    #[test]
    fn empty_chart_still_renders() {
        let mut c = chart(false);
        c.series.clear();
        assert!(render(&c).ends_with("</svg>\n"));
    }
}
