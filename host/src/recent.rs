//! What this host dispatched lately, for the dashboard: the last
//! [`RECENT_DISPATCHES`] dispatches, and per plugin and per tenant the
//! counts, outcomes and lateness/duration percentiles over the last minute
//! (in one-second slots) and the last hour (in one-minute slots).
//!
//! Percentiles come from sparse log-scale histograms (four buckets per
//! doubling, so a percentile is within 19 % of the true value). Memory is
//! bounded: 60 + 60 slots, each with at most [`MAX_TENANTS_PER_SLOT`]
//! tenants (the rest are summed under `(other)`) and a few occupied
//! buckets per group.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

/// Dispatches kept for the recent-dispatches view.
pub const RECENT_DISPATCHES: usize = 500;
/// Tenants kept apart in one slot; the others are summed as `(other)`.
pub const MAX_TENANTS_PER_SLOT: usize = 200;
/// Characters of an error kept with a recent dispatch.
const ERROR_CHARS: usize = 2000;

/// One dispatch, as the recent-dispatches view shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Dispatch {
    /// When it finished (Unix ms, this host's clock).
    pub at_ms: i64,
    /// Tenant.
    pub tenant: String,
    /// Action.
    pub action: String,
    /// Identifier.
    pub id: String,
    /// The plugin that ran it.
    pub plugin: String,
    /// Attempt number (1 for the first).
    pub attempt: u32,
    /// `ok`, `error`, `trap`, ...
    pub outcome: &'static str,
    /// The error, cut to 2000 characters; `None` for `ok`.
    pub error: Option<String>,
    /// How long the handler ran (µs).
    pub duration_us: u64,
    /// Due time to start (µs; negative: started early); `None` when the
    /// due time is unknown (claimed from an `expired` keyevent alone).
    pub late_us: Option<i64>,
}

/// Counts and percentiles of one group over a window.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    /// Dispatches.
    pub count: u64,
    /// Per second over the window.
    pub per_second: f64,
    /// Dispatches by outcome.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Lateness p50 / p99 (ms).
    pub late_p50_ms: f64,
    /// See `late_p50_ms`.
    pub late_p99_ms: f64,
    /// Handler duration p50 / p99 (ms).
    pub duration_p50_ms: f64,
    /// See `duration_p50_ms`.
    pub duration_p99_ms: f64,
}

/// The overview of one window: everything, per plugin and per tenant.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Window {
    /// Length of the window (s).
    pub seconds: u64,
    /// All dispatches.
    pub total: Summary,
    /// Per plugin.
    pub plugins: BTreeMap<String, Summary>,
    /// Per tenant.
    pub tenants: BTreeMap<String, Summary>,
}

/// A sparse log-scale histogram of microseconds.
#[derive(Debug, Clone, Default)]
struct Hist(BTreeMap<u16, u64>);

impl Hist {
    fn bucket(us: u64) -> u16 {
        // Four buckets per doubling: 4·log2(us+1), in whole steps.
        let v = (us as f64 + 1.0).log2() * 4.0;
        v.floor().clamp(0.0, f64::from(u16::MAX)) as u16
    }

    /// The upper bound of a bucket (µs).
    fn upper_us(b: u16) -> f64 {
        (2f64.powf(f64::from(b + 1) / 4.0) - 1.0).max(0.0)
    }

    fn add(&mut self, us: u64) {
        *self.0.entry(Self::bucket(us)).or_default() += 1;
    }

    fn merge(&mut self, o: &Hist) {
        for (b, n) in &o.0 {
            *self.0.entry(*b).or_default() += n;
        }
    }

    /// The `q` quantile in ms (the upper bound of its bucket).
    fn quantile_ms(&self, q: f64) -> f64 {
        let total: u64 = self.0.values().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, n) in &self.0 {
            seen += n;
            if seen >= rank {
                return (Self::upper_us(*b) / 1000.0 * 100.0).round() / 100.0;
            }
        }
        0.0
    }
}

#[derive(Debug, Clone, Default)]
struct Agg {
    count: u64,
    outcomes: BTreeMap<&'static str, u64>,
    late: Hist,
    duration: Hist,
}

impl Agg {
    fn add(&mut self, d: &Dispatch) {
        self.count += 1;
        *self.outcomes.entry(d.outcome).or_default() += 1;
        if let Some(late_us) = d.late_us {
            self.late.add(u64::try_from(late_us).unwrap_or(0));
        }
        self.duration.add(d.duration_us);
    }

