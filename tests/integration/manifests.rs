//! What a schema cannot check in `examples/kubernetes/` (scripts/validate-manifests
//! runs `kubernetes-validate --strict` for the rest): no probe names a `host` (the
//! kubelet would probe that address, not the pod); every hook runs a binary its own
//! container's image has; the proxy starts before the app; baton's status address is
//! not loopback (the kubelet probes the pod IP); the securityContext, resources,
//! writable directory and grace period a read-only, non-root sidecar needs; the app is
//! reachable only through the proxy. And the image CI runs is the Dockerfile's final
//! stage.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// The proxy's uid (Istio's).
const PROXY_UID: u64 = 1337;
/// baton's status port when `--status-addr` is not given.
const STATUS_PORT: u64 = 15020;
/// baton's SIGTERM → SIGKILL wait for the proxy after the termination drain.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// `--termination-drain-duration` when not given.
const TERMINATION_DRAIN: Duration = Duration::from_secs(5);

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kubernetes")
}

/// Every YAML document of `text`.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn manifests() -> Vec<(PathBuf, Vec<Value>)> {
    let mut found: Vec<_> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let docs = documents(&std::fs::read_to_string(&p).unwrap());
            (p, docs)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// Where the Dockerfile puts baton (the destination of its `COPY --from=build`).
fn baton_path_in_image() -> String {
    let dockerfile = std::fs::read_to_string(dir().join("Dockerfile")).unwrap();
    dockerfile
        .lines()
        .find(|l| l.starts_with("COPY --from=build "))
        .and_then(|l| l.split_whitespace().last())
        .expect("the Dockerfile copies baton from its build stage")
        .to_string()
}

/// Whether `image` is built from this project's Dockerfile (baton on a proxy image).
fn is_baton_image(image: &str) -> bool {
    image
        .rsplit('/')
        .next()
        .is_some_and(|n| n.starts_with("baton-"))
}

/// The binaries a hook may run in a container of `image`: baton's, in baton's images;
/// nothing is known of any other image.
fn binaries_of(image: &str) -> Vec<String> {
    if is_baton_image(image) {
        vec![baton_path_in_image(), "baton".into()]
    } else {
        Vec::new()
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A flag's value among baton's own arguments (before `--`): `--flag=v` or `--flag v`.
fn flag(args: &[String], name: &str) -> Option<String> {
    let own = args.iter().take_while(|a| *a != "--");
    let mut own = own.peekable();
    while let Some(a) = own.next() {
        if let Some(v) = a.strip_prefix(&format!("{name}=")) {
            return Some(v.to_string());
        }
        if a == name {
            return own.peek().map(|v| v.to_string());
        }
    }
    None
}

fn env_var(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(str::to_string))
}

/// A baton setting from its flag or its environment variable.
fn setting(container: &Value, flag_name: &str, env_name: &str) -> Option<String> {
    flag(&strings(&container["args"]), flag_name).or_else(|| env_var(container, env_name))
}

/// The port number of a probe's `httpGet`/`tcpSocket` (a number or a port name).
fn probe_port(container: &Value, port: &Value) -> Option<u64> {
    port.as_u64().or_else(|| {
        container["ports"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == *port)
            .and_then(|p| p["containerPort"].as_u64())
    })
}

/// The pod specs of the documents that make pods, with a name for messages.
fn pod_specs(docs: &[Value]) -> Vec<(String, &Value)> {
    docs.iter()
        .filter_map(|d| {
            let name = format!(
                "{}/{}",
                d["kind"].as_str()?,
                d["metadata"]["name"].as_str()?
            );
            match d["kind"].as_str()? {
                "Pod" => Some((name, &d["spec"])),
                "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
                    Some((name, &d["spec"]["template"]["spec"]))
                }
                _ => None,
            }
        })
        .collect()
}

