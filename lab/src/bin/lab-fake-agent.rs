//! A stand-in for `lanlinkd` used by the lab's own tests: takes the agent's
//! command line, creates its pin dir, serves its socket (accepting and
//! closing connections) and exits 0 on SIGTERM or SIGINT. It lets the lab's
//! `Agent` guard be tested without the real agent or eBPF.

use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| panic!("missing {flag}"))
    };
    let socket = value("--socket");
    let pin_dir = value("--pin-dir");
    std::fs::create_dir_all(&pin_dir).expect("cannot create the pin dir");
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).expect("cannot bind the socket");
    listener
        .set_nonblocking(true)
        .expect("cannot set non-blocking");
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        use nix::sys::signal::{SigHandler, Signal, signal};
        signal(Signal::SIGTERM, SigHandler::Handler(on_signal)).expect("cannot handle SIGTERM");
        signal(Signal::SIGINT, SigHandler::Handler(on_signal)).expect("cannot handle SIGINT");
    }
    println!("fake agent serving {socket}, pins in {pin_dir}");
    while !STOP.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => drop(conn),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    let _ = std::fs::remove_file(&socket);
    println!("fake agent stopping");
}
