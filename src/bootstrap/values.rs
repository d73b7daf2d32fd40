//! The values a template sees: built-ins from flags and environment, plus `--var` strings.
//!
//! Invariant: a `--var` key never shadows a built-in and is always a plain identifier, so a
//! template's meaning cannot be changed by a typo on the command line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::Value;

use super::filters::split_host_port;
use super::RenderError;

/// Prefix of the environment variables that become node metadata, as in Istio.
const META_PREFIX: &str = "ISTIO_META_";

/// Names of the built-in template variables; a `--var` may not reuse them.
pub const BUILTIN_VARIABLES: [&str; 11] = [
    "node_id",
    "cluster",
    "admin_port",
    "discovery_address",
    "discovery_host",
    "discovery_port",
    "metadata",
    "config_dir",
    "certs",
    "tls",
    "concurrency",
];

/// A certificate chain and its private key, both PEM files (from `--cert CERT:KEY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    /// The certificate chain file.
    pub cert: PathBuf,
    /// The private key file.
    pub key: PathBuf,
}

/// The SDS secret through which one `--cert` pair reaches Envoy under
/// `--cert-rotation sds`: the name the bootstrap asks for and the resource file baton
/// writes it into (Envoy reloads the file when baton renames a new one over it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdsSecret {
    /// The secret's name (`baton-cert-<n>`).
    pub name: String,
    /// The file holding it: `<config-dir>/sds-cert-<n>.json`.
    pub path: PathBuf,
}

impl SdsSecret {
    /// The secret of the `index`th `--cert` pair (from 0) of a baton whose
    /// `--config-dir` is `config_dir`.
    pub fn of(config_dir: &Path, index: usize) -> Self {
        SdsSecret {
            name: format!("baton-cert-{index}"),
            path: config_dir.join(format!("sds-cert-{index}.json")),
        }
    }
}

/// Everything a template can refer to. See `bootstrap-templates/README.md` for the table of
/// variables this produces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Values {
    /// Envoy node id (`--service-node`).
    pub node_id: String,
    /// Envoy node cluster (`--service-cluster`).
    pub cluster: String,
    /// Envoy admin port on 127.0.0.1 (`--admin-port`).
    pub admin_port: u16,
    /// xDS server as `host:port` (`--discovery-address`). Empty means "none": `discovery_host`
    /// and `discovery_port` are then undefined, so only templates that need them fail.
    pub discovery_address: String,
    /// Node metadata, usually [`metadata_from_env`].
    pub metadata: BTreeMap<String, String>,
    /// Directory holding the rendered `envoy-rev<N>.json` files (`--config-dir`).
    pub config_dir: PathBuf,
    /// Certificate pairs (`--cert`); templates use the first one as `tls`.
    pub certs: Vec<CertPair>,
    /// `--cert-rotation sds`: the SDS secret of each pair of `certs`, in order (each
    /// pair's `sds` in the template); empty under `--cert-rotation restart`, where
    /// each pair's `sds` is none.
    pub sds: Vec<SdsSecret>,
    /// Worker threads (`--concurrency`, or baton's default from the CPU limit);
    /// `none` only where no driver settings made it (tests).
    pub concurrency: Option<u32>,
    /// Extra string values (`--var KEY=VALUE`), top-level names in the template.
    pub vars: BTreeMap<String, String>,
}

impl Values {
    /// Checks what rendering would reject about the values themselves (not the template):
    /// `--var` keys, the discovery address, non-UTF-8 paths. Lets startup report a bad flag
    /// before any template is read.
    pub fn validate(&self) -> Result<(), RenderError> {
        self.to_context().map(drop)
    }

