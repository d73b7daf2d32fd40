//! What the shell publishes after every event: the [`Snapshot`] the status server
//! reads, and the [`EpochsReport`] that `GET /epochs` sends (and `baton status` reads
//! back).
//!
//! **Invariant:** everything here is plain data, serialisable both ways; times travel
//! as RFC 3339 strings (UTC, milliseconds).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

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

/// Where an epoch is in its life: the supervisor's epoch states plus `exited`, which
/// the shell keeps for the last few epochs that are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpochPhase {
    /// Its configuration is rendered and validated; no process yet.
    Preparing,
    /// Its process runs and is not ready yet.
    Starting,
    /// It takes the traffic.
    Serving,
    /// A newer epoch took over (or `POST /drain`); it finishes what it has.
    Draining,
    /// It failed to start and is being killed.
    Failing,
    /// baton sent it SIGTERM or SIGKILL.
    Stopping,
    /// Its process is gone.
    Exited,
}

impl EpochPhase {
    /// Stable lowercase name, as in the JSON.
    pub fn label(self) -> &'static str {
        match self {
            EpochPhase::Preparing => "preparing",
            EpochPhase::Starting => "starting",
            EpochPhase::Serving => "serving",
            EpochPhase::Draining => "draining",
            EpochPhase::Failing => "failing",
            EpochPhase::Stopping => "stopping",
            EpochPhase::Exited => "exited",
        }
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
    pub state: EpochPhase,
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
    /// Restarts that did not put a new epoch into service, by reason label
    /// (`template`, `config`, `cert`, `preflight`, `spawn`, `not_ready`, `exited`).
    pub restart_failures: BTreeMap<String, u64>,
    /// Times the serving epoch died.
    pub crashes_total: u64,
    /// Certificate rotations that led to a restart.
    pub rotations_total: u64,
    /// How long the last successful restart took, request to ready.
    pub last_restart_duration_ms: Option<u64>,
    /// When baton started.
    #[serde(with = "rfc3339")]
    pub started_at: SystemTime,
    /// `envoy` or `generic`.
    pub driver: String,
    /// Envoy mode: the admin address whose `/stats/prometheus` is appended to baton's.
    pub envoy_admin: Option<SocketAddr>,
}

impl Snapshot {
    /// The first snapshot, before any epoch exists: not ready, nothing counted.
    pub fn starting(driver: impl Into<String>, started_at: SystemTime) -> Self {
        Snapshot {
            readiness: Readiness::not_ready("starting: no epoch yet"),
            epochs: Vec::new(),
            last_error: None,
            restarts_total: 0,
            restart_failures: BTreeMap::new(),
            crashes_total: 0,
            rotations_total: 0,
            last_restart_duration_ms: None,
            started_at,
            driver: driver.into(),
            envoy_admin: None,
        }
    }

    /// The epoch in [`EpochPhase::Serving`], if any.
    pub fn serving(&self) -> Option<&EpochStatus> {
        self.epochs.iter().find(|e| e.state == EpochPhase::Serving)
    }

    /// Epochs whose process exists: spawned and not yet exited.
    pub fn running(&self) -> usize {
        self.epochs
            .iter()
            .filter(|e| e.pid.is_some() && e.state != EpochPhase::Exited)
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
            state: EpochPhase::Serving,
            started_at: Some(at(1_700_000_000) + Duration::from_millis(250)),
            ready_at: None,
            exited_at: None,
            config_digest: Some("abc".into()),
            exit_status: None,
            restart_epoch: 1,
            chain: 0,
        };
        let json = serde_json::to_value(&epoch).unwrap();
        assert_eq!(json["started_at"], "2023-11-14T22:13:20.250Z");
        assert_eq!(json["ready_at"], serde_json::Value::Null);
        assert_eq!(json["state"], "serving");
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
            started_at: None,
            ready_at: None,
            exited_at: None,
            config_digest: None,
            exit_status: None,
            restart_epoch: 0,
            chain: 0,
        };
        snapshot.epochs = vec![
            epoch(0, Some(10), EpochPhase::Exited),
            epoch(1, Some(11), EpochPhase::Draining),
            epoch(2, Some(12), EpochPhase::Serving),
            epoch(3, None, EpochPhase::Preparing),
        ];
        assert_eq!(snapshot.running(), 2);
        assert_eq!(snapshot.serving().map(|e| e.number), Some(2));
    }
}
