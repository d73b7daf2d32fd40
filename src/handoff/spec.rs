//! `--listen NAME=URL` as typed: parsing and checking only, no I/O.
//!
//! Accepted forms: `NAME=tcp://HOST:PORT`, `NAME=udp://HOST:PORT`, `NAME=unix:///abs/path`.
//! HOST is an IP literal (`0.0.0.0`, `127.0.0.1`, `[::]`, `[::1]`); PORT may be 0 (the
//! kernel picks one; [`super::ListenerSet::local_addr`] reports it).
//!
//! **Invariant:** a parsed NAME matches `[A-Za-z_][A-Za-z0-9_]*`, so `BATON_FD_<NAME>`
//! is a valid environment variable name and NAME can never contain the `:` that
//! separates `LISTEN_FDNAMES`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use thiserror::Error;

/// A `--listen` value that could not be understood: the value as typed and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("--listen {value}: {problem}")]
pub struct ListenSpecError {
    /// The `--listen` value as typed.
    pub value: String,
    /// What is wrong with it, for a human.
    pub problem: String,
}

/// Where a listener lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP stream listener.
    Tcp(SocketAddr),
    /// A bound UDP datagram socket.
    Udp(SocketAddr),
    /// A unix stream listener at an absolute path.
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "tcp://{a}"),
            ListenAddr::Udp(a) => write!(f, "udp://{a}"),
            ListenAddr::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// One `--listen NAME=URL`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    /// The listener's name as typed (goes into `LISTEN_FDNAMES`).
    pub name: String,
    /// Where to bind.
    pub addr: ListenAddr,
    /// The whole value as typed, for error messages.
    pub raw: String,
}

impl ListenSpec {
    /// Parse one `--listen` value. Errors name the value and say what is wrong.
    pub fn parse(value: &str) -> Result<ListenSpec, ListenSpecError> {
        let err = |problem: String| ListenSpecError {
            value: value.to_string(),
            problem,
        };
        let (name, url) = value
            .split_once('=')
            .ok_or_else(|| err("expected NAME=URL, e.g. http=tcp://0.0.0.0:8080".into()))?;
        check_name(name).map_err(err)?;
        let addr = parse_url(url).map_err(err)?;
        Ok(ListenSpec {
            name: name.to_string(),
            addr,
            raw: value.to_string(),
        })
    }

    /// The name in environment form: `BATON_FD_<NAME>` with NAME upper-cased.
    #[cfg(test)]
    pub fn env_name(&self) -> String {
        fd_env_name(&self.name)
    }
}

/// `BATON_FD_<NAME>` for a listener name (upper-cased).
pub fn fd_env_name(name: &str) -> String {
    format!("BATON_FD_{}", name.to_ascii_uppercase())
}

/// Check that the names of a whole `--listen` list are distinct once upper-cased
/// (`http` and `HTTP` would share `BATON_FD_HTTP`).
pub fn check_distinct_names(specs: &[ListenSpec]) -> Result<(), ListenSpecError> {
    for (i, spec) in specs.iter().enumerate() {
        if let Some(earlier) = specs[..i]
            .iter()
            .find(|e| e.name.eq_ignore_ascii_case(&spec.name))
        {
            return Err(ListenSpecError {
                value: spec.raw.clone(),
                problem: format!(
                    "name {:?} is already used by --listen {} (names must differ ignoring case)",
                    spec.name, earlier.raw
                ),
            });
        }
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "name {name:?} must match [A-Za-z_][A-Za-z0-9_]* (it becomes BATON_FD_<NAME>)"
        ));
    }
    Ok(())
}

fn parse_url(url: &str) -> Result<ListenAddr, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} has no scheme; expected tcp://, udp:// or unix://"))?;
    match scheme {
        "tcp" => parse_host_port(rest).map(ListenAddr::Tcp),
        "udp" => parse_host_port(rest).map(ListenAddr::Udp),
        "unix" => parse_unix(rest),
        other => Err(format!(
            "unknown scheme {other:?}; expected tcp://, udp:// or unix://"
        )),
    }
}

