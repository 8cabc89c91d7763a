//! The sharded delivery state of a Redis Cluster: writing hints, the sweep
//! and the reaper that read them, and the audit that repairs them
//! (`docs/design.md`, "Redis Cluster: sharded delivery").
//!
//! Every step on a slot's [`Space`] is the same single-slot script as on a
//! standalone server, except the claim. What is added here: after a step
//! that adds work to a slot (arming, indexing, a retry, a release, a reap)
//! the host lowers the (slot, tenant) hint in the slot's [`Bucket`] (and
//! the tenant's score in the bucket) and gives it a new version; the sweep
//! reads the 16 buckets' due tenants and their due pairs, claims the pairs
//! of each node in one `claim_many` (a pair of a slot its node does not
//! serve whole with `claim_one`), and sets each hint to the pair's next
//! entry only if its version did not change meanwhile (`hint_cas`). A hint is never later
//! than its work, except when a host stops between a slot step and its
//! hint: the audit (one bucket every [`AUDIT_EVERY`], each host in turn)
//! writes the hints of every slot's ready set and leases again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Value;
use tracing::{debug, warn};

use super::space::{parse_tenant_hint, tenant_hint};
use super::{
    Bucket, Delivery, FIRED_TTL_MS, Firing, Gauges, LEAD_MS, Space, reply_int as int,
    reply_text as text,
};
use crate::backend::{Node, Topology};
use crate::error::RepoError;
use crate::throttle::Throttle;

/// How often a host audits one hint bucket (so each bucket at least every
/// 16 × this, fewer with more hosts).
pub const AUDIT_EVERY: Duration = Duration::from_secs(10);

/// Most hints kept to be written again (see `State::unwritten`).
const UNWRITTEN_MAX: usize = 100_000;

/// Most slots with ended leases one reap looks at per bucket.
const REAP_SLOTS: usize = 1000;

/// A sweep takes at most `limit / PAIR_SHARE` (slot, tenant) pairs, so
/// each may give up to this many firings: a pair costs Redis about a dozen
/// commands whatever it gives, and in a backlog a pair has several due
/// (a burst of 100 000 over 16 384 slots puts about 6 in each). With one
/// firing a pair, a burst cost each primary more per job than a standalone
/// server. Not in a backlog, pairs have one due at a time anyway.
const PAIR_SHARE: usize = 8;

/// How long the slot layout the claims group pairs by is used before it is
/// read again (sooner when a node said it does not serve a slot).
const LAYOUT_EVERY: Duration = Duration::from_secs(1);

/// What a host keeps of the sharded state.
pub(super) struct State {
    /// When this host last audited a bucket.
    audited: Mutex<Option<Instant>>,
    /// The bucket it audits next.
    next_audit: AtomicU16,
    /// Rate of the warnings about hints that could not be written.
    errors: Throttle,
    /// Hints that could not be written (their bucket's node failing
    /// over): `(lease?, slot, member, score)`, written again before the
    /// next sweep, so their work is not left for the audit.
    unwritten: Mutex<Vec<HintWrite>>,
    /// The slot layout the claims group pairs by, and when it was read.
    layout: Mutex<Option<(Instant, Arc<Topology>)>>,
}

/// A hint to lower (or add), with a new version.
#[derive(Debug, Clone)]
struct HintWrite {
    /// A lease hint (member: the slot), or a tenant's (`slot:tenant`).
    lease: bool,
    slot: u16,
    member: String,
    score: i64,
}

impl Default for State {
    fn default() -> Self {
        State {
            audited: Mutex::new(None),
            next_audit: AtomicU16::new(fastrand::u16(..super::BUCKETS)),
            errors: Throttle::new(Duration::from_secs(10)),
            unwritten: Mutex::new(Vec::new()),
            layout: Mutex::new(None),
        }
    }
}

