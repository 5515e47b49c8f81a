//! A worker's view of the gateways: which are alive, which are gone. A
//! worker spends slots only on items whose gateway can still answer them.
//!
//! A gateway is **gone** when it said it left, when its adverts stopped
//! for three of its periods, or when a reply found nobody listening on its
//! subject and no advert came for two periods since. A gateway never heard
//! of is given the benefit of the doubt (a worker that just joined has not
//! heard every advert yet).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What a worker knows of one gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayState {
    /// Advertising, and reachable as far as anyone knows.
    Live,
    /// Never heard of, or a reply just found nobody listening: run its
    /// items, but do not wait long for it.
    Unsure,
    /// Left or silent: its items are dropped unrun, its replies are not retried.
    Gone,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    /// Its last advert, if any.
    advert: Option<Instant>,
    /// Its advert period.
    period: Duration,
    /// When a reply first found nobody listening (cleared by an advert or a confirmation).
    unreachable: Option<Instant>,
    /// It said it left.
    left: bool,
}

/// Gateways by id.
#[derive(Debug, Clone)]
pub struct Gateways {
    /// The period assumed for a gateway whose advert did not say.
    default_period: Duration,
    seen: HashMap<String, Seen>,
}

impl Gateways {
    /// An empty view; `default_period` is the advert period assumed until
    /// a gateway states its own.
    pub fn new(default_period: Duration) -> Self {
        Gateways { default_period, seen: HashMap::new() }
    }

    fn entry(&mut self, id: &str) -> &mut Seen {
        let period = self.default_period;
        self.seen.entry(id.to_string()).or_insert(Seen { advert: None, period, unreachable: None, left: false })
    }

    /// An advert of gateway `id` (period `period`, zero: unknown) arrived at `now`.
    pub fn on_advert(&mut self, id: &str, period: Duration, left: bool, now: Instant) {
        let default = self.default_period;
        let seen = self.entry(id);
        seen.advert = Some(now);
        seen.period = if period.is_zero() { default } else { period };
        seen.unreachable = None;
        seen.left = left;
    }

    /// A reply to gateway `id` found nobody listening at `now`.
    pub fn on_unreachable(&mut self, id: &str, now: Instant) {
        let seen = self.entry(id);
        seen.unreachable.get_or_insert(now);
    }

    /// Gateway `id` confirmed a reply.
    pub fn on_confirmed(&mut self, id: &str) {
        if let Some(seen) = self.seen.get_mut(id) {
            seen.unreachable = None;
        }
    }

    /// What is known of gateway `id` at `now`.
    pub fn state(&self, id: &str, now: Instant) -> GatewayState {
        let Some(seen) = self.seen.get(id) else { return GatewayState::Unsure };
        if seen.left {
            return GatewayState::Gone;
        }
        if seen.advert.is_some_and(|at| now.saturating_duration_since(at) >= seen.period * 3) {
            return GatewayState::Gone;
        }
        match seen.unreachable {
            Some(since) if now.saturating_duration_since(since) >= seen.period * 2 => GatewayState::Gone,
            Some(_) => GatewayState::Unsure,
            None if seen.advert.is_none() => GatewayState::Unsure,
            None => GatewayState::Live,
        }
    }

    /// Forgets gateways gone for a long while (a gateway's id is never
    /// reused: a restarted gateway has a new one).
    pub fn forget_old(&mut self, now: Instant) {
        self.seen.retain(|_, s| {
            let last = s.advert.into_iter().chain(s.unreachable).max();
            last.is_none_or(|at| now.saturating_duration_since(at) < s.period * 600)
        });
    }

    /// Gateways known now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no gateway is known.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HB: Duration = Duration::from_secs(1);

    #[test]
    fn a_gateway_is_live_while_it_advertises_and_gone_three_periods_after_it_stops() {
        let t0 = Instant::now();
        let mut g = Gateways::new(HB);
        assert_eq!(g.state("a", t0), GatewayState::Unsure, "never heard of");
        g.on_advert("a", HB, false, t0);
        assert_eq!(g.state("a", t0 + HB * 2), GatewayState::Live);
        assert_eq!(g.state("a", t0 + HB * 3), GatewayState::Gone);
        g.on_advert("a", HB, false, t0 + HB * 4);
        assert_eq!(g.state("a", t0 + HB * 4), GatewayState::Live, "it came back");
    }

    #[test]
    fn the_gateway_s_own_period_counts() {
        let t0 = Instant::now();
        let mut g = Gateways::new(HB);
        g.on_advert("slow", HB * 5, false, t0);
        assert_eq!(g.state("slow", t0 + HB * 14), GatewayState::Live);
        assert_eq!(g.state("slow", t0 + HB * 15), GatewayState::Gone);
        g.on_advert("unknown-period", Duration::ZERO, false, t0);
        assert_eq!(g.state("unknown-period", t0 + HB * 3), GatewayState::Gone);
    }

    #[test]
    fn leaving_is_gone_at_once() {
        let t0 = Instant::now();
        let mut g = Gateways::new(HB);
        g.on_advert("a", HB, true, t0);
        assert_eq!(g.state("a", t0), GatewayState::Gone);
    }

    #[test]
    fn nobody_listening_makes_it_unsure_then_gone_unless_it_advertises() {
        let t0 = Instant::now();
        let mut g = Gateways::new(HB);
        g.on_advert("a", HB, false, t0);
        g.on_unreachable("a", t0 + HB / 2);
        assert_eq!(g.state("a", t0 + HB), GatewayState::Unsure);
        // A second failure does not move the first one's time.
        g.on_unreachable("a", t0 + HB * 2);
        assert_eq!(g.state("a", t0 + HB * 5 / 2), GatewayState::Gone);

        // An engine restart: the gateway reconnects and advertises again.
        g.on_advert("b", HB, false, t0);
        g.on_unreachable("b", t0 + HB / 2);
        g.on_advert("b", HB, false, t0 + HB);
        assert_eq!(g.state("b", t0 + HB * 2), GatewayState::Live);
        g.on_unreachable("b", t0 + HB * 2);
        g.on_confirmed("b");
        assert_eq!(g.state("b", t0 + HB * 2), GatewayState::Live);

        // Never advertised, and nobody listens: gone after two default periods.
        g.on_unreachable("c", t0);
        assert_eq!(g.state("c", t0 + HB), GatewayState::Unsure);
        assert_eq!(g.state("c", t0 + HB * 2), GatewayState::Gone);
    }

    #[test]
    fn long_gone_gateways_are_forgotten() {
        let t0 = Instant::now();
        let mut g = Gateways::new(HB);
        g.on_advert("a", HB, false, t0);
        g.on_advert("b", HB, false, t0 + HB * 700);
        g.forget_old(t0 + HB * 700);
        assert_eq!(g.len(), 1);
        assert_eq!(g.state("b", t0 + HB * 700), GatewayState::Live);
    }
}
