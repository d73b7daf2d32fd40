//! What the status server shows: the [`Snapshot`] derived from the core's
//! [`State`] after every event, and the [`EpochsReport`] that `GET /epochs` sends
//! (and `baton status` reads back).
//!
//! **Invariant:** everything here is plain data, serialisable both ways; times travel
//! as RFC 3339 strings (UTC, milliseconds). Nothing is kept here that the core does
//! not own: a snapshot is a pure function of the state and the [`Static`] facts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::supervisor::{
    CertInfo, DriverKind, Epoch, Millis, Phase, RestartCause, RestartDurations, State, Trigger,
};

/// Whether baton should receive traffic, as Kubernetes readiness sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Readiness {
    /// An epoch serves and is ready.
    Ready,
    /// Nothing should be sent here yet (or any more).
    NotReady {
        /// One line for humans: `starting: epoch 0 not ready yet`, `no epoch serving`,
        /// `crash backoff: retry in 2s`, `draining (POST /drain)`, `shutting down`.
        reason: String,
    },
}

impl Readiness {
    /// Not ready, for `reason`.
    pub fn not_ready(reason: impl Into<String>) -> Self {
        Readiness::NotReady {
            reason: reason.into(),
        }
    }

    /// `true` for [`Readiness::Ready`].
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready)
    }
}

/// One epoch as the status server shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochStatus {
    /// baton's epoch number (0, 1, 2…).
    pub number: u32,
    /// Process id, once spawned.
    pub pid: Option<u32>,
    /// Life stage.
    pub state: Phase,
    /// What asked for it (`signal`, `file-change`, `cert-change`, `api`); `null` for
    /// the first epoch and crash recoveries.
    #[serde(default)]
    pub trigger: Option<Trigger>,
    /// When its process was spawned.
    #[serde(with = "rfc3339::option", default)]
    pub started_at: Option<SystemTime>,
    /// When it reported ready.
    #[serde(with = "rfc3339::option", default)]
    pub ready_at: Option<SystemTime>,
    /// When its process ended.
    #[serde(with = "rfc3339::option", default)]
    pub exited_at: Option<SystemTime>,
    /// Digest of the configuration it was started with.
    pub config_digest: Option<String>,
    /// How it ended (`exit code 0`, `killed by signal 9`), once it has.
    pub exit_status: Option<String>,
    /// Envoy's `--restart-epoch` (0 in generic mode).
    pub restart_epoch: u32,
    /// Hot-restart chain (0 in generic mode).
    pub chain: u32,
    /// The `--cert` pairs it was started with: subject, serial, validity.
    #[serde(default)]
    pub certs: Vec<CertInfo>,
}

/// Everything the status server knows, replaced whole after every event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// What `GET /healthz/ready` answers.
    pub readiness: Readiness,
    /// Live epochs and the last few exited ones, oldest first.
    pub epochs: Vec<EpochStatus>,
    /// The last restart or recovery failure, if any.
    pub last_error: Option<String>,
    /// Restarts started (every trigger that was not coalesced, plus crash recoveries).
    pub restarts_total: u64,
    /// The same by cause label (`signal`, `file`, `cert`, `http`, `crash`).
    pub restarts_by_trigger: BTreeMap<String, u64>,
    /// Trigger → serving of every restart after the first epoch.
    pub restart_durations: RestartDurations,
    /// Restarts that did not put a new epoch into service, by reason label
    /// (`template`, `config`, `cert`, `preflight`, `spawn`, `not_ready`, `exited`).
    pub restart_failures: BTreeMap<String, u64>,
    /// Times the serving epoch died.
    pub crashes_total: u64,
    /// File-triggered restarts (a `--watch` path or a `--cert` pair changed) that put
    /// a new epoch into service.
    pub rotations_total: u64,
    /// `--cert-rotation sds`: certificate rotations served in place (no restart),
    /// confirmed by Envoy; `None` under `--cert-rotation restart`.
    #[serde(default)]
    pub sds_rotations_total: Option<u64>,
    /// How long the last successful restart took, request to ready.
    pub last_restart_duration_ms: Option<u64>,
    /// Why a watched path is not watched right now (changes there go unnoticed).
    pub watch_error: Option<String>,
    /// Times a watched path could not be watched.
    pub watch_errors_total: u64,
    /// When baton started.
    #[serde(with = "rfc3339")]
    pub started_at: SystemTime,
    /// `envoy` or `generic`.
    pub driver: String,
    /// Envoy mode: the admin address whose `/stats/prometheus` is appended to baton's.
    pub envoy_admin: Option<SocketAddr>,
}