/// Everything wrong with one pod spec, each naming its container and field.
fn problems(spec: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let init = spec["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let main = spec["containers"].as_array().cloned().unwrap_or_default();
    let all: Vec<&Value> = init.iter().chain(main.iter()).collect();
    let name = |c: &Value| c["name"].as_str().unwrap_or("?").to_string();

    for c in &all {
        let n = name(c);
        let image = c["image"].as_str().unwrap_or("");
        for kind in ["startupProbe", "readinessProbe", "livenessProbe"] {
            let probe = &c[kind];
            for handler in ["httpGet", "tcpSocket"] {
                if !probe[handler]["host"].is_null() {
                    problems.push(format!(
                        "{n}: {kind}.{handler}.host is set: the kubelet would probe that address, not the pod"
                    ));
                }
            }
            if let Some(cmd) = strings(&probe["exec"]["command"]).first() {
                if !binaries_of(image).contains(cmd) {
                    problems.push(format!(
                        "{n}: {kind} runs {cmd}, which {image} does not have"
                    ));
                }
            }
        }
        for hook in ["postStart", "preStop"] {
            let handler = &c["lifecycle"][hook];
            if let Some(cmd) = strings(&handler["exec"]["command"]).first() {
                if !binaries_of(image).contains(cmd) {
                    problems.push(format!(
                        "{n}: {hook} runs {cmd}, which {image} does not have"
                    ));
                }
            }
        }
        problems.extend(security_problems(c, &spec["securityContext"]));
        for kind in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                if c["resources"][kind][resource].is_null() {
                    problems.push(format!("{n}: no resources.{kind}.{resource}"));
                }
            }
        }
    }

    let proxies: Vec<&Value> = all
        .iter()
        .copied()
        .filter(|c| is_baton_image(c["image"].as_str().unwrap_or("")))
        .collect();
    let [proxy] = proxies[..] else {
        problems.push(format!(
            "{} containers run baton's image, not one",
            proxies.len()
        ));
        return problems;
    };
    problems.extend(proxy_problems(spec, proxy, &init, &main));

    for c in all.iter().filter(|c| c["name"] != proxy["name"]) {
        if c["ports"].as_array().is_some_and(|p| !p.is_empty()) {
            problems.push(format!(
                "{}: declares ports: the app should listen on 127.0.0.1, reachable only through the proxy",
                name(c)
            ));
        }
    }
    problems
}

/// The securityContext every container needs (pod-level `runAsNonRoot` counts).
fn security_problems(c: &Value, pod: &Value) -> Vec<String> {
    let n = c["name"].as_str().unwrap_or("?");
    let sc = &c["securityContext"];
    let mut problems = Vec::new();
    let non_root = sc["runAsNonRoot"]
        .as_bool()
        .or(pod["runAsNonRoot"].as_bool());
    if non_root != Some(true) {
        problems.push(format!("{n}: runAsNonRoot is not true"));
    }
    if sc["readOnlyRootFilesystem"] != true {
        problems.push(format!("{n}: readOnlyRootFilesystem is not true"));
    }
    if sc["allowPrivilegeEscalation"] != false {
        problems.push(format!("{n}: allowPrivilegeEscalation is not false"));
    }
    if !strings(&sc["capabilities"]["drop"]).contains(&"ALL".to_string()) {
        problems.push(format!("{n}: capabilities.drop does not hold ALL"));
    }
    problems
}

