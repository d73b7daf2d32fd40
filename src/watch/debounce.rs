//! When to act on a burst of file-system events: a pure timer, no I/O, no clock.
//!
//! A burst starts with its first event. It is over after `quiet` without events, or
//! `cap` after its first event, whichever comes first: the cap is what keeps a writer
//! that never pauses (a log rotated into a watched directory, a slow `cp` of a large
//! file) from postponing the decision forever.
//!
//! **Invariant:** while a burst is open, [`Debounce::deadline`] is at most `cap` after
//! the burst's first event; when no burst is open it is `None`.

use std::time::{Duration, Instant};

/// The debounce timer. Time arrives as arguments, so it is tested without sleeping.
#[derive(Debug, Clone)]
pub struct Debounce {
    quiet: Duration,
    cap: Duration,
    burst: Option<Burst>,
}

#[derive(Debug, Clone, Copy)]
struct Burst {
    first: Instant,
    last: Instant,
}

impl Debounce {
    /// A timer that settles after `quiet` without events, and never later than
    /// `cap` after the first event of a burst.
    pub fn new(quiet: Duration, cap: Duration) -> Self {
        Self {
            quiet,
            cap,
            burst: None,
        }
    }

    /// Record an event seen at `now`: opens a burst, or extends the open one.
    pub fn event(&mut self, now: Instant) {
        match &mut self.burst {
            Some(burst) => burst.last = burst.last.max(now),
            None => {
                self.burst = Some(Burst {
                    first: now,
                    last: now,
                })
            }
        }
    }

    /// When the open burst is due, or `None` when there is no burst.
    pub fn deadline(&self) -> Option<Instant> {
        self.burst
            .map(|b| (b.last + self.quiet).min(b.first + self.cap))
    }

    /// If the open burst is due at `now`, close it and return when it started.
    pub fn fire(&mut self, now: Instant) -> Option<Instant> {
        let due = self.deadline()?;
        if now < due {
            return None;
        }
        self.burst.take().map(|b| b.first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(2);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn no_events_means_no_deadline() {
        let d = Debounce::new(QUIET, CAP);
        assert_eq!(d.deadline(), None);
    }

    #[test]
    fn single_event_is_due_after_the_quiet_period() {
        let t0 = Instant::now();
        let mut d = Debounce::new(QUIET, CAP);
        d.event(t0);
        assert_eq!(d.deadline(), Some(t0 + QUIET));
        assert_eq!(d.fire(t0 + ms(99)), None);
        assert_eq!(d.fire(t0 + QUIET), Some(t0));
        assert_eq!(d.deadline(), None, "firing closes the burst");
    }

    #[test]
    fn each_event_extends_the_quiet_period() {
        let t0 = Instant::now();
        let mut d = Debounce::new(QUIET, CAP);
        d.event(t0);
        d.event(t0 + ms(80));
        assert_eq!(d.deadline(), Some(t0 + ms(180)));
    }

    #[test]
    fn an_endless_stream_of_events_is_cut_off_at_the_cap() {
        let t0 = Instant::now();
        let mut d = Debounce::new(QUIET, CAP);
        let mut t = t0;
        while t < t0 + ms(5_000) {
            d.event(t);
            if let Some(first) = d.fire(t) {
                assert_eq!(first, t0);
                assert_eq!(t, t0 + CAP);
                return;
            }
            t += ms(10);
        }
        panic!("a stream of events every 10ms must be cut off at the cap");
    }

    #[test]
    fn an_event_after_firing_opens_a_new_burst() {
        let t0 = Instant::now();
        let mut d = Debounce::new(QUIET, CAP);
        d.event(t0);
        d.fire(t0 + QUIET);
        d.event(t0 + ms(500));
        assert_eq!(d.deadline(), Some(t0 + ms(600)));
    }

    #[test]
    fn an_event_reported_out_of_order_does_not_shorten_the_quiet_period() {
        let t0 = Instant::now();
        let mut d = Debounce::new(QUIET, CAP);
        d.event(t0 + ms(50));
        d.event(t0);
        assert_eq!(d.deadline(), Some(t0 + ms(150)));
    }
}
