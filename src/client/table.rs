//! `baton status` output: the epochs as a table, then readiness and counters.
//!
//! **Invariant:** ages are measured from the report's own `generated_at`, so the
//! output depends on the report alone (a reader's clock skew cannot show negative
//! ages, and tests are exact).

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use crate::status::{EpochStatus, EpochsReport, Readiness};
use crate::supervisor::{CertInfo, Phase};

const HEADER: [&str; 5] = ["EPOCH", "PID", "STATE", "AGE", "EXIT"];

/// The human rendering of `report`, ending with a newline.
pub fn render_status(report: &EpochsReport) -> String {
    let now = report.generated_at;
    let rows: Vec<[String; 5]> = report.epochs.iter().map(|e| row(e, now)).collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = HEADER.map(str::to_string);
    for cells in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (cell, width) in cells.iter().zip(widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no epochs)\n");
    }
    let readiness = match &report.readiness {
        Readiness::Ready => "ready".to_string(),
        Readiness::NotReady { reason } => format!("not ready: {reason}"),
    };
    let _ = writeln!(out, "readiness: {readiness}");
    let _ = write!(out, "restarts: {}", report.restarts_total);
    if !report.restart_failures.is_empty() {
        let failures: Vec<String> = report
            .restart_failures
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        let _ = write!(out, " (failed: {})", failures.join(", "));
    }
    let _ = writeln!(out, ", crashes: {}", report.crashes_total);
    let _ = writeln!(
        out,
        "last error: {}",
        report.last_error.as_deref().unwrap_or("none")
    );
    if let Some(why) = &report.watch_error {
        let _ = writeln!(out, "file watch failing: {why}");
    }
    if let Some(n) = report.sds_rotations_total {
        let _ = writeln!(
            out,
            "certificates: rotated in place through SDS ({n} so far); serials as envoy's /certs confirmed them"
        );
    }
    for cert in served_certs(report) {
        let expiry = SystemTime::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(cert.not_after).unwrap_or(0));
        let when = match expiry.duration_since(now) {
            Ok(left) => format!("in {}", days_hours(left)),
            Err(past) => format!("{} ago", days_hours(past.duration())),
        };
        let _ = writeln!(
            out,
            "cert {}: {}, serial {}, expires {} ({when})",
            cert.path,
            cert.subject,
            cert.serial,
            humantime::format_rfc3339_seconds(expiry),
        );
    }
    out
}

