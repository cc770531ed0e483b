//! Controllers: level-triggered loops that compute derived state from the full current state
//! and can be re-run at any time with the same result (STYLE 11).
//!
//! - [`binding`] renders every ReleaseBinding into its Release and is the one writer of the
//!   binding's status: how the render went, and (rolled up from its Release, also when the
//!   agent hub asks through [`binding::Rollups`]) how the release is doing.
//! - [`deploy`] cuts releases of `autoDeploy` components when their inputs change and binds
//!   them in the first environment of their pipeline.
//! - [`promotion`] takes pending Promotions forward when their source environment, approvals,
//!   checks or soak time change.
//!
//! Each maps a change to the keys it affects and queues them ([`queue`]): a key waits at most
//! once, so bursts coalesce, and a pool of workers reconciles different keys at once. The
//! agent hub, on the floor above, uses the same queue for its status writes.
//!
//! Status is derived by [`crate::status`], the floor below; controllers only write it.

pub mod binding;
pub mod deploy;
pub mod promotion;
pub(crate) mod queue;

use std::future::Future;
use std::sync::Arc;

use troupe_common::{Kind, Object};

use crate::resources::{Resources, WatchEventType, WatchRequest};

/// Reconciles each controller runs at once. Durable writes share flushes, so concurrent
/// reconciles finish a burst (a type change touching thousands of components) many times
/// faster than one at a time.
const WORKERS: usize = 32;

/// Follows every change to objects of `kinds` (starting with the objects that exist), handing
/// each changed object to `handle`, until the event stream ends (the server stops). `name`
/// labels the controller in logs.
pub async fn follow<F, Fut>(resources: &Arc<Resources>, name: &str, kinds: Vec<Kind>, mut handle: F)
where
    F: FnMut(WatchEventType, Object) -> Fut,
    Fut: Future<Output = ()>,
{
    let request = WatchRequest {
        kinds,
        ..Default::default()
    };
    let mut events = match resources.watch(request) {
        Ok(events) => events,
        Err(e) => {
            tracing::error!(controller = name, error = %e, "could not watch");
            return;
        }
    };
    while let Some(event) = events.recv().await {
        match event {
            Ok(event) => {
                if let Some(object) = event.object {
                    handle(event.kind, object).await;
                }
            }
            Err(e) => {
                tracing::error!(controller = name, error = %e, "lost its watch");
                return;
            }
        }
    }
}
