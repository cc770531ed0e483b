//! The promotion controller: takes pending Promotions forward when what they wait for
//! changes. A promotion is looked at again when it is written (including every pending one at
//! startup, which finishes one a crash interrupted), when any binding of its component
//! changes (the source becoming `Ready`), and when a soak period it waits on ends.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use troupe_common::{Kind, Object, ObjectKey};

use super::follow;
use super::queue::Queue;
use crate::promotions::{Promotions, is_pending};
use crate::resources::{Error, Resources, WatchEventType};

/// Pending promotions by namespace and component.
type Pending = HashMap<(String, String), BTreeSet<ObjectKey>>;

/// Advances pending promotions.
pub struct PromotionController {
    resources: Arc<Resources>,
    promotions: Arc<Promotions>,
    /// Promotions to advance; one that fails is retried with backoff.
    queue: Arc<Queue>,
}

impl PromotionController {
    /// A controller over `promotions`.
    pub fn new(resources: Arc<Resources>, promotions: Arc<Promotions>) -> Self {
        Self {
            resources,
            promotions,
            queue: Arc::new(Queue::new("promotion")),
        }
    }

    /// The controller's work queue, for its [`Queue::stats`].
    pub fn queue(&self) -> Arc<Queue> {
        self.queue.clone()
    }

    /// Runs for as long as the runtime runs (see [`follow`]).
    pub async fn run(self) {
        let queue = self.queue.clone();
        let pending: Arc<Mutex<Pending>> = Arc::default();
        let promotions = self.promotions.clone();
        let requeue = queue.clone();
        // Promotions are people-paced; one worker keeps their order.
        queue.spawn_workers(1, move |key| {
            let (promotions, requeue) = (promotions.clone(), requeue.clone());
            async move {
                match promotions.advance(&key).await {
                    Ok((_, Some(wait))) => {
                        tokio::spawn(async move {
                            // A little past the end of the soak, so it has surely ended.
                            tokio::time::sleep(wait + Duration::from_millis(200)).await;
                            requeue.add(key);
                        });
                    }
                    // Gone: nothing to take forward.
                    Ok(_) | Err(Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
                Ok(())
            }
        });
        let kinds = vec![Kind::Promotion, Kind::ReleaseBinding];
        follow(&self.resources, "promotion", kinds, |kind, object| {
            let (queue, pending) = (queue.clone(), pending.clone());
            async move {
                let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
                match &object {
                    Object::Promotion(p) => {
                        let key = object.key();
                        let component = p
                            .spec
                            .as_ref()
                            .and_then(|s| s.owner.as_ref())
                            .map(|o| o.component_name.clone())
                            .unwrap_or_default();
                        let slot = (key.namespace.clone(), component);
                        let waiting = kind != WatchEventType::Deleted && is_pending(p);
                        if waiting {
                            pending.entry(slot).or_default().insert(key.clone());
                            queue.add(key);
                        } else if let Some(keys) = pending.get_mut(&slot) {
                            keys.remove(&key);
                            if keys.is_empty() {
                                pending.remove(&slot);
                            }
                        }
                    }
                    Object::ReleaseBinding(b) => {
                        let component = b
                            .spec
                            .as_ref()
                            .and_then(|s| s.owner.as_ref())
                            .map(|o| o.component_name.clone())
                            .unwrap_or_default();
                        let slot = (object.meta().namespace.clone(), component);
                        for key in pending.get(&slot).into_iter().flatten() {
                            queue.add(key.clone());
                        }
                    }
                    _ => {}
                }
            }
        })
        .await;
    }
}
