//! PNG charts of a run (plotters, bitmap backend): throughput, packet rate,
//! request/response latency and CNI ADD latency per variant, the scale
//! phase, and the ipv6 phase. Bars are medians, whiskers span min–max.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::cni;
use crate::ipv6::{self, Ipv6Result, Lan6};
use crate::report::{self, Metric, Results};
use crate::stats::Summary;

/// Fonts tried, in order, for the charts' text (`fonts-dejavu-core`).
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Family name the charts use.
const FAMILY: &str = "sans-serif";

/// The chart files a run writes, relative to its output directory.
pub const FILES: [&str; 5] = [
    "throughput.png",
    "packet-rate.png",
    "latency.png",
    "cni-add.png",
    "scale.png",
];

/// The ipv6 phase's chart, written when the run has its numbers.
pub const IPV6_FILE: &str = "ipv6.png";

/// Registers a system TTF with plotters (ab_glyph has no font discovery).
fn register_fonts() -> Result<()> {
    let path = FONTS
        .iter()
        .find(|p| Path::new(p).is_file())
        .with_context(|| {
            format!("no font for the charts: install fonts-dejavu-core ({FONTS:?})")
        })?;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
    // plotters keeps a &'static reference for the process's lifetime; the
    // charts are drawn once per run, so leaking one font file is fine.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    for style in [FontStyle::Normal, FontStyle::Bold] {
        plotters::style::register_font(FAMILY, style, bytes)
            .map_err(|_| anyhow!("{path} is not a usable TrueType font"))?;
    }
    Ok(())
}

/// The colour of a case (`lanlink/1k`, `bridge/10k`, a variant name …).
fn color(case: &str) -> RGBColor {
    match case {
        "limit" => RGBColor(127, 127, 127),
        "lanlink" | "lanlink/0" => RGBColor(31, 119, 180),
        "lanlink/1k" => RGBColor(74, 152, 201),
        "lanlink/10k" => RGBColor(130, 189, 227),
        "bridge" | "bridge/0" => RGBColor(253, 174, 107),
        "bridge/1k" => RGBColor(241, 105, 19),
        "bridge/10k" => RGBColor(190, 40, 40),
        _ => RGBColor(80, 80, 80),
    }
}

/// One bar: label, colour key, summary.
struct Bar {
    label: String,
    color: String,
    summary: Summary,
}

/// Writes every chart of `results` into `dir`; returns the files written.
pub fn write_all(results: &Results, dir: &Path) -> Result<Vec<PathBuf>> {
    register_fonts()?;
    let mut written = Vec::new();
    let datapath = |metric: Metric, scale: f64| -> Vec<Bar> {
        results
            .datapath
            .iter()
            .filter_map(|c| {
                let s = c.metrics.get(metric.key)?;
                Some(Bar {
                    label: c.case.clone(),
                    color: c.case.clone(),
                    summary: scaled(s, scale),
                })
            })
            .collect()
    };

    let panel = |title, unit, key, scale| (title, unit, datapath(key, scale));
    // The datapath charts: file, size, panels (title, unit, bars).
    let datapath_charts = [
        (
            FILES[0],
            (1400, 520),
            vec![
                panel("TCP pod → LAN host", "Gbit/s", report::TCP_POD_LAN, 1.0),
                panel(
                    "TCP pod → pod (same node)",
                    "Gbit/s",
                    report::TCP_POD_POD,
                    1.0,
                ),
            ],
        ),
        (
            FILES[1],
            (800, 520),
            vec![panel(
                "UDP 64-byte frames pod → LAN host",
                "Mpps delivered",
                report::UDP_PPS,
                1e-6,
            )],
        ),
        (
            FILES[2],
            (1400, 520),
            vec![
                panel("1-byte TCP request/response p50", "µs", report::RR_P50, 1.0),
                panel("1-byte TCP request/response p99", "µs", report::RR_P99, 1.0),
            ],
        ),
    ];
    for (file, size, panels) in datapath_charts {
        let path = dir.join(file);
        draw_panels(&path, size, &panels, false)?;
        written.push(path);
    }

    let path = dir.join(FILES[3]);
    let mut cni = Vec::new();
    for c in &results.cni_add {
        let (color, name) = match c.plugin.as_str() {
            cni::LANLINK => ("lanlink", "lanlink"),
            cni::LANLINK_NO_PROBE => ("lanlink/1k", "no probe"),
            _ => ("bridge", "reference"),
        };
        for (what, v) in [("p50", c.p50_ms), ("p99", c.p99_ms)] {
            if let Some(v) = v {
                cni.push(Bar {
                    label: format!("{name} {what}"),
                    color: color.to_owned(),
                    summary: Summary::of("ms", &[v]).unwrap_or_default(),
                });
            }
        }
    }
    draw_panels(
        &path,
        (800, 520),
        &[(
            "CNI ADD incl. DHCP lease (log scale; no probe = lanlink, arpProbeMs 0)",
            "ms",
            cni,
        )],
        true,
    )?;
    written.push(path);

    let path = dir.join(FILES[4]);
    draw_scale(&path, results)?;
    written.push(path);
    if let Some(r) = &results.ipv6 {
        let path = dir.join(IPV6_FILE);
        draw_ipv6(&path, r)?;
        written.push(path);
    }
    Ok(written)
}

