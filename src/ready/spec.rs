//! `--ready` as typed: parsing and checking only, no I/O.

use std::fmt;
use std::time::Duration;

use thiserror::Error;

/// A `--ready` value that could not be understood: the value as typed and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("--ready {value}: {problem}")]
pub struct ReadySpecError {
    /// The `--ready` value as typed.
    pub value: String,
    /// What is wrong with it, for a human.
    pub problem: String,
}

/// How baton decides that a new generic epoch is ready to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadySpec {
    /// `notify`: the epoch sends `READY=1` to its `NOTIFY_SOCKET` (sd_notify, HAProxy `-Ws`).
    Notify,
    /// `tcp:HOST:PORT`: a TCP connect succeeds. Proves nothing for a port whose socket
    /// baton holds (the kernel completes the handshake into baton's backlog before the
    /// proxy accepts); meant for a separate port (stats, health).
    Tcp {
        /// `HOST:PORT` as typed (`[::1]:9000` for IPv6); resolved at each attempt.
        addr: String,
    },
    /// `http:URL`: `GET URL` answers 2xx.
    Http(HttpTarget),
    /// `exec:CMD`: `sh -c CMD` exits 0.
    Exec {
        /// The shell command.
        command: String,
    },
    /// `delay:DUR`: ready once DUR has passed since the epoch started.
    Delay(Duration),
}

/// A plain-HTTP URL to probe, split for a one-request client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// `HOST:PORT` to connect to and to send as `Host:` (brackets kept for IPv6).
    pub authority: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl fmt::Display for HttpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

impl fmt::Display for ReadySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadySpec::Notify => f.write_str("notify"),
            ReadySpec::Tcp { addr } => write!(f, "tcp:{addr}"),
            ReadySpec::Http(target) => write!(f, "http:{target}"),
            ReadySpec::Exec { command } => write!(f, "exec:{command}"),
            ReadySpec::Delay(d) => write!(f, "delay:{}", humantime::format_duration(*d)),
        }
    }
}

impl ReadySpec {
    /// Parse one `--ready` value. Errors name the value and say what is wrong.
    pub fn parse(value: &str) -> Result<ReadySpec, ReadySpecError> {
        let err = |problem: String| ReadySpecError {
            value: value.to_string(),
            problem,
        };
        if value == "notify" {
            return Ok(ReadySpec::Notify);
        }
        let (kind, arg) = value.split_once(':').ok_or_else(|| {
            err("expected notify, tcp:HOST:PORT, http:URL, exec:CMD or delay:DUR".into())
        })?;
        match kind {
            "tcp" => parse_host_port(arg)
                .map(|()| ReadySpec::Tcp {
                    addr: arg.to_string(),
                })
                .map_err(err),
            "http" => parse_http(arg).map(ReadySpec::Http).map_err(err),
            "exec" if arg.trim().is_empty() => Err(err("exec: needs a command".into())),
            "exec" => Ok(ReadySpec::Exec {
                command: arg.to_string(),
            }),
            "delay" => humantime::parse_duration(arg)
                .map(ReadySpec::Delay)
                .map_err(|e| err(format!("{arg:?} is not a duration like 500ms or 2s: {e}"))),
            other => Err(err(format!(
                "unknown kind {other:?}; expected notify, tcp:, http:, exec: or delay:"
            ))),
        }
    }
}

/// `HOST:PORT` with a non-empty host and a port 1-65535; IPv6 hosts in brackets.
fn parse_host_port(s: &str) -> Result<(), String> {
    let bad = || format!("{s:?} is not HOST:PORT (IPv6 in brackets: [::1]:9000)");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.is_empty() || (host.contains(':') && !bracketed) {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err(format!("port {port:?} of {s:?} must be 1-65535")),
    }
}

