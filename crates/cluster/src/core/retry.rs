//! Retry decisions: queueing work in the engine (gateway) and handing
//! replies to a gateway (worker). Plain state with the time passed in.

use std::time::{Duration, Instant};

use super::gateways::GatewayState;

/// Why the engine did not confirm a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// The message was not sent (engine unreachable right now).
    Send(String),
    /// Sent, but no confirmation came in time.
    TimedOut(String),
    /// The engine refused it (stream full, no such stream…): retrying will not help.
    Refused(String),
}

impl PublishError {
    /// The engine's or client's message.
    pub fn message(&self) -> &str {
        match self {
            PublishError::Send(m) | PublishError::TimedOut(m) | PublishError::Refused(m) => m,
        }
    }
}

/// Attempts at queueing one message (same message id each time: the engine
/// drops duplicates, so a retry after a lost confirmation is harmless).
#[derive(Debug, Clone)]
pub struct PublishRetry {
    left: usize,
}

impl PublishRetry {
    /// Attempts in all.
    pub const ATTEMPTS: usize = 3;
    /// What a caller whose items the engine did not take is told to wait.
    pub const RETRY_AFTER_MS: u64 = 200;

    /// A fresh budget of attempts.
    pub fn new() -> Self {
        PublishRetry { left: Self::ATTEMPTS }
    }

    /// After an attempt failed with `e`: whether to try again.
    pub fn again(&mut self, e: &PublishError) -> bool {
        self.left = self.left.saturating_sub(1);
        self.left > 0 && !matches!(e, PublishError::Refused(_))
    }
}

impl Default for PublishRetry {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a gateway did not confirm a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyError {
    /// Nobody listens on the gateway's subject (it is gone, or between
    /// connections).
    NoResponders,
    /// No confirmation in time.
    TimedOut,
    /// The engine could not be reached.
    Engine,
}

/// What to do with a reply (and the message it answers) after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyNext {
    /// Try again after this wait.
    Retry(Duration),
    /// Its gateway is gone: nobody wants the answer. Remove the message
    /// from the engine, free its slots.
    Drop,
    /// Not confirmed within [`ReplyDelivery::LIMIT`] though its gateway may
    /// be alive: hand the message back to the engine to run again (the
    /// gateway drops answers it already has).
    HandBack,
}

/// Attempts at handing one reply to its gateway. It holds its slots for
/// at most [`ReplyDelivery::LIMIT`] (plus one attempt's wait), and not at
/// all once its gateway is known gone.
#[derive(Debug, Clone)]
pub struct ReplyDelivery {
    started: Instant,
    attempt: usize,
}

impl ReplyDelivery {
    /// Waits between attempts.
    pub const BACKOFF: [Duration; 6] = [
        Duration::ZERO,
        Duration::from_millis(100),
        Duration::from_millis(250),
        Duration::from_millis(500),
        Duration::from_millis(1000),
        Duration::from_millis(2000),
    ];
    /// Longest a reply is retried in all: enough for a gateway to reconnect
    /// after an engine restart.
    pub const LIMIT: Duration = Duration::from_secs(5);
    /// Longest one attempt waits for the confirmation.
    pub const WAIT: Duration = Duration::from_secs(2);
    /// Longest wait between attempts while nobody listens on the gateway's
    /// subject: such an attempt costs the engine one immediate answer, and
    /// the reply is dropped as soon as the gateway is known gone.
    pub const UNSURE_WAIT: Duration = Duration::from_millis(250);

    /// The first attempt, at `now`.
    pub fn new(now: Instant) -> Self {
        ReplyDelivery { started: now, attempt: 0 }
    }

    /// How long the next attempt may wait for its confirmation.
    pub fn wait(&self, now: Instant) -> Duration {
        Self::LIMIT.saturating_sub(now.saturating_duration_since(self.started)).clamp(Duration::from_millis(50), Self::WAIT)
    }

    /// After an attempt failed with `e` at `now`, the gateway being in
    /// `gateway` state (the caller has told its view about `e` first).
    pub fn next(&mut self, e: ReplyError, gateway: GatewayState, now: Instant) -> ReplyNext {
        if gateway == GatewayState::Gone {
            return ReplyNext::Drop;
        }
        self.attempt += 1;
        let spent = now.saturating_duration_since(self.started);
        if spent >= Self::LIMIT {
            // Nobody listening all along: the gateway is gone even if no one said so.
            return match e {
                ReplyError::NoResponders => ReplyNext::Drop,
                _ => ReplyNext::HandBack,
            };
        }
        let mut wait = Self::BACKOFF[self.attempt.min(Self::BACKOFF.len() - 1)];
        if e == ReplyError::NoResponders {
            wait = wait.min(Self::UNSURE_WAIT);
        }
        ReplyNext::Retry(wait.min(Self::LIMIT - spent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishing_retries_timeouts_and_send_errors_but_not_refusals() {
        let mut r = PublishRetry::new();
        assert!(r.again(&PublishError::TimedOut("t".into())));
        assert!(r.again(&PublishError::Send("s".into())));
        assert!(!r.again(&PublishError::TimedOut("t".into())), "three attempts in all");
        assert!(!PublishRetry::new().again(&PublishError::Refused("maximum bytes exceeded".into())));
    }

    #[test]
    fn a_reply_to_a_gone_gateway_is_dropped_at_once() {
        let t0 = Instant::now();
        let mut d = ReplyDelivery::new(t0);
        assert_eq!(d.next(ReplyError::NoResponders, GatewayState::Gone, t0), ReplyNext::Drop);
    }

    #[test]
    fn a_reply_backs_off_and_is_handed_back_after_the_limit() {
        let t0 = Instant::now();
        let mut d = ReplyDelivery::new(t0);
        assert_eq!(d.next(ReplyError::TimedOut, GatewayState::Live, t0), ReplyNext::Retry(Duration::from_millis(100)));
        assert_eq!(d.next(ReplyError::TimedOut, GatewayState::Live, t0), ReplyNext::Retry(Duration::from_millis(250)));
        let late = t0 + Duration::from_millis(4900);
        assert_eq!(d.next(ReplyError::TimedOut, GatewayState::Live, late), ReplyNext::Retry(Duration::from_millis(100)), "capped by the limit");
        assert_eq!(d.wait(late), Duration::from_millis(100));
        assert_eq!(d.next(ReplyError::TimedOut, GatewayState::Live, t0 + ReplyDelivery::LIMIT), ReplyNext::HandBack);
        let mut d = ReplyDelivery::new(t0);
        for _ in 0..5 {
            match d.next(ReplyError::NoResponders, GatewayState::Unsure, t0) {
                ReplyNext::Retry(w) => assert!(w <= ReplyDelivery::UNSURE_WAIT, "nobody listening: checked again soon, not after {w:?}"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(d.next(ReplyError::NoResponders, GatewayState::Unsure, t0 + ReplyDelivery::LIMIT), ReplyNext::Drop);
    }
}
