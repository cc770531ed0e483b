//! The bridge between the synchronous [`Store`](crate::store::Store) trait and the async etcd
//! client: a small tokio runtime of the store's own runs every etcd call, and a caller hands
//! it the call and blocks on the reply.
//!
//! The trait is called from the server's runtime workers and from `spawn_blocking`. Driving the
//! client with `Handle::block_on` there would panic (inside a runtime) or starve the runtime
//! that must drive it; here the caller's thread only waits on a channel while the store's own
//! threads do the I/O, so nothing the caller's runtime runs is needed for the call to finish.
//! Every call is bounded in time, so an unreachable cluster is an error naming it, not a hang.

use std::future::Future;
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};

use crate::store::StoreError;

/// How long one etcd call may take before it fails: a cluster without a leader, or out of
/// reach, answers nothing.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The store's runtimes; stopped (without waiting for their tasks) when dropped.
pub(super) struct Bridge {
    runtime: Option<Runtime>,
    handle: Handle,
    /// Where tasks that call back into their caller's code run ([`Bridge::callbacks`]).
    callbacks: Option<Runtime>,
}

impl Bridge {
    /// A runtime of one thread named `troupe-etcd` for the store's own work, and one named
    /// `troupe-etcd-cb` for callbacks. What the first runs is short (encoding a request,
    /// taking an event from the watch); with two threads, the idle one woke and slept again
    /// for nearly every call (`troupe-bench write` on etcd: one thread took 8 clients from
    /// about 3,900 applies per second to 4,400, and 64 from 10,700 to 11,300).
    pub(super) fn new() -> Result<Self, StoreError> {
        let runtime = one_thread("troupe-etcd")?;
        let handle = runtime.handle().clone();
        Ok(Self {
            runtime: Some(runtime),
            handle,
            callbacks: Some(one_thread("troupe-etcd-cb")?),
        })
    }

    /// Where the store's background tasks run.
    pub(super) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Where tasks that call their caller's code run (shared state's watches and their
    /// callbacks). Such code may wait, on a lock held by a thread that itself waits on the
    /// store ([`Bridge::block`]): on the store's own thread that wait would never end.
    pub(super) fn callbacks(&self) -> &Handle {
        self.callbacks
            .as_ref()
            .expect("the runtime lives as long as the bridge")
            .handle()
    }

    /// Runs `call` on the store's runtime and blocks this thread until it is done.
    pub(super) fn block<T: Send + 'static>(
        &self,
        call: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            // The caller may have gone (its thread panicked): nobody to tell.
            let _ = tx.send(call.await);
        });
        rx.recv()
            .unwrap_or_else(|_| Err(StoreError::Engine("the etcd client has stopped".into())))
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // The store may be dropped inside another runtime, where a blocking shutdown panics.
        for runtime in [self.runtime.take(), self.callbacks.take()]
            .into_iter()
            .flatten()
        {
            runtime.shutdown_background();
        }
    }
}

/// A runtime of one worker thread named `name`.
fn one_thread(name: &str) -> Result<Runtime, StoreError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| StoreError::Engine(format!("starting the etcd client's runtime: {e}")))
}

/// Runs `call` within [`CALL_TIMEOUT`], its failure told as a failure of the cluster at
/// `members` doing `what`.
pub(super) async fn timed<T>(
    members: &str,
    what: &str,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    within(members, what, call)
        .await?
        .map_err(|e| failed(members, what, &e))
}

/// Runs `call` within [`CALL_TIMEOUT`]: the outer error is the timeout, the inner one etcd's
/// answer, for a caller that handles some of them.
pub(super) async fn within<T>(
    members: &str,
    what: &str,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<Result<T, etcd_client::Error>, StoreError> {
    tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| {
        StoreError::Unavailable(format!(
            "etcd at {members}: {what}: no answer within {} s (is etcd running and \
                 reachable, with a leader?)",
            CALL_TIMEOUT.as_secs()
        ))
    })
}

/// What a failed etcd call says, with the causes behind it.
pub(super) fn describe(error: &etcd_client::Error) -> String {
    let mut message = match error {
        etcd_client::Error::GRpcStatus(status) => status.message().to_string(),
        other => other.to_string(),
    };
    // The cause ("Connection refused") is often only in the sources.
    let mut source = match error {
        etcd_client::Error::GRpcStatus(status) => std::error::Error::source(status),
        other => std::error::Error::source(other),
    };
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = cause.source();
    }
    message
}

/// A failed etcd call as a [`StoreError`]: etcd's own limits as [`StoreError::TooLarge`] with
/// the flag to raise, its NOSPACE alarm as [`StoreError::NoSpace`] with what frees space, a
/// cluster out of reach as [`StoreError::Unavailable`], anything else as an engine failure;
/// each names the cluster.
pub(super) fn failed(members: &str, what: &str, error: &etcd_client::Error) -> StoreError {
    let message = describe(error);
    if message.contains("too many operations in txn request") {
        return StoreError::TooLarge(format!(
            "etcd at {members} refused a transaction as having too many operations: its \
             --max-txn-ops is lower than the store URL says (max-txn-ops=N in etcd://…?…)"
        ));
    }
    if message.contains("request is too large") || message.contains("larger than max") {
        return StoreError::TooLarge(format!(
            "etcd at {members} refused a request as too large: its --max-request-bytes is lower \
             than the store URL says (max-request-bytes=B in etcd://…?…)"
        ));
    }
    if message.contains("database space exceeded") {
        return StoreError::NoSpace(format!(
            "etcd at {members} is out of space ({what}: {message}): its database reached \
             --quota-backend-bytes and etcd raised its NOSPACE alarm, so it refuses every \
             write but deletes. Reads and deletes still work. To write again, free space in \
             etcd: compact its history (`etcdctl compact REVISION`), defragment each member \
             (`etcdctl defrag`), then disarm the alarm (`etcdctl alarm disarm`); or start \
             etcd with a larger --quota-backend-bytes"
        ));
    }
    let message = format!("etcd at {members}: {what}: {message}");
    if unreachable(error) {
        return StoreError::Unavailable(message);
    }
    StoreError::Engine(message)
}

/// Whether `error` says etcd could not be reached or could not answer now (no connection,
/// no leader, a request timed out in etcd, the connection closed with the call under way): a
/// call that may go through if made again.
fn unreachable(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(status) => matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        _ => false,
    }
}

/// Whether an etcd failure says the revision asked for has been compacted.
pub(super) fn is_compacted(error: &etcd_client::Error) -> bool {
    error
        .to_string()
        .contains("required revision has been compacted")
}
