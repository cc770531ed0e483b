//! A [`Txn`] as etcd transactions: its checks as compares, its writes as puts and deletes.
//!
//! A transaction within etcd's limits (operations per transaction, bytes per request: the
//! store URL's [`TxnLimits`], etcd's defaults unless named) is one etcd transaction, so one
//! revision, all or nothing. One beyond them is refused with [`StoreError::TooLarge`] unless
//! the caller made it [`Txn::divisible`]: then it commits in steps, in order. Every check is
//! verified first, against one revision, so a stale one writes nothing; each step is atomic
//! and carries the checks of the keys it writes, so no step overwrites a change made since.
//! Should one fail all the same (a concurrent writer in between), the steps before it stay.
//!
//! etcd takes one write per key per transaction, so a transaction writing a key twice keeps
//! the last write, at the place of that last write.
//!
//! A transaction's [`Unchanged`] ranges are compares over a range of keys (every key's mod
//! revision at most the range's), in every step of a divisible commit, so no step lands after
//! a referrer appeared.
//!
//! A failed compare says nothing about which key failed; the transaction's other branch reads
//! every checked key in the same revision (and, for a range, the first key written since),
//! which names the first check that did not hold.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use etcd_client::{Compare, CompareOp, TxnOp, TxnOpResponse};
use troupe_common::ObjectKey;

use super::Shared;
use super::layout::{Layout, encode_shared, encode_value};
use super::tails::{Digest, digest};
use super::view::View;
use crate::store::{Fence, Op, Precondition, Revision, StoreError, Txn, TxnLimits, Unchanged};

/// Bytes one operation adds to a request besides its key and value: field tags, lengths and
/// options, rounded up.
pub(super) const OP_OVERHEAD: usize = 32;
/// Bytes of a request kept free for its envelope (header, the transaction's own fields).
pub(super) const REQUEST_SLACK: usize = 4096;

/// One write of a commit: an object's, and its tail's when its value has, or may have had,
/// one ([`tails`](super::tails)); the two go in one transaction.
#[derive(Debug)]
pub(super) struct Write {
    pub(super) key: ObjectKey,
    pub(super) etcd_key: Vec<u8>,
    /// The envelope to put; `None` deletes.
    pub(super) value: Option<Vec<u8>>,
    /// The object's tail key, and the envelope to put there (`None` deletes it).
    pub(super) tail: Option<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Write {
    fn cost(&self) -> usize {
        let tail = self.tail.as_ref().map_or(0, |(key, value)| {
            key.len() + value.as_ref().map_or(0, Vec::len) + OP_OVERHEAD
        });
        self.etcd_key.len() + self.value.as_ref().map_or(0, Vec::len) + OP_OVERHEAD + tail
    }

    /// The etcd operations it takes: one, or two with its tail's.
    pub(super) fn ops(&self) -> usize {
        1 + usize::from(self.tail.is_some())
    }

    /// The keys it writes, each with the value it puts (`None`: deletes), the object's first.
    pub(super) fn expected(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> + '_ {
        std::iter::once((self.etcd_key.as_slice(), self.value.as_deref())).chain(
            self.tail
                .iter()
                .map(|(key, value)| (key.as_slice(), value.as_deref())),
        )
    }

    /// Its etcd operations, the object's first.
    pub(super) fn txn_ops(&self) -> impl Iterator<Item = TxnOp> + '_ {
        self.expected()
            .map(|(key, value)| write_op(key.to_vec(), value.map(<[u8]>::to_vec)))
    }
}

/// What the view says of the tails of the objects a commit writes ([`tails`](super::tails)),
/// read under the log's lock: lookups and a comparison of bytes; digests and envelopes are
/// made once the lock is let go.
#[derive(Debug, Default)]
pub(super) struct Known {
    /// The shared puts whose tail is the one the object holds, byte for byte, at the revision
    /// the commit checks: the digest of that tail.
    same: HashMap<ObjectKey, Digest>,
    /// The objects whose whole put or delete must delete a tail they may have.
    may_have: HashSet<ObjectKey>,
}