/// Which hints of a bucket a script works on.
#[derive(Debug, Clone, Copy)]
enum Hints {
    /// (slot, tenant) pairs with entries, with the bucket's tenants.
    Work,
    /// Slots with leases.
    Leases,
}

impl Hints {
    /// `script` on these hints of `bucket`: KEYS the hints, the versions,
    /// and for work hints the tenants.
    fn call(self, script: &redis::Script, bucket: Bucket) -> redis::ScriptInvocation<'_> {
        let mut call = match self {
            Hints::Work => script.key(bucket.hints()),
            Hints::Leases => script.key(bucket.lease_hints()),
        };
        call.key(bucket.versions());
        if let Hints::Work = self {
            call.key(bucket.tenants());
        }
        call
    }
}

/// A due (slot, tenant) pair of a sweep, and the hint that named it.
struct Pair {
    slot: u16,
    tenant: String,
    hint: Hint,
}

/// A hint read from a bucket: member, score, version.
struct Hint {
    member: String,
    score: i64,
    version: String,
}

/// `hints_due`'s answer: server time, the first score after the window,
/// and the hints due.
fn parse_due(out: &[Value]) -> (i64, i64, Vec<Hint>) {
    let hints = out
        .get(2..)
        .unwrap_or_default()
        .chunks(3)
        .map(|c| Hint {
            member: text(c.first()),
            score: int(c.get(1)),
            version: text(c.get(2)),
        })
        .collect();
    (int(out.first()), int(out.get(1)), hints)
}

/// Due hints as pairs, grouped by the node the slot layout places their
/// slot on: the groups of two or more (claimed in one call on their node),
/// and the pairs alone on their node or of a slot the layout does not place
/// (claimed one by one). Hints that do not parse are dropped.
fn group_by_node(due: Vec<Hint>, layout: Option<&Topology>) -> (Vec<Pair>, Vec<Vec<Pair>>) {
    let mut by_node: BTreeMap<Option<Node>, Vec<Pair>> = BTreeMap::new();
    for hint in due {
        let Some((slot, tenant)) = parse_tenant_hint(&hint.member) else {
            continue;
        };
        let pair = Pair {
            slot,
            tenant: tenant.to_owned(),
            hint,
        };
        let node = layout.and_then(|l| l.owner_of(slot)).cloned();
        by_node.entry(node).or_default().push(pair);
    }
    let mut alone = Vec::new();
    let mut grouped = Vec::new();
    for (node, pairs) in by_node {
        if node.is_none() || pairs.len() == 1 {
            alone.extend(pairs);
        } else {
            grouped.push(pairs);
        }
    }
    (alone, grouped)
}

/// A lease hint of `slot` at `score`.
fn lease_hint(slot: u16, score: i64) -> HintWrite {
    HintWrite {
        lease: true,
        slot,
        member: slot.to_string(),
        score,
    }
}

impl Delivery {
    fn warn_hint(&self, what: &str, error: &RepoError) {
        if let Some(state) = self.layout.sharded()
            && let Some(suppressed) = state.errors.allow()
        {
            warn!(
                event = "hint_failed",
                what, %error, suppressed,
                "cannot update a hint bucket; the audit repairs it (firings may be late, not lost)"
            );
        }
    }

    /// Tells `space`'s bucket that tenants have work from (at most) the
    /// given times on. A no-op on a standalone server. A failure is logged:
    /// the work is in Redis, and the audit writes its hint.
    pub(super) async fn hint_work<'t>(
        &self,
        space: &Space,
        work: impl IntoIterator<Item = (&'t str, i64)>,
    ) {
        let Some(slot) = space.slot() else { return };
        let mut earliest: BTreeMap<&str, i64> = BTreeMap::new();
        for (tenant, at) in work {
            let e = earliest.entry(tenant).or_insert(at);
            *e = (*e).min(at);
        }
        if earliest.is_empty() {
            return;
        }
        let hints = earliest
            .into_iter()
            .map(|(tenant, at)| HintWrite {
                lease: false,
                slot,
                member: tenant_hint(slot, tenant),
                score: at.max(0),
            })
            .collect();
        self.write_hints(hints).await;
    }

