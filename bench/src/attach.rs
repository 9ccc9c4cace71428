//! The `attach` phase: CNI ADD latency and a batch of concurrent ADDs with
//! each attach backend (`--attach tcx` and `--attach tc`), on the lab's
//! lanlink node. The agent is restarted with each backend in turn (a
//! hitless switch) and left with its default afterwards; every pod the
//! phase adds is deleted again.

use anyhow::{Context, Result};
use lanlink_lab::NetNs;
use lanlink_lab::pods::leased_ip;
use serde::{Deserialize, Serialize};

use crate::stats::percentile;
use crate::topo::{Pod, Topology, container_id};

/// The backends, in the order measured.
pub const BACKENDS: [&str; 2] = ["tcx", "tc"];

/// One backend's numbers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AttachResult {
    /// `tcx` or `tc`.
    pub backend: String,
    /// Wall time of each sequential ADD (`ipam.arpProbeMs: 0`, so the
    /// attach is a large part of it), ms.
    pub add_samples_ms: Vec<f64>,
    /// Median of those.
    pub add_p50_ms: Option<f64>,
    /// 99th percentile (nearest rank).
    pub add_p99_ms: Option<f64>,
    /// ADDs started at once in the batch.
    pub concurrent: usize,
    /// From the first start to the last result, ms.
    pub concurrent_wall_ms: f64,
    /// Failed ADDs, with the first error.
    pub failures: Vec<String>,
}

/// The phase: [`measure`], printed, its failures kept as the run's errors.
pub fn phase(topo: &mut Topology, n: usize, batch: usize, results: &mut crate::report::Results) {
    println!(
        "\n== attach backends: {n} sequential ADDs (arpProbeMs 0), then {batch} at once, each"
    );
    let series = match measure(topo, n, batch) {
        Ok(series) => series,
        Err(e) => return results.errors.push(format!("attach backends: {e:#}")),
    };
    for r in &series {
        println!(
            "--attach {:<4} ADD p50 {} p99 {}; {} concurrent ADDs {:.0} ms; {} failed",
            r.backend,
            crate::ms(r.add_p50_ms),
            crate::ms(r.add_p99_ms),
            r.concurrent,
            r.concurrent_wall_ms,
            r.failures.len()
        );
        let backend = &r.backend;
        results
            .errors
            .extend(r.failures.iter().map(|f| format!("attach {backend}: {f}")));
    }
    results.attach = series;
}

/// Measures each backend: `n` sequential ADDs without the ARP probe, then
/// `batch` ADDs started at once; deletes them all.
pub fn measure(topo: &mut Topology, n: usize, batch: usize) -> Result<Vec<AttachResult>> {
    let mut out = Vec::new();
    for backend in BACKENDS {
        topo.lanlink
            .agent
            .set_extra_args(vec!["--attach".into(), backend.into()]);
        topo.lanlink
            .agent
            .restart()
            .with_context(|| format!("restart the agent with --attach {backend}"))?;
        let measured = one_backend(topo, backend, n, batch);
        out.push(measured?);
    }
    topo.lanlink.agent.set_extra_args(Vec::new());
    topo.lanlink
        .agent
        .restart()
        .context("restart the agent with its defaults")?;
    Ok(out)
}

fn one_backend(topo: &Topology, backend: &str, n: usize, batch: usize) -> Result<AttachResult> {
    let mut r = AttachResult {
        backend: backend.to_owned(),
        concurrent: batch,
        ..AttachResult::default()
    };
    let mut pods = Vec::new();
    let mut keep = |ns: NetNs, out: Result<serde_json::Value>, r: &mut AttachResult| match out
        .and_then(|v| leased_ip(&v))
    {
        Ok(ip) => pods.push(Pod {
            server: None,
            id: container_id(&ns),
            ns,
            ip,
        }),
        Err(e) => r.failures.push(format!("{}: {e:#}", ns.name())),
    };
    for i in 0..n {
        let ns = NetNs::new(&format!("att-{backend}-{i}"))?;
        let (out, took) = topo.lanlink.add_probing(&topo.bin_dir, &ns, Some(0))?;
        if out.ok().is_ok() {
            r.add_samples_ms.push(took.as_secs_f64() * 1000.0);
        }
        keep(ns, out.ok(), &mut r);
    }
    r.add_p50_ms = percentile(&r.add_samples_ms, 50.0);
    r.add_p99_ms = percentile(&r.add_samples_ms, 99.0);

    let namespaces = (0..batch)
        .map(|i| NetNs::new(&format!("att-{backend}-c{i}")))
        .collect::<Result<Vec<_>>>()?;
    let (outs, wall) = crate::cni::add_at_once(topo, &namespaces, Some(0));
    r.concurrent_wall_ms = wall.as_secs_f64() * 1000.0;
    for (ns, out) in namespaces.into_iter().zip(outs) {
        keep(ns, out, &mut r);
    }
    for pod in &pods {
        topo.lanlink.del(&topo.bin_dir, pod)?;
    }
    Ok(r)
}
