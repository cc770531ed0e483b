//! Commits whose outcome etcd did not tell: no answer in time, the connection lost with the
//! call under way, the leader lost mid-call (etcd's own request timeout, 7 s, is longer than
//! an election). Such a commit is sent again until etcd answers, for up to
//! [`RESEND_WITHIN`] (one that no member took a connection for fails at once: etcd is down);
//! and an answer that its checks failed, after a sending whose outcome was unknown, is told
//! apart from one where that earlier sending landed: every key the commit writes then holds
//! what it wrote, at one revision ([`landed`]).
//!
//! Why sending again is safe for a commit that checks a key it writes (every Apply, every
//! status write, every delete): it lands at most once. Every sending checks the same
//! revision, so whichever lands first breaks the others' checks, and an earlier sending that
//! lands late (held by a member that stalled, and passed on to the leader once it resumes)
//! finds them broken by the copy, or by any write after it. Any other commit could land
//! twice, and a late first landing would put its values back over a write made in between:
//! such a commit is sent once, and fails if etcd does not tell its outcome
//! ([`Step::lands_once`](super::commit::Step::lands_once)).
//!
//! A read with no answer in time is not given up but joined by another copy ([`hedged`]):
//! reading changes nothing, and the copy goes to the members the client calls by then (a
//! stalled member is taken out within a check or two), so a read that reached a stalled
//! member is answered by another.

use std::future::Future;
use std::time::{Duration, Instant};

use etcd_client::{TxnOp, TxnOpResponse, TxnResponse};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::Shared;
use super::commit::Write;
use super::members::Members;
use crate::store::{Revision, StoreError};