    /// Writes hints (`hint`: lowered, new version), one call per bucket
    /// and kind; those that fail are kept to be written again.
    async fn write_hints(&self, hints: Vec<HintWrite>) {
        let mut calls: BTreeMap<(Bucket, bool), Vec<HintWrite>> = BTreeMap::new();
        for hint in hints {
            calls
                .entry((Bucket::of(hint.slot), hint.lease))
                .or_default()
                .push(hint);
        }
        let writes = calls
            .into_iter()
            .map(|((bucket, lease), hints)| async move {
                let kind = if lease { Hints::Leases } else { Hints::Work };
                let mut call = kind.call(&self.scripts.hint, bucket);
                for hint in &hints {
                    call.arg(&hint.member).arg(hint.score);
                }
                match self.conn.invoke::<i64>(&call).await {
                    Ok(_) => Ok(()),
                    Err(e) => Err((hints, RepoError::from(e))),
                }
            });
        for result in futures::future::join_all(writes).await {
            if let Err((hints, e)) = result {
                self.warn_hint(
                    if hints.first().is_some_and(|h| h.lease) {
                        "lease"
                    } else {
                        "work"
                    },
                    &e,
                );
                if let Some(state) = self.layout.sharded()
                    && let Ok(mut kept) = state.unwritten.lock()
                {
                    // Bounded: past it, the audit writes the rest.
                    let room = UNWRITTEN_MAX.saturating_sub(kept.len());
                    kept.extend(hints.into_iter().take(room));
                }
            }
        }
    }

    /// Writes again the hints that could not be written before.
    async fn rewrite_hints(&self) {
        let Some(state) = self.layout.sharded() else {
            return;
        };
        let kept = match state.unwritten.lock() {
            Ok(mut kept) if !kept.is_empty() => std::mem::take(&mut *kept),
            _ => return,
        };
        self.write_hints(kept).await;
    }

    /// Tells `space`'s bucket that it holds leases ending from `at` on.
    pub(super) async fn hint_lease(&self, space: &Space, at: i64) {
        let Some(slot) = space.slot() else { return };
        self.write_hints(vec![HintWrite {
            lease: true,
            slot,
            member: slot.to_string(),
            score: at.max(0),
        }])
        .await;
    }

    /// Tells `space`'s bucket that it holds dead letters.
    pub(super) async fn hint_dead(&self, space: &Space) {
        let Some(slot) = space.slot() else { return };
        let add = redis::cmd("SADD")
            .arg(Bucket::of(slot).dead_slots())
            .arg(slot)
            .clone();
        if let Err(e) = self.conn.query::<i64>(&add).await {
            self.warn_hint("dead letters", &e.into());
        }
    }

    /// The dead-letter lists: each tenant's, and the one list of earlier
    /// versions, of a standalone server or of each slot that has had
    /// letters.
    pub(super) async fn dead_lists(&self) -> Result<Vec<String>, RepoError> {
        let spaces: Vec<Space> = match self.layout.sharded() {
            None => vec![Space::standalone()],
            Some(_) => {
                let mut pipe = redis::pipe();
                for bucket in Bucket::all() {
                    pipe.smembers(bucket.dead_slots());
                }
                let slots: Vec<Vec<u16>> = self.conn.pipe(&pipe).await?;
                let mut slots: Vec<u16> = slots.into_iter().flatten().collect();
                slots.sort_unstable();
                slots.into_iter().map(Space::of_slot).collect()
            }
        };
        let mut pipe = redis::pipe();
        for space in &spaces {
            pipe.smembers(space.dead_tenants());
        }
        let tenants: Vec<Vec<String>> = self.conn.pipe(&pipe).await?;
        let mut lists = Vec::new();
        for (space, mut tenants) in spaces.iter().zip(tenants) {
            tenants.sort_unstable();
            lists.extend(tenants.iter().map(|t| space.dead_of(t)));
            lists.push(space.dead());
        }
        Ok(lists)
    }

