//! The operator's side of the agent, metrics: the Prometheus/OpenMetrics
//! exposition on the socket is valid (parsed strictly) and changes as
//! traffic flows; the agent's structured JSON logs.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use cni_common::*;
use lanlink_lab::{Agent, AgentOptions, cmd, ping};
use serde_json::Value;

mod cni_common;

// ---------------------------------------------------------------------------
// The operator's side: metrics, CLI, logs.

/// One sample of a scrape.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed scrape: family types and samples.
#[derive(Debug, Default)]
struct Scrape {
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Scrape {
    /// The value of the sample `name` whose labels include `labels`; the sum
    /// over every match.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }
}

fn valid_name(name: &str, colons: bool) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':'))
}

/// Parses `name{k="v",...} value` (the exposition format's sample line).
fn parse_sample(line: &str) -> Result<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => bail!("no value"),
    };
    ensure!(valid_name(name, true), "bad metric name {name:?}");
    let mut labels = BTreeMap::new();
    let mut rest = rest;
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let end;
        loop {
            // key
            let start = chars
                .peek()
                .map(|(i, _)| *i)
                .context("unterminated labels")?;
            if body[start..].starts_with('}') {
                end = start + 1;
                break;
            }
            let eq = body[start..].find('=').context("label without =")? + start;
            let key = &body[start..eq];
            ensure!(valid_name(key, false), "bad label name {key:?}");
            ensure!(body[eq + 1..].starts_with('"'), "unquoted label value");
            while chars.peek().is_some_and(|(i, _)| *i <= eq + 1) {
                chars.next();
            }
            let mut value = String::new();
            loop {
                match chars.next().context("unterminated label value")? {
                    (_, '\\') => match chars.next().context("dangling escape")?.1 {
                        'n' => value.push('\n'),
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        c => bail!("bad escape \\{c}"),
                    },
                    (_, '"') => break,
                    (_, '\n') => bail!("newline in a label value"),
                    (_, c) => value.push(c),
                }
            }
            ensure!(
                labels.insert(key.to_owned(), value).is_none(),
                "label {key} twice"
            );
            match chars.next().context("unterminated labels")? {
                (_, ',') => {}
                (i, '}') => {
                    end = i + 1;
                    break;
                }
                (_, c) => bail!("unexpected {c:?} after a label"),
            }
        }
        rest = &body[end..];
    }
    let mut fields = rest
        .strip_prefix(' ')
        .context("no space before the value")?
        .split(' ');
    let value = match fields.next().context("no value")? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().with_context(|| format!("bad value {v:?}"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<f64>()
            .with_context(|| format!("bad timestamp {ts:?}"))?;
    }
    ensure!(fields.next().is_none(), "trailing fields (exemplars?)");
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses an OpenMetrics text exposition strictly: `# TYPE` before a
/// family's samples, samples named after their family with the suffixes its
/// type allows, families not interleaved, no duplicate series, counters
/// non-negative, histogram buckets cumulative up to `+Inf` = `_count`, and
/// `# EOF` last.
fn parse_openmetrics(text: &str) -> Result<Scrape> {
    let mut scrape = Scrape::default();
    let mut current: Option<String> = None;
    let mut done: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut lines = text.lines().enumerate().peekable();
    ensure!(
        text.ends_with("# EOF\n"),
        "the exposition does not end with # EOF"
    );
    while let Some((n, line)) = lines.next() {
        let at = || format!("line {}: {line:?}", n + 1);
        if line == "# EOF" {
            ensure!(lines.peek().is_none(), "{}: text after # EOF", at());
            break;
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let kind = parts.next().unwrap_or_default();
            let family = parts.next().with_context(at)?.to_owned();
            let arg = parts.next().unwrap_or_default();
            ensure!(valid_name(&family, true), "{}: bad family name", at());
            if current.as_deref() != Some(family.as_str()) {
                ensure!(
                    !done.contains(&family),
                    "{}: family {family} interleaved",
                    at()
                );
                if let Some(prev) = current.replace(family.clone()) {
                    done.push(prev);
                }
            }
            match kind {
                "TYPE" => {
                    ensure!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "info",
                            "unknown",
                            "stateset",
                            "summary",
                            "gaugehistogram"
                        ]
                        .contains(&arg),
                        "{}: unknown type",
                        at()
                    );
                    ensure!(
                        scrape.types.insert(family, arg.to_owned()).is_none(),
                        "{}: second TYPE",
                        at()
                    );
                }
                "HELP" | "UNIT" => {}
                _ => bail!("{}: unknown descriptor", at()),
            }
            continue;
        }
        ensure!(!line.starts_with('#'), "{}: stray comment", at());
        let sample = parse_sample(line).with_context(at)?;
        let family = current
            .clone()
            .with_context(|| format!("{}: sample before TYPE", at()))?;
        let kind = scrape
            .types
            .get(&family)
            .with_context(|| format!("{}: no TYPE for {family}", at()))?;
        let suffixes: &[&str] = match kind.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        ensure!(
            suffixes
                .iter()
                .any(|s| sample.name == format!("{family}{s}")),
            "{}: {} does not belong to {kind} family {family}",
            at(),
            sample.name
        );
        if kind == "counter" && sample.name.ends_with("_total") {
            ensure!(sample.value >= 0.0, "{}: negative counter", at());
        }
        let key = format!("{}{:?}", sample.name, sample.labels);
        ensure!(seen.insert(key), "{}: duplicate series", at());
        scrape.samples.push(sample);
    }
    // Histograms: cumulative buckets ending in +Inf == _count.
    for (family, kind) in &scrape.types {
        if kind != "histogram" {
            continue;
        }
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for s in scrape
            .samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
        {
            let mut labels = s.labels.clone();
            let le = labels.remove("le").context("bucket without le")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse()?
            };
            series
                .entry(format!("{labels:?}"))
                .or_default()
                .push((le, s.value));
        }
        for (labels, buckets) in series {
            ensure!(
                buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{family}{labels}: buckets not cumulative: {buckets:?}"
            );
            let last = buckets.last().context("no buckets")?;
            ensure!(last.0.is_infinite(), "{family}{labels}: no +Inf bucket");
            let count = scrape
                .samples
                .iter()
                .find(|s| {
                    s.name == format!("{family}_count") && format!("{:?}", s.labels) == labels
                })
                .with_context(|| format!("{family}{labels}: no _count"))?;
            ensure!(
                count.value == last.1,
                "{family}{labels}: +Inf bucket != _count"
            );
        }
    }
    Ok(scrape)
}

