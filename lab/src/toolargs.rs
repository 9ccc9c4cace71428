//! Argument parsing shared by the small traffic tools (`lab-rr`,
//! `lab-udpflood`, `lab-net`, `lab-craft`): `<ip:port>` first where there
//! is one, then `--flag value` options.

use std::net::SocketAddr;
use std::str::FromStr;

/// The value after `flag`, if the flag is there with one.
pub fn value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// The value after `flag`, parsed, or `default` when the flag is absent.
pub fn opt<T: FromStr>(args: &[String], flag: &str, default: T) -> Result<T, String> {
    match args.iter().position(|a| a == flag) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{flag} needs a valid value")),
    }
}

/// The `<ip:port>` the tool's arguments start with.
pub fn addr(args: &[String]) -> Result<SocketAddr, String> {
    args.first()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| "the first argument must be <ip:port>".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_address_and_options() {
        let a = args("198.18.0.2:5201 --count 10 --bad x");
        assert_eq!(addr(&a).unwrap(), "198.18.0.2:5201".parse().unwrap());
        assert_eq!(opt(&a, "--count", 1u32), Ok(10));
        assert_eq!(opt(&a, "--absent", 7u32), Ok(7));
        assert_eq!(value(&a, "--bad"), Some("x"));
        assert_eq!(value(&a, "--absent"), None);
        assert!(opt::<u32>(&a, "--bad", 0).is_err());
        assert!(opt::<u32>(&args("x --count"), "--count", 0).is_err());
        assert!(addr(&args("--count 1")).is_err());
    }
}