    fn merge(&mut self, o: &Agg) {
        self.count += o.count;
        for (k, n) in &o.outcomes {
            *self.outcomes.entry(k).or_default() += n;
        }
        self.late.merge(&o.late);
        self.duration.merge(&o.duration);
    }

    fn summary(&self, seconds: u64) -> Summary {
        Summary {
            count: self.count,
            per_second: (self.count as f64 / seconds.max(1) as f64 * 100.0).round() / 100.0,
            outcomes: self.outcomes.clone(),
            late_p50_ms: self.late.quantile_ms(0.50),
            late_p99_ms: self.late.quantile_ms(0.99),
            duration_p50_ms: self.duration.quantile_ms(0.50),
            duration_p99_ms: self.duration.quantile_ms(0.99),
        }
    }
}

const OTHER: &str = "(other)";

#[derive(Debug, Default)]
struct Slot {
    start_ms: i64,
    total: Agg,
    plugins: HashMap<String, Agg>,
    tenants: HashMap<String, Agg>,
}

impl Slot {
    fn add(&mut self, d: &Dispatch) {
        self.total.add(d);
        match self.plugins.get_mut(&d.plugin) {
            Some(a) => a.add(d),
            None => self.plugins.entry(d.plugin.clone()).or_default().add(d),
        }
        let tenant =
            if self.tenants.contains_key(&d.tenant) || self.tenants.len() < MAX_TENANTS_PER_SLOT {
                d.tenant.as_str()
            } else {
                OTHER
            };
        match self.tenants.get_mut(tenant) {
            Some(a) => a.add(d),
            None => self.tenants.entry(tenant.to_owned()).or_default().add(d),
        }
    }
}

/// Slots of `len_ms` each, the newest last, at most `keep`.
#[derive(Debug)]
struct Slots {
    len_ms: i64,
    keep: usize,
    slots: VecDeque<Slot>,
}

impl Slots {
    fn new(len_ms: i64, keep: usize) -> Self {
        Self {
            len_ms,
            keep,
            slots: VecDeque::with_capacity(keep + 1),
        }
    }

    fn add(&mut self, d: &Dispatch) {
        let start_ms = d.at_ms - d.at_ms.rem_euclid(self.len_ms);
        if self.slots.back().is_none_or(|s| s.start_ms < start_ms) {
            self.slots.push_back(Slot {
                start_ms,
                ..Slot::default()
            });
            while self.slots.len() > self.keep {
                self.slots.pop_front();
            }
        }
        if let Some(slot) = self.slots.iter_mut().rev().find(|s| s.start_ms <= start_ms) {
            slot.add(d);
        }
    }

    /// The slots of the last `keep` slot lengths before `now_ms`, merged.
    fn window(&self, now_ms: i64) -> Window {
        let seconds = u64::try_from(self.len_ms * self.keep as i64 / 1000).unwrap_or(0);
        let from = now_ms - self.len_ms * self.keep as i64;
        let mut total = Agg::default();
        let mut plugins: HashMap<&str, Agg> = HashMap::new();
        let mut tenants: HashMap<&str, Agg> = HashMap::new();
        for slot in self
            .slots
            .iter()
            .filter(|s| s.start_ms + self.len_ms > from)
        {
            total.merge(&slot.total);
            for (k, a) in &slot.plugins {
                plugins.entry(k).or_default().merge(a);
            }
            for (k, a) in &slot.tenants {
                tenants.entry(k).or_default().merge(a);
            }
        }
        Window {
            seconds,
            total: total.summary(seconds),
            plugins: plugins
                .into_iter()
                .map(|(k, a)| (k.to_owned(), a.summary(seconds)))
                .collect(),
            tenants: tenants
                .into_iter()
                .map(|(k, a)| (k.to_owned(), a.summary(seconds)))
                .collect(),
        }
    }
}

#[derive(Debug)]
struct Inner {
    dispatches: VecDeque<Dispatch>,
    seconds: Slots,
    minutes: Slots,
}

/// The recent dispatches and the minute and hour windows.
#[derive(Debug)]
pub struct Recent(Mutex<Inner>);

impl Default for Recent {
    fn default() -> Self {
        Self(Mutex::new(Inner {
            dispatches: VecDeque::with_capacity(RECENT_DISPATCHES),
            seconds: Slots::new(1000, 60),
            minutes: Slots::new(60_000, 60),
        }))
    }
}