/// `curl --unix-socket <socket> http://localhost/metrics`, checked for its
/// status and content type, then parsed.
fn scrape(agent: &Agent) -> Result<Scrape> {
    let out = cmd::run_ok(
        Command::new("curl")
            .args(["-sS", "-i", "--max-time", "10", "--unix-socket"])
            .arg(agent.socket())
            .arg("http://localhost/metrics"),
        Duration::from_secs(15),
    )?;
    let (head, body) = out
        .split_once("\r\n\r\n")
        .context("no HTTP header in curl's output")?;
    ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    ensure!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    parse_openmetrics(body).with_context(|| format!("invalid exposition:\n{body}"))
}

#[test]
fn openmetrics_parser_is_strict() {
    let good = "# HELP a_total x\n# TYPE a counter\na_total{k=\"v\\\"q\"} 3\n\
        # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n# EOF\n";
    let s = parse_openmetrics(good).unwrap();
    assert_eq!(s.sum("a_total", &[("k", "v\"q")]), 3.0);
    for bad in [
        "a_total 1\n# EOF\n",                                                // no TYPE
        "# TYPE a counter\na 1\n# EOF\n", // counter without _total
        "# TYPE a counter\na_total 1\n",  // no EOF
        "# TYPE a gauge\na{k=v} 1\n# EOF\n", // unquoted
        "# TYPE a gauge\na 1\na 2\n# EOF\n", // duplicate
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n# EOF\n", // count
        "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# TYPE a gauge\n# EOF\n", // interleaved
    ] {
        assert!(parse_openmetrics(bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn metrics_are_valid_and_change_as_traffic_flows() -> Result<()> {
    let lab = lab_with(AgentOptions {
        extra_args: vec![
            "--metrics-addr".into(),
            "127.0.0.1:9658".into(),
            "--log-format".into(),
            "json".into(),
        ],
        env: vec![("LANLINK_LOG".into(), "debug".into())],
        ..AgentOptions::default()
    })?;
    let conf = netconf(&lab, "1.1.0");
    let pod = add(&lab, "metered", &conf)?;

    let before = scrape(&lab.agent)?;
    for (family, kind) in [
        ("lanlink_dataplane_packets", "counter"),
        ("lanlink_dataplane_bytes", "counter"),
        ("lanlink_dhcp_messages", "counter"),
        ("lanlink_dhcp_lease_events", "counter"),
        ("lanlink_dhcp_errors", "counter"),
        ("lanlink_endpoints", "gauge"),
        ("lanlink_endpoint_info", "gauge"),
        ("lanlink_endpoint_sent_packets", "counter"),
        ("lanlink_lease_info", "gauge"),
        ("lanlink_lease_expiry_timestamp_seconds", "gauge"),
        ("lanlink_api_request_duration_seconds", "histogram"),
    ] {
        ensure!(
            before.types.get(family).map(String::as_str) == Some(kind),
            "{family} is not a {kind}: {:?}",
            before.types.get(family)
        );
    }
    ensure!(before.sum("lanlink_endpoints", &[]) == 1.0);
    let who = [("container_id", pod.id.as_str()), ("ifname", "eth0")];
    ensure!(before.has(
        "lanlink_endpoint_info",
        &[("mac", &pod.mac), ("pod", &pod.id)]
    ));
    ensure!(before.has("lanlink_lease_info", &[("state", "bound"), who[0], who[1]]));
    // The ADD's DHCP exchange, and the ADD itself in the latency histogram.
    let dhcp = |s: &Scrape, direction: &str, kind: &str| {
        s.sum(
            "lanlink_dhcp_messages_total",
            &[("direction", direction), ("type", kind)],
        )
    };
    ensure!(dhcp(&before, "sent", "discover") >= 1.0);
    ensure!(dhcp(&before, "received", "ack") >= 1.0);
    ensure!(before.sum("lanlink_dhcp_lease_events_total", &[("event", "acquired")]) == 1.0);
    ensure!(
        before.sum(
            "lanlink_api_request_duration_seconds_count",
            &[
                ("route", "/v1/cni/add"),
                ("method", "POST"),
                ("status", "200")
            ]
        ) == 1.0
    );
    // Every verdict and drop reason is there, drops labelled as such.
    ensure!(before.has(
        "lanlink_dataplane_packets_total",
        &[("verdict", "drop_spoof_ip"), ("drop", "true")]
    ));

    // Traffic: 10 pings to the router and their replies.
    let p = ping(&pod.ns, ROUTER, 10, Duration::from_secs(10))?;
    ensure!(p.all_received(), "{}", p.summary);
    let after = scrape(&lab.agent)?;
    let grew =
        |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    let uplink = grew(
        "lanlink_dataplane_packets_total",
        &[("verdict", "redirect_uplink")],
    );
    let peer = grew(
        "lanlink_dataplane_packets_total",
        &[("verdict", "redirect_peer")],
    );
    ensure!(uplink >= 10.0, "redirect_uplink grew by {uplink}");
    ensure!(peer >= 10.0, "redirect_peer grew by {peer}");
    ensure!(
        grew(
            "lanlink_dataplane_bytes_total",
            &[("verdict", "redirect_uplink")]
        ) >= 10.0 * 98.0,
        "redirect_uplink bytes"
    );
    let sent = grew("lanlink_endpoint_sent_packets_total", &who);
    ensure!(sent >= 10.0, "the pod's sent packets grew by {sent}");
    ensure!(
        grew(
            "lanlink_api_request_duration_seconds_count",
            &[("route", "/metrics")]
        ) >= 1.0
    );

    // The TCP listener serves the same, and only /metrics.
    let tcp = lab.node.ns().run_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "http://127.0.0.1:9658/metrics",
    ])?;
    let tcp = parse_openmetrics(&tcp)?;
    ensure!(tcp.has("lanlink_endpoint_info", &[("mac", &pod.mac)]));
    let status = lab.node.ns().run_ok(&[
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
        "http://127.0.0.1:9658/v1/status",
    ])?;
    ensure!(
        status == "404",
        "the CNI API must not be served over TCP: {status}"
    );

    // Structured logs: JSON lines, debug level from LANLINK_LOG.
    let log = lab.agent.log();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("not a JSON log line: {l}")))
        .collect::<Result<_>>()?;
    ensure!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["fields"].is_object())
    );
    ensure!(
        lines.iter().any(|l| l["level"] == "DEBUG"),
        "LANLINK_LOG=debug logged nothing at debug"
    );

    verb(&lab, "DEL", &pod.id, Some(pod.ns.path()), &conf)?.ok_silent()?;
    let gone = scrape(&lab.agent)?;
    ensure!(gone.sum("lanlink_endpoints", &[]) == 0.0);
    ensure!(!gone.has("lanlink_lease_info", &[]));
    ensure!(dhcp(&gone, "sent", "release") == 1.0);
    ensure!(gone.sum("lanlink_dhcp_lease_events_total", &[("event", "released")]) == 1.0);
    Ok(())
}

