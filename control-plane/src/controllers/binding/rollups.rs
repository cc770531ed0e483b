//! Roll-ups from Release status. An agent reports through whichever server holds its session,
//! and that server's agent hub writes the Release's status; the binding
//! controller, on whichever server leads, follows those writes and rolls each binding up from
//! its Release, so it stays the one writer of binding status and nothing passes between
//! servers but the store.
//!
//! The watch starts at the revision the controller started at: its start reconciles, and so
//! rolls up, every binding. It takes only status that caught up with its Release's spec
//! (`status.observedGeneration == metadata.generation`); a render's own write, a new spec
//! with the old status, is rolled up by that render. A watch that fails resumes from the last
//! revision it delivered; if that revision has been compacted away, every binding is rolled up
//! again, then followed from the store's current revision.

use std::sync::Arc;

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, Object, ObjectKey};

use super::BindingController;
use crate::controllers::{FIRST_REWATCH, MAX_REWATCH};
use crate::resources::{Error, WatchEventType, WatchRequest};
use crate::store::Revision;

impl BindingController {
    /// Queues a roll-up of the binding of every Release whose status an agent's report
    /// changed after `since`, for as long as the runtime runs.
    pub(super) async fn follow_release_status(self: Arc<Self>, mut since: Revision) {
        let mut delay = FIRST_REWATCH;
        loop {
            let request = WatchRequest {
                kinds: vec![Kind::Release],
                since,
                ..Default::default()
            };
            let error = match self.resources.watch(request) {
                Ok(mut events) => loop {
                    match events.recv().await {
                        Some(Ok(event)) => {
                            since = since.max(event.revision);
                            delay = FIRST_REWATCH;
                            if event.kind == WatchEventType::Modified
                                && let Some(Object::Release(release)) = &event.object
                                && let Some(binding) = reported(release)
                            {
                                // Coalesced with a render or roll-up already queued.
                                self.queue.nudge(binding);
                            }
                        }
                        Some(Err(e)) => break Some(e),
                        None => break None,
                    }
                },
                Err(e) => Some(e),
            };
            if let Some(Error::Compacted { .. }) = error {
                since = self.resources.revision();
                let bindings: Vec<ObjectKey> =
                    self.placements().environment_of.keys().cloned().collect();
                tracing::warn!(
                    bindings = bindings.len(),
                    "binding controller: fell behind the Releases' status; rolling every binding up"
                );
                for binding in bindings {
                    self.queue.nudge(binding);
                }
                continue;
            }
            let error = error.map_or_else(|| "the watch ended".to_string(), |e| e.to_string());
            tracing::error!(%error, retry_in = ?delay, "binding controller: lost its watch of Release status");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_REWATCH);
        }
    }
}

/// The binding to roll up after a write of `release`: the one that binds it, when the write
/// carries status of its current spec.
fn reported(release: &pb::Release) -> Option<ObjectKey> {
    let meta = release.metadata.as_ref()?;
    let status = release.status.as_ref()?;
    if meta.delete_time.is_some() || status.observed_generation != meta.generation {
        return None;
    }
    let binding = &release.spec.as_ref()?.release_binding;
    (!binding.is_empty()).then(|| ObjectKey::new(Kind::ReleaseBinding, &meta.namespace, binding))
}