    /// How many dead letters the lists hold.
    pub(super) async fn dead_count(&self) -> Result<u64, RepoError> {
        let mut pipe = redis::pipe();
        for list in self.dead_lists().await? {
            pipe.llen(list);
        }
        let lens: Vec<u64> = self.conn.pipe(&pipe).await?;
        Ok(lens.iter().sum())
    }

    /// Reads the hints of `kind` of every bucket due within `lead`, up to
    /// `limit` in all: `limit / 16` (rounded up) from each bucket, for work
    /// hints shared among its due tenants not in `skip`. A bucket with more
    /// due says so by a next time of now, so the next sweep comes at once. (Each bucket reading `limit` made a sweep read,
    /// and look up the version of, 16 times the hints it could claim.)
    async fn due_hints(
        &self,
        kind: Hints,
        lead: i64,
        limit: usize,
        skip: &[String],
    ) -> Result<(i64, Option<i64>, Vec<Hint>), RepoError> {
        let each = limit.div_ceil(usize::from(super::BUCKETS)).max(1);
        let calls: Vec<_> = Bucket::all()
            .map(|b| {
                let mut call = kind.call(&self.scripts.hints_due, b);
                call.arg(lead).arg(each).arg(skip);
                call
            })
            .collect();
        let answers =
            futures::future::join_all(calls.iter().map(|c| self.conn.invoke::<Vec<Value>>(c)))
                .await;
        let (mut now, mut next, mut hints) = (0, None::<i64>, Vec::new());
        for answer in answers {
            let (n, after, due) = parse_due(&answer?);
            now = now.max(n);
            if after >= 0 {
                next = Some(next.map_or(after, |x| x.min(after)));
            }
            hints.extend(due);
        }
        hints.sort_by_key(|h| h.score);
        Ok((now, next, hints))
    }

    /// Applies claims' updates to hints, each only if its version is
    /// unchanged: `(slot, member, version read, new score or -1)`.
    async fn settle_hints(&self, kind: Hints, updates: Vec<(u16, Hint)>) {
        let mut by_bucket: BTreeMap<Bucket, Vec<Hint>> = BTreeMap::new();
        for (slot, hint) in updates {
            by_bucket.entry(Bucket::of(slot)).or_default().push(hint);
        }
        let calls: Vec<_> = by_bucket
            .into_iter()
            .map(|(b, hints)| {
                let mut call = kind.call(&self.scripts.hint_cas, b);
                for h in hints {
                    call.arg(h.member).arg(h.version).arg(h.score);
                }
                call
            })
            .collect();
        for r in futures::future::join_all(calls.iter().map(|c| self.conn.invoke::<i64>(c))).await {
            if let Err(e) = r {
                self.warn_hint("claim", &e.into());
            }
        }
    }

    /// The slot layout to group claims by (read again every
    /// [`LAYOUT_EVERY`]); `None` when it cannot be read: every pair is
    /// then claimed on its own.
    async fn slot_layout(&self) -> Option<Arc<Topology>> {
        let state = self.layout.sharded()?;
        let held = state.layout.lock().ok()?.clone();
        if let Some((at, layout)) = &held
            && at.elapsed() < LAYOUT_EVERY
        {
            return Some(layout.clone());
        }
        match self.conn.primaries().await {
            Ok(Some(layout)) => {
                let layout = Arc::new(layout);
                if let Ok(mut held) = state.layout.lock() {
                    *held = Some((Instant::now(), layout.clone()));
                }
                Some(layout)
            }
            _ => held.map(|(_, layout)| layout),
        }
    }

    /// Reads the layout again before the next claim.
    fn forget_layout(&self) {
        if let Some(state) = self.layout.sharded()
            && let Ok(mut held) = state.layout.lock()
        {
            *held = None;
        }
    }