fn proxy_problems(spec: &Value, proxy: &Value, init: &[Value], main: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let n = proxy["name"].as_str().unwrap_or("?");
    let args = strings(&proxy["args"]);
    let is_baton = |cmd: &[String], sub: &str| {
        cmd.first()
            .is_some_and(|c| binaries_of("baton-").contains(c))
            && cmd.get(1).map(String::as_str) == Some(sub)
    };

    // The status server: reachable on the pod IP, and where the probes look.
    let status_port = match setting(proxy, "--status-addr", "BATON_STATUS_ADDR") {
        None => STATUS_PORT,
        Some(addr) => match addr.parse::<SocketAddr>() {
            Ok(a) if a.ip().is_loopback() => {
                problems.push(format!(
                    "{n}: --status-addr {addr} is loopback: the kubelet probes the pod IP"
                ));
                u64::from(a.port())
            }
            Ok(a) => u64::from(a.port()),
            Err(_) => {
                problems.push(format!("{n}: --status-addr {addr} is not an address"));
                STATUS_PORT
            }
        },
    };
    let ready_probe = |kind: &str| {
        let get = &proxy[kind]["httpGet"];
        get["path"] == "/healthz/ready" && probe_port(proxy, &get["port"]) == Some(status_port)
    };
    if !ready_probe("readinessProbe") {
        problems.push(format!(
            "{n}: no readinessProbe on /healthz/ready, port {status_port}"
        ));
    }

    // The proxy starts before the app.
    let native = init.iter().any(|c| c["name"] == proxy["name"]);
    if native {
        if proxy["restartPolicy"] != "Always" {
            problems.push(format!(
                "{n}: an init container without restartPolicy: Always is no sidecar"
            ));
        }
        if !ready_probe("startupProbe") {
            problems.push(format!(
                "{n}: no startupProbe on /healthz/ready, port {status_port}: the app would not wait for the proxy"
            ));
        }
    } else {
        if main.first().map(|c| &c["name"]) != Some(&proxy["name"]) {
            problems.push(format!(
                "{n}: not the first container: the app would start before the proxy"
            ));
        }
        let hook = strings(&proxy["lifecycle"]["postStart"]["exec"]["command"]);
        if !is_baton(&hook, "wait") {
            problems.push(format!(
                "{n}: no postStart `baton wait`: the app would start before the proxy is ready"
            ));
        }
    }
    if !is_baton(
        &strings(&proxy["lifecycle"]["preStop"]["exec"]["command"]),
        "drain",
    ) {
        problems.push(format!("{n}: the preStop hook is not `baton drain`"));
    }

    // Non-root as Istio's proxy, and a writable place for baton's files.
    let uid = proxy["securityContext"]["runAsUser"]
        .as_u64()
        .or(spec["securityContext"]["runAsUser"].as_u64());
    if uid != Some(PROXY_UID) {
        problems.push(format!("{n}: runAsUser is {uid:?}, not {PROXY_UID}"));
    }
    let writable = match args.first().map(String::as_str) {
        Some("envoy") => setting(proxy, "--config-dir", "BATON_CONFIG_DIR"),
        _ => env_var(proxy, "TMPDIR"),
    };
    let empty_dirs: Vec<&str> = spec["volumes"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter(|v| !v["emptyDir"].is_null())
                .filter_map(|v| v["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let mounted = |path: &str| {
        proxy["volumeMounts"].as_array().is_some_and(|m| {
            m.iter().any(|m| {
                m["mountPath"] == path && empty_dirs.contains(&m["name"].as_str().unwrap_or(""))
            })
        })
    };
    match writable {
        Some(path) if mounted(&path) => {}
        other => problems.push(format!(
            "{n}: baton's files go to {other:?} (--config-dir for envoy, $TMPDIR for run), \
             which is no emptyDir mount: the root filesystem is read-only"
        )),
    }

    // Memory for two epochs at once during a hot restart.
    let memory = |kind: &str| quantity(&proxy["resources"][kind]["memory"]);
    match (memory("requests"), memory("limits")) {
        (Some(request), Some(limit)) if limit >= 2 * request => {}
        (request, limit) => problems.push(format!(
            "{n}: memory limit {limit:?} is not twice the request {request:?}: a hot restart runs two epochs"
        )),
    }

    // The kubelet's grace covers the drain and baton's own SIGTERM → SIGKILL wait.
    let drain = setting(
        proxy,
        "--termination-drain-duration",
        "BATON_TERMINATION_DRAIN_DURATION",
    )
    .map(|d| humantime::parse_duration(&d).expect("a duration"))
    .unwrap_or(TERMINATION_DRAIN);
    let grace = Duration::from_secs(spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30));
    if grace <= drain + KILL_GRACE {
        problems.push(format!(
            "terminationGracePeriodSeconds {grace:?} does not exceed --termination-drain-duration {drain:?} + {KILL_GRACE:?}"
        ));
    }
    problems
}

/// A Kubernetes memory quantity in bytes (`64Mi`, `1Gi`, `500M`, `1000`).
fn quantity(v: &Value) -> Option<u64> {
    let text = match v {
        Value::Number(n) => return n.as_u64(),
        Value::String(s) => s.as_str(),
        _ => return None,
    };
    let units = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(n) = text.strip_suffix(suffix) {
            return n.parse::<u64>().ok().map(|n| n * factor);
        }
    }
    text.parse().ok()
}