/// The value of the one sample `name` with `labels`, failing if absent.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
    let mut m = s.matching(name, labels);
    let v = m
        .next()
        .with_context(|| format!("no {name} {labels:?} in the scrape"))?
        .value;
    ensure!(m.next().is_none(), "more than one {name} {labels:?}");
    Ok(v)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Waits (≤ `timeout`) for a scrape that satisfies `pred`; returns it.
fn scrape_until(
    agent: &Agent,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Scrape) -> bool,
) -> Result<Scrape> {
    lanlink_lab::wait_until(timeout, what, || {
        let s = scrape(agent)?;
        Ok(pred(&s).then_some(s))
    })
}

/// The metrics the first scenario does not check, each present with a
/// plausible value that moves when it should: `lanlink_agent_ready` (1,
/// then 0 while the uplink is down, 1 again); `lanlink_flow_gc_runs_total`
/// (grows with every flow pass); `lanlink_flows` (host-routed flows the
/// node opens to a pod are counted, then gone once idle past
/// `--flow-timeout`) and `lanlink_flows_expired_total` (grows by those);
/// `lanlink_lease_renewal_timestamp_seconds` (T1 of the pod's lease: after
/// now and before its expiry, and later after a renewal).
#[test]
fn flow_ready_and_renewal_metrics_are_present_and_move() -> Result<()> {
    lanlink_lab::require_root();
    // dnsmasq's shortest lease with T1 at 4 s, so a renewal comes soon.
    let lab = lanlink_lab::OneNode::start_with(
        lanlink_lab::LanOptions {
            lease_secs: 120,
            extra_args: vec!["--dhcp-option=option:T1,4".into()],
            ..lanlink_lab::LanOptions::default()
        },
        AgentOptions {
            extra_args: vec!["--flow-timeout".into(), "2".into()],
            ..AgentOptions::default()
        },
    )?;
    let first = scrape(&lab.agent)?;
    for (family, kind) in [
        ("lanlink_agent_ready", "gauge"),
        ("lanlink_flows_expired", "counter"),
        ("lanlink_flow_gc_runs", "counter"),
    ] {
        ensure!(
            first.types.get(family).map(String::as_str) == Some(kind),
            "{family} is not a {kind}: {:?}",
            first.types.get(family)
        );
    }
    ensure!(value(&first, "lanlink_agent_ready", &[])? == 1.0);

    // The flow pass runs every second (--flow-timeout 2, divided by 4,
    // at least 1 s): its run counter grows, and `lanlink_flows` is there.
    let runs0 = value(&first, "lanlink_flow_gc_runs_total", &[])?;
    let later = scrape_until(
        &lab.agent,
        "two more flow passes",
        Duration::from_secs(6),
        |s| s.sum("lanlink_flow_gc_runs_total", &[]) >= runs0 + 2.0,
    )?;
    ensure!(
        later.types.get("lanlink_flows").map(String::as_str) == Some("gauge"),
        "lanlink_flows after a pass: {:?}",
        later.types.get("lanlink_flows")
    );
    let expired0 = value(&later, "lanlink_flows_expired_total", &[])?;

    // Host-routed flows: the node pings the pod (flow_to_host, learnt).
    let conf = netconf(&lab, "1.1.0");
    let pod = add(&lab, "flows", &conf)?;
    let p = ping(lab.node.ns(), pod.ip, 3, Duration::from_secs(5))?;
    ensure!(p.all_received(), "node → pod: {}", p.summary);
    let with_flows = scrape_until(
        &lab.agent,
        "lanlink_flows ≥ 1",
        Duration::from_secs(5),
        |s| s.sum("lanlink_flows", &[]) >= 1.0,
    )?;
    let counted = value(&with_flows, "lanlink_flows", &[])?;
    let idle = scrape_until(
        &lab.agent,
        "the flows to expire",
        Duration::from_secs(10),
        |s| s.sum("lanlink_flows", &[]) == 0.0,
    )?;
    let expired = value(&idle, "lanlink_flows_expired_total", &[])? - expired0;
    ensure!(
        expired >= 1.0,
        "{counted} flows counted, gone, but lanlink_flows_expired_total grew by {expired}"
    );
    eprintln!("lanlink_flows {counted} → 0, lanlink_flows_expired_total +{expired}");

    // The renewal timestamp: T1 of the pod's lease, after now, before the
    // expiry; a renewal moves it later.
    let who = [("container_id", pod.id.as_str()), ("ifname", "eth0")];
    let s = scrape(&lab.agent)?;
    ensure!(
        s.types
            .get("lanlink_lease_renewal_timestamp_seconds")
            .map(String::as_str)
            == Some("gauge"),
        "the renewal timestamp is not a gauge: {:?}",
        s.types.get("lanlink_lease_renewal_timestamp_seconds")
    );
    let renew = value(&s, "lanlink_lease_renewal_timestamp_seconds", &who)?;
    let expiry = value(&s, "lanlink_lease_expiry_timestamp_seconds", &who)?;
    let now = unix_now();
    ensure!(
        renew > now - 1.0 && renew <= now + 5.0 && renew < expiry && expiry <= now + 121.0,
        "renewal at {renew}, expiry at {expiry}, now {now}"
    );
    let renewed = scrape_until(
        &lab.agent,
        "the renewal timestamp to move",
        Duration::from_secs(10),
        |s| s.sum("lanlink_lease_renewal_timestamp_seconds", &who) > renew,
    )?;
    ensure!(
        renewed.sum("lanlink_dhcp_lease_events_total", &[("event", "renewed")]) >= 1.0,
        "the timestamp moved without a renewal"
    );

    // Ready follows the uplink: 0 while it is down, 1 once it is up.
    lab.node.ns().ip(&["link", "set", "eth0", "down"])?;
    let down = scrape_until(&lab.agent, "ready 0", Duration::from_secs(5), |s| {
        s.sum("lanlink_agent_ready", &[]) == 0.0
    });
    lab.node.ns().ip(&["link", "set", "eth0", "up"])?;
    down?;
    scrape_until(&lab.agent, "ready 1 again", Duration::from_secs(5), |s| {
        s.sum("lanlink_agent_ready", &[]) == 1.0
    })?;
    verb(&lab, "DEL", &pod.id, Some(pod.ns.path()), &conf)?.ok_silent()?;
    Ok(())
}

