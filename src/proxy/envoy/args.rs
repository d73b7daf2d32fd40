//! Envoy's command line for one epoch.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use super::chains::BaseIdArgs;

/// Flags every epoch (and the validation run) gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvoyOptions {
    /// `--drain-time-s`.
    pub drain_time: Duration,
    /// `--parent-shutdown-time-s`.
    pub parent_shutdown: Duration,
    /// `--service-cluster`.
    pub service_cluster: String,
    /// `--service-node`.
    pub service_node: String,
    /// `--local-address-ip-version` (`v4` or `v6`).
    pub ip_version: String,
    /// `-l`.
    pub log_level: String,
    /// `--concurrency`, when set.
    pub concurrency: Option<u32>,
    /// Everything after `--` on baton's command line, passed last.
    pub extra: Vec<String>,
}

/// Whole seconds, rounded up: Envoy takes seconds, and rounding down could turn a
/// 500ms drain into no drain at all.
fn secs(d: Duration) -> String {
    let whole = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    whole.to_string()
}

/// The arguments of one epoch, in the documented order.
pub fn epoch_args(
    config: &Path,
    restart_epoch: u32,
    base_id: &BaseIdArgs,
    o: &EnvoyOptions,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["-c".into(), config.into()];
    let flags = [
        ("--restart-epoch", restart_epoch.to_string()),
        ("--drain-time-s", secs(o.drain_time)),
        ("--parent-shutdown-time-s", secs(o.parent_shutdown)),
        ("--service-cluster", o.service_cluster.clone()),
        ("--service-node", o.service_node.clone()),
        ("--local-address-ip-version", o.ip_version.clone()),
        ("-l", o.log_level.clone()),
    ];
    for (flag, value) in flags {
        args.push(flag.into());
        args.push(value.into());
    }
    if let Some(n) = o.concurrency {
        args.push("--concurrency".into());
        args.push(n.to_string().into());
    }
    args.extend(base_id.to_args());
    args.extend(o.extra.iter().map(OsString::from));
    args
}

/// The arguments of `envoy --mode validate` for a bootstrap: the node flags matter
/// (a bootstrap without a node id is checked against them), hot restart does not.
pub fn validate_args(config: &Path, o: &EnvoyOptions) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--mode".into(),
        "validate".into(),
        "-c".into(),
        config.into(),
    ];
    for (flag, value) in [
        ("--service-cluster", &o.service_cluster),
        ("--service-node", &o.service_node),
        ("--local-address-ip-version", &o.ip_version),
    ] {
        args.push(flag.into());
        args.push(value.into());
    }
    args.push("-l".into());
    args.push("error".into());
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn options() -> EnvoyOptions {
        EnvoyOptions {
            drain_time: Duration::from_millis(1500),
            parent_shutdown: Duration::from_secs(3),
            service_cluster: "c".into(),
            service_node: "n".into(),
            ip_version: "v4".into(),
            log_level: "info".into(),
            concurrency: Some(2),
            extra: vec!["--component-log-level".into(), "upstream:debug".into()],
        }
    }

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn first_epoch_of_a_chain_asks_for_a_dynamic_base_id() {
        let base = BaseIdArgs::Dynamic(PathBuf::from("/d/base-id.0"));
        let args = strings(epoch_args(
            Path::new("/d/envoy-rev0.json"),
            0,
            &base,
            &options(),
        ));
        assert_eq!(
            args.join(" "),
            "-c /d/envoy-rev0.json --restart-epoch 0 --drain-time-s 2 --parent-shutdown-time-s 3 \
             --service-cluster c --service-node n --local-address-ip-version v4 -l info \
             --concurrency 2 --use-dynamic-base-id --base-id-path /d/base-id.0 \
             --component-log-level upstream:debug"
        );
    }

    #[test]
    fn later_epochs_pass_the_chain_base_id() {
        let args = strings(epoch_args(
            Path::new("x"),
            3,
            &BaseIdArgs::Fixed(17),
            &options(),
        ));
        let at = args.iter().position(|a| a == "--base-id").unwrap();
        assert_eq!(args[at + 1], "17");
        assert!(!args.contains(&"--use-dynamic-base-id".to_string()));
    }
}
