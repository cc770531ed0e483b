//! Controllers: level-triggered loops that compute derived state from the full current state
//! and can be re-run at any time with the same result (STYLE 11).
//!
//! - [`binding`] renders every ReleaseBinding into its Release and is the one writer of the
//!   binding's status: how the render went, and (rolled up from its Release, also when an
//!   agent's report changed the Release's status) how the release is doing.
//! - [`deploy`] cuts releases of `autoDeploy` components when their inputs change and binds
//!   them in the first environment of their pipeline.
//! - [`promotion`] takes pending Promotions forward when their source environment, approvals,
//!   checks or soak time change.
//!
//! Each maps a change to the keys it affects and queues them ([`queue`]): a key waits at most
//! once, so bursts coalesce, and a pool of workers reconciles different keys at once. The
//! agent hub, on the floor above, uses the same queue for its status writes.
//!
//! Controllers never give up: a reconcile that fails is retried by the queue with backoff
//! (100 ms doubling to 60 s per key, reset by a new change; the binding controller shows the
//! failure on the binding), and a controller that loses its watch lists and watches again
//! ([`follow`]). Each controller's [`queue::Queue::stats`] counts depth, failures, retries and
//! reconcile time.
//!
//! Status is derived by [`crate::status`], the floor below; controllers only write it.

pub mod binding;
pub mod deploy;
pub mod promotion;
pub mod queue;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use troupe_common::{Kind, Object};

use crate::resources::{Error, Resources, WatchEventType, WatchRequest};

/// Reconciles each controller runs at once. Durable writes share flushes, so concurrent
/// reconciles finish a burst (a type change touching thousands of components) many times
/// faster than one at a time.
const WORKERS: usize = 32;

/// The delay before watching again after a controller lost its watch.
pub(crate) const FIRST_REWATCH: Duration = Duration::from_millis(100);
/// The longest delay between attempts to watch again.
pub(crate) const MAX_REWATCH: Duration = Duration::from_secs(30);

/// Follows every change to objects of `kinds` (starting with the objects that exist), handing
/// each changed object to `handle`, for as long as the runtime runs. `name` labels the
/// controller in logs.
///
/// A watch that ends (its revision compacted from the event log because it fell behind, an
/// object that does not decode, a store error) is started again after a delay that doubles
/// from [`FIRST_REWATCH`] to [`MAX_REWATCH`]: it lists the current objects again (each handed
/// over as `Added`) and follows changes from the listing's revision, so a change made while
/// the controller was not watching is seen, and the controller never stops for good. The delay
/// resets once a listing completes.
pub async fn follow<F, Fut>(resources: &Arc<Resources>, name: &str, kinds: Vec<Kind>, mut handle: F)
where
    F: FnMut(WatchEventType, Object) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut delay = FIRST_REWATCH;
    let mut lost = 0u64;
    loop {
        let request = WatchRequest {
            kinds: kinds.clone(),
            ..Default::default()
        };
        let error = match resources.watch(request) {
            Ok(mut events) => {
                if lost > 0 {
                    tracing::info!(controller = name, "watching again: listing every object");
                }
                let (error, listed) = drain(&mut events, &mut handle).await;
                if listed {
                    delay = FIRST_REWATCH;
                }
                error
            }
            Err(e) => Some(e),
        };
        lost += 1;
        let error = error.map_or_else(
            || "the event stream ended or its handler panicked".to_string(),
            |e| e.to_string(),
        );
        tracing::error!(
            controller = name,
            times = lost,
            retry_in = ?delay,
            %error,
            "lost its watch; will list and watch again"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_REWATCH);
    }
}

/// Hands every object event of `events` to `handle` until the stream fails (the error), ends
/// or `handle` panics (`None`). The flag says whether the initial listing completed (its bookmark arrived).
async fn drain<F, Fut>(
    events: &mut crate::resources::WatchEvents,
    handle: &mut F,
) -> (Option<Error>, bool)
where
    F: FnMut(WatchEventType, Object) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut listed = false;
    while let Some(event) = events.recv().await {
        match event {
            Ok(event) => match event.object {
                Some(object) => {
                    // A bug in one controller's bookkeeping must not end it for good: the
                    // panic counts as a lost watch, and the listing that follows rebuilds
                    // what the controller remembers.
                    let handled = AssertUnwindSafe(handle(event.kind, object))
                        .catch_unwind()
                        .await;
                    if handled.is_err() {
                        return (None, listed);
                    }
                }
                None => listed = true,
            },
            Err(e) => return (Some(e), listed),
        }
    }
    (None, listed)
}