    /// Builds the template context. Errors are those of [`validate`](Self::validate).
    pub(super) fn to_context(&self) -> Result<Value, RenderError> {
        let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
        for (key, value) in &self.vars {
            check_var_key(key)?;
            ctx.insert(key.clone(), Value::from(value.as_str()));
        }
        ctx.insert("node_id".into(), Value::from(self.node_id.as_str()));
        ctx.insert("cluster".into(), Value::from(self.cluster.as_str()));
        ctx.insert("admin_port".into(), Value::from(self.admin_port));
        ctx.insert(
            "discovery_address".into(),
            Value::from(self.discovery_address.as_str()),
        );
        if !self.discovery_address.is_empty() {
            let (host, port) = split_host_port(&self.discovery_address).ok_or_else(|| {
                RenderError::BadAddress {
                    name: "discovery_address",
                    value: self.discovery_address.clone(),
                }
            })?;
            ctx.insert("discovery_host".into(), Value::from(host));
            ctx.insert("discovery_port".into(), Value::from(port));
        }
        ctx.insert("metadata".into(), Value::from(self.metadata.clone()));
        ctx.insert(
            "config_dir".into(),
            Value::from(utf8("config_dir", &self.config_dir)?),
        );
        let certs = self
            .certs
            .iter()
            .enumerate()
            .map(|(i, pair)| cert_value(pair, self.sds.get(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = certs.first().cloned().unwrap_or(Value::from(()));
        ctx.insert("certs".into(), Value::from(certs));
        ctx.insert("tls".into(), tls);
        ctx.insert("concurrency".into(), Value::from(self.concurrency));
        Ok(Value::from(ctx))
    }
}

/// Splits a `--var KEY=VALUE` argument at the first `=` and checks the key (usable as a clap
/// value parser). The value may be empty and may contain `=`.
pub fn parse_var(arg: &str) -> Result<(String, String), RenderError> {
    let (key, value) = arg.split_once('=').ok_or_else(|| RenderError::VarSyntax {
        arg: arg.to_string(),
    })?;
    check_var_key(key)?;
    Ok((key.to_string(), value.to_string()))
}

/// Node metadata from environment pairs: every `ISTIO_META_<KEY>` becomes `<KEY>`, kept as-is
/// (Istio does the same: `ISTIO_META_CLUSTER_ID` → `CLUSTER_ID`). Pure: the caller passes
/// `std::env::vars()` (or a test's list); an empty `<KEY>` is ignored.
pub fn metadata_from_env(
    vars: impl IntoIterator<Item = (String, String)>,
) -> BTreeMap<String, String> {
    vars.into_iter()
        .filter_map(|(name, value)| {
            let key = name.strip_prefix(META_PREFIX)?;
            (!key.is_empty()).then(|| (key.to_string(), value))
        })
        .collect()
}

fn check_var_key(key: &str) -> Result<(), RenderError> {
    if !is_identifier(key) {
        return Err(RenderError::BadVarName {
            key: key.to_string(),
        });
    }
    if BUILTIN_VARIABLES.contains(&key) {
        return Err(RenderError::VarClash {
            key: key.to_string(),
        });
    }
    Ok(())
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn cert_value(pair: &CertPair, sds: Option<&SdsSecret>) -> Result<Value, RenderError> {
    let sds = match sds {
        Some(s) => Value::from_pairs([
            ("name", Value::from(s.name.as_str())),
            ("path", Value::from(utf8("config_dir", &s.path)?)),
        ]),
        None => Value::from(()),
    };
    Ok(Value::from_pairs([
        ("cert", Value::from(utf8("certs", &pair.cert)?)),
        ("key", Value::from(utf8("certs", &pair.key)?)),
        ("sds", sds),
    ]))
}

fn utf8<'a>(name: &'static str, path: &'a Path) -> Result<&'a str, RenderError> {
    path.to_str().ok_or_else(|| RenderError::NonUtf8Path {
        name,
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn istio_meta_variables_become_metadata_with_suffix_kept_as_is() {
        let got = metadata_from_env(env(&[
            ("ISTIO_META_CLUSTER_ID", "Kubernetes"),
            ("ISTIO_META_app_name", "web"),
            ("ISTIO_META_", "ignored: no key"),
            ("ISTIO_METAX", "ignored: no underscore"),
            ("PATH", "/usr/bin"),
        ]));
        let want = BTreeMap::from([
            ("CLUSTER_ID".to_string(), "Kubernetes".to_string()),
            ("app_name".to_string(), "web".to_string()),
        ]);
        assert_eq!(got, want);
    }

    #[test]
    fn parse_var_splits_at_first_equals_and_checks_the_key() {
        let ok = |k: &str, v: &str| Some((k.to_string(), v.to_string()));
        let cases: [(&str, Option<(String, String)>); 8] = [
            ("upstream=127.0.0.1:8080", ok("upstream", "127.0.0.1:8080")),
            ("a=b=c", ok("a", "b=c")),
            ("_x1=", ok("_x1", "")),
            ("noequals", None),
            ("=value", None),
            ("1abc=x", None),
            ("with-dash=x", None),
            ("node_id=x", None),
        ];
        for (arg, want) in cases {
            assert_eq!(parse_var(arg).ok(), want, "{arg}");
        }
    }

    #[test]
    fn var_errors_say_which_rule_was_broken() {
        let cases = [
            ("noequals", "expected KEY=VALUE"),
            ("with-dash=x", "must match [A-Za-z_][A-Za-z0-9_]*"),
            ("tls=x", "'tls' is a built-in template variable"),
        ];
        for (arg, want) in cases {
            let err = parse_var(arg).expect_err(arg).to_string();
            assert!(err.contains(want), "{arg}: {err}");
        }
    }

    #[test]
    fn var_clashing_with_a_builtin_is_rejected_for_every_builtin() {
        for key in BUILTIN_VARIABLES {
            let values = Values {
                discovery_address: "istiod:15012".into(),
                vars: BTreeMap::from([(key.to_string(), "x".to_string())]),
                ..Values::default()
            };
            let err = values.validate().expect_err(key);
            assert!(
                matches!(&err, RenderError::VarClash { key: k } if k == key),
                "{err}"
            );
        }
    }

    #[test]
    fn malformed_discovery_address_is_rejected_and_empty_is_allowed() {
        for (addr, ok) in [
            ("istiod.istio-system.svc:15012", true),
            ("[::1]:15010", true),
            ("", true),
            ("istiod", false),
            ("istiod:http", false),
            ("::1:15010", false),
        ] {
            let values = Values {
                discovery_address: addr.into(),
                ..Values::default()
            };
            assert_eq!(values.validate().is_ok(), ok, "{addr:?}");
        }
    }
}
