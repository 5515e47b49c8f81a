//! A worker's decisions on the work it pulls: how many messages to ask
//! for, and which members of a message to run.

use super::gateways::GatewayState;

/// How many messages a pull asks for: as many as the free slots hold at
/// the recent number of items per message (groups carry many).
#[derive(Debug, Clone)]
pub struct PullPlan {
    per_message: f64,
}

impl PullPlan {
    /// No message seen yet: one item per message.
    pub fn new() -> Self {
        PullPlan { per_message: 1.0 }
    }

    /// Messages to ask for with `free` slots (at least one).
    pub fn messages(&self, free: usize) -> usize {
        let free = free.max(1);
        ((free as f64 / self.per_message) as usize).clamp(1, free)
    }

    /// A message of `items` items arrived and runs.
    pub fn on_message(&mut self, items: usize) {
        self.per_message = 0.8 * self.per_message + 0.2 * items.max(1) as f64;
    }

    /// A message arrived and was dropped unrun: it took no slot, so the
    /// next pulls ask for more messages (a dead gateway's backlog drains fast).
    pub fn on_dropped(&mut self) {
        self.on_message(1);
    }
}

impl Default for PullPlan {
    fn default() -> Self {
        Self::new()
    }
}

/// What to do with a pulled work message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intake {
    /// Run these members (by position); the others' deadlines have passed
    /// (their gateway has already answered `deadline_exceeded`).
    Run(Vec<usize>),
    /// Run nothing, remove the message from the engine.
    Drop(DropReason),
}

/// Why a work message is dropped unrun.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Its gateway is gone: nobody would take the answers.
    GatewayGone,
    /// Every member's deadline has passed.
    Expired,
}

impl DropReason {
    /// For logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::GatewayGone => "gateway_gone",
            DropReason::Expired => "expired",
        }
    }
}

/// Decides on a message from a gateway in `gateway` state whose members
/// expire at `deadlines` (ms since the Unix epoch), at `now_unix_ms`.
pub fn intake(gateway: GatewayState, deadlines: &[Option<u64>], now_unix_ms: u64) -> Intake {
    if gateway == GatewayState::Gone {
        return Intake::Drop(DropReason::GatewayGone);
    }
    let run: Vec<usize> =
        deadlines.iter().enumerate().filter(|(_, d)| d.is_none_or(|d| now_unix_ms <= d)).map(|(i, _)| i).collect();
    match run.is_empty() && !deadlines.is_empty() {
        true => Intake::Drop(DropReason::Expired),
        false => Intake::Run(run),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_asks_for_as_many_messages_as_free_slots_hold() {
        let mut p = PullPlan::new();
        assert_eq!(p.messages(128), 128);
        for _ in 0..40 {
            p.on_message(64);
        }
        assert_eq!(p.messages(128), 2);
        assert_eq!(p.messages(10), 1);
        assert_eq!(p.messages(0), 1);
        for _ in 0..40 {
            p.on_dropped();
        }
        assert!(p.messages(128) >= 120, "{}", p.messages(128));
    }

    #[test]
    fn members_past_their_deadline_are_not_run_and_a_gone_gateway_s_message_is_dropped() {
        use GatewayState::*;
        assert_eq!(intake(Live, &[None, Some(10), Some(5)], 7), Intake::Run(vec![0, 1]));
        assert_eq!(intake(Unsure, &[Some(5)], 7), Intake::Drop(DropReason::Expired));
        assert_eq!(intake(Gone, &[None], 7), Intake::Drop(DropReason::GatewayGone));
        assert_eq!(intake(Live, &[], 7), Intake::Run(vec![]));
    }
}