    /// `claim_one` for one pair: its answer (`{now, next, first lease,
    /// member, due, meta, ...}`) or error.
    async fn claim_pair(
        &self,
        slot: u16,
        tenant: &str,
        lease_ms: u64,
        share: usize,
    ) -> redis::RedisResult<Vec<Value>> {
        let space = Space::of_slot(slot);
        let token = super::lease::next_token();
        let mut call = self.scripts.claim_one.key(space.due(tenant));
        call.key(space.ready())
            .key(space.leases())
            .key(space.meta())
            .arg(tenant)
            .arg(LEAD_MS)
            .arg(lease_ms)
            .arg(share)
            .arg(space.fired())
            .arg(FIRED_TTL_MS)
            .arg(&token);
        let answer = self.conn.invoke_once(&call).await;
        if answer.is_err() {
            // It may have run unanswered: its leases are looked for.
            self.doubts.add(token, vec![space]);
        }
        answer
    }

    /// `claim_many` for pairs that `node` serves, as the layout says: per
    /// pair, its answer in `claim_one`'s form, or `None` for a pair the
    /// node left out (it does not serve the slot whole: claim it alone).
    async fn claim_on_node(
        &self,
        pairs: &[Pair],
        lease_ms: u64,
        share: usize,
    ) -> redis::RedisResult<Vec<Option<Vec<Value>>>> {
        let Some(first) = pairs.first() else {
            return Ok(Vec::new());
        };
        let mut call = self
            .scripts
            .claim_many
            .key(Space::of_slot(first.slot).ready());
        let token = super::lease::next_token();
        call.arg(LEAD_MS)
            .arg(lease_ms)
            .arg(share)
            .arg(FIRED_TTL_MS)
            .arg(&token);
        for pair in pairs {
            call.arg(Space::of_slot(pair.slot).ready())
                .arg(&pair.tenant);
        }
        let out: Vec<Value> = match self.conn.invoke_once(&call).await {
            Ok(out) => out,
            Err(e) => {
                // It may have run unanswered: its leases are looked for.
                let spaces = pairs.iter().map(|p| Space::of_slot(p.slot)).collect();
                self.doubts.add(token, spaces);
                return Err(e);
            }
        };
        let now = out.first().cloned().unwrap_or(Value::Int(0));
        let mut rest = out.get(1..).unwrap_or_default().iter();
        let mut answers = Vec::with_capacity(pairs.len());
        for _ in pairs {
            let (status, after, lease) = (rest.next(), rest.next(), rest.next());
            let n = usize::try_from(int(rest.next())).unwrap_or(0);
            let firings: Vec<Value> = rest.by_ref().take(n * 3).cloned().collect();
            if int(status) != 1 {
                answers.push(None);
                continue;
            }
            let mut answer = vec![
                now.clone(),
                after.cloned().unwrap_or(Value::Int(-1)),
                lease.cloned().unwrap_or(Value::Int(-1)),
            ];
            answer.extend(firings);
            answers.push(Some(answer));
        }
        Ok(answers)
    }