/// `http://HOST[:PORT][/PATH]`; the `http:` of the kind may be followed by the full URL
/// (`http:http://…`) or by its `//…` part alone (`http://…` as the whole value).
fn parse_http(arg: &str) -> Result<HttpTarget, String> {
    let rest = if let Some(rest) = arg.strip_prefix("http://") {
        rest
    } else if let Some(rest) = arg.strip_prefix("//") {
        rest
    } else if arg.starts_with("https://") {
        return Err("https is not supported; probe a plain-HTTP health endpoint".into());
    } else {
        return Err(format!("{arg:?} is not an http:// URL"));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.contains('@') {
        return Err("credentials in the URL are not supported".into());
    }
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    let authority = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    parse_host_port(&authority)?;
    Ok(HttpTarget { authority, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_ok(input: &str, expected: ReadySpec) {
        assert_eq!(ReadySpec::parse(input), Ok(expected), "{input}");
    }

    fn check_err(input: &str, fragment: &str) {
        let err = ReadySpec::parse(input).expect_err(input).to_string();
        assert!(err.starts_with(&format!("--ready {input}: ")), "{err}");
        assert!(
            err.contains(fragment),
            "{err:?} should contain {fragment:?}"
        );
    }

    fn http(authority: &str, path: &str) -> ReadySpec {
        ReadySpec::Http(HttpTarget {
            authority: authority.into(),
            path: path.into(),
        })
    }

    #[test]
    fn every_kind_parses() {
        check_ok("notify", ReadySpec::Notify);
        check_ok(
            "tcp:127.0.0.1:9000",
            ReadySpec::Tcp {
                addr: "127.0.0.1:9000".into(),
            },
        );
        check_ok(
            "tcp:[::1]:9000",
            ReadySpec::Tcp {
                addr: "[::1]:9000".into(),
            },
        );
        check_ok(
            "tcp:localhost:9000",
            ReadySpec::Tcp {
                addr: "localhost:9000".into(),
            },
        );
        check_ok(
            "exec:curl -fsS localhost/ready",
            ReadySpec::Exec {
                command: "curl -fsS localhost/ready".into(),
            },
        );
        check_ok(
            "delay:1500ms",
            ReadySpec::Delay(Duration::from_millis(1500)),
        );
    }

    #[test]
    fn http_urls_get_a_port_and_a_path() {
        check_ok(
            "http:http://127.0.0.1:8080/healthz?full=1",
            http("127.0.0.1:8080", "/healthz?full=1"),
        );
        check_ok(
            "http://127.0.0.1:8080/ready",
            http("127.0.0.1:8080", "/ready"),
        );
        check_ok("http:http://localhost", http("localhost:80", "/"));
        check_ok("http:http://[::1]/x", http("[::1]:80", "/x"));
        check_ok("http:http://[::1]:81", http("[::1]:81", "/"));
        check_ok("http:http://h:1?q", http("h:1", "/?q"));
    }

    #[test]
    fn malformed_values_are_rejected_with_the_reason() {
        check_err("", "expected notify");
        check_err("ready", "expected notify");
        check_err("notify:yes", "unknown kind");
        check_err("tcp:9000", "not HOST:PORT");
        check_err("tcp::9000", "not HOST:PORT");
        check_err("tcp:::1:9000", "not HOST:PORT");
        check_err("tcp:127.0.0.1:0", "1-65535");
        check_err("tcp:127.0.0.1:http", "1-65535");
        check_err("http:https://127.0.0.1/", "https is not supported");
        check_err("http:127.0.0.1:8080/ready", "not an http:// URL");
        check_err("http:http://u:p@127.0.0.1/", "credentials");
        check_err("http:http://:8080/", "not HOST:PORT");
        check_err("exec:", "needs a command");
        check_err("delay:soon", "not a duration");
    }

    #[test]
    fn display_gives_back_a_value_that_parses_to_the_same_spec() {
        for input in [
            "notify",
            "tcp:127.0.0.1:9000",
            "http:http://127.0.0.1:8080/ready",
            "exec:true",
            "delay:2s",
        ] {
            let spec = ReadySpec::parse(input).unwrap();
            assert_eq!(ReadySpec::parse(&spec.to_string()), Ok(spec), "{input}");
        }
    }
}