/// What does not change while baton runs.
#[derive(Debug, Clone)]
pub struct Static {
    /// Which driver.
    pub driver: DriverKind,
    /// Envoy mode: the admin address whose stats are appended to baton's.
    pub envoy_admin: Option<SocketAddr>,
    /// When baton started (the core's time 0).
    pub started_at: SystemTime,
    /// `--cert-rotation sds`: certificates are rotated in place.
    pub certs_in_place: bool,
}

impl Snapshot {
    /// What the status server shows for `state`.
    pub fn of(state: &State, info: &Static) -> Self {
        let wall = |ms: Millis| info.started_at + std::time::Duration::from_millis(ms);
        let status = |e: &Epoch| EpochStatus {
            number: e.number,
            pid: e.pid,
            state: e.phase,
            trigger: e.trigger,
            started_at: e.spawned_at.map(wall),
            ready_at: e.ready_at.map(wall),
            exited_at: e.exited_at.map(wall),
            config_digest: e.config_digest.clone(),
            exit_status: e.exit.map(|x| x.to_string()),
            restart_epoch: e.restart_epoch,
            chain: e.chain,
            certs: e.certs.clone(),
        };
        let counts = state.counts();
        Snapshot {
            readiness: match state.readiness() {
                Ok(()) => Readiness::Ready,
                Err(reason) => Readiness::not_ready(reason),
            },
            epochs: state.history().chain(state.epochs()).map(status).collect(),
            last_error: state.last_error().map(str::to_string),
            restarts_total: counts.restarts,
            restarts_by_trigger: RestartCause::ALL
                .iter()
                .map(|c| (c.label().to_string(), counts.restarts_of(*c)))
                .collect(),
            restart_durations: counts.restart_durations.clone(),
            restart_failures: crate::supervisor::FailureReason::ALL
                .iter()
                .map(|r| (r.label().to_string(), counts.failures_of(*r)))
                .collect(),
            crashes_total: counts.crashes,
            rotations_total: counts.rotations,
            sds_rotations_total: info.certs_in_place.then_some(counts.sds_rotations),
            last_restart_duration_ms: counts.last_restart_ms,
            watch_error: state.watch_error().map(str::to_string),
            watch_errors_total: counts.watch_errors,
            started_at: info.started_at,
            driver: info.driver.label().into(),
            envoy_admin: info.envoy_admin,
        }
    }

    /// The first snapshot, before any epoch exists: not ready, nothing counted.
    #[cfg(test)]
    pub fn starting(driver: impl Into<String>, started_at: SystemTime) -> Self {
        Snapshot {
            readiness: Readiness::not_ready("starting: no epoch yet"),
            epochs: Vec::new(),
            last_error: None,
            restarts_total: 0,
            restarts_by_trigger: BTreeMap::new(),
            restart_durations: RestartDurations::default(),
            restart_failures: BTreeMap::new(),
            crashes_total: 0,
            rotations_total: 0,
            sds_rotations_total: None,
            last_restart_duration_ms: None,
            watch_error: None,
            watch_errors_total: 0,
            started_at,
            driver: driver.into(),
            envoy_admin: None,
        }
    }

    /// The epoch in [`Phase::Serving`], if any.
    pub fn serving(&self) -> Option<&EpochStatus> {
        self.epochs.iter().find(|e| e.state == Phase::Serving)
    }

    /// The `--cert` pairs served: those of the serving epoch or, while none serves,
    /// of the last epoch that did (a recovery starts from the same files).
    pub fn served_certs(&self) -> &[CertInfo] {
        self.serving()
            .or_else(|| self.epochs.iter().rev().find(|e| e.ready_at.is_some()))
            .map_or(&[], |e| e.certs.as_slice())
    }

    /// Epochs whose process exists: spawned and not yet exited.
    pub fn running(&self) -> usize {
        self.epochs
            .iter()
            .filter(|e| e.pid.is_some() && e.state != Phase::Exited)
            .count()
    }
}

/// The body of `GET /epochs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochsReport {
    /// When the server produced this report: the "now" that ages are measured from,
    /// so a reader's clock does not matter.
    #[serde(with = "rfc3339")]
    pub generated_at: SystemTime,
    /// Current readiness.
    pub readiness: Readiness,
    /// Live epochs and the last few exited ones, oldest first.
    pub epochs: Vec<EpochStatus>,
    /// The last restart or recovery failure, if any.
    pub last_error: Option<String>,
    /// Restarts started.
    pub restarts_total: u64,
    /// Failed restarts by reason label.
    pub restart_failures: BTreeMap<String, u64>,
    /// Times the serving epoch died.
    pub crashes_total: u64,
    /// Why a watched path is not watched right now, if one is not.
    #[serde(default)]
    pub watch_error: Option<String>,
    /// Times a watched path could not be watched.
    #[serde(default)]
    pub watch_errors_total: u64,
    /// `--cert-rotation sds`: certificate rotations served in place so far (the
    /// serving epoch's `certs` are what Envoy's `/certs` confirmed); absent under
    /// `--cert-rotation restart`.
    #[serde(default)]
    pub sds_rotations_total: Option<u64>,
}

