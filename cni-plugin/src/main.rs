//! `lanlink`: the CNI plugin binary, executed by the container runtime. All the
//! work is in the library ([`lanlink_cni::run`]); this only wires the process's
//! environment, stdin and stdout to it.

use std::io;
use std::process::ExitCode;

fn main() -> ExitCode {
    let by_hand = std::env::args()
        .skip(1)
        .any(|a| matches!(a.as_str(), "--version" | "-V" | "--help" | "-h"));
    if by_hand {
        eprintln!("{}", lanlink_cni::about());
        return ExitCode::SUCCESS;
    }
    if std::env::var_os("CNI_COMMAND").is_none() {
        // Run by hand without a verb: say what this is, then fail with code 4.
        eprintln!("{}", lanlink_cni::about());
    }
    let code = lanlink_cni::run(
        |name| std::env::var(name).ok(),
        &mut io::stdin().lock(),
        &mut io::stdout().lock(),
    );
    ExitCode::from(code)
}