/// How long one sending of a commit may take before it is sent again. A commit takes
/// milliseconds; an etcd that lost its leader answers none until its request timeout.
const ATTEMPT: Duration = Duration::from_secs(2);
/// How long a commit is sent again for, in all (and a read from history started over).
pub(super) const RESEND_WITHIN: Duration = Duration::from_secs(15);
/// The first pause before a commit is sent again; it doubles up to [`MAX_PAUSE`].
const PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// Sends `txn` until etcd answers; returns its answer and whether a sending before it (or
/// before this call: `unknown`) may have landed. A transaction that could land more than once
/// (`lands_once` false) is sent at most once: if it was sent before, or etcd does not tell its
/// outcome within a call's time, it fails saying the outcome is unknown.
pub(super) async fn send(
    shared: &Shared,
    txn: etcd_client::Txn,
    mut unknown: bool,
    lands_once: bool,
) -> Result<(TxnResponse, bool), StoreError> {
    if !lands_once {
        let message = if unknown {
            // Sent before (with others), with no answer: sending it now could be twice.
            format!(
                "etcd at {}: committing: the transaction it went in got no answer",
                shared.members
            )
        } else {
            match shared.txn("committing", txn).await {
                Ok(response) => return Ok((response, false)),
                Err(StoreError::Unavailable(message)) if !Members::says_unsent(&message) => message,
                Err(error) => return Err(error),
            }
        };
        return Err(StoreError::Unavailable(format!(
            "{message}; the commit's outcome is unknown, and it was not sent again: it checks \
             no key it writes, so a copy could land as well (read what it wrote before writing \
             again)"
        )));
    }
    let started = Instant::now();
    let mut pause = PAUSE;
    loop {
        let error = match tokio::time::timeout(ATTEMPT, shared.txn("committing", txn.clone())).await
        {
            Ok(Ok(response)) => return Ok((response, unknown)),
            // Refused by every member it tried: nothing is in doubt, and etcd is down.
            Ok(Err(StoreError::Unavailable(message))) if Members::says_unsent(&message) => {
                return Err(StoreError::Unavailable(message));
            }
            Ok(Err(error @ StoreError::Unavailable(_))) => error,
            Ok(Err(error)) => return Err(error),
            Err(_) => StoreError::Unavailable(format!(
                "etcd at {}: committing: no answer within {} s (is etcd running and \
                 reachable, with a leader?)",
                shared.members,
                ATTEMPT.as_secs()
            )),
        };
        if started.elapsed() + pause >= RESEND_WITHIN {
            return Err(error);
        }
        tracing::info!(%error, "etcd store: a commit's outcome is unknown; sending it again");
        unknown = true;
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Copies of one read under way at most: one more every [`ATTEMPT`] without an answer, each
/// bounded by a call's time limit.
const READ_COPIES: usize = 4;

/// Runs `read`, a call that changes nothing, and another copy of it each [`ATTEMPT`] it goes
/// unanswered (up to [`READ_COPIES`]), keeping those under way: the first answer is the
/// read's. A copy's failure is the read's only once no other copy is under way.
pub(super) async fn hedged<T, F>(read: impl Fn() -> F) -> Result<T, StoreError>
where
    F: Future<Output = Result<T, StoreError>>,
{
    let mut under_way = FuturesUnordered::new();
    under_way.push(read());
    let mut copies = 1;
    loop {
        tokio::select! {
            answer = under_way.next() => match answer {
                Some(Ok(answer)) => return Ok(answer),
                Some(Err(error)) if under_way.is_empty() => return Err(error),
                Some(Err(error)) => tracing::info!(%error, "etcd store: a copy of a read failed; waiting for the others"),
                None => unreachable!("a read has a copy under way until it returns"),
            },
            () = tokio::time::sleep(ATTEMPT), if copies < READ_COPIES => {
                tracing::info!("etcd store: a read has no answer yet; sending a copy");
                under_way.push(read());
                copies += 1;
            }
        }
    }
}

/// The revision of a commit of `writes` if etcd holds what it wrote: every key it puts with
/// its value, all at one revision, and every key it deletes gone. `None` if not.
pub(super) async fn landed(
    shared: &Shared,
    writes: &[Write],
) -> Result<Option<Revision>, StoreError> {
    let expected: Vec<(&[u8], Option<&[u8]>)> = writes.iter().flat_map(Write::expected).collect();
    let reads: Vec<TxnOp> = expected
        .iter()
        .map(|(key, _)| TxnOp::get(key.to_vec(), None))
        .collect();
    // A read: held by a member that stalls, it gets a copy.
    let response = hedged(|| {
        let read = etcd_client::Txn::new().and_then(reads.clone());
        shared.txn("reading what a commit wrote", read)
    })
    .await?;
    let mut at = None;
    for ((_, value), answer) in expected.iter().zip(response.op_responses()) {
        let TxnOpResponse::Get(get) = answer else {
            return Ok(None);
        };
        match (value, get.kvs().first()) {
            (None, None) => {}
            (Some(value), Some(kv)) if kv.value() == *value => {
                if *at.get_or_insert(kv.mod_revision()) != kv.mod_revision() {
                    return Ok(None);
                }
            }
            _ => return Ok(None),
        }
    }
    let revision = at.unwrap_or_else(|| response.header().map_or(0, |h| h.revision()));
    Ok(Some(shared.layout.to_store(revision)))
}

#[cfg(test)]
mod tests {
    use troupe_common::{Kind, ObjectKey};

    use super::super::commit::{Known, plan, run};
    use super::super::tests::{mk_etcd, mk_store};
    use crate::store::{Precondition, Store, StoreError, Txn};

    #[test]
    fn a_commit_sent_again_after_an_unknown_outcome_is_told_it_landed_only_if_it_did() {
        let etcd = mk_etcd();
        let store = mk_store(&etcd, "resend");
        let key = ObjectKey::new(Kind::Component, "acme", "api");
        let create = |value: &[u8]| {
            Txn::default()
                .check(key.clone(), Precondition::Absent)
                .put(key.clone(), value.to_vec())
        };
        let landed = store.commit(create(b"mine")).unwrap();
        let shared = store.shared.clone();
        let again = |value: &'static [u8], unknown: bool| {
            let shared = shared.clone();
            let txn = create(value);
            store.bridge.block(async move {
                let mut steps = plan(&shared.layout, &shared.limits, txn, None, &Known::default())?;
                run(&shared, steps.remove(0), &[], None, unknown).await
            })
        };
        // Its first sending landed: the same commit, sent again, is told so.
        assert_eq!(again(b"mine", true).unwrap(), Some(landed));
        // A commit that did not land (another value is there) fails its check, as does one
        // whose outcome was never in doubt.
        for (value, unknown) in [(&b"theirs"[..], true), (&b"mine"[..], false)] {
            let err = again(value, unknown).unwrap_err();
            assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
        }
    }

    #[test]
    fn a_commit_that_could_land_twice_is_not_sent_after_an_unknown_outcome() {
        let etcd = mk_etcd();
        let store = mk_store(&etcd, "resend-once");
        let key = ObjectKey::new(Kind::Component, "acme", "api");
        let shared = store.shared.clone();
        let unchecked = Txn::default().put(key.clone(), b"v".to_vec());
        // Made alone after a transaction it went in with others got no answer.
        let sent = store.bridge.block(async move {
            let mut steps = plan(
                &shared.layout,
                &shared.limits,
                unchecked,
                None,
                &Known::default(),
            )?;
            run(&shared, steps.remove(0), &[], None, true).await
        });
        match sent {
            Err(StoreError::Unavailable(message)) => {
                assert!(message.contains("outcome is unknown"), "{message}");
                assert!(message.contains("not sent again"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(store.get(&key).unwrap(), None, "it was not sent");
    }
}
