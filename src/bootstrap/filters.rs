//! Custom template filters for addresses, registered by [`register`]:
//!
//! - `host`: `"host:port"` → `"host"` (`"[::1]:80"` → `"::1"`, as Envoy's `socket_address` wants).
//! - `port`: `"host:port"` → port, or a bare port (`8080`, `"8080"`) → port, always an integer
//!   in 1..=65535, so `port_value` gets a number and a typo fails at render time, naming the line.
//!
//! - `tojson`: minijinja's own `tojson`, except that an undefined input is an error. The built-in
//!   serialises undefined as `null` even in strict mode, which would let a missing `--var` slip
//!   into the bootstrap as `null` instead of failing the render.
//!
//! All reject bad input with an error instead of guessing.

use minijinja::value::Kwargs;
use minijinja::value::ValueKind;
use minijinja::{Environment, Error, ErrorKind, Value};

/// Adds `host` and `port` to `env`, and replaces `tojson` with the strict variant.
pub(super) fn register(env: &mut Environment<'_>) {
    env.add_filter("tojson", tojson);
    env.add_filter("host", host);
    env.add_filter("port", port);
}

/// Splits `host:port`; IPv6 hosts must be bracketed (`[::1]:80`), because a bare `::1:80` is
/// ambiguous. The host comes back without brackets. Port 0 is refused: it is never what an
/// operator means in a bootstrap.
pub(super) fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => rest.split_once("]:")?,
        None => s.rsplit_once(':').filter(|(h, _)| !h.contains(':'))?,
    };
    if host.is_empty() {
        return None;
    }
    Some((host, parse_port(port)?))
}

fn parse_port(s: &str) -> Option<u16> {
    // u16::from_str accepts a leading '+', which is never intended in an address.
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&p| p != 0)
}

fn tojson(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    if value.is_undefined() {
        return Err(Error::from(ErrorKind::UndefinedError));
    }
    minijinja::filters::tojson(value, indent, kwargs)
}

fn host(value: Value) -> Result<String, Error> {
    let addr = as_str(&value, "host")?;
    split_host_port(addr)
        .map(|(host, _)| host.to_string())
        .ok_or_else(|| bad("host", addr))
}

fn port(value: Value) -> Result<u16, Error> {
    if value.kind() == ValueKind::Number {
        let n = value
            .as_i64()
            .ok_or_else(|| bad("port", &value.to_string()))?;
        return u16::try_from(n)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| bad("port", &n.to_string()));
    }
    let s = as_str(&value, "port")?;
    parse_port(s)
        .or_else(|| split_host_port(s).map(|(_, p)| p))
        .ok_or_else(|| bad("port", s))
}

/// Strict mode must keep reporting an undefined input as undefined (so the error names the
/// variable), not as a type error of the filter.
fn as_str<'a>(value: &'a Value, filter: &str) -> Result<&'a str, Error> {
    if value.is_undefined() {
        return Err(Error::from(ErrorKind::UndefinedError));
    }
    value
        .as_str()
        .ok_or_else(|| bad(filter, &value.to_string()))
}

fn bad(filter: &str, input: &str) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("filter {filter}: {input:?} is not host:port or a port in 1..=65535"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_host_port_accepts_names_ipv4_and_bracketed_ipv6_only() {
        let cases = [
            ("127.0.0.1:8080", Some(("127.0.0.1", 8080))),
            (
                "istiod.istio-system.svc:15012",
                Some(("istiod.istio-system.svc", 15012)),
            ),
            ("[::1]:15010", Some(("::1", 15010))),
            ("::1:15010", None),
            ("host", None),
            (":80", None),
            ("host:", None),
            ("host:0", None),
            ("host:65536", None),
            ("host:+80", None),
            ("[::1]", None),
        ];
        for (input, want) in cases {
            assert_eq!(split_host_port(input), want, "{input}");
        }
    }

    fn apply(expr: &str, ctx: Value) -> Result<String, Error> {
        let mut env = Environment::new();
        register(&mut env);
        env.render_str(expr, ctx)
    }

    #[test]
    fn port_filter_takes_integers_numeric_strings_and_addresses() {
        let cases = [
            (Value::from(8080), Some("8080")),
            (Value::from("8080"), Some("8080")),
            (Value::from("[::1]:9901"), Some("9901")),
            (Value::from("example.com:443"), Some("443")),
            (Value::from(0), None),
            (Value::from(70000), None),
            (Value::from("http"), None),
            (Value::from(true), None),
        ];
        for (input, want) in cases {
            let ctx = minijinja::context! { v => input.clone() };
            assert_eq!(
                apply("{{ v|port }}", ctx).ok().as_deref(),
                want,
                "{input:?}"
            );
        }
    }

    #[test]
    fn tojson_fails_on_undefined_but_serialises_none_and_values() {
        let ctx = minijinja::context! { n => (), s => "a\"b", m => minijinja::context! { k => 1 } };
        let cases = [
            ("{{ n|tojson }}", Some("null")),
            ("{{ s|tojson }}", Some("\"a\\\"b\"")),
            ("{{ m|tojson }}", Some("{\"k\": 1}")),
            ("{{ missing|tojson }}", None),
            ("{{ m.missing|tojson }}", None),
        ];
        for (expr, want) in cases {
            let mut env = Environment::new();
            env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
            register(&mut env);
            let got = env.render_str(expr, ctx.clone());
            assert_eq!(got.as_deref().ok(), want, "{expr}: {got:?}");
            if let Err(e) = got {
                assert_eq!(e.kind(), ErrorKind::UndefinedError, "{expr}");
            }
        }
    }

    #[test]
    fn host_filter_error_says_what_was_expected() {
        let err = apply("{{ 'nohost'|host }}", Value::UNDEFINED).expect_err("bad address");
        assert!(err.to_string().contains("is not host:port"), "{err}");
    }
}