impl EpochsReport {
    /// The report for `snapshot` as of `now`.
    pub fn new(snapshot: &Snapshot, now: SystemTime) -> Self {
        EpochsReport {
            generated_at: now,
            readiness: snapshot.readiness.clone(),
            epochs: snapshot.epochs.clone(),
            last_error: snapshot.last_error.clone(),
            restarts_total: snapshot.restarts_total,
            restart_failures: snapshot.restart_failures.clone(),
            crashes_total: snapshot.crashes_total,
            watch_error: snapshot.watch_error.clone(),
            watch_errors_total: snapshot.watch_errors_total,
            sds_rotations_total: snapshot.sds_rotations_total,
        }
    }
}

/// `SystemTime` as an RFC 3339 string, for `#[serde(with = "rfc3339")]`.
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text).map_err(D::Error::custom)
    }

    /// The same for `Option<SystemTime>`, `null` for `None`.
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<SystemTime>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|text| humantime::parse_rfc3339_weak(&text).map_err(D::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn epoch_times_travel_as_rfc3339_and_come_back_equal() {
        let epoch = EpochStatus {
            number: 3,
            pid: Some(42),
            state: Phase::Serving,
            trigger: Some(Trigger::FileChange),
            started_at: Some(at(1_700_000_000) + Duration::from_millis(250)),
            ready_at: None,
            exited_at: None,
            config_digest: Some("abc".into()),
            exit_status: None,
            restart_epoch: 1,
            chain: 0,
            certs: vec![CertInfo {
                path: "/certs/tls.crt".into(),
                subject: "CN=example.com".into(),
                serial: "1A".into(),
                not_before: 1_700_000_000,
                not_after: 1_800_000_000,
            }],
        };
        let json = serde_json::to_value(&epoch).unwrap();
        assert_eq!(json["started_at"], "2023-11-14T22:13:20.250Z");
        assert_eq!(json["ready_at"], serde_json::Value::Null);
        assert_eq!(json["state"], "serving");
        assert_eq!(json["trigger"], "file-change");
        assert_eq!(json["certs"][0]["serial"], "1A");
        assert_eq!(json["certs"][0]["not_after"], 1_800_000_000);
        let back: EpochStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, epoch);
    }

    #[test]
    fn readiness_says_status_and_reason() {
        let json = serde_json::to_value(Readiness::not_ready("no epoch serving")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"status": "not_ready", "reason": "no epoch serving"})
        );
        let json = serde_json::to_value(Readiness::Ready).unwrap();
        assert_eq!(json, serde_json::json!({"status": "ready"}));
    }

    #[test]
    fn running_counts_spawned_epochs_that_have_not_exited() {
        let mut snapshot = Snapshot::starting("generic", at(0));
        let epoch = |number, pid, state| EpochStatus {
            number,
            pid,
            state,
            trigger: None,
            started_at: None,
            ready_at: None,
            exited_at: None,
            config_digest: None,
            exit_status: None,
            restart_epoch: 0,
            chain: 0,
            certs: Vec::new(),
        };
        snapshot.epochs = vec![
            epoch(0, Some(10), Phase::Exited),
            epoch(1, Some(11), Phase::Draining),
            epoch(2, Some(12), Phase::Serving),
            epoch(3, None, Phase::Preparing),
        ];
        assert_eq!(snapshot.running(), 2);
        assert_eq!(snapshot.serving().map(|e| e.number), Some(2));
    }

    #[test]
    fn served_certs_are_the_serving_epochs_or_the_last_that_served() {
        let pair = |serial: &str| CertInfo {
            path: "/c/tls.crt".into(),
            subject: "CN=x".into(),
            serial: serial.into(),
            not_before: 0,
            not_after: 1,
        };
        let epoch = |number, state, served: bool, serial: &str| EpochStatus {
            number,
            pid: Some(number),
            state,
            trigger: None,
            started_at: None,
            ready_at: served.then(|| at(number.into())),
            exited_at: None,
            config_digest: None,
            exit_status: None,
            restart_epoch: 0,
            chain: 0,
            certs: vec![pair(serial)],
        };
        let mut snapshot = Snapshot::starting("envoy", at(0));
        assert!(snapshot.served_certs().is_empty());
        snapshot.epochs = vec![
            epoch(0, Phase::Exited, true, "A"),
            epoch(1, Phase::Serving, true, "B"),
            epoch(2, Phase::Starting, false, "C"),
        ];
        assert_eq!(snapshot.served_certs()[0].serial, "B");
        // The serving epoch crashed; its replacement is not ready yet.
        snapshot.epochs[1].state = Phase::Exited;
        assert_eq!(snapshot.served_certs()[0].serial, "B");
    }
}
