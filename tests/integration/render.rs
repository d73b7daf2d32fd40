//! `baton render` and command-line errors, through the real binary.

use std::process::Command;

use super::harness::{envoy_binary, run_baton};

#[test]
fn render_prints_the_standalone_bootstrap_as_json() {
    let (code, out, err) = run_baton(&[
        "render",
        "--template",
        "standalone",
        "--var",
        "listen_port=8080",
        "--var",
        "upstream=127.0.0.1:9000",
        "--admin-port",
        "15999",
    ]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert_eq!(
        json["admin"]["address"]["socket_address"]["port_value"],
        15999
    );
}

#[test]
fn render_validates_with_envoy_when_asked() {
    let envoy = envoy_binary();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("boot.json");
    let (code, _, err) = run_baton(&[
        "render",
        "--template",
        "standalone",
        "--var",
        "listen_port=8080",
        "--var",
        "upstream=127.0.0.1:9000",
        "--validate-with",
        envoy.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.exists());
}

#[test]
fn render_with_an_undefined_variable_exits_78_naming_it() {
    let (code, out, err) = run_baton(&[
        "render",
        "--template",
        "standalone",
        "--var",
        "listen_port=8080",
    ]);
    assert_eq!(code, 78, "{err}");
    assert!(out.is_empty());
    assert!(
        err.contains("'upstream'") && err.contains("standalone.json"),
        "{err}"
    );
}

/// `baton render` of a template file with this text: exit code and stderr.
fn render_text(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t.json");
    std::fs::write(&t, text).unwrap();
    let (code, _, err) = run_baton(&["render", "--template", t.to_str().unwrap()]);
    (code, err)
}

#[test]
fn render_of_a_template_with_a_syntax_error_names_file_and_line() {
    let (code, err) = render_text("{\n  \"a\": {{ node_id|tojson }\n}\n");
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("t.json") && err.contains("line 2"), "{err}");
}

#[test]
fn render_of_output_that_is_not_json_gives_line_and_column() {
    let (code, err) = render_text("{\n  \"a\": {{ admin_port }},\n  oops\n}\n");
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("line 3") && err.contains("column"), "{err}");
}

#[test]
fn bad_flags_exit_64_and_name_the_flag() {
    let (code, _, err) = run_baton(&["render", "--var", "no-equals-sign"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--var no-equals-sign"), "{err}");
    let (code, _, err) = run_baton(&["envoy", "--drain-duration", "soon"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--drain-duration"), "{err}");
    let (code, _, err) = run_baton(&["envoy", "--envoy-binary", "/nonexistent/envoy"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--envoy-binary /nonexistent/envoy"), "{err}");
}

#[test]
fn istio_meta_environment_becomes_node_metadata() {
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "render",
            "--template",
            "standalone",
            "--var",
            "listen_port=1",
            "--var",
            "upstream=a:2",
        ])
        .env("ISTIO_META_CLUSTER_ID", "east")
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["node"]["metadata"]["CLUSTER_ID"], "east");
}