    /// The cluster's claim: the due (slot, tenant) hints of every bucket,
    /// each due tenant an equal share, up to `limit / PAIR_SHARE` pairs,
    /// each claimed with an equal share of `limit`; then each hint is set to its pair's next entry.
    /// The pairs of one node (as the slot layout says) are claimed in one
    /// `claim_many`; a pair alone on its node, of a slot the layout does
    /// not place, or that its node left out, with `claim_one`. Firings
    /// claimed are always returned (a pair that failed is logged: its hint
    /// stays, so the next sweep tries it again).
    pub(super) async fn claim_sharded(
        &self,
        limit: usize,
        lease_ms: u64,
        skip: &[String],
    ) -> Result<(i64, Option<i64>, Vec<Firing>), RepoError> {
        self.rewrite_hints().await;
        let pairs = (limit / PAIR_SHARE).max(1);
        let (now, mut next, mut due) = self.due_hints(Hints::Work, LEAD_MS, pairs, skip).await?;
        due.truncate(pairs);
        if due.is_empty() {
            return Ok((now, next, Vec::new()));
        }
        let share = (limit / due.len()).max(1);
        let layout = self.slot_layout().await;
        let (alone, grouped) = group_by_node(due, layout.as_deref());
        let (answers, failed) = self.claim_pairs(alone, grouped, lease_ms, share).await;
        let mut firings = Vec::new();
        let mut updates = Vec::new();
        let mut leases = Vec::new();
        for (Pair { slot, hint, .. }, out) in answers {
            let Some(out) = out else {
                // The claim may have run without its reply reaching us:
                // its leases would have no hint, and be found only by the
                // audit. A lease hint due now makes the reaper look at the
                // slot (and set the hint right) at once.
                leases.push(lease_hint(slot, 0));
                continue;
            };
            let (at, after, first_lease) = (int(out.first()), int(out.get(1)), int(out.get(2)));
            let claimed = self.firings(out.get(3..).unwrap_or_default(), at);
            if !claimed.is_empty() {
                leases.push(lease_hint(slot, first_lease.max(0)));
            }
            firings.extend(claimed);
            if after >= 0 {
                next = Some(next.map_or(after, |n| n.min(after)));
            }
            updates.push((
                slot,
                Hint {
                    score: after,
                    ..hint
                },
            ));
        }
        if let Some(e) = failed {
            self.warn_hint("claim", &e.into());
        }
        // One call per bucket for each kind, the buckets together.
        futures::future::join(
            self.write_hints(leases),
            self.settle_hints(Hints::Work, updates),
        )
        .await;
        Ok((now, next, firings))
    }

    /// Claims the pairs: each group on its node in one `claim_many`, the
    /// pairs alone (and those a node left out) one by one, all at once.
    /// Each pair's answer, `None` when its call failed; and the last error.
    async fn claim_pairs(
        &self,
        mut alone: Vec<Pair>,
        grouped: Vec<Vec<Pair>>,
        lease_ms: u64,
        share: usize,
    ) -> (Vec<(Pair, Option<Vec<Value>>)>, Option<redis::RedisError>) {
        let mut answers = Vec::new();
        let mut failed = None;
        let many = futures::future::join_all(
            grouped
                .iter()
                .map(|pairs| self.claim_on_node(pairs, lease_ms, share)),
        )
        .await;
        let mut left_out = false;
        for (pairs, result) in grouped.into_iter().zip(many) {
            match result {
                Ok(results) => {
                    for (pair, answer) in pairs.into_iter().zip(results) {
                        match answer {
                            Some(answer) => answers.push((pair, Some(answer))),
                            None => {
                                left_out = true;
                                alone.push(pair);
                            }
                        }
                    }
                }
                Err(e) => {
                    // The call may have run without its reply reaching us.
                    left_out = true;
                    failed = Some(e);
                    answers.extend(pairs.into_iter().map(|p| (p, None)));
                }
            }
        }
        if left_out {
            self.forget_layout();
        }
        let single = futures::future::join_all(alone.into_iter().map(|pair| async move {
            let answer = self
                .claim_pair(pair.slot, &pair.tenant, lease_ms, share)
                .await;
            (pair, answer)
        }))
        .await;
        for (pair, answer) in single {
            match answer {
                Ok(answer) => answers.push((pair, Some(answer))),
                Err(e) => {
                    failed = Some(e);
                    answers.push((pair, None));
                }
            }
        }
        (answers, failed)
    }