/// `drop_expired` end to end: a 10 s Kea lease (T1 4 s, T2 7 s), Kea
/// stopped so the renewal and the rebinding fail, the lease expires; the
/// pod, which keeps sending from the address it had (put back by hand, as
/// a pod that ignores the loss would), reaches nothing, and its frames are
/// counted under `drop_expired` node-wide and for the pod in the metrics.
/// The same ping before the expiry is the control: it gets through and
/// counts nothing there.
#[test]
fn an_expired_lease_drops_the_pods_traffic_and_counts_it() -> Result<()> {
    use lanlink_lab::{Kea, KeaOptions, Lan, LanOptions, Node, OneNode};
    lanlink_lab::require_root();
    let lan = Lan::new(LanOptions {
        extra_args: vec![Kea::SILENCE_DNSMASQ.into()],
        ..LanOptions::default()
    })?;
    let mut kea = Kea::start(
        &lan,
        KeaOptions {
            valid_lifetime: 10,
            renew_timer: Some(4),
            rebind_timer: Some(7),
            ..KeaOptions::default()
        },
    )?;
    let host = lan.add_host("host", OneNode::HOST_IP)?;
    let node = Node::new(&lan, "node", OneNode::NODE_IP)?;
    let agent = Agent::start(&node, AgentOptions::default())?;
    let lab = OneNode {
        agent,
        node,
        host,
        lan,
    };
    let conf = netconf(&lab, "1.1.0");
    let pod = add(&lab, "expiring", &conf)?;
    let who = [("container_id", pod.id.as_str()), ("ifname", "eth0")];
    let expired_node = |s: &Scrape| {
        s.sum(
            "lanlink_dataplane_packets_total",
            &[("verdict", "drop_expired")],
        )
    };
    let expired_pod = |s: &Scrape| {
        s.sum(
            "lanlink_endpoint_dropped_packets_total",
            &[who[0], who[1], ("reason", "drop_expired")],
        )
    };

    let before = scrape(&lab.agent)?;
    let p = ping(&pod.ns, ROUTER, 3, Duration::from_secs(5))?;
    ensure!(p.all_received(), "pod → router while leased: {}", p.summary);
    let leased = scrape(&lab.agent)?;
    ensure!(
        expired_node(&leased) == expired_node(&before) && expired_pod(&leased) == 0.0,
        "drop_expired counted while the lease is valid"
    );

    kea.stop()?;
    let expired = scrape_until(
        &lab.agent,
        "the lease to expire",
        Duration::from_secs(16),
        |s| s.sum("lanlink_dhcp_lease_events_total", &[("event", "expired")]) >= 1.0,
    )
    .with_context(|| format!("agent log:\n{}", lab.agent.log()))?;
    ensure!(
        !expired.has("lanlink_lease_info", &[who[0], ("state", "bound")]),
        "the lease still shows bound"
    );
    // The pod keeps its old address (the agent removed it).
    let cidr = format!("{}/24", pod.ip);
    let _ = pod
        .ns
        .ip(&["addr", "add", &cidr, "dev", "eth0"])
        .context("put the old address back")?;
    let p = ping(&pod.ns, ROUTER, 5, Duration::from_secs(8))?;
    ensure!(p.received == 0, "pod → router after expiry: {}", p.summary);
    let after = scrape(&lab.agent)?;
    let node_wide = expired_node(&after) - expired_node(&leased);
    let for_pod = expired_pod(&after);
    eprintln!("after expiry: drop_expired +{node_wide} node-wide, {for_pod} for the pod");
    ensure!(
        node_wide >= 3.0 && for_pod >= 3.0,
        "drop_expired grew by {node_wide} node-wide and {for_pod} for the pod"
    );
    verb(&lab, "DEL", &pod.id, Some(pod.ns.path()), &conf)?.ok_silent()?;
    Ok(())
}
