//! A gateway's rollout state: each model's default-version policy (kept
//! from the fleet's KV bucket) and the trials of its canaries as this
//! gateway sees them. A trial is judged on the items this gateway routed
//! since it learnt of the trial; the first verdict reached is written to
//! the fleet (compare-and-set on the model's policy, by the caller), and
//! every gateway follows it.

use std::collections::HashMap;

use tensorgate_protocol::{CanaryInfo, ErrorCode};
use tensorgate_server::request::ItemDone;
use tensorgate_server::rollout::{judge, DefaultPolicy, Rollout, Tally, Verdict};

/// A canary's trial.
#[derive(Debug, Clone)]
struct Trial {
    /// The version on trial.
    canary: u64,
    /// The default meanwhile (pinned when the trial started).
    base: u64,
    /// The trial's terms.
    rollout: Rollout,
    /// Items of the canary since then.
    canary_tally: Tally,
    /// Items of the default since then.
    base_tally: Tally,
    /// A verdict is being written.
    deciding: bool,
}

/// A verdict to write to the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Model.
    pub model: String,
    /// The canary judged.
    pub canary: u64,
    /// Promoted (else rolled back).
    pub promoted: bool,
    /// Why.
    pub why: String,
}

/// Policies and trials by model.
#[derive(Debug, Clone, Default)]
pub struct Rollouts {
    policies: HashMap<String, DefaultPolicy>,
    trials: HashMap<String, Trial>,
}

impl Rollouts {
    /// Applies a model's policy (from the KV watch, or written here); starts
    /// or ends this gateway's view of its trial.
    pub fn apply(&mut self, model: &str, policy: Option<DefaultPolicy>) {
        match policy.as_ref().and_then(|p| p.canary.clone().map(|c| (c, p.pinned.unwrap_or_default()))) {
            Some((c, base)) => {
                if self.trials.get(model).is_none_or(|t| (t.canary, t.base) != (c.version, base)) {
                    let trial = Trial {
                        canary: c.version,
                        base,
                        rollout: c.rollout,
                        canary_tally: Tally::default(),
                        base_tally: Tally::default(),
                        deciding: false,
                    };
                    self.trials.insert(model.to_string(), trial);
                }
            }
            None => {
                self.trials.remove(model);
            }
        }
        match policy {
            Some(p) => self.policies.insert(model.to_string(), p),
            None => self.policies.remove(model),
        };
    }

    /// The default-version policy of `model`.
    pub fn policy(&self, model: &str) -> DefaultPolicy {
        self.policies.get(model).cloned().unwrap_or_default()
    }

    /// Counts one answered item in its model's trial and judges it: a
    /// verdict to write, at most once until [`Self::undecided`]. Failures
    /// of the gateway or the engine (`busy`, `internal`, deadlines) are not
    /// the version's.
    pub fn count(&mut self, model: &str, version: u64, done: &ItemDone) -> Option<Decision> {
        let failed = match &done.result {
            Ok(_) => false,
            Err(f) if matches!(f.code, ErrorCode::Busy | ErrorCode::Internal | ErrorCode::DeadlineExceeded) => return None,
            Err(_) => true,
        };
        let t = self.trials.get_mut(model)?;
        let tally = match version {
            v if v == t.canary => &mut t.canary_tally,
            v if v == t.base => &mut t.base_tally,
            _ => return None,
        };
        match failed {
            true => tally.failed += 1,
            false => tally.ok += 1,
        }
        if t.deciding {
            return None;
        }
        let (promoted, why) = match judge(&t.rollout, t.canary_tally, t.base_tally) {
            Verdict::Running => return None,
            Verdict::Promote(why) => (true, why),
            Verdict::RollBack(why) => (false, why),
        };
        t.deciding = true;
        Some(Decision { model: model.to_string(), canary: t.canary, promoted, why })
    }

    /// Writing a verdict failed: the trial is judged again on its next item.
    pub fn undecided(&mut self, model: &str) {
        if let Some(t) = self.trials.get_mut(model) {
            t.deciding = false;
        }
    }

    /// This gateway's view of `model`'s trial of `version`, for `models`.
    pub fn canary_info(&self, model: &str, version: u64) -> Option<CanaryInfo> {
        self.trials.get(model).filter(|t| t.canary == version).map(|t| CanaryInfo {
            share: t.rollout.canary_share,
            items_needed: t.rollout.canary_items,
            items_ok: t.canary_tally.ok,
            items_failed: t.canary_tally.failed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensorgate_server::request::{ItemFailure, ItemOutput};
    use tensorgate_server::rollout::Canary;

    fn ok() -> ItemDone {
        ItemDone {
            result: Ok(ItemOutput { payload: Default::default(), content_type: "x".into(), metadata: Default::default() }),
            timings: Default::default(),
        }
    }

    fn failed(code: ErrorCode) -> ItemDone {
        ItemDone { result: Err(ItemFailure::new(code, "no")), timings: Default::default() }
    }

    fn on_trial(canary: u64, base: u64, items: u64) -> DefaultPolicy {
        let rollout = Rollout { canary_share: 0.5, canary_items: items, max_failure_increase: 0.0 };
        DefaultPolicy { pinned: Some(base), canary: Some(Canary { version: canary, rollout }), ..DefaultPolicy::default() }
    }

    #[test]
    fn a_good_canary_is_promoted_once() {
        let mut r = Rollouts::default();
        r.apply("m", Some(on_trial(2, 1, 3)));
        let p = r.policy("m");
        assert!(p.in_trial(2) && p.in_trial(1) && !p.in_trial(3));
        assert_eq!(r.count("m", 2, &ok()), None);
        // Failures that are not the version's do not count.
        assert_eq!(r.count("m", 2, &failed(ErrorCode::Busy)), None);
        assert_eq!(r.count("m", 2, &ok()), None);
        let d = r.count("m", 2, &ok()).expect("promoted");
        assert!(d.promoted && d.canary == 2 && d.model == "m", "{d:?}");
        assert_eq!(r.count("m", 2, &ok()), None, "decided once");
        assert_eq!(r.canary_info("m", 2).map(|c| c.items_ok), Some(4));
        r.undecided("m");
        assert!(r.count("m", 2, &ok()).is_some_and(|d| d.promoted), "judged again after a failed write");
    }

    #[test]
    fn a_failing_canary_is_rolled_back_and_a_new_policy_ends_the_trial() {
        let mut r = Rollouts::default();
        r.apply("m", Some(on_trial(2, 1, 100)));
        let d = r.count("m", 2, &failed(ErrorCode::PluginError)).expect("rolled back");
        assert!(!d.promoted, "{d:?}");
        r.apply("m", Some(DefaultPolicy { pinned: Some(1), ..DefaultPolicy::default() }));
        assert!(!r.policy("m").in_trial(2));
        assert_eq!(r.count("m", 2, &failed(ErrorCode::PluginError)), None, "no trial, nothing counted");
        assert_eq!(r.policy("m").pinned, Some(1));
        r.apply("m", None);
        assert_eq!(r.policy("m"), DefaultPolicy::default());
    }
}