impl Known {
    /// What `view` says of the objects `txn` writes.
    pub(super) fn of(view: &View, txn: &Txn) -> Self {
        let mut checks: HashMap<&ObjectKey, Precondition> = HashMap::new();
        for (key, check) in &txn.checks {
            checks.entry(key).or_insert(*check);
        }
        let check = |key: &ObjectKey| checks.get(key).copied();
        let mut known = Self::default();
        for op in &txn.ops {
            match op {
                Op::PutShared { key, shared, .. } => {
                    if let Some(Precondition::AtRevision(r)) = check(key)
                        && let Some((digest, held)) = view.tail_at(key, r)
                        && held == shared.as_slice()
                    {
                        known.same.insert(key.clone(), digest);
                    }
                }
                Op::Put { key, .. } | Op::Delete { key } => {
                    if view.may_have_tail(key, check(key)) {
                        known.may_have.insert(key.clone());
                    }
                }
            }
        }
        known
    }
}

/// One etcd transaction of a commit.
#[derive(Debug, Default)]
pub(super) struct Step {
    pub(super) checks: Vec<(ObjectKey, Precondition)>,
    pub(super) writes: Vec<Write>,
    /// What its writes and checks weigh in a request.
    pub(super) bytes: usize,
}

impl Step {
    /// Whether the step lands at most once however often it is sent ([`resend`](super::resend)):
    /// it checks a key it changes in a way the check notices (puts a key it checks absent or
    /// at a revision, deletes one it checks present or at a revision), so once any sending of
    /// it landed, every other one's check fails.
    pub(super) fn lands_once(&self) -> bool {
        self.checks.iter().any(|(key, check)| {
            self.writes.iter().any(|w| {
                &w.key == key
                    && match check {
                        Precondition::AtRevision(_) => true,
                        Precondition::Absent => w.value.is_some(),
                        Precondition::Present => w.value.is_none(),
                    }
            })
        })
    }
}

/// The compare that holds while `fence`'s leader still holds its key, and the read that
/// tells, when a transaction fails, whether that is why.
pub(super) fn fence_compare(fence: &Fence) -> (Compare, TxnOp) {
    (
        Compare::create_revision(fence.key.clone(), CompareOp::Equal, fence.term),
        TxnOp::get(fence.key.clone(), None),
    )
}

/// The compare that holds while nothing in `range` was written after its revision, and the
/// read that finds, when a transaction fails, the first key that was.
fn range_compare(layout: &Layout, range: &Unchanged) -> (Compare, TxnOp) {
    let (start, end) = layout.range(range.kind, range.namespace.as_deref());
    let after = layout.to_etcd(range.since).saturating_add(1);
    let read = etcd_client::GetOptions::new()
        .with_range(end.clone())
        .with_keys_only()
        .with_min_mod_revision(after)
        .with_limit(1);
    (
        Compare::mod_revision(start.clone(), CompareOp::Less, after).with_range(end),
        TxnOp::get(start, Some(read)),
    )
}

/// What one step may hold: etcd's limits less what every step carries (a compare and a read
/// for the fence and for each range).
struct Room {
    writes: usize,
    checks: usize,
    bytes: usize,
}

impl Room {
    fn new(
        layout: &Layout,
        limits: &TxnLimits,
        fence: Option<&Fence>,
        ranges: &[Unchanged],
    ) -> Self {
        let (mut checks, mut bytes) =
            fence.map_or((0, 0), |f| (1, 2 * (f.key.len() + OP_OVERHEAD)));
        for range in ranges {
            // Its compare and its read each name both ends of the range.
            let (start, end) = layout.range(range.kind, range.namespace.as_deref());
            checks += 1;
            bytes += 2 * (start.len() + end.len() + OP_OVERHEAD);
        }
        Self {
            writes: limits.max_ops,
            checks: limits.max_ops.saturating_sub(checks),
            bytes: limits
                .max_request_bytes
                .saturating_sub(REQUEST_SLACK + bytes),
        }
    }
}

impl Step {
    /// The etcd operations its writes take.
    pub(super) fn ops(&self) -> usize {
        self.writes.iter().map(Write::ops).sum()
    }

    fn fits(&self, writes: usize, checks: usize, bytes: usize, room: &Room) -> bool {
        self.ops() + writes <= room.writes
            && self.checks.len() + checks <= room.checks
            && self.bytes + bytes <= room.bytes
    }
}