/// The ipv6 phase's chart alone (a run of that phase only): its file.
pub fn write_ipv6(r: &Ipv6Result, dir: &Path) -> Result<PathBuf> {
    register_fonts()?;
    let path = dir.join(IPV6_FILE);
    draw_ipv6(&path, r)?;
    Ok(path)
}

/// Two panels: ADD latency per LAN and series (median, min–max whisker,
/// log scale), and TCP pod → LAN host per case.
fn draw_ipv6(path: &Path, r: &Ipv6Result) -> Result<()> {
    let mut add = Vec::new();
    for a in &r.add {
        let Some(summary) = Summary::of("ms", &a.samples_ms) else {
            continue;
        };
        let lan = if a.lan == Lan6::Slaac.name() {
            "SLAAC"
        } else {
            "DHCPv6"
        };
        let (series, color) = match a.series.as_str() {
            s if s == ipv6::AUTO.name => ("auto", "lanlink"),
            s if s == ipv6::AUTO_NO_PROBE.name => ("auto/0", "lanlink/10k"),
            _ => ("off/0", "limit"),
        };
        add.push(Bar {
            label: format!("{lan} {series}"),
            color: color.to_owned(),
            summary,
        });
    }
    let tcp: Vec<Bar> = r
        .tcp_pod_lan
        .iter()
        .filter_map(|t| {
            Some(Bar {
                label: t.case.clone(),
                color: match (t.variant.as_str(), t.family) {
                    ("limit", _) => "limit",
                    (_, 6) => "lanlink",
                    _ => "lanlink/10k",
                }
                .to_owned(),
                summary: t.gbps.clone()?,
            })
        })
        .collect();
    let root = BitMapBackend::new(path, (1400, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let areas = root.split_evenly((1, 2));
    bar_chart(
        &areas[0],
        &(
            "CNI ADD, log scale (/0: arpProbeMs 0; off: IPv4 only)",
            "ms",
            add,
        ),
        true,
    )?;
    bar_chart(
        &areas[1],
        &("TCP pod → LAN host over IPv6 (and IPv4)", "Gbit/s", tcp),
        false,
    )?;
    root.present()
        .map_err(plot_err)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn scaled(s: &Summary, k: f64) -> Summary {
    Summary {
        unit: s.unit.clone(),
        samples: s.samples.iter().map(|v| v * k).collect(),
        median: s.median * k,
        min: s.min * k,
        max: s.max * k,
    }
}

/// One PNG with one bar chart per panel, side by side.
fn draw_panels(path: &Path, size: (u32, u32), panels: &[Panel], log: bool) -> Result<()> {
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (panel, area) in panels.iter().zip(areas.iter()) {
        bar_chart(area, panel, log)?;
    }
    root.present()
        .map_err(plot_err)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotters: {e:?}")
}

/// A chart on `area` with the house frame: `title` on top, `x_labels`
/// pixels of labels below, 64 to the left.
fn framed<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    title: &str,
    x_labels: u32,
) -> ChartBuilder<'a, 'b, BitMapBackend<'b>> {
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, (FAMILY, 22))
        .margin(12)
        .x_label_area_size(x_labels)
        .y_label_area_size(64);
    builder
}

