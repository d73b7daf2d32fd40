//! Envoy's drain timing: `--drain-duration`, `--parent-shutdown-duration` and
//! `--stats-flush-interval` fitted together.
//!
//! An old epoch's last counters reach baton only if it flushes after its drain and
//! before its child terminates it, so the flush interval must fit between the two
//! (Envoy takes whole seconds). Whatever the user left unset is derived to fit,
//! and said so; only values set explicitly that contradict each other are an error.
//! Every combination Istio accepts (parent shutdown longer than the drain) starts.

use std::time::Duration;

use crate::cli::DrainArgs;
use crate::defaults;

use super::Problems;

/// The timing an Envoy runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DrainTiming {
    /// `--drain-time-s` (rounded up to whole seconds by `args`).
    pub drain: Duration,
    /// `--parent-shutdown-time-s`.
    pub parent_shutdown: Duration,
    /// `stats_flush_interval`.
    pub flush: Duration,
    /// What was derived, for the start log and `baton render`.
    pub notes: Vec<String>,
}

impl DrainTiming {
    /// How long an old epoch is given before another restart may cut it short: its
    /// drain plus one flush.
    pub fn drain_period(&self) -> Duration {
        whole_seconds(self.drain) + self.flush
    }
}

/// Fit the three together; problems are recorded.
pub(super) fn envoy_timing(
    args: &DrainArgs,
    flush: Option<Duration>,
    problems: &mut Problems,
) -> DrainTiming {
    let human = |d: Duration| humantime::format_duration(d).to_string();
    let drain = args.drain_duration;
    let whole = whole_seconds(drain);
    let mut notes = Vec::new();
    if let Some(p) = args.parent_shutdown_duration {
        if p <= drain {
            problems.push(format!(
                "--parent-shutdown-duration ({}) must be longer than --drain-duration ({})",
                human(p),
                human(drain)
            ));
        }
    }
    let flush = match (flush, args.parent_shutdown_duration) {
        (Some(f), _) if f.is_zero() => {
            problems.push("--stats-flush-interval must be more than 0");
            f
        }
        (Some(f), Some(p)) => {
            if p > drain && p < whole + f {
                problems.push(format!(
                    "--parent-shutdown-duration ({}) must be at least --drain-duration plus \
                     --stats-flush-interval ({}), so an old epoch's last counters reach baton",
                    human(p),
                    human(whole + f)
                ));
            }
            f
        }
        (Some(f), None) => f,
        (None, None) => defaults::STATS_FLUSH_INTERVAL,
        (None, Some(p)) => {
            let room = p.saturating_sub(whole);
            let fitted = if room.is_zero() {
                // Envoy rounds the drain up to the parent shutdown: no flush fits
                // after the drain; the last second of a drain may go uncounted.
                notes.push(format!(
                    "--stats-flush-interval not given: 1s; with --drain-duration {} and \
                     --parent-shutdown-duration {} no flush fits after the drain, so the \
                     counts of an old epoch's last second may be lost",
                    human(drain),
                    human(p)
                ));
                Duration::from_secs(1)
            } else {
                room.min(defaults::STATS_FLUSH_INTERVAL)
            };
            if !room.is_zero() && fitted != defaults::STATS_FLUSH_INTERVAL {
                notes.push(format!(
                    "--stats-flush-interval not given: {} to fit --parent-shutdown-duration {} \
                     after --drain-duration {}",
                    human(fitted),
                    human(p),
                    human(drain)
                ));
            }
            fitted
        }
    };
    let parent_shutdown = args.parent_shutdown_duration.unwrap_or_else(|| {
        let fitted = defaults::PARENT_SHUTDOWN_DURATION.max(whole + flush);
        if fitted != defaults::PARENT_SHUTDOWN_DURATION {
            notes.push(format!(
                "--parent-shutdown-duration not given: {} (--drain-duration {} plus one \
                 stats flush {})",
                human(fitted),
                human(drain),
                human(flush)
            ));
        }
        fitted
    });
    DrainTiming {
        drain,
        parent_shutdown,
        flush,
        notes,
    }
}

/// Envoy takes drain times in whole seconds (rounded up).
pub(super) fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fit(
        drain: &str,
        parent: Option<&str>,
        flush: Option<&str>,
    ) -> Result<DrainTiming, Vec<String>> {
        let d = |s: &str| humantime::parse_duration(s).unwrap();
        let args = DrainArgs {
            drain_duration: d(drain),
            parent_shutdown_duration: parent.map(d),
            termination_drain_duration: d("5s"),
            exit_on_zero_active_connections: false,
            minimum_drain_duration: d("5s"),
        };
        let mut problems = Problems::default();
        let timing = envoy_timing(&args, flush.map(d), &mut problems);
        problems.finish(|| timing).map_err(|e| e.problems)
    }

    fn secs(t: &DrainTiming) -> (f64, f64, f64) {
        (
            t.drain.as_secs_f64(),
            t.parent_shutdown.as_secs_f64(),
            t.flush.as_secs_f64(),
        )
    }

    #[test]
    fn every_combination_istio_accepts_starts_with_a_flush_that_fits() {
        // (drain, parent, flush) given → (drain, parent, flush) run with.
        type Row<'a> = (&'a str, Option<&'a str>, Option<&'a str>, (f64, f64, f64));
        let table: [Row; 7] = [
            ("45s", None, None, (45.0, 60.0, 5.0)),
            ("5s", Some("6s"), None, (5.0, 6.0, 1.0)),
            ("60s", None, None, (60.0, 65.0, 5.0)),
            ("5s", Some("5500ms"), None, (5.0, 5.5, 0.5)),
            ("4500ms", Some("5s"), None, (4.5, 5.0, 1.0)),
            ("10s", None, Some("30s"), (10.0, 60.0, 30.0)),
            ("50s", None, Some("20s"), (50.0, 70.0, 20.0)),
        ];
        for (drain, parent, flush, expected) in table {
            let timing = fit(drain, parent, flush)
                .unwrap_or_else(|e| panic!("{drain} {parent:?} {flush:?} refused: {e:?}"));
            assert_eq!(secs(&timing), expected, "{drain} {parent:?} {flush:?}");
        }
        assert!(fit("45s", None, None).unwrap().notes.is_empty());
        let derived = fit("5s", Some("6s"), None).unwrap();
        assert!(
            derived.notes[0].contains("--stats-flush-interval not given: 1s"),
            "{:?}",
            derived.notes
        );
        assert!(fit("60s", None, None).unwrap().notes[0].contains("1m 5s"));
    }

    #[test]
    fn only_explicit_values_that_contradict_each_other_are_refused() {
        let refused = fit("5s", Some("6s"), Some("5s")).unwrap_err();
        assert!(
            refused[0].contains("--parent-shutdown-duration (6s) must be at least"),
            "{refused:?}"
        );
        let refused = fit("60s", Some("60s"), None).unwrap_err();
        assert!(
            refused[0].contains("must be longer than --drain-duration"),
            "{refused:?}"
        );
        assert!(fit("5s", None, Some("0s")).unwrap_err()[0].contains("more than 0"));
    }
}