/// A compare and the read that explains its failure cost about twice the key.
fn check_cost(layout: &Layout, key: &ObjectKey) -> usize {
    2 * (layout.object(key).len() + OP_OVERHEAD)
}

/// The writes of `ops` with one per key (the last), in the order of those last writes. A
/// shared value puts its head alone when its tail is the one the object holds (`known`);
/// else its tail too. A whole value or a delete deletes the object's tail when it may have
/// one.
fn writes(layout: &Layout, ops: Vec<Op>, known: &Known) -> Vec<Write> {
    let mut slots: Vec<Option<Write>> = Vec::with_capacity(ops.len());
    let mut at: HashMap<Vec<u8>, usize> = HashMap::new();
    for op in ops {
        let (key, value, tail) = match op {
            Op::Put { key, value } => {
                let gone = known.may_have.contains(&key).then_some(None);
                (key, Some(encode_value(&value)), gone)
            }
            Op::PutShared { key, head, shared } => {
                // The tail held (a status write): no digest to compute, no tail to write.
                let (digest, tail) = match known.same.get(&key) {
                    Some(digest) => (*digest, None),
                    None => (digest(&shared), Some(Some(encode_value(&shared)))),
                };
                (key, Some(encode_shared(&head, &digest)), tail)
            }
            Op::Delete { key } => {
                let gone = known.may_have.contains(&key).then_some(None);
                (key, None, gone)
            }
        };
        let etcd_key = layout.object(&key);
        if let Some(earlier) = at.insert(etcd_key.clone(), slots.len()) {
            slots[earlier] = None;
        }
        let tail = tail.map(|value| (layout.tail(&key), value));
        slots.push(Some(Write {
            key,
            etcd_key,
            value,
            tail,
        }));
    }
    slots.into_iter().flatten().collect()
}

/// The etcd transactions `txn` commits as, in order.
pub(super) fn plan(
    layout: &Layout,
    limits: &TxnLimits,
    txn: Txn,
    fence: Option<&Fence>,
    known: &Known,
) -> Result<Vec<Step>, StoreError> {
    let room = Room::new(layout, limits, fence, &txn.unchanged);
    let divisible = txn.divisible;
    let writes = writes(layout, txn.ops, known);
    let whole = Step {
        bytes: writes.iter().map(Write::cost).sum::<usize>()
            + txn
                .checks
                .iter()
                .map(|(k, _)| check_cost(layout, k))
                .sum::<usize>(),
        checks: txn.checks,
        writes,
    };
    if Step::default().fits(whole.ops(), whole.checks.len(), whole.bytes, &room) {
        return Ok(vec![whole]);
    }
    if !divisible {
        return Err(StoreError::TooLarge(format!(
            "a commit of {} writes and {} checks ({} bytes) does not fit in one etcd \
             transaction, which takes at most {} operations of each kind and {} bytes (etcd's \
             --max-txn-ops and --max-request-bytes): start etcd with higher limits and name \
             them in the store URL (etcd://…?max-txn-ops=N&max-request-bytes=B)",
            whole.writes.len(),
            whole.checks.len(),
            whole.bytes,
            limits.max_ops,
            limits.max_request_bytes
        )));
    }
    let written: HashSet<&ObjectKey> = whole.writes.iter().map(|w| &w.key).collect();
    let mut checks_of: HashMap<ObjectKey, Vec<Precondition>> = HashMap::new();
    let mut first = Step::default();
    for (key, check) in whole.checks {
        if written.contains(&key) {
            checks_of.entry(key).or_default().push(check);
        } else {
            first.bytes += check_cost(layout, &key);
            first.checks.push((key, check));
        }
    }
    if first.checks.len() > room.checks || first.bytes > room.bytes {
        return Err(StoreError::TooLarge(format!(
            "a commit checking {} objects it does not write cannot be split into etcd \
             transactions of at most {} operations and {} bytes: start etcd with higher limits \
             (--max-txn-ops, --max-request-bytes) and name them in the store URL",
            first.checks.len(),
            limits.max_ops,
            limits.max_request_bytes
        )));
    }
    let mut steps = vec![first];
    for write in whole.writes {
        let checks = checks_of.remove(&write.key).unwrap_or_default();
        let bytes = write.cost() + checks.len() * check_cost(layout, &write.key);
        if !Step::default().fits(write.ops(), checks.len(), bytes, &room) {
            return Err(StoreError::TooLarge(format!(
                "{} is {} bytes encoded, more than one etcd request carries ({} bytes, etcd's \
                 --max-request-bytes): start etcd with a higher --max-request-bytes and name it \
                 in the store URL (etcd://…?max-request-bytes=B)",
                write.key,
                write.value.as_ref().map_or(0, Vec::len),
                limits.max_request_bytes
            )));
        }
        let step = steps.last_mut().expect("the first step");
        if !step.fits(write.ops(), checks.len(), bytes, &room) {
            steps.push(Step::default());
        }
        let step = steps.last_mut().expect("a step");
        step.checks
            .extend(checks.into_iter().map(|c| (write.key.clone(), c)));
        step.bytes += bytes;
        step.writes.push(write);
    }
    Ok(steps)
}