/// A panel of a chart: title, unit, bars.
type Panel<'a> = (&'a str, &'a str, Vec<Bar>);

/// Bars on `area`, on a linear axis from 0 or, with `log`, a log axis.
fn bar_chart(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    (title, unit, bars): &Panel,
    log: bool,
) -> Result<()> {
    // Integer ranges are inclusive: 0..n-1 gives exactly one segment per bar.
    let x = (0..bars.len().saturating_sub(1) as i32).into_segmented();
    let max = bars.iter().map(|b| b.summary.max).fold(0.0, f64::max);
    let builder = &mut framed(area, title, 36);
    if log {
        let bottom = bars
            .iter()
            .map(|b| b.summary.min)
            .fold(f64::INFINITY, f64::min)
            .clamp(0.1, 1.0)
            / 2.0;
        let y = (bottom..max.max(1.0) * 3.0).log_scale();
        let mut chart = builder.build_cartesian_2d(x, y).map_err(plot_err)?;
        draw_bars(&mut chart, unit, bars, bottom)
    } else {
        let y = 0f64..max.max(1e-9) * 1.15;
        let mut chart = builder.build_cartesian_2d(x, y).map_err(plot_err)?;
        draw_bars(&mut chart, unit, bars, 0.0)
    }
}

fn segment_label(labels: &[String], v: &SegmentValue<i32>) -> String {
    match v {
        SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
        _ => String::new(),
    }
}

/// Bars from `base` to the median, a min–max whisker, the median printed
/// above.
fn draw_bars<Y>(
    chart: &mut ChartContext<
        '_,
        BitMapBackend<'_>,
        Cartesian2d<
            plotters::coord::ranged1d::SegmentedCoord<plotters::coord::types::RangedCoordi32>,
            Y,
        >,
    >,
    unit: &str,
    bars: &[Bar],
    base: f64,
) -> Result<()>
where
    Y: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len())
        .x_label_formatter(&|v| segment_label(&labels, v))
        .x_label_style((FAMILY, 13))
        .y_desc(unit)
        .y_label_style((FAMILY, 13))
        .draw()
        .map_err(plot_err)?;
    for (i, b) in bars.iter().enumerate() {
        let i = i as i32;
        let mut rect = Rectangle::new(
            [
                (SegmentValue::Exact(i), base),
                (SegmentValue::Exact(i + 1), b.summary.median),
            ],
            color(&b.color).filled(),
        );
        rect.set_margin(0, 0, 8, 8);
        chart.draw_series(std::iter::once(rect)).map_err(plot_err)?;
        if b.summary.max > b.summary.min {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![
                        (SegmentValue::CenterOf(i), b.summary.min),
                        (SegmentValue::CenterOf(i), b.summary.max),
                    ],
                    BLACK.stroke_width(2),
                )))
                .map_err(plot_err)?;
        }
        let m = b.summary.median;
        let text = match m {
            m if m >= 100.0 => format!("{m:.0}"),
            m if m >= 10.0 => format!("{m:.1}"),
            m if m >= 1.0 => format!("{m:.2}"),
            m => format!("{m:.3}"),
        };
        chart
            .draw_series(std::iter::once(Text::new(
                text,
                (
                    SegmentValue::CenterOf(i),
                    b.summary.max.max(b.summary.median),
                ),
                (FAMILY, 13)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )))
            .map_err(plot_err)?;
    }
    Ok(())
}

