//! The README's install commands, read from the README itself so that the
//! scenarios run exactly what a user is told to type (issue 14: "the install
//! section uses exactly the commands the tests run").
//!
//! The section is `## Install on Kubernetes (DaemonSet)`; its first ```` ```sh ````
//! block holds one command per line, with comments after `#`.

use std::path::Path;

use anyhow::{Context as _, Result, bail};

/// The heading of the README section the commands come from.
pub const INSTALL_SECTION: &str = "## Install on Kubernetes (DaemonSet)";

/// The commands of the install section's first `sh` block, comments and
/// blank lines removed, in order.
pub fn install_commands() -> Result<Vec<String>> {
    let path = crate::workspace_root().join("README.md");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    commands_in(&text, INSTALL_SECTION).with_context(|| format!("in {}", path.display()))
}

/// The one install command that starts with `program` (e.g. `"podman load"`).
pub fn install_command(program: &str) -> Result<String> {
    let all = install_commands()?;
    let mut found = all.iter().filter(|c| c.starts_with(program));
    match (found.next(), found.next()) {
        (Some(c), None) => Ok(c.clone()),
        (None, _) => bail!("the README's install section has no `{program}` command: {all:?}"),
        (Some(_), Some(_)) => {
            bail!("the README's install section has several `{program}` commands")
        }
    }
}

/// Runs `command` (a README line) with `sh -c` in `dir`, with `env` added,
/// bounded by `timeout`; fails with its output unless it exits 0.
pub fn run_in(
    command: &str,
    dir: &Path,
    env: &[(&str, &str)],
    timeout: std::time::Duration,
) -> Result<String> {
    let mut c = std::process::Command::new("sh");
    c.args(["-c", command]).current_dir(dir);
    for (k, v) in env {
        c.env(k, v);
    }
    crate::cmd::run_ok(&mut c, timeout)
        .with_context(|| format!("the README's `{command}` in {}", dir.display()))
}

/// The commands of the first `sh` block under `heading`.
fn commands_in(text: &str, heading: &str) -> Result<Vec<String>> {
    let mut lines = text.lines().skip_while(|l| l.trim_end() != heading);
    if lines.next().is_none() {
        bail!("no section `{heading}`");
    }
    let mut block = lines
        .take_while(|l| !l.starts_with("## "))
        .skip_while(|l| l.trim() != "```sh");
    if block.next().is_none() {
        bail!("no ```sh block in `{heading}`");
    }
    let mut out = Vec::new();
    for line in block.take_while(|l| l.trim() != "```") {
        let cmd = line.split(" #").next().unwrap_or("").trim();
        if !cmd.is_empty() && !cmd.starts_with('#') {
            out.push(cmd.to_owned());
        }
    }
    if out.is_empty() {
        bail!("the ```sh block in `{heading}` has no command");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# x\n\n## Install on Kubernetes (DaemonSet)\n\ntext\n\n```sh\n\
        cargo xtask image   # builds\n                    # more comment\n# a comment line\n\
        ctr -n k8s.io images import lanlink.oci.tar   # containerd\n\
        podman load -i lanlink.oci.tar\n```\n\n```sh\nnot this\n```\n## Next\n";

    #[test]
    fn commands_are_the_lines_without_comments() {
        assert_eq!(
            commands_in(SAMPLE, INSTALL_SECTION).unwrap(),
            [
                "cargo xtask image",
                "ctr -n k8s.io images import lanlink.oci.tar",
                "podman load -i lanlink.oci.tar"
            ]
        );
        assert!(commands_in(SAMPLE, "## Missing").is_err());
        assert!(
            commands_in(
                "## Install on Kubernetes (DaemonSet)\n## Next\n```sh\nx\n```\n",
                INSTALL_SECTION
            )
            .is_err()
        );
    }

    #[test]
    fn this_readme_has_the_commands_the_scenarios_run() {
        for program in [
            "cargo xtask image",
            "podman load",
            "ctr -n k8s.io images import",
        ] {
            install_command(program).unwrap();
        }
    }
}