/// Commits `txn`; returns the revision of its last step (the head if it changed nothing). A
/// commit of one step without ranges may go to etcd with others ([`batch`](super::batch)).
pub(super) async fn commit(shared: &Arc<Shared>, mut txn: Txn) -> Result<Revision, StoreError> {
    let fence = txn.fence.take();
    let ranges = txn.unchanged.clone();
    let known = Known::of(shared.log().view(), &txn);
    let mut steps = plan(&shared.layout, &shared.limits, txn, fence.as_ref(), &known)?;
    if steps.len() == 1 && ranges.is_empty() {
        let step = steps.pop().expect("one step");
        let revision = super::batch::commit(shared, step, fence).await?;
        return Ok(revision.unwrap_or_else(|| shared.log().head()));
    }
    if steps.len() > 1 {
        let checks: Vec<_> = steps
            .iter()
            .flat_map(|s| s.checks.iter().cloned())
            .collect();
        verify(shared, &checks).await?;
        tracing::debug!(
            steps = steps.len(),
            "etcd store: a divisible commit in steps"
        );
    }
    let mut revision = None;
    let total = steps.len();
    for (i, step) in steps.into_iter().enumerate() {
        match run(shared, step, &ranges, fence.as_ref(), false).await {
            Ok(Some(r)) => revision = Some(r),
            Ok(None) => {}
            Err(e) => {
                if i > 0 {
                    tracing::warn!(error = %e, committed = i, steps = total, "etcd store: a divisible commit stopped part way; the steps before stay");
                }
                return Err(e);
            }
        }
    }
    Ok(revision.unwrap_or_else(|| shared.log().head()))
}

/// The operation that puts `value` at `etcd_key`, or deletes it without one.
pub(super) fn write_op(etcd_key: Vec<u8>, value: Option<Vec<u8>>) -> TxnOp {
    match value {
        Some(value) => TxnOp::put(etcd_key, value, None),
        None => TxnOp::delete(etcd_key, None),
    }
}

/// The compare that holds when `check` does.
pub(super) fn compare(layout: &Layout, key: &ObjectKey, check: Precondition) -> Compare {
    let key = layout.object(key);
    match check {
        Precondition::Absent => Compare::version(key, CompareOp::Equal, 0),
        Precondition::Present => Compare::version(key, CompareOp::Greater, 0),
        Precondition::AtRevision(r) => {
            Compare::mod_revision(key, CompareOp::Equal, layout.to_etcd(r))
        }
    }
}