/// Every Service's target port must be one of the proxy's ports.
fn service_problems(docs: &[Value]) -> Vec<String> {
    let proxy_ports: Vec<Value> = pod_specs(docs)
        .iter()
        .flat_map(|(_, spec)| {
            let init = spec["initContainers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let main = spec["containers"].as_array().cloned().unwrap_or_default();
            init.into_iter().chain(main)
        })
        .filter(|c| is_baton_image(c["image"].as_str().unwrap_or("")))
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .flat_map(|p| [p["name"].clone(), p["containerPort"].clone()])
        .collect();
    docs.iter()
        .filter(|d| d["kind"] == "Service")
        .flat_map(|d| d["spec"]["ports"].as_array().cloned().unwrap_or_default())
        .filter(|p| !proxy_ports.contains(&p["targetPort"]))
        .map(|p| format!("Service port {} targets no port of the proxy", p["name"]))
        .collect()
}

#[test]
fn every_manifest_passes_the_checks_a_schema_cannot_make() {
    let mut variants = Vec::new();
    for (path, docs) in manifests() {
        let pods = pod_specs(&docs);
        assert!(!pods.is_empty(), "{}: no pod spec", path.display());
        for (name, spec) in pods {
            let found = problems(spec);
            assert!(
                found.is_empty(),
                "{} {name}:\n{}",
                path.display(),
                found.join("\n")
            );
            let proxy = spec["initContainers"]
                .as_array()
                .and_then(|i| i.iter().find(|c| c["restartPolicy"] == "Always"));
            let native = proxy.is_some();
            let proxy = proxy.unwrap_or(&spec["containers"][0]);
            let driver = strings(&proxy["args"]).first().cloned().unwrap_or_default();
            variants.push((native, driver));
        }
        let found = service_problems(&docs);
        assert!(found.is_empty(), "{}: {found:?}", path.display());
    }
    for wanted in [(true, "envoy"), (false, "envoy"), (true, "run")] {
        assert!(
            variants.contains(&(wanted.0, wanted.1.to_string())),
            "no manifest with native sidecar {} and `baton {}`: {variants:?}",
            wanted.0,
            wanted.1
        );
    }
}

/// The example this project shipped before, which a schema passed.
const BROKEN: &str = r#"
apiVersion: v1
kind: Pod
metadata: { name: web }
spec:
  terminationGracePeriodSeconds: 10
  containers:
    - name: app
      image: registry.example/web:1.0
      ports: [{ containerPort: 9000 }]
      lifecycle:
        postStart:
          exec: { command: ["/usr/local/bin/baton", "wait", "--timeout", "60s"] }
    - name: proxy
      image: registry.example/baton-envoy:1.0
      args: [envoy, --termination-drain-duration=10s, --status-addr=127.0.0.1:15020]
      readinessProbe:
        httpGet: { path: /healthz/ready, port: 15020, host: 127.0.0.1 }
      lifecycle:
        preStop:
          exec: { command: ["sh", "-c", "curl -s -XPOST 127.0.0.1:15020/drain; sleep 5"] }
"#;

#[test]
fn the_checks_find_what_the_old_example_got_wrong() {
    let docs = documents(BROKEN);
    let (_, spec) = pod_specs(&docs).pop().unwrap();
    let found = problems(spec).join("\n");
    for wanted in [
        "proxy: readinessProbe.httpGet.host is set",
        "app: postStart runs /usr/local/bin/baton, which registry.example/web:1.0 does not have",
        "proxy: preStop runs sh, which registry.example/baton-envoy:1.0 does not have",
        "proxy: --status-addr 127.0.0.1:15020 is loopback",
        "proxy: not the first container",
        "proxy: no postStart `baton wait`",
        "proxy: the preStop hook is not `baton drain`",
        "proxy: runAsUser is None, not 1337",
        "proxy: readOnlyRootFilesystem is not true",
        "app: capabilities.drop does not hold ALL",
        "proxy: no resources.limits.memory",
        "which is no emptyDir mount",
        "app: declares ports",
        "terminationGracePeriodSeconds 10s does not exceed",
    ] {
        assert!(found.contains(wanted), "{wanted:?} not found in:\n{found}");
    }
}

#[test]
fn quantities_are_read_as_kubernetes_writes_them() {
    let q = |s: &str| quantity(&Value::String(s.into()));
    assert_eq!(q("64Mi"), Some(64 << 20));
    assert_eq!(q("1Gi"), Some(1 << 30));
    assert_eq!(q("500M"), Some(500_000_000));
    assert_eq!(q("1000"), Some(1000));
    assert_eq!(q("lots"), None);
}

/// The instructions of a Dockerfile's final stage, but the `COPY`s (what differs is
/// where the binaries come from, not where they go or how the image runs).
fn final_stage(path: &Path) -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect();
    let from = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    let stage = &lines[from + 1..];
    let copies = stage
        .iter()
        .filter(|l| l.starts_with("COPY "))
        .map(|l| l.split_whitespace().last().unwrap().to_string())
        .collect();
    let rest = stage
        .iter()
        .filter(|l| !l.starts_with("COPY "))
        .map(|l| l.to_string())
        .collect();
    (rest, copies)
}

#[test]
fn the_image_ci_runs_is_the_dockerfiles_final_stage() {
    let (user, user_copies) = final_stage(&dir().join("Dockerfile"));
    let (ci, ci_copies) = final_stage(&dir().join("Dockerfile.ci"));
    assert_eq!(user, ci, "USER, ENTRYPOINT, CMD… differ");
    assert!(
        user.contains(&format!("USER {PROXY_UID}:{PROXY_UID}")),
        "{user:?}"
    );
    let baton = baton_path_in_image();
    assert_eq!(user_copies, vec![baton.clone()]);
    // CI's base has no Envoy: it goes where the official image has it.
    assert_eq!(ci_copies, vec!["/usr/local/bin/envoy".to_string(), baton]);
}