fn parse_host_port(s: &str) -> Result<SocketAddr, String> {
    if s.contains('/') {
        return Err(format!("{s:?} must be HOST:PORT with no path"));
    }
    s.parse::<SocketAddr>().map_err(|_| {
        let hint = if s.matches(':').count() > 1 && !s.starts_with('[') {
            " (write IPv6 addresses in brackets: [::1]:8080)"
        } else {
            ""
        };
        format!("{s:?} is not IP:PORT (HOST must be an IP address, PORT 0-65535){hint}")
    })
}

fn parse_unix(path: &str) -> Result<ListenAddr, String> {
    if !path.starts_with('/') {
        return Err(format!(
            "unix socket path {path:?} must be absolute (unix:///run/app.sock)"
        ));
    }
    // sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
    if path.len() > 107 {
        return Err(format!(
            "unix socket path is {} bytes; the limit is 107",
            path.len()
        ));
    }
    if path.ends_with('/') {
        return Err(format!("unix socket path {path:?} names a directory"));
    }
    Ok(ListenAddr::Unix(PathBuf::from(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_ok(input: &str, name: &str, addr: ListenAddr) {
        let spec = ListenSpec::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(spec.name, name);
        assert_eq!(spec.addr, addr);
        assert_eq!(spec.raw, input);
    }

    fn check_err(input: &str, expected_fragment: &str) {
        let err = ListenSpec::parse(input).expect_err(input).to_string();
        assert!(
            err.starts_with(&format!("--listen {input}: ")),
            "{err:?} should name the value"
        );
        assert!(
            err.contains(expected_fragment),
            "{err:?} should contain {expected_fragment:?}"
        );
    }

    #[test]
    fn tcp_udp_unix_and_ipv6_forms_parse() {
        check_ok(
            "http=tcp://127.0.0.1:8080",
            "http",
            ListenAddr::Tcp("127.0.0.1:8080".parse().unwrap()),
        );
        check_ok(
            "v6=tcp://[::1]:8080",
            "v6",
            ListenAddr::Tcp("[::1]:8080".parse().unwrap()),
        );
        check_ok(
            "dns=udp://0.0.0.0:53",
            "dns",
            ListenAddr::Udp("0.0.0.0:53".parse().unwrap()),
        );
        check_ok(
            "_Admin_2=unix:///run/admin.sock",
            "_Admin_2",
            ListenAddr::Unix("/run/admin.sock".into()),
        );
        check_ok(
            "any=tcp://0.0.0.0:0",
            "any",
            ListenAddr::Tcp("0.0.0.0:0".parse().unwrap()),
        );
    }

    #[test]
    fn malformed_values_are_rejected_with_the_reason() {
        check_err("tcp://127.0.0.1:8080", "expected NAME=URL");
        check_err("=tcp://127.0.0.1:8080", "must match");
        check_err("1http=tcp://127.0.0.1:8080", "must match");
        check_err("ht-tp=tcp://127.0.0.1:8080", "must match");
        check_err("http=127.0.0.1:8080", "no scheme");
        check_err("http=sctp://127.0.0.1:8080", "unknown scheme");
        check_err("http=tcp://localhost:8080", "HOST must be an IP address");
        check_err("http=tcp://127.0.0.1", "not IP:PORT");
        check_err("http=tcp://127.0.0.1:70000", "not IP:PORT");
        check_err("http=tcp://::1:8080", "brackets");
        check_err("http=tcp://127.0.0.1:80/x", "no path");
        check_err("s=unix://run/x.sock", "must be absolute");
        check_err(&format!("s=unix:///{}", "a".repeat(120)), "limit is 107");
    }

    #[test]
    fn names_equal_ignoring_case_are_rejected() {
        let specs: Vec<_> = ["http=tcp://127.0.0.1:1", "HTTP=tcp://127.0.0.1:2"]
            .iter()
            .map(|s| ListenSpec::parse(s).unwrap())
            .collect();
        let err = check_distinct_names(&specs).unwrap_err().to_string();
        assert!(
            err.starts_with("--listen HTTP=tcp://127.0.0.1:2: "),
            "{err}"
        );
        assert!(err.contains("http=tcp://127.0.0.1:1"), "{err}");
    }

    #[test]
    fn env_name_is_upper_cased() {
        let spec = ListenSpec::parse("http_alt=tcp://127.0.0.1:1").unwrap();
        assert_eq!(spec.env_name(), "BATON_FD_HTTP_ALT");
    }
}