/// Runs one step; returns its revision, or `None` if it changed nothing (deletes of keys that
/// were not there). Returns once the tail has published it. `unknown`: the step was sent
/// before (with others) and may have landed ([`resend`](super::resend)).
pub(super) async fn run(
    shared: &Shared,
    step: Step,
    ranges: &[Unchanged],
    fence: Option<&Fence>,
    unknown: bool,
) -> Result<Option<Revision>, StoreError> {
    let layout = &shared.layout;
    let mut compares: Vec<Compare> = step
        .checks
        .iter()
        .map(|(k, c)| compare(layout, k, *c))
        .collect();
    let mut explain: Vec<TxnOp> = step
        .checks
        .iter()
        .map(|(k, _)| TxnOp::get(layout.object(k), None))
        .collect();
    // Then the ranges' reads; the fence's read comes last.
    for range in ranges {
        let (compare, read) = range_compare(layout, range);
        compares.push(compare);
        explain.push(read);
    }
    if let Some(fence) = fence {
        let (compare, read) = fence_compare(fence);
        compares.push(compare);
        explain.push(read);
    }
    let puts = step.writes.iter().any(|w| w.value.is_some());
    let ops: Vec<TxnOp> = step.writes.iter().flat_map(Write::txn_ops).collect();
    let txn = etcd_client::Txn::new()
        .when(compares)
        .and_then(ops)
        .or_else(explain);
    let (response, unknown) = super::resend::send(shared, txn, unknown, step.lands_once()).await?;
    let answers = response.op_responses();
    if !response.succeeded() {
        if unknown && let Some(revision) = super::resend::landed(shared, &step.writes).await? {
            shared.mark_durable(revision);
            shared.wait_seen(revision).await;
            return Ok(Some(revision));
        }
        if let Some(fence) = fence
            && held_term(answers.last()) != Some(fence.term)
        {
            return Err(StoreError::Fenced { term: fence.term });
        }
        let checked = step.checks.len();
        for (range, answer) in ranges.iter().zip(answers.iter().skip(checked)) {
            if let TxnOpResponse::Get(get) = answer
                && let Some(kv) = get.kvs().first()
            {
                return Err(StoreError::Changed {
                    range: range.clone(),
                    written: layout.decode_key(kv.key()).ok().flatten(),
                });
            }
        }
        let found: Vec<Option<Revision>> = answers
            .iter()
            .take(checked)
            .map(|answer| found_revision(layout, answer))
            .collect();
        return Err(conflict(step.checks, found));
    }
    let deleted = answers
        .iter()
        .any(|a| matches!(a, TxnOpResponse::Delete(d) if d.deleted() > 0));
    if !puts && !deleted {
        return Ok(None);
    }
    let revision = layout.to_store(response.header().map_or(0, |h| h.revision()));
    shared.mark_durable(revision);
    shared.wait_seen(revision).await;
    Ok(Some(revision))
}

/// The revision of the key a failed transaction's read found, if it found one.
pub(super) fn found_revision(layout: &Layout, answer: &TxnOpResponse) -> Option<Revision> {
    match answer {
        TxnOpResponse::Get(get) => get
            .kvs()
            .first()
            .map(|kv| layout.to_store(kv.mod_revision())),
        _ => None,
    }
}

/// The term of the leader key a failed transaction's read of the fence found, if any.
pub(super) fn held_term(answer: Option<&TxnOpResponse>) -> Option<i64> {
    match answer {
        Some(TxnOpResponse::Get(get)) => get.kvs().first().map(|kv| kv.create_revision()),
        _ => None,
    }
}

/// The conflict of the first check that `found` (the revision each checked key was at, in
/// order) does not satisfy.
pub(super) fn conflict(
    checks: Vec<(ObjectKey, Precondition)>,
    found: Vec<Option<Revision>>,
) -> StoreError {
    let mut fallback = None;
    for ((key, expected), found) in checks
        .into_iter()
        .zip(found.into_iter().chain(std::iter::repeat(None)))
    {
        if !expected.holds(found) {
            return StoreError::Conflict {
                key,
                expected,
                found,
            };
        }
        fallback.get_or_insert((key, expected, found));
    }
    // Every check holds at the revision of the failure's reads: a key checked twice,
    // once each way. Name the first.
    match fallback {
        Some((key, expected, found)) => StoreError::Conflict {
            key,
            expected,
            found,
        },
        None => StoreError::Engine("etcd refused a transaction without compares".into()),
    }
}