/// A certificate's lifetime at a glance: `89d 23h`, `5h 2m`, `3m 7s`.
fn days_hours(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, minutes) = (s / 86_400, s % 86_400 / 3_600, s % 3_600 / 60);
    match (days, hours) {
        (0, 0) => format!("{minutes}m {}s", s % 60),
        (0, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

/// The pairs of the serving epoch or, while none serves, of the last that did.
fn served_certs(report: &EpochsReport) -> &[CertInfo] {
    let epochs = &report.epochs;
    epochs
        .iter()
        .find(|e| e.state == Phase::Serving)
        .or_else(|| epochs.iter().rev().find(|e| e.ready_at.is_some()))
        .map_or(&[], |e| e.certs.as_slice())
}

fn row(epoch: &EpochStatus, now: SystemTime) -> [String; 5] {
    let exit = match (&epoch.exit_status, epoch.exited_at) {
        (Some(status), Some(at)) => format!("{status}, {} ago", age(at, now)),
        (Some(status), None) => status.clone(),
        (None, _) => "-".to_string(),
    };
    [
        epoch.number.to_string(),
        epoch.pid.map_or("-".to_string(), |p| p.to_string()),
        epoch.state.label().to_string(),
        epoch.started_at.map_or("-".to_string(), |t| age(t, now)),
        exit,
    ]
}

/// `now - since`, rounded to whole seconds, as `1h 2m 3s`; `0s` when `since` is later.
fn age(since: SystemTime, now: SystemTime) -> String {
    let elapsed = now.duration_since(since).unwrap_or_default();
    let seconds = (elapsed + Duration::from_millis(500)).as_secs();
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn epoch(number: u32, pid: Option<u32>, state: Phase) -> EpochStatus {
        EpochStatus {
            number,
            pid,
            state,
            trigger: None,
            started_at: None,
            ready_at: None,
            exited_at: None,
            config_digest: None,
            exit_status: None,
            restart_epoch: number,
            chain: 0,
            certs: Vec::new(),
        }
    }

    #[test]
    fn status_table_shows_ages_from_the_report_time_rounded_to_seconds() {
        let now = at(10_000);
        let mut old = epoch(0, Some(101), Phase::Exited);
        old.started_at = Some(at(10_000 - 3_725));
        old.exited_at = Some(at(10_000 - 65));
        old.exit_status = Some("exit code 0".into());
        let mut serving = epoch(1, Some(102), Phase::Serving);
        serving.started_at = Some(now - Duration::from_millis(29_600));
        serving.certs = vec![CertInfo {
            path: "/certs/tls.crt".into(),
            subject: "CN=example.com".into(),
            serial: "1A".into(),
            not_before: 0,
            not_after: 10_000 + 90 * 86_400 + 3_600,
        }];
        let preparing = epoch(2, None, Phase::Preparing);
        let report = EpochsReport {
            generated_at: now,
            readiness: Readiness::Ready,
            epochs: vec![old, serving, preparing],
            last_error: Some("epoch 2: config: bad cluster".into()),
            restarts_total: 2,
            restart_failures: BTreeMap::from([("config".to_string(), 1)]),
            crashes_total: 0,
            watch_error: None,
            watch_errors_total: 0,
            sds_rotations_total: None,
        };
        let expected = "\
EPOCH  PID  STATE      AGE       EXIT
0      101  exited     1h 2m 5s  exit code 0, 1m 5s ago
1      102  serving    30s       -
2      -    preparing  -         -
readiness: ready
restarts: 2 (failed: config 1), crashes: 0
last error: epoch 2: config: bad cluster
cert /certs/tls.crt: CN=example.com, serial 1A, expires 1970-04-01T03:46:40Z (in 90d 1h)
";
        assert_eq!(render_status(&report), expected);
    }

    #[test]
    fn in_place_rotations_are_said_with_the_serial_envoy_confirmed() {
        let mut serving = epoch(0, Some(100), Phase::Serving);
        serving.certs = vec![CertInfo {
            path: "/certs/tls.crt".into(),
            subject: "CN=example.com".into(),
            serial: "2002".into(),
            not_before: 0,
            not_after: 86_400,
        }];
        let report = EpochsReport {
            generated_at: at(0),
            readiness: Readiness::Ready,
            epochs: vec![serving],
            last_error: None,
            restarts_total: 0,
            restart_failures: BTreeMap::new(),
            crashes_total: 0,
            watch_error: None,
            watch_errors_total: 0,
            sds_rotations_total: Some(3),
        };
        let text = render_status(&report);
        assert!(
            text.ends_with(
                "certificates: rotated in place through SDS (3 so far); serials as envoy's /certs confirmed them\n\
                 cert /certs/tls.crt: CN=example.com, serial 2002, expires 1970-01-02T00:00:00Z (in 1d 0h)\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn certificate_lifetimes_read_in_days_hours_minutes() {
        let d = |s| days_hours(Duration::from_secs(s));
        assert_eq!(d(90 * 86_400 + 3_700), "90d 1h");
        assert_eq!(d(5 * 3_600 + 120), "5h 2m");
        assert_eq!(d(187), "3m 7s");
    }

    #[test]
    fn status_table_without_epochs_says_so_and_gives_the_reason() {
        let report = EpochsReport {
            generated_at: at(0),
            readiness: Readiness::not_ready("starting: no epoch yet"),
            epochs: vec![],
            last_error: None,
            restarts_total: 0,
            restart_failures: BTreeMap::new(),
            crashes_total: 0,
            watch_error: None,
            watch_errors_total: 0,
            sds_rotations_total: None,
        };
        let text = render_status(&report);
        assert!(text.contains("(no epochs)\n"), "{text}");
        assert!(
            text.contains("readiness: not ready: starting: no epoch yet\n"),
            "{text}"
        );
        assert!(text.contains("last error: none\n"), "{text}");
    }
}