    /// The cluster's reaper: slots whose lease hint has ended have their
    /// ended leases put back in their indexes (the same script as
    /// standalone), and the hints set again. Also runs this host's turn of
    /// the audit. Returns how many leases had ended.
    pub(super) async fn reap_sharded(&self) -> Result<u64, RepoError> {
        self.audit_if_due().await;
        let (_, _, due) = self.due_hints(Hints::Leases, 0, REAP_SLOTS, &[]).await?;
        let reaps = due.into_iter().filter_map(|hint| {
            let slot: u16 = hint.member.parse().ok()?;
            Some(async move {
                let space = Space::of_slot(slot);
                let mut call = self.scripts.reap.key(space.leases());
                call.key(space.legacy_due()).key(space.ready());
                let out = self.conn.invoke_once::<Vec<Value>>(&call).await;
                (slot, space, hint, out)
            })
        });
        let mut ended = 0;
        let mut updates = Vec::new();
        let mut back = Vec::new();
        for (slot, _, hint, out) in futures::future::join_all(reaps).await {
            let out = out?;
            ended += u64::try_from(int(out.first())).unwrap_or(0);
            back.extend(out.get(2..).unwrap_or_default().iter().map(|v| HintWrite {
                lease: false,
                slot,
                member: tenant_hint(slot, &text(Some(v))),
                score: 0,
            }));
            updates.push((
                slot,
                Hint {
                    score: int(out.get(1)),
                    ..hint
                },
            ));
        }
        futures::future::join(
            self.write_hints(back),
            self.settle_hints(Hints::Leases, updates),
        )
        .await;
        Ok(ended)
    }

