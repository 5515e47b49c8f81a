//! The gateway-loss case in memory: one worker, a work queue holding a
//! dead gateway's backlog ahead of a live gateway's request, time stepped
//! by hand. The worker's pump is reduced to its bookkeeping (slots, a
//! queue, a clock); every decision is the core's.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::gateways::{GatewayState, Gateways};
use super::intake::{intake, DropReason, Intake};
use super::retry::{ReplyDelivery, ReplyError, ReplyNext};

const HB: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(5);

/// A work message in the queue.
#[derive(Debug, Clone)]
struct Msg {
    gateway: &'static str,
    items: usize,
}

/// A message a worker holds: running until `done`, then replying.
struct Held {
    msg: Msg,
    slots: usize,
    done: Instant,
    delivery: Option<(ReplyDelivery, Instant)>,
}

/// What happened to each gateway's messages.
#[derive(Default, Debug)]
struct Outcome {
    /// Messages of the live gateway answered, and when.
    answered_b: Vec<Duration>,
    /// Messages of the dead gateway run to completion.
    run_a: usize,
    /// Dropped unrun because their gateway was gone.
    dropped_unrun: usize,
    /// Dropped after running, their reply unwanted.
    dropped_after_run: usize,
    /// Handed back to the engine (would be redelivered).
    handed_back: usize,
    /// Slot-seconds spent on the dead gateway's messages after it died.
    slot_time_a: f64,
}

/// Runs one worker of `capacity` slots for `horizon`: gateway `a` dies at
/// the start with `backlog` messages of `group` items queued; gateway `b`
/// submits one message of 3 items every 500 ms. Each message runs for `run`.
fn simulate(capacity: usize, backlog: usize, group: usize, run: Duration, horizon: Duration) -> Outcome {
    let t0 = Instant::now();
    let mut gateways = Gateways::new(HB);
    // Both advertised just before a dies.
    gateways.on_advert("a", HB, false, t0);
    gateways.on_advert("b", HB, false, t0);
    let mut queue: VecDeque<Msg> = (0..backlog).map(|_| Msg { gateway: "a", items: group }).collect();
    let mut waiting: Option<Msg> = None;
    let mut held: Vec<Held> = Vec::new();
    let mut free = capacity;
    let mut out = Outcome::default();
    let mut submitted_b: VecDeque<Instant> = VecDeque::new();
    let mut now = t0;
    while now < t0 + horizon {
        now += TICK;
        let since = now - t0;
        if since.as_millis() % 1000 < TICK.as_millis() {
            gateways.on_advert("b", HB, false, now);
        }
        if since.as_millis() % 500 < TICK.as_millis() && since + Duration::from_secs(1) < horizon {
            queue.push_back(Msg { gateway: "b", items: 3 });
            submitted_b.push_back(now);
        }
        // Pull while slots are free. A message needing more slots than
        // are free waits for them, and is screened again when it gets them.
        while free > 0 {
            let Some(msg) = waiting.take().or_else(|| queue.pop_front()) else { break };
            match intake(gateways.state(msg.gateway, now), &vec![None; msg.items], 0) {
                Intake::Drop(DropReason::GatewayGone) => out.dropped_unrun += 1,
                Intake::Drop(DropReason::Expired) => unreachable!("no deadlines here"),
                Intake::Run(_) => {
                    let need = msg.items.min(capacity);
                    if need > free {
                        waiting = Some(msg);
                        break;
                    }
                    free -= need;
                    held.push(Held { msg, slots: need, done: now + run, delivery: None });
                }
            }
        }
        // Finish, reply, retry.
        let mut keep = Vec::new();
        for mut h in held.drain(..) {
            if h.msg.gateway == "a" {
                out.slot_time_a += h.slots as f64 * TICK.as_secs_f64();
            }
            let attempt_due = match &h.delivery {
                None => now >= h.done,
                Some((_, at)) => now >= *at,
            };
            if !attempt_due {
                keep.push(h);
                continue;
            }
            if h.delivery.is_none() && h.msg.gateway == "a" {
                out.run_a += 1;
            }
            let delivery = &mut h.delivery.get_or_insert_with(|| (ReplyDelivery::new(now), now)).0;
            if h.msg.gateway == "b" {
                gateways.on_confirmed("b");
                out.answered_b.push(now - submitted_b.pop_front().expect("submitted"));
                free += h.slots;
                continue;
            }
            // Nobody listens on the dead gateway's subject.
            gateways.on_unreachable("a", now);
            match delivery.next(ReplyError::NoResponders, gateways.state("a", now), now) {
                ReplyNext::Retry(wait) => {
                    h.delivery.as_mut().expect("set").1 = now + wait;
                    keep.push(h);
                }
                ReplyNext::Drop => {
                    out.dropped_after_run += 1;
                    free += h.slots;
                }
                ReplyNext::HandBack => {
                    out.handed_back += 1;
                    free += h.slots;
                }
            }
        }
        held = keep;
    }
    assert!(queue.iter().chain(&waiting).all(|m| m.gateway == "b"), "the dead gateway's backlog is gone from the queue");
    assert!(submitted_b.is_empty(), "every live message answered: {} left", submitted_b.len());
    out
}

#[test]
fn a_dead_gateway_s_backlog_does_not_stall_a_live_gateway_s_items() {
    // The trial that found the stall: a worker holding 128 tabular items
    // (two groups of 64) and a dead gateway's backlog of ~1,500 groups.
    let out = simulate(128, 1500, 64, Duration::from_millis(20), Duration::from_secs(10));
    assert_eq!(out.handed_back, 0, "nothing of the dead gateway goes back to the engine to be redelivered");
    assert_eq!(out.answered_b.len(), 17, "a live message every 500 ms until a second before the end: {out:?}");
    let worst = out.answered_b.iter().max().copied().unwrap_or_default();
    // While the dead gateway is still unsure (until two advert periods after
    // its first unanswered reply), its queued groups still run; after that
    // they are dropped as fast as they are pulled.
    assert!(worst <= HB * 3, "a live item waited {worst:?}");
    let late: Vec<&Duration> = out.answered_b.iter().skip(6).filter(|d| **d > Duration::from_millis(100)).collect();
    assert!(late.is_empty(), "once the gateway is known gone, live items wait for nothing: {late:?}");
    assert!(out.dropped_unrun > 1400, "the backlog is dropped unrun: {out:?}");
    assert!(out.run_a <= 2, "only what filled the slots before the gateway was known gone ran: {out:?}");
    // Slot time on the dead gateway: every slot for about two advert
    // periods (until a reply nobody answers makes it gone), plus one retry.
    assert!(out.slot_time_a <= 128.0 * 2.5, "{} slot-seconds on the dead gateway", out.slot_time_a);
}

#[test]
fn a_reply_held_for_an_unsure_gateway_is_released_when_it_is_known_gone() {
    let t0 = Instant::now();
    let mut g = Gateways::new(HB);
    g.on_advert("a", HB, false, t0);
    let mut d = ReplyDelivery::new(t0);
    let mut now = t0;
    let released = loop {
        g.on_unreachable("a", now);
        match d.next(ReplyError::NoResponders, g.state("a", now), now) {
            ReplyNext::Retry(wait) => now += wait.max(Duration::from_millis(1)),
            other => break (other, now - t0),
        }
    };
    assert_eq!(released.0, ReplyNext::Drop);
    assert!(released.1 >= HB * 2 && released.1 <= HB * 2 + ReplyDelivery::UNSURE_WAIT, "held {:?}", released.1);
    assert_eq!(g.state("a", now), GatewayState::Gone);
}
