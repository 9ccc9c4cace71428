//! The results document (`soak.json`) and its chart (the agent's RSS, fds
//! and tasks over the cycles).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use plotters::style::FontStyle;
use serde::Serialize;

use crate::plan::Planned;

/// One sample of the agent's resources.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// Cycles completed when it was taken.
    pub cycle: u32,
    /// Seconds since the start of the run.
    pub t_s: f64,
    /// The agent's pid (changes at each restart).
    pub pid: u32,
    /// `VmRSS` in KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// Tasks (threads).
    pub tasks: u64,
}

/// One injected fault, as logged.
#[derive(Clone, Debug, Serialize)]
pub struct FaultEvent {
    /// Its cycle.
    pub cycle: u32,
    /// Who injected it (`w0`…, `injector`).
    pub worker: String,
    /// What.
    pub kind: String,
    /// Its planned delay.
    pub delay_ms: u32,
    /// Seconds since the start of the run.
    pub t_s: f64,
    /// What happened.
    pub detail: String,
}

/// The bound the agent's resources must stay within after warm-up.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Bound {
    /// Samples before this many cycles are the warm-up.
    pub warmup_cycles: u32,
    /// The warm-up's maxima.
    pub warm_rss_kib: u64,
    /// The warm-up's maxima.
    pub warm_fds: u64,
    /// The warm-up's maxima.
    pub warm_tasks: u64,
    /// warm × 1.5 + 16 MiB.
    pub max_rss_kib: u64,
    /// warm × 1.5 + 16.
    pub max_fds: u64,
    /// warm × 1.5 + 8.
    pub max_tasks: u64,
    /// The largest values seen after warm-up.
    pub peak_rss_kib: u64,
    /// The largest values seen after warm-up.
    pub peak_fds: u64,
    /// The largest values seen after warm-up.
    pub peak_tasks: u64,
}

/// The whole document.
#[derive(Clone, Debug, Serialize)]
pub struct Results {
    /// Cycles run (one pod's ADD + DEL each).
    pub cycles: u32,
    /// The seed (`--seed` replays the fault sequence).
    pub seed: u64,
    /// Concurrent workers.
    pub workers: u32,
    /// Wall time in seconds.
    pub duration_s: f64,
    /// Fault kind → times injected.
    pub faults: BTreeMap<String, u64>,
    /// CNI call outcome → count.
    pub calls: BTreeMap<String, u64>,
    /// Object kind → most left over at any checkpoint or at the end.
    pub leaks: BTreeMap<String, u64>,
    /// Server leases left over that are not the agent's doing, by reason
    /// (`server_lease_nak`: refused by the NAK fault; `server_lease_released_in_outage`:
    /// DHCPRELEASE sent while dnsmasq was down or the uplink was): the
    /// most at once. They expire on the server.
    pub tolerated: BTreeMap<String, u64>,
    /// The agent's RSS, fds and tasks over the run.
    pub resources: Vec<Sample>,
    /// The bound they were held to.
    pub resource_bound: Bound,
    /// Checkpoints run.
    pub checkpoints: u32,
    /// What failed (empty on a passing run).
    pub failures: Vec<String>,
    /// The planned fault sequence (what `--seed` replays).
    pub plan: Vec<Planned>,
    /// The faults as injected.
    pub fault_log: Vec<FaultEvent>,
}

/// Fonts tried for the chart's text (`fonts-dejavu-core`), as bench/.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

fn register_fonts() -> Result<()> {
    let path = FONTS
        .iter()
        .find(|p| Path::new(p).is_file())
        .with_context(|| format!("no font for the chart: install fonts-dejavu-core ({FONTS:?})"))?;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
    // plotters keeps a &'static reference; one font per run.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    for style in [FontStyle::Normal, FontStyle::Bold] {
        plotters::style::register_font("sans-serif", style, bytes)
            .map_err(|_| anyhow!("{path} is not a usable TrueType font"))?;
    }
    Ok(())
}

/// Writes the document as pretty JSON.
pub fn write_json(results: &Results, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(results)?;
    std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))
}

/// Draws RSS (MiB), fds and tasks over completed cycles.
pub fn write_chart(results: &Results, path: &Path) -> Result<()> {
    register_fonts()?;
    let s = &results.resources;
    let max_cycle = s.iter().map(|x| x.cycle).max().unwrap_or(1).max(1);
    let root = BitMapBackend::new(path, (1200, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (top, bottom) = root.split_vertically(350);
    let rss_max = s.iter().map(|x| x.rss_kib).max().unwrap_or(1) as f64 / 1024.0;
    let mut c = ChartBuilder::on(&top)
        .caption(
            format!(
                "lanlinkd RSS over {} soak cycles (seed {})",
                results.cycles, results.seed
            ),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(
            0u32..max_cycle,
            0f64..(rss_max.max(results.resource_bound.max_rss_kib as f64 / 1024.0) * 1.1).max(1.0),
        )
        .map_err(|e| anyhow!("{e}"))?;
    c.configure_mesh()
        .x_desc("cycles completed")
        .y_desc("RSS (MiB)")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    c.draw_series(LineSeries::new(
        s.iter().map(|x| (x.cycle, x.rss_kib as f64 / 1024.0)),
        &RGBColor(31, 119, 180),
    ))
    .map_err(|e| anyhow!("{e}"))?
    .label("RSS")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RGBColor(31, 119, 180)));
    let bound = results.resource_bound.max_rss_kib as f64 / 1024.0;
    if bound > 0.0 {
        c.draw_series(LineSeries::new(
            [(0, bound), (max_cycle, bound)],
            RGBColor(190, 40, 40).stroke_width(1),
        ))
        .map_err(|e| anyhow!("{e}"))?
        .label("bound")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RGBColor(190, 40, 40)));
    }
    c.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;

    let y_max = s.iter().map(|x| x.fds.max(x.tasks)).max().unwrap_or(1) as f64;
    let y_max = y_max
        .max(results.resource_bound.max_fds as f64)
        .max(results.resource_bound.max_tasks as f64);
    let mut c = ChartBuilder::on(&bottom)
        .caption("lanlinkd file descriptors and tasks", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0u32..max_cycle, 0f64..(y_max * 1.1).max(1.0))
        .map_err(|e| anyhow!("{e}"))?;
    c.configure_mesh()
        .x_desc("cycles completed")
        .y_desc("count")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (label, color, get, bound) in [
        (
            "fds",
            RGBColor(241, 105, 19),
            (|x: &Sample| x.fds) as fn(&Sample) -> u64,
            results.resource_bound.max_fds,
        ),
        (
            "tasks",
            RGBColor(44, 160, 44),
            |x: &Sample| x.tasks,
            results.resource_bound.max_tasks,
        ),
    ] {
        c.draw_series(LineSeries::new(
            s.iter().map(|x| (x.cycle, get(x) as f64)),
            &color,
        ))
        .map_err(|e| anyhow!("{e}"))?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        if bound > 0 {
            c.draw_series(LineSeries::new(
                [(0, bound as f64), (max_cycle, bound as f64)],
                color.mix(0.5).stroke_width(1),
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label(format!("{label} bound"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.mix(0.5)));
        }
    }
    c.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
