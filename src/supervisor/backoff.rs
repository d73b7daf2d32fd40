//! Crash backoff: how long to wait before bringing a crashed proxy back.

use super::event::Millis;

/// Exponential backoff with a cap. The first retry is immediate: a single crash is
/// an outage, and waiting would only lengthen it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the second retry; doubles after that.
    pub base: Millis,
    /// Largest delay.
    pub cap: Millis,
}

impl Backoff {
    /// Delay before retry number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Millis {
        if attempt <= 1 {
            return 0;
        }
        let doublings = (attempt - 2).min(32);
        self.base.saturating_mul(1u64 << doublings).min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_retry_is_immediate_then_doubles_up_to_the_cap() {
        let b = Backoff {
            base: 1000,
            cap: 5000,
        };
        let delays: Vec<_> = (1..=6).map(|n| b.delay(n)).collect();
        assert_eq!(delays, vec![0, 1000, 2000, 4000, 5000, 5000]);
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let b = Backoff {
            base: u64::MAX / 2,
            cap: u64::MAX,
        };
        assert_eq!(b.delay(1000), u64::MAX);
    }
}