    /// This host's turn of the audit, once per [`AUDIT_EVERY`].
    async fn audit_if_due(&self) {
        let Some(state) = self.layout.sharded() else {
            return;
        };
        {
            let Ok(mut last) = state.audited.lock() else {
                return;
            };
            if last.is_some_and(|t| t.elapsed() < AUDIT_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let bucket = Bucket(state.next_audit.fetch_add(1, Ordering::Relaxed) % super::BUCKETS);
        match self.audit(bucket).await {
            Ok(n) => debug!(
                event = "hints_audited",
                bucket = bucket.0,
                hints = n,
                "hint bucket audited"
            ),
            Err(e) => self.warn_hint("audit", &e),
        }
    }

    /// Writes the hints of every slot of `bucket` from its ready set and its
    /// first lease (an early hint costs one claim that finds nothing; a
    /// missing one would leave work unseen). Returns how many it wrote.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn audit(&self, bucket: Bucket) -> Result<usize, RepoError> {
        let mut pipe = redis::pipe();
        for slot in bucket.slots() {
            let space = Space::of_slot(slot);
            pipe.cmd("ZRANGE")
                .arg(space.ready())
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES");
            pipe.cmd("ZRANGE")
                .arg(space.leases())
                .arg(0)
                .arg(0)
                .arg("WITHSCORES");
        }
        let found: Vec<Vec<(String, f64)>> = self.conn.pipe(&pipe).await?;
        let mut work = Hints::Work.call(&self.scripts.hint, bucket);
        let mut leases = Hints::Leases.call(&self.scripts.hint, bucket);
        let (mut n_work, mut n_leases) = (0, 0);
        for (slot, pair) in bucket.slots().zip(found.chunks(2)) {
            for (tenant, at) in pair.first().into_iter().flatten() {
                work.arg(tenant_hint(slot, tenant)).arg(*at as i64);
                n_work += 1;
            }
            for (_, at) in pair.get(1).into_iter().flatten() {
                leases.arg(slot).arg(*at as i64);
                n_leases += 1;
            }
        }
        if n_work > 0 {
            let _: i64 = self.conn.invoke(&work).await?;
        }
        if n_leases > 0 {
            let _: i64 = self.conn.invoke(&leases).await?;
        }
        Ok(n_work + n_leases)
    }

    /// What the sharded state holds, counted from the hints: the entries of
    /// each hinted (slot, tenant) pair, the leases and retry metadata of
    /// each hinted slot, and the dead letters of each slot that has had
    /// some.
    pub(super) async fn sharded_gauges(&self) -> Result<Gauges, RepoError> {
        let mut pipe = redis::pipe();
        for bucket in Bucket::all() {
            pipe.zrange(bucket.hints(), 0, -1)
                .zrange(bucket.lease_hints(), 0, -1);
        }
        let hinted: Vec<Vec<String>> = self.conn.pipe(&pipe).await?;
        let mut pending = redis::pipe();
        let mut slots = std::collections::BTreeSet::new();
        for (i, members) in hinted.iter().enumerate() {
            for member in members {
                if i % 2 == 0 {
                    if let Some((slot, tenant)) = parse_tenant_hint(member) {
                        pending.zcard(Space::of_slot(slot).due(tenant));
                        slots.insert(slot);
                    }
                } else if let Ok(slot) = member.parse::<u16>() {
                    slots.insert(slot);
                }
            }
        }
        let mut held = redis::pipe();
        for slot in &slots {
            let space = Space::of_slot(*slot);
            held.zcard(space.leases()).hlen(space.meta());
        }
        let pending: Vec<u64> = self.conn.pipe(&pending).await?;
        let held: Vec<u64> = self.conn.pipe(&held).await?;
        Ok(Gauges {
            pending: pending.iter().sum(),
            leases: held.iter().step_by(2).sum(),
            retries: held.iter().skip(1).step_by(2).sum(),
            dead_letters: self.dead_count().await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(slot: u16, tenant: &str) -> Hint {
        Hint {
            member: tenant_hint(slot, tenant),
            score: 0,
            version: String::new(),
        }
    }

    /// Two primaries, 0-8191 and 8192-16383, and slot 16383 unplaced.
    fn two_nodes() -> Topology {
        Topology::parse(
            "a 127.0.0.1:7001@17001 master - 0 0 1 connected 0-8191\n\
             b 127.0.0.1:7002@17002 master - 0 0 2 connected 8192-16382\n",
        )
    }

    fn slots(pairs: &[Pair]) -> Vec<(u16, &str)> {
        pairs.iter().map(|p| (p.slot, p.tenant.as_str())).collect()
    }

    #[test]
    fn pairs_of_one_node_are_claimed_together_and_a_lone_pair_alone() {
        let due = vec![hint(1, "a"), hint(9000, "b"), hint(2, "c"), hint(3, "a")];
        let (alone, grouped) = group_by_node(due, Some(&two_nodes()));
        assert_eq!(slots(&alone), [(9000, "b")]);
        assert_eq!(grouped.len(), 1);
        assert_eq!(
            slots(&grouped[0]),
            [(1, "a"), (2, "c"), (3, "a")],
            "in hint order"
        );
    }

    #[test]
    fn pairs_the_layout_does_not_place_go_alone() {
        let due = vec![
            hint(16383, "a"),
            hint(16383, "b"),
            hint(9000, "c"),
            hint(9001, "d"),
        ];
        let (alone, grouped) = group_by_node(due, Some(&two_nodes()));
        assert_eq!(slots(&alone), [(16383, "a"), (16383, "b")]);
        assert_eq!(slots(&grouped[0]), [(9000, "c"), (9001, "d")]);
        // Without a layout (it could not be read), every pair is alone.
        let due = vec![hint(1, "a"), hint(2, "b")];
        let (alone, grouped) = group_by_node(due, None);
        assert_eq!(alone.len(), 2);
        assert!(grouped.is_empty());
    }

    #[test]
    fn hints_that_do_not_parse_are_dropped() {
        let bad = Hint {
            member: "not-a-slot:acme".into(),
            score: 0,
            version: String::new(),
        };
        let (alone, grouped) = group_by_node(vec![bad, hint(5, "a")], Some(&two_nodes()));
        assert_eq!(slots(&alone), [(5, "a")]);
        assert!(grouped.is_empty());
    }
}