/// Two panels: TCP pod → LAN host and request/response p50 against the
/// number of pods attached, one line per variant.
fn draw_scale(path: &Path, results: &Results) -> Result<()> {
    let root = BitMapBackend::new(path, (1400, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let areas = root.split_evenly((1, 2));
    let max_pods = results.scale.iter().map(|s| s.pods).max().unwrap_or(1) as f64;
    for (area, metric, title) in [
        (
            &areas[0],
            report::TCP_POD_LAN,
            "TCP pod → LAN host vs pods attached",
        ),
        (
            &areas[1],
            report::RR_P50,
            "Request/response p50 vs pods attached",
        ),
    ] {
        let top = results
            .scale
            .iter()
            .filter_map(|s| s.metrics.get(metric.key))
            .map(|s| s.max)
            .fold(0.0, f64::max)
            .max(1e-9)
            * 1.2;
        let mut chart = framed(area, title, 40)
            .build_cartesian_2d(0f64..max_pods * 1.05 + 1.0, 0f64..top)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("pods attached")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc(report::display_unit(metric))
            .label_style((FAMILY, 13))
            .draw()
            .map_err(plot_err)?;
        for v in ["limit", "lanlink", "bridge"] {
            let points: Vec<(f64, f64)> = results
                .scale
                .iter()
                .filter(|s| s.variant == v)
                .filter_map(|s| Some((s.pods as f64, s.metrics.get(metric.key)?.median)))
                .collect();
            let c = color(v);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    points.clone(),
                    c.stroke_width(3),
                )))
                .map_err(plot_err)?
                .label(v)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                });
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 5, c.filled())))
                .map_err(plot_err)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font((FAMILY, 14))
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(plot_err)?;
    }
    root.present()
        .map_err(plot_err)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::report::{CaseResult, CniResult, DATAPATH_METRICS, ScaleResult};

    fn metrics(v: f64) -> BTreeMap<String, Summary> {
        DATAPATH_METRICS
            .iter()
            .map(|m| {
                let s = Summary::of(m.unit, &[v, v * 1.1, v * 0.9]).unwrap();
                (m.key.to_owned(), s)
            })
            .collect()
    }

    #[test]
    fn writes_every_chart() {
        let mut r = Results::default();
        for (i, case) in ["limit", "lanlink/0", "bridge/10k"].iter().enumerate() {
            r.datapath.push(CaseResult {
                case: (*case).to_owned(),
                variant: case.split('/').next().unwrap().to_owned(),
                rules: 0,
                metrics: metrics(10.0 - i as f64),
            });
        }
        r.cni_add.push(CniResult {
            plugin: "lanlink".into(),
            samples_ms: vec![30.0],
            p50_ms: Some(30.0),
            p99_ms: Some(40.0),
            failures: Vec::new(),
        });
        for pods in [1, 50] {
            for v in ["limit", "lanlink", "bridge"] {
                r.scale.push(ScaleResult {
                    variant: v.to_owned(),
                    pods,
                    metrics: metrics(5.0),
                });
            }
        }
        let mut v6 = Ipv6Result::default();
        for lan in Lan6::ALL {
            for s in ipv6::SERIES {
                v6.add.push(ipv6::Add6Result {
                    lan: lan.name().to_owned(),
                    series: s.name.to_owned(),
                    samples_ms: vec![12.0, 15.0, 340.0],
                    ..ipv6::Add6Result::default()
                });
            }
        }
        v6.tcp_pod_lan.push(ipv6::Tcp6Result {
            case: "limit".into(),
            variant: "limit".into(),
            family: 6,
            address: String::new(),
            gbps: Summary::of("Gbit/s", &[10.0, 11.0]),
        });
        r.ipv6 = Some(v6);
        let dir = std::env::temp_dir().join(format!("xtask-charts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let written = write_all(&r, &dir);
        let files: Vec<_> = FILES
            .iter()
            .chain(std::iter::once(&IPV6_FILE))
            .map(|f| dir.join(f))
            .collect();
        let sizes: Vec<u64> = files
            .iter()
            .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(written.unwrap().len(), FILES.len() + 1);
        assert!(sizes.iter().all(|&s| s > 1000), "PNG sizes {sizes:?}");
    }
}
