//! The completeness clock: up to which Deribit server time every trade of the feed's
//! subscriptions has been handed out.
//!
//! The session asks Deribit for its time periodically (`public/get_time`) and reads the
//! server's clock from the answer's `usOut` (the moment the answer left). Frames arrive in the order Deribit sent them, so when the answer comes,
//! every live trade Deribit had published before `usOut` has arrived too, up to its batching
//! (the margin). That is only complete if nothing is missing besides: the session reports
//! whether it is *settled* (connected, every channel subscribed, no backfill, discovery or
//! refetch pending). The clock lives across sessions, so it holds through a disconnect and a
//! backfill and jumps once they end; it never moves back.

use std::time::Duration;

/// Server times further than this from the local clock are not believed: a broken or hostile
/// peer must not move completeness (and so every downstream window) far ahead, for good.
pub const MAX_SKEW_MS: i64 = 60_000;

/// What one reading of Deribit's clock did to completeness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Completeness advanced to this time, ms.
    Advanced(i64),
    /// Not settled, or no later than before: completeness holds.
    Held,
    /// The server time is implausible (missing, negative, or far from the local clock).
    Implausible,
}

/// Completeness time of one feed. See the module docs.
#[derive(Debug, Clone)]
pub struct CompletenessClock {
    margin_ms: i64,
    complete_to: Option<i64>,
}

impl CompletenessClock {
    /// A clock that subtracts `margin` (Deribit's batching) from the server time.
    pub fn new(margin: Duration) -> Self {
        CompletenessClock {
            margin_ms: i64::try_from(margin.as_millis()).unwrap_or(i64::MAX),
            complete_to: None,
        }
    }

    /// The completeness time so far, ms.
    pub fn complete_to(&self) -> Option<i64> {
        self.complete_to
    }

    /// Takes a server time reading (`us_out`, µs) made while the session was `settled`;
    /// `local_ms` is the local wall clock, for the plausibility check.
    pub fn on_server_time(&mut self, us_out: Option<i64>, settled: bool, local_ms: i64) -> Reading {
        let Some(server_ms) = us_out.filter(|&us| us > 0).map(|us| us / 1000) else {
            return Reading::Implausible;
        };
        if server_ms.abs_diff(local_ms) > MAX_SKEW_MS.unsigned_abs() {
            return Reading::Implausible;
        }
        if !settled {
            return Reading::Held;
        }
        let candidate = server_ms.saturating_sub(self.margin_ms);
        if self.complete_to.is_some_and(|c| c >= candidate) {
            return Reading::Held;
        }
        self.complete_to = Some(candidate);
        Reading::Advanced(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn advances_only_when_settled_less_the_margin_and_never_back() {
        let mut clock = CompletenessClock::new(Duration::from_secs(1));
        assert_eq!(
            clock.on_server_time(Some(NOW * 1000), false, NOW),
            Reading::Held
        );
        assert_eq!(clock.complete_to(), None);
        assert_eq!(
            clock.on_server_time(Some(NOW * 1000 + 999), true, NOW),
            Reading::Advanced(NOW - 1000)
        );
        // Held while unsettled (a backfill), then one jump.
        assert_eq!(
            clock.on_server_time(Some((NOW + 30_000) * 1000), false, NOW),
            Reading::Held
        );
        assert_eq!(
            clock.on_server_time(Some((NOW + 60_000) * 1000), true, NOW),
            Reading::Advanced(NOW + 59_000)
        );
        // An earlier reading (another connection's clock) never moves it back.
        assert_eq!(
            clock.on_server_time(Some((NOW + 10_000) * 1000), true, NOW),
            Reading::Held
        );
        assert_eq!(clock.complete_to(), Some(NOW + 59_000));
    }

    #[test]
    fn implausible_server_times_are_refused() {
        let mut clock = CompletenessClock::new(Duration::from_secs(1));
        for us in [None, Some(0), Some(-5), Some(i64::MAX), Some(1)] {
            assert_eq!(
                clock.on_server_time(us, true, NOW),
                Reading::Implausible,
                "{us:?}"
            );
        }
        assert_eq!(clock.complete_to(), None);
    }
}
