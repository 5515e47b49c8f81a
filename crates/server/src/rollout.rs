//! Which version serves a model when a request names none: the newest one,
//! unless `promote` chose another or `rollback` marked versions bad.
//!
//! One [`DefaultPolicy`] per model. A host keeps them in `REPO/.defaults.json`
//! (so a rolled-back version does not come back as the default after a
//! restart); a cluster keeps them in the fleet's KV bucket, and every gateway
//! applies the same rules to the versions its whole fleet holds.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use crate::manifest::Rollout;

/// The default-version choices made by hand for one model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DefaultPolicy {
    /// The version `promote` (or `rollback`) made the default, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<u64>,
    /// Versions rolled back, with why: never the default unless promoted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rolled_back: BTreeMap<u64, String>,
    /// The newest version ready when the pin was set: installing a newer
    /// one is a new release, which takes over the default.
    #[serde(default)]
    pub newest: u64,
    /// A new version on trial, if any: it takes a share of the requests
    /// naming no version until it is promoted or rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
}

/// A version on trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    /// The version on trial.
    pub version: u64,
    /// The trial's terms.
    pub rollout: Rollout,
}

/// A trial's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not decided yet.
    Running,
    /// It answered enough items, failing no more than allowed.
    Promote(String),
    /// It failed more items than it may (why).
    RollBack(String),
}

/// Item counts of one version since a trial began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Items answered with a result.
    pub ok: u64,
    /// Items failed.
    pub failed: u64,
}

impl Tally {
    fn rate(self) -> f64 {
        self.failed as f64 / (self.ok + self.failed).max(1) as f64
    }
}

/// Judges a trial: the canary's items against the default's over the same
/// time. It is rolled back as soon as it has failed more items than the
/// whole trial allows (the default's rate plus the allowed increase, over
/// `canary_items`), and promoted once it has answered `canary_items` items
/// within that.
pub fn judge(rollout: &Rollout, canary: Tally, base: Tally) -> Verdict {
    let allowed_rate = base.rate() + rollout.max_failure_increase;
    let allowed = (rollout.canary_items as f64 * allowed_rate).floor() as u64;
    let describe = || {
        format!(
            "{} of {} items failed ({:.1} %) against {:.1} % on the default, {:.1} points allowed",
            canary.failed,
            canary.ok + canary.failed,
            canary.rate() * 100.0,
            base.rate() * 100.0,
            rollout.max_failure_increase * 100.0
        )
    };
    if canary.failed > allowed {
        return Verdict::RollBack(format!("canary: {}", describe()));
    }
    if canary.ok + canary.failed >= rollout.canary_items && canary.rate() <= allowed_rate {
        return Verdict::Promote(format!("canary passed: {}", describe()));
    }
    Verdict::Running
}

/// Why a `promote` or `rollback` was refused (nothing changed).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// `promote` named a version that is not serving.
    #[error("model `{name}` has no version {version} ready to promote (ready: {ready})")]
    NotReady {
        /// Model name.
        name: String,
        /// Version asked for.
        version: u64,
        /// Versions ready.
        ready: String,
    },
    /// `rollback` found no earlier good version.
    #[error("model `{name}`: no version older than the default {current} to roll back to (ready: {ready})")]
    NothingEarlier {
        /// Model name.
        name: String,
        /// The default now.
        current: u64,
        /// Versions ready.
        ready: String,
    },
}

