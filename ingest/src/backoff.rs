//! Retry delays: exponential from `min` to `max`, with ±25 % jitter so cameras that dropped
//! together do not all reconnect in the same instant. Pure: the random source is passed in.

use std::time::Duration;

/// Exponential backoff state for one camera.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// Delays from `min` doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
        }
    }

    /// The delay before the next attempt, given a uniform `jitter` in `[0, 1)`; counts a failure.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let exp = self.failures.min(20);
        self.failures = self.failures.saturating_add(1);
        let base = self.min.saturating_mul(1u32 << exp).min(self.max);
        // ±25 %, still capped at max.
        let factor = 0.75 + 0.5 * jitter.clamp(0.0, 1.0);
        base.mul_f64(factor).min(self.max)
    }

    /// A session worked: the next failure starts from `min` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let d: Vec<u128> = (0..10).map(|_| b.next_delay(0.5).as_millis()).collect();
        assert_eq!(&d[..7], &[500, 1000, 2000, 4000, 8000, 16000, 30000]);
        assert!(d[7..].iter().all(|&x| x == 30000));
        b.reset();
        assert_eq!(b.next_delay(0.5).as_millis(), 500);
    }

    #[test]
    fn jitter_stays_within_a_quarter_and_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(1000), Duration::from_millis(1000));
        assert_eq!(b.next_delay(0.0).as_millis(), 750);
        assert_eq!(b.next_delay(0.999_999).as_millis(), 1000);
        let mut b = Backoff::new(Duration::from_millis(1000), Duration::from_secs(10));
        assert_eq!(b.next_delay(1.0).as_millis(), 1250);
    }
}
