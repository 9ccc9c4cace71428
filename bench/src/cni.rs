//! CNI measurements: ADD latency of lanlink against the reference `bridge`
//! + `dhcp` plugins, and batches of concurrent lanlink ADDs.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use lanlink_lab::NetNs;
use lanlink_lab::cni_exec;

use crate::report::{CniResult, ConcurrentResult};
use crate::stats::percentile;
use lanlink_lab::pods::leased_ip;

use crate::topo::{Pod, Topology, container_id};

/// The name of lanlink's series with its default netconf (a 300 ms ARP
/// probe of every leased address before use).
pub const LANLINK: &str = "lanlink";
/// lanlink with `ipam.arpProbeMs: 0`: no conflict probe, as the reference
/// `dhcp` plugin does.
pub const LANLINK_NO_PROBE: &str = "lanlink, arpProbeMs 0";
/// The reference plugins.
pub const REFERENCE: &str = "reference bridge+dhcp";

/// Adds `n` pods with each plugin, one ADD at a time, alternating lanlink
/// (default netconf), lanlink without the ARP probe and the reference;
/// checks each leased address against dnsmasq's lease file, then deletes
/// them all. Returns one result per series, in that order.
pub fn add_latency(topo: &Topology, n: usize) -> Result<Vec<CniResult>> {
    let mut results: Vec<CniResult> = [LANLINK, LANLINK_NO_PROBE, REFERENCE]
        .map(|plugin| CniResult {
            plugin: plugin.to_owned(),
            ..CniResult::default()
        })
        .into();
    let mut pods: [Vec<Pod>; 3] = Default::default();
    for i in 0..n {
        // Namespaces are made before the clock starts: a runtime has the
        // sandbox before it calls the plugin.
        let ns = NetNs::new(&format!("cni-ll-{i}"))?;
        let (out, took) = topo.lanlink.add(&topo.bin_dir, &ns)?;
        record(&mut results[0], &mut pods[0], ns, out.ok(), took);

        let ns = NetNs::new(&format!("cni-np-{i}"))?;
        let (out, took) = topo.lanlink.add_probing(&topo.bin_dir, &ns, Some(0))?;
        record(&mut results[1], &mut pods[1], ns, out.ok(), took);

        let ns = NetNs::new(&format!("cni-ref-{i}"))?;
        let (out, took) = topo.bridge.add(&ns)?;
        record(&mut results[2], &mut pods[2], ns, out.ok(), took);
    }
    // On the wire: every address the plugins reported is a dnsmasq lease.
    let leases = topo.lan.leases();
    for (result, pods) in results.iter_mut().zip(&pods) {
        for pod in pods {
            if !leases.iter().any(|l| l.ip == pod.ip) {
                result.failures.push(format!(
                    "{}: {} is not in dnsmasq's lease file",
                    pod.id, pod.ip
                ));
            }
        }
    }
    let [ll, np, rf] = &pods;
    for pod in ll.iter().chain(np) {
        topo.lanlink.del(&topo.bin_dir, pod)?;
    }
    for pod in rf {
        topo.bridge.del(pod)?;
    }
    for r in &mut results {
        r.p50_ms = percentile(&r.samples_ms, 50.0);
        r.p99_ms = percentile(&r.samples_ms, 99.0);
    }
    Ok(results)
}

fn record(
    r: &mut CniResult,
    pods: &mut Vec<Pod>,
    ns: NetNs,
    out: Result<serde_json::Value>,
    took: Duration,
) {
    match out.and_then(|v| leased_ip(&v)) {
        Ok(ip) => {
            r.samples_ms.push(took.as_secs_f64() * 1000.0);
            pods.push(Pod {
                server: None,
                id: container_id(&ns),
                ns,
                ip,
            });
        }
        Err(e) => r.failures.push(format!("{}: {e:#}", ns.name())),
    }
}

/// Starts a lanlink ADD (with `ipam.arpProbeMs` = `probe_ms`, `None`: the
/// default) for every namespace at once; returns each result, in order, and
/// the wall time from the first start to the last result.
pub fn add_at_once(
    topo: &Topology,
    namespaces: &[NetNs],
    probe_ms: Option<u64>,
) -> (Vec<Result<serde_json::Value>>, Duration) {
    let started = Instant::now();
    let outs = std::thread::scope(|s| {
        let handles: Vec<_> = namespaces
            .iter()
            .map(|ns| {
                s.spawn(move || {
                    topo.lanlink
                        .add_probing(&topo.bin_dir, ns, probe_ms)
                        .and_then(|(out, _)| out.ok())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("an ADD thread panicked")))
            })
            .collect()
    });
    (outs, started.elapsed())
}

/// Adds lanlink pods until the node has `total`, in batches of at most
/// `batch` ADDs started at once; every batch is timed and appended to
/// `batches` (also when one fails).
pub fn grow_lanlink(
    topo: &mut Topology,
    total: usize,
    batch: usize,
    batches: &mut Vec<ConcurrentResult>,
) -> Result<()> {
    loop {
        let attached = topo.attached(super::topo::Variant::Lanlink);
        if attached >= total {
            return Ok(());
        }
        let k = (total - attached).min(batch.max(1));
        let first = topo.lanlink.extra.len();
        let namespaces = (0..k)
            .map(|i| NetNs::new(&format!("ll-idle-{}", first + i)))
            .collect::<Result<Vec<_>>>()?;
        let (outs, wall) = add_at_once(topo, &namespaces, None);
        let mut failures = 0;
        let mut first_error = None;
        for (ns, out) in namespaces.into_iter().zip(outs) {
            match out.and_then(|v| leased_ip(&v)) {
                Ok(ip) => topo.lanlink.extra.push(Pod {
                    server: None,
                    id: container_id(&ns),
                    ns,
                    ip,
                }),
                Err(e) => {
                    failures += 1;
                    first_error.get_or_insert_with(|| format!("{}: {e:#}", ns.name()));
                    // DEL is idempotent and undoes whatever the ADD left;
                    // the pod is retried in a later batch.
                    let _ = cni_exec(
                        &topo.bin_dir.join(lanlink_lab::CNI_BIN),
                        &topo.lanlink.call("DEL", &ns),
                    );
                }
            }
        }
        batches.push(ConcurrentResult {
            pods: k,
            attached_before: attached,
            wall_ms: wall.as_secs_f64() * 1000.0,
            failures,
            first_error: first_error.clone(),
        });
        if failures == k {
            // No progress: retrying would loop forever.
            bail!(
                "all {k} concurrent lanlink ADDs failed, e.g. {}",
                first_error.unwrap_or_default()
            );
        }
    }
}