fn listed(versions: &BTreeSet<u64>) -> String {
    versions.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

impl DefaultPolicy {
    /// The default among the `ready` versions: the pinned one when ready,
    /// else the newest not rolled back, else (every one rolled back) the newest.
    pub fn choose(&self, ready: &BTreeSet<u64>) -> Option<u64> {
        if let Some(p) = self.pinned.filter(|p| ready.contains(p)) {
            return Some(p);
        }
        let on_trial = self.canary.as_ref().map(|c| c.version);
        let good = |v: &&u64| !self.rolled_back.contains_key(v) && Some(**v) != on_trial;
        ready.iter().rev().find(good).or(ready.last()).copied()
    }

    /// The version one request naming none goes to: the canary for its
    /// share of requests (`draw` uniform in [0, 1)), else the default.
    pub fn route(&self, ready: &BTreeSet<u64>, draw: f64) -> Option<u64> {
        match &self.canary {
            Some(c) if ready.contains(&c.version) && draw < c.rollout.canary_share => Some(c.version),
            _ => self.choose(ready),
        }
    }

    /// Puts `version` (a new release among `ready`) on trial when the terms
    /// ask for one and another version serves meanwhile: that one is
    /// pinned as the default until the trial ends. Returns whether it did.
    pub fn start_trial(&mut self, version: u64, ready: &BTreeSet<u64>, rollout: Rollout) -> bool {
        if rollout.canary_share <= 0.0 || version <= self.newest {
            return false;
        }
        let mut others = ready.clone();
        others.remove(&version);
        let Some(stable) = self.choose(&others) else { return false };
        if self.pinned.is_none() {
            self.pinned = Some(stable);
        }
        self.newest = version;
        self.canary = Some(Canary { version, rollout });
        true
    }

    /// Ends the trial of `version` with the verdict: promoted (the default
    /// from now on) or rolled back (marked, with `reason`).
    pub fn end_trial(&mut self, version: u64, promoted: bool, reason: &str) {
        if self.canary.as_ref().is_some_and(|c| c.version == version) {
            self.canary = None;
        }
        if promoted {
            self.pinned = None;
            self.rolled_back.remove(&version);
        } else {
            self.rolled_back.insert(version, reason.to_string());
            if self.pinned == Some(version) {
                self.pinned = None;
            }
        }
    }

    /// Makes `version` (one of `ready`) the default and clears its rolled-back mark.
    pub fn promote(&mut self, name: &str, version: u64, ready: &BTreeSet<u64>) -> Result<(), PolicyError> {
        if !ready.contains(&version) {
            return Err(PolicyError::NotReady { name: name.into(), version, ready: listed(ready) });
        }
        self.pinned = Some(version);
        self.newest = self.newest.max(ready.last().copied().unwrap_or_default());
        self.rolled_back.remove(&version);
        if self.canary.as_ref().is_some_and(|c| c.version == version) {
            self.canary = None;
        }
        Ok(())
    }

    /// Marks the current default rolled back (with `reason`) and pins the
    /// newest earlier ready version not rolled back; returns `(from, to)`.
    pub fn rollback(&mut self, name: &str, ready: &BTreeSet<u64>, reason: &str) -> Result<(u64, u64), PolicyError> {
        // During a trial, the version on trial is the one rolled back.
        if let Some(c) = self.canary.take() {
            let to = self.choose(ready).unwrap_or_default();
            self.rolled_back.insert(c.version, reason.to_string());
            return Ok((c.version, to));
        }
        let Some(current) = self.choose(ready) else {
            return Err(PolicyError::NothingEarlier { name: name.into(), current: 0, ready: listed(ready) });
        };
        let target = ready.range(..current).rev().find(|v| !self.rolled_back.contains_key(v)).copied();
        let Some(target) = target else {
            return Err(PolicyError::NothingEarlier { name: name.into(), current, ready: listed(ready) });
        };
        self.rolled_back.insert(current, reason.to_string());
        self.pinned = Some(target);
        self.newest = self.newest.max(ready.last().copied().unwrap_or_default());
        Ok((current, target))
    }

    /// `version` was installed: when it is newer than every version there
    /// was when the pin was set, it is a new release and takes over the
    /// default from the pin. Returns whether anything changed.
    pub fn released(&mut self, version: u64) -> bool {
        if self.pinned.is_none() || version <= self.newest || self.canary.is_some() {
            return false;
        }
        self.pinned = None;
        self.newest = version;
        true
    }

    /// `version` was deleted: forget what was said about it.
    pub fn forget(&mut self, version: u64) -> bool {
        let pinned = self.pinned == Some(version);
        if pinned {
            self.pinned = None;
        }
        if self.canary.as_ref().is_some_and(|c| c.version == version) {
            self.canary = None;
        }
        self.rolled_back.remove(&version).is_some() || pinned
    }

    /// Whether items of `version` count in a trial: the canary's, and the
    /// default's it is compared with (the pin when the trial began).
    pub fn in_trial(&self, version: u64) -> bool {
        self.canary.as_ref().is_some_and(|c| version == c.version || version == self.pinned.unwrap_or_default())
    }

    /// Whether nothing was chosen by hand and nothing is on trial.
    pub fn is_empty(&self) -> bool {
        self.pinned.is_none() && self.rolled_back.is_empty() && self.canary.is_none()
    }
}

/// How a version just installed serves, for the upload's reply: on trial
/// (its share of the requests that name no version, the items it must
/// answer, and what happens next), the default, or only when named.
pub fn serving_as(info: &tensorgate_protocol::ModelInfo) -> String {
    let (name, version) = (&info.name, info.version);
    match &info.canary {
        Some(c) => format!(
            "on trial as a canary, not yet the default: it takes {} % of the requests that name no version \
             until it has answered {} items, then it is promoted to the default; it is rolled back automatically \
             (the previous default takes its requests again) as soon as its item failures exceed the default's \
             by more than the allowed margin. Follow it with `tensorgate models`; decide by hand with \
             `tensorgate promote {name} {version}` or `tensorgate rollback {name}`",
            format_share(c.share),
            c.items_needed
        ),
        None if info.default => "serving as the default".into(),
        None => format!(
            "serving the requests that name version {version}; it is not the default \
             (`tensorgate promote {name} {version}` makes it the default)"
        ),
    }
}

/// A share as a percentage, without needless decimals (0.2: `20`, 0.125: `12.5`).
fn format_share(share: f64) -> String {
    let pct = share * 100.0;
    match (pct - pct.round()).abs() < 1e-9 {
        true => format!("{}", pct.round() as i64),
        false => format!("{pct:.1}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[u64]) -> BTreeSet<u64> {
        v.iter().copied().collect()
    }

    #[test]
    fn newest_by_default_pinned_when_promoted() {
        let mut p = DefaultPolicy::default();
        assert_eq!(p.choose(&set(&[1, 2, 3])), Some(3));
        assert_eq!(p.choose(&set(&[])), None);
        p.promote("m", 2, &set(&[1, 2, 3])).unwrap();
        assert_eq!(p.choose(&set(&[1, 2, 3])), Some(2));
        // A pin that is not ready (yet, or any more) does not route.
        assert_eq!(p.choose(&set(&[1, 3])), Some(3));
        let e = p.promote("m", 7, &set(&[1, 2, 3])).unwrap_err();
        assert_eq!(e.to_string(), "model `m` has no version 7 ready to promote (ready: 1, 2, 3)");
    }

    #[test]
    fn rollback_marks_the_default_and_steps_down_past_bad_versions() {
        let ready = set(&[1, 2, 3]);
        let mut p = DefaultPolicy::default();
        assert_eq!(p.rollback("m", &ready, "by hand"), Ok((3, 2)));
        assert_eq!(p.choose(&ready), Some(2));
        assert_eq!(p.rolled_back.get(&3).map(String::as_str), Some("by hand"));
        assert_eq!(p.rollback("m", &ready, "again"), Ok((2, 1)));
        assert_eq!(p.choose(&ready), Some(1));
        let e = p.rollback("m", &ready, "once more").unwrap_err();
        assert!(matches!(e, PolicyError::NothingEarlier { current: 1, .. }), "{e}");
        // Deleting the pinned version falls back to the newest good one, not a rolled-back one.
        assert!(p.forget(1));
        assert_eq!(p.choose(&set(&[2, 3])), Some(3), "every version rolled back: the newest serves");
        assert_eq!(p.choose(&set(&[2, 3, 4])), Some(4));
        // Promoting a rolled-back version clears its mark.
        p.promote("m", 3, &ready).unwrap();
        assert!(!p.rolled_back.contains_key(&3));
    }

    #[test]
    fn a_new_release_takes_over_from_a_pin_but_a_reinstall_does_not() {
        let mut p = DefaultPolicy::default();
        p.rollback("m", &set(&[1, 2]), "bad").unwrap();
        assert!(!p.released(2), "replacing the rolled-back version is not a release");
        assert!(!p.released(1), "nor is loading the versions there were (a restart)");
        assert_eq!(p.choose(&set(&[1, 2])), Some(1));
        assert!(p.released(3));
        assert_eq!(p.choose(&set(&[1, 2, 3])), Some(3));
        assert!(p.rolled_back.contains_key(&2), "still marked");
    }

    #[test]
    fn a_trial_pins_the_old_default_routes_its_share_and_ends_either_way() {
        let terms = Rollout { canary_share: 0.25, canary_items: 100, max_failure_increase: 0.02 };
        let mut p = DefaultPolicy::default();
        assert!(!p.start_trial(1, &set(&[1]), terms), "nothing else serves: no trial");
        assert!(!p.start_trial(2, &set(&[1, 2]), Rollout { canary_share: 0.0, ..terms }), "no share: no trial");
        assert!(p.start_trial(2, &set(&[1, 2]), terms));
        assert_eq!(p.choose(&set(&[1, 2])), Some(1), "the old default stays the default");
        assert_eq!(p.route(&set(&[1, 2]), 0.1), Some(2), "a draw under the share goes to the canary");
        assert_eq!(p.route(&set(&[1, 2]), 0.3), Some(1));
        assert!(!p.released(2) && !p.start_trial(2, &set(&[1, 2]), terms), "a restart does not start it again");
        p.end_trial(2, true, "passed");
        assert_eq!((p.choose(&set(&[1, 2])), p.canary.clone()), (Some(2), None), "promoted");

        let mut p = DefaultPolicy::default();
        p.start_trial(2, &set(&[1, 2]), terms);
        p.end_trial(2, false, "canary: too many failures");
        assert_eq!(p.choose(&set(&[1, 2])), Some(1));
        assert_eq!(p.rolled_back.get(&2).map(String::as_str), Some("canary: too many failures"));
        // A rollback by hand during a trial rolls the canary back.
        let mut p = DefaultPolicy::default();
        p.start_trial(3, &set(&[1, 3]), terms);
        assert_eq!(p.rollback("m", &set(&[1, 3]), "by hand"), Ok((3, 1)));
        assert_eq!((p.choose(&set(&[1, 3])), p.canary.is_none()), (Some(1), true));
    }

    #[test]
    fn the_verdict_compares_with_the_default_and_stops_a_bad_canary_early() {
        let terms = Rollout { canary_share: 0.1, canary_items: 100, max_failure_increase: 0.02 };
        let t = |ok, failed| Tally { ok, failed };
        assert_eq!(judge(&terms, t(50, 0), t(500, 0)), Verdict::Running);
        assert!(matches!(judge(&terms, t(100, 2), t(900, 0)), Verdict::Promote(_)), "2 % allowed over a clean default");
        // 3 failures can no longer pass a 100-item trial against a clean default: stopped at once.
        match judge(&terms, t(10, 3), t(300, 0)) {
            Verdict::RollBack(why) => assert!(why.starts_with("canary: 3 of 13 items failed (23.1 %) against 0.0 % on the default"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A default that fails 10 % of items (bad inputs) allows the canary as many, plus 2 points.
        assert!(matches!(judge(&terms, t(89, 11), t(900, 100)), Verdict::Promote(_)));
        assert!(matches!(judge(&terms, t(80, 13), t(900, 100)), Verdict::RollBack(_)));
    }

    #[test]
    fn an_upload_says_whether_the_version_is_on_trial_and_at_what_share() {
        let mut info = tensorgate_protocol::ModelInfo { name: "efn-qg".into(), version: 3, default: true, ..Default::default() };
        assert_eq!(serving_as(&info), "serving as the default");
        info.default = false;
        assert!(serving_as(&info).contains("not the default (`tensorgate promote efn-qg 3`"), "{}", serving_as(&info));
        info.canary = Some(tensorgate_protocol::CanaryInfo { share: 0.2, items_needed: 200, items_ok: 0, items_failed: 0 });
        let m = serving_as(&info);
        assert!(m.starts_with("on trial as a canary, not yet the default: it takes 20 % of the requests that name no version"), "{m}");
        assert!(m.contains("until it has answered 200 items, then it is promoted") && m.contains("rolled back automatically"), "{m}");
        assert_eq!(format_share(0.125), "12.5");
    }
}