/// Verifies every check against one revision before a commit in steps writes anything.
async fn verify(shared: &Shared, checks: &[(ObjectKey, Precondition)]) -> Result<(), StoreError> {
    let layout = &shared.layout;
    // 0: etcd's newest revision, for the first chunk; the others read at the same one.
    let mut revision = 0;
    for chunk in checks.chunks(shared.limits.max_ops.max(1)) {
        let reads: Vec<TxnOp> = chunk
            .iter()
            .map(|(k, _)| {
                let options = etcd_client::GetOptions::new().with_revision(revision);
                TxnOp::get(layout.object(k), Some(options))
            })
            .collect();
        let response = shared
            .txn(
                "verifying a commit's checks",
                etcd_client::Txn::new().and_then(reads),
            )
            .await?;
        if revision == 0 {
            revision = response.header().map_or(0, |h| h.revision());
        }
        for ((key, expected), answer) in chunk.iter().zip(response.op_responses()) {
            let found = match answer {
                TxnOpResponse::Get(get) => get
                    .kvs()
                    .first()
                    .map(|kv| layout.to_store(kv.mod_revision())),
                _ => None,
            };
            if !expected.holds(found) {
                return Err(StoreError::Conflict {
                    key: key.clone(),
                    expected: *expected,
                    found,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use troupe_common::Kind;

    use super::*;

    fn mk_key(i: usize) -> ObjectKey {
        ObjectKey::new(Kind::Component, "acme", format!("c{i}"))
    }

    fn mk_cascade(n: usize, divisible: bool) -> Txn {
        let mut txn = Txn::default();
        if divisible {
            txn = txn.divisible();
        }
        for i in 0..n {
            txn = txn
                .check(mk_key(i), Precondition::AtRevision(i as u64 + 1))
                .delete(mk_key(i));
        }
        txn.check(mk_key(n), Precondition::Present)
    }

    #[test]
    fn a_commit_within_the_limits_is_one_transaction() {
        let layout = Layout::new("/t");
        let steps = plan(
            &layout,
            &TxnLimits::default(),
            mk_cascade(100, false),
            None,
            &Known::default(),
        )
        .unwrap();
        assert_eq!(steps.len(), 1);
        assert_eq!((steps[0].writes.len(), steps[0].checks.len()), (100, 101));
    }

    #[test]
    fn a_step_lands_once_when_it_checks_a_key_it_changes_in_a_way_the_check_notices() {
        let layout = Layout::new("/t");
        let lands_once = |txn: Txn| {
            let steps = plan(&layout, &TxnLimits::default(), txn, None, &Known::default());
            steps.unwrap().remove(0).lands_once()
        };
        let put = |i| Txn::default().put(mk_key(i), b"v".to_vec());
        let delete = |i| Txn::default().delete(mk_key(i));
        let cases = [
            ("checks nothing", put(0), false),
            (
                "checks another key",
                put(0).check(mk_key(1), Precondition::Absent),
                false,
            ),
            (
                "puts a key it checks present",
                put(0).check(mk_key(0), Precondition::Present),
                false,
            ),
            (
                "deletes a key it checks absent",
                delete(0).check(mk_key(0), Precondition::Absent),
                false,
            ),
            (
                "creates",
                put(0).check(mk_key(0), Precondition::Absent),
                true,
            ),
            (
                "updates",
                put(0).check(mk_key(0), Precondition::AtRevision(3)),
                true,
            ),
            (
                "deletes",
                delete(0).check(mk_key(0), Precondition::AtRevision(3)),
                true,
            ),
            (
                "deletes what is there",
                delete(0).check(mk_key(0), Precondition::Present),
                true,
            ),
            (
                "creates beside an unchecked put",
                put(1)
                    .put(mk_key(0), b"v".to_vec())
                    .check(mk_key(1), Precondition::Absent),
                true,
            ),
        ];
        for (case, txn, expected) in cases {
            assert_eq!(lands_once(txn), expected, "{case}");
        }
    }

    #[test]
    fn a_divisible_commit_splits_in_order_with_each_write_beside_its_checks() {
        let layout = Layout::new("/t");
        let limits = TxnLimits {
            max_ops: 10,
            ..TxnLimits::default()
        };
        let steps = plan(
            &layout,
            &limits,
            mk_cascade(25, true),
            None,
            &Known::default(),
        )
        .unwrap();
        // 26 checks and 25 deletes in transactions of 10 operations of each kind.
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[0].checks[0], (mk_key(25), Precondition::Present));
        let order: Vec<_> = steps
            .iter()
            .flat_map(|s| &s.writes)
            .map(|w| w.key.clone())
            .collect();
        assert_eq!(order, (0..25).map(mk_key).collect::<Vec<_>>());
        for (i, step) in steps.iter().enumerate() {
            let written: Vec<_> = step.writes.iter().map(|w| &w.key).collect();
            let checked: Vec<_> = step
                .checks
                .iter()
                .map(|(k, _)| k)
                .skip(usize::from(i == 0))
                .collect();
            assert_eq!(written, checked, "each write travels with its own check");
            assert!(step.writes.len() <= 10 && step.checks.len() <= 10);
        }
    }

    #[test]
    fn a_fence_takes_one_compare_of_every_step() {
        let layout = Layout::new("/t");
        let fence = Fence {
            key: b"/t/leader".to_vec(),
            term: 7,
        };
        let limits = TxnLimits {
            max_ops: 10,
            ..TxnLimits::default()
        };
        // 9 checks and 9 writes fit beside the fence's compare; 10 checks do not.
        let nine = plan(
            &layout,
            &limits,
            mk_cascade(8, false),
            Some(&fence),
            &Known::default(),
        )
        .unwrap();
        assert_eq!(nine.len(), 1);
        let err = plan(
            &layout,
            &limits,
            mk_cascade(9, false),
            Some(&fence),
            &Known::default(),
        )
        .unwrap_err();
        assert!(matches!(err, StoreError::TooLarge(_)), "{err:?}");
        assert_eq!(
            plan(
                &layout,
                &limits,
                mk_cascade(9, false),
                None,
                &Known::default()
            )
            .unwrap()
            .len(),
            1
        );
        // Divisible, every step leaves room for it.
        let steps = plan(
            &layout,
            &limits,
            mk_cascade(25, true),
            Some(&fence),
            &Known::default(),
        )
        .unwrap();
        assert!(
            steps
                .iter()
                .all(|s| s.checks.len() <= 9 && s.writes.len() <= 10)
        );
        let written: usize = steps.iter().map(|s| s.writes.len()).sum();
        assert_eq!(written, 25);
    }

    #[test]
    fn unchanged_ranges_take_a_compare_of_every_step() {
        let layout = Layout::new("/t");
        let limits = TxnLimits {
            max_ops: 10,
            ..TxnLimits::default()
        };
        let guarded = |n, divisible| {
            mk_cascade(n, divisible)
                .unchanged_since(Kind::ReleaseBinding, Some("acme"), 3)
                .unchanged_since(Kind::Workload, Some("acme"), 3)
        };
        // 8 checks fit beside the two ranges' compares; 9 do not.
        assert_eq!(
            plan(&layout, &limits, guarded(7, false), None, &Known::default())
                .unwrap()
                .len(),
            1
        );
        let err = plan(&layout, &limits, guarded(8, false), None, &Known::default()).unwrap_err();
        assert!(matches!(err, StoreError::TooLarge(_)), "{err:?}");
        let steps = plan(&layout, &limits, guarded(25, true), None, &Known::default()).unwrap();
        assert!(steps.iter().all(|s| s.checks.len() <= 8));
        let written: usize = steps.iter().map(|s| s.writes.len()).sum();
        assert_eq!(written, 25);
    }

    #[test]
    fn too_large_commits_are_refused_naming_the_limit_to_raise() {
        let layout = Layout::new("/t");
        let err = plan(
            &layout,
            &TxnLimits::default(),
            mk_cascade(200, false),
            None,
            &Known::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("--max-txn-ops"), "{err}");
        let limits = TxnLimits {
            max_request_bytes: 10_000,
            ..TxnLimits::default()
        };
        let big = Txn::default().divisible().put(mk_key(0), vec![0; 20_000]);
        let err = plan(&layout, &limits, big, None, &Known::default()).unwrap_err();
        assert!(err.to_string().contains("--max-request-bytes"), "{err}");
        assert!(
            err.to_string().contains("acme/c0") || err.to_string().contains("c0"),
            "{err}"
        );
    }

    #[test]
    fn a_key_written_twice_keeps_its_last_write() {
        let layout = Layout::new("/t");
        let txn = Txn::default()
            .put(mk_key(1), b"a".to_vec())
            .put(mk_key(2), b"b".to_vec())
            .delete(mk_key(1));
        let steps = plan(&layout, &TxnLimits::default(), txn, None, &Known::default()).unwrap();
        let writes: Vec<_> = steps[0]
            .writes
            .iter()
            .map(|w| (w.key.clone(), w.value.is_some()))
            .collect();
        assert_eq!(writes, [(mk_key(2), true), (mk_key(1), false)]);
    }
}