impl Recent {
    /// Records a finished dispatch (its error cut to 2000 characters).
    pub fn record(&self, mut d: Dispatch) {
        if let Some(e) = d.error.as_mut()
            && let Some((cut, _)) = e.char_indices().nth(ERROR_CHARS)
        {
            e.truncate(cut);
            e.push_str(" [truncated]");
        }
        let Ok(mut inner) = self.0.lock() else {
            return;
        };
        inner.seconds.add(&d);
        inner.minutes.add(&d);
        if inner.dispatches.len() == RECENT_DISPATCHES {
            inner.dispatches.pop_front();
        }
        inner.dispatches.push_back(d);
    }

    /// The last dispatches, newest first, at most `limit`.
    pub fn dispatches(&self, limit: usize) -> Vec<Dispatch> {
        self.0.lock().map_or_else(
            |_| Vec::new(),
            |inner| inner.dispatches.iter().rev().take(limit).cloned().collect(),
        )
    }

    /// The last minute and the last hour, as of `now_ms`.
    pub fn windows(&self, now_ms: i64) -> (Window, Window) {
        self.0.lock().map_or_else(
            |_| (Window::default(), Window::default()),
            |inner| (inner.seconds.window(now_ms), inner.minutes.window(now_ms)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(at_ms: i64, tenant: &str, outcome: &'static str, late_us: i64, dur_us: u64) -> Dispatch {
        Dispatch {
            at_ms,
            tenant: tenant.into(),
            action: "a".into(),
            id: "1".into(),
            plugin: "p".into(),
            attempt: 1,
            outcome,
            error: (outcome != "ok").then(|| "x".repeat(5000)),
            duration_us: dur_us,
            late_us: Some(late_us),
        }
    }

    #[test]
    fn windows_count_outcomes_and_percentiles_and_forget_old_slots() {
        let r = Recent::default();
        let t0 = 1_000_000_000;
        // 99 fast ones and one slow one, in the last minute.
        for i in 0..99 {
            r.record(d(t0 + i * 100, "acme", "ok", 2_000, 1_000));
        }
        r.record(d(t0 + 9_999, "beta", "error", 500_000, 100_000));
        let (minute, hour) = r.windows(t0 + 10_000);
        assert_eq!(minute.total.count, 100);
        assert_eq!(minute.total.outcomes.get("ok"), Some(&99));
        assert_eq!(minute.total.outcomes.get("error"), Some(&1));
        assert_eq!(minute.tenants["beta"].count, 1);
        assert_eq!(hour.plugins["p"].count, 100);
        // p50 within a bucket (19 %) of 2 ms; p99 of the fast ones too.
        let p50 = minute.total.late_p50_ms;
        assert!((2.0..=2.4).contains(&p50), "late p50 {p50}");
        assert!(minute.tenants["beta"].late_p99_ms >= 500.0);
        assert!(minute.total.duration_p99_ms < 1.3, "{:?}", minute.total);
        // Two minutes on, the minute window is empty, the hour is not.
        let (minute, hour) = r.windows(t0 + 130_000);
        assert_eq!(minute.total.count, 0);
        assert_eq!(hour.total.count, 100);
        // The error is cut; the newest comes first.
        let last = r.dispatches(10);
        assert_eq!(last.len(), 10);
        assert_eq!(last[0].tenant, "beta");
        assert!(last[0].error.as_ref().unwrap().ends_with("[truncated]"));
        assert!(last[0].error.as_ref().unwrap().len() < 2100);
    }

    #[test]
    fn the_ring_and_the_tenants_per_slot_are_bounded() {
        let r = Recent::default();
        let t0 = 5_000_000;
        for i in 0..(MAX_TENANTS_PER_SLOT + 50) {
            r.record(d(t0, &format!("t{i}"), "ok", 0, 0));
        }
        let (minute, _) = r.windows(t0 + 1);
        assert_eq!(minute.tenants.len(), MAX_TENANTS_PER_SLOT + 1);
        assert_eq!(minute.tenants[OTHER].count, 50);
        assert_eq!(r.dispatches(usize::MAX).len(), RECENT_DISPATCHES.min(250));
        for _ in 0..RECENT_DISPATCHES {
            r.record(d(t0, "x", "ok", 0, 0));
        }
        assert_eq!(r.dispatches(usize::MAX).len(), RECENT_DISPATCHES);
    }
}
