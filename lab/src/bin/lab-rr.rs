//! `lab-rr`: a 1-byte TCP request/response (ping-pong) benchmark for the lab.
//!
//! ```text
//! lab-rr server <ip:port> [--max-secs S]
//! lab-rr client <ip:port> [--count N] [--max-secs S] [--warmup W]
//! ```
//!
//! The server echoes every byte it reads, on any number of connections,
//! until `--max-secs` (default 600) have passed. The client opens one
//! connection (`TCP_NODELAY` on both ends, so no Nagle or delayed-ACK wait is
//! measured), sends `--warmup` (default 100) untimed round trips, then times
//! up to `--count` (default 10,000) round trips of one byte each, stopping
//! early after `--max-secs` (default 10). It prints one JSON line:
//! `{"round_trips":…,"p50_us":…,"p99_us":…,"min_us":…,"max_us":…,"mean_us":…}`.
//!
//! Both ends are bounded in time, and every blocking call has a timeout, as
//! the lab's rules require.

use lanlink_lab::toolargs::{addr, opt};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long one read or write may block before the run is abandoned.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("server") => server(&args[1..]),
        Some("client") => client(&args[1..]),
        _ => Err("usage: lab-rr server|client <ip:port> [options]".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab-rr: {e}");
            ExitCode::FAILURE
        }
    }
}

fn server(args: &[String]) -> Result<(), String> {
    let addr = addr(args)?;
    let max = Duration::from_secs(opt(args, "--max-secs", 600)?);
    let deadline = Instant::now() + max;
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot bind {addr}: {e}"))?;
    // Non-blocking accept polled against the deadline: the server never
    // outlives --max-secs even if no client ever comes.
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot set non-blocking: {e}"))?;
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((conn, _)) => {
                std::thread::spawn(move || echo(conn, deadline));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
    Ok(())
}

/// Echoes single bytes until the peer closes, an error, or `deadline`.
fn echo(mut conn: TcpStream, deadline: Instant) {
    if conn.set_nonblocking(false).is_err()
        || conn.set_nodelay(true).is_err()
        || conn.set_read_timeout(Some(IO_TIMEOUT)).is_err()
        || conn.set_write_timeout(Some(IO_TIMEOUT)).is_err()
    {
        return;
    }
    let mut byte = [0u8; 1];
    while Instant::now() < deadline {
        match conn.read(&mut byte) {
            Ok(1) => {
                if conn.write_all(&byte).is_err() {
                    return;
                }
            }
            // EOF, a read timeout (an idle client) or an error: done.
            _ => return,
        }
    }
}

fn client(args: &[String]) -> Result<(), String> {
    let addr = addr(args)?;
    let count: usize = opt(args, "--count", 10_000)?;
    let warmup: usize = opt(args, "--warmup", 100)?;
    let max = Duration::from_secs(opt(args, "--max-secs", 10)?);
    if count == 0 {
        return Err("--count must be at least 1".to_owned());
    }
    let mut conn = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    conn.set_nodelay(true)
        .and_then(|()| conn.set_read_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| conn.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| format!("cannot set socket options: {e}"))?;
    let started = Instant::now();
    let deadline = started + max;
    let mut byte = [b'x'; 1];
    let mut one_trip = |conn: &mut TcpStream| -> Result<Duration, String> {
        let t0 = Instant::now();
        conn.write_all(&byte).map_err(|e| format!("write: {e}"))?;
        conn.read_exact(&mut byte)
            .map_err(|e| format!("read: {e}"))?;
        Ok(t0.elapsed())
    };
    for _ in 0..warmup {
        if Instant::now() >= deadline {
            break;
        }
        one_trip(&mut conn)?;
    }
    let mut samples_ns: Vec<u64> = Vec::with_capacity(count);
    while samples_ns.len() < count && Instant::now() < deadline {
        let rtt = one_trip(&mut conn)?;
        samples_ns.push(u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX));
    }
    if samples_ns.is_empty() {
        return Err(format!("no round trip completed within {max:?}"));
    }
    println!("{}", summary(&mut samples_ns));
    Ok(())
}

/// The JSON summary line of round-trip samples (in nanoseconds).
fn summary(samples_ns: &mut [u64]) -> String {
    samples_ns.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;
    let mean = samples_ns.iter().map(|&n| n as f64).sum::<f64>() / samples_ns.len() as f64;
    format!(
        "{{\"round_trips\":{},\"p50_us\":{:.3},\"p99_us\":{:.3},\"min_us\":{:.3},\"max_us\":{:.3},\"mean_us\":{:.3}}}",
        samples_ns.len(),
        us(percentile(samples_ns, 50.0)),
        us(percentile(samples_ns, 99.0)),
        us(samples_ns[0]),
        us(samples_ns[samples_ns.len() - 1]),
        mean / 1000.0,
    )
}

/// Nearest-rank percentile of sorted, non-empty `v`.
fn percentile(v: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&[7], 99.0), 7);
    }

    #[test]
    fn summary_is_json() {
        let line = summary(&mut [3000, 1000, 2000]);
        assert!(line.contains("\"round_trips\":3"), "{line}");
        assert!(line.contains("\"p50_us\":2.000"), "{line}");
        assert!(line.contains("\"max_us\":3.000"), "{line}");
    }
}
