//! Finished runs go `ttlAfterCompletion` after they end (their workflow's, as it is now), and
//! their logs with them (the index sees the deletion). A workflow without a TTL keeps its runs.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use troupe_common::duration;

use super::index::run_key;
use super::{Builds, finished, inputs};
use crate::resources::{Error, Origin};

/// How often finished runs are looked at.
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(10);

impl Builds {
    /// Deletes every finished run older than its workflow's TTL.
    pub(super) async fn sweep_finished(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let finished_runs: Vec<(String, i64, (String, String))> = self
            .index()
            .runs
            .iter()
            .filter(|(_, v)| finished(&v.phase))
            .filter_map(|(id, v)| Some((id.clone(), v.completed?, v.workflow.clone())))
            .collect();
        // One read per workflow, however many runs it has.
        let mut ttls: HashMap<(String, String, String), Option<i64>> = HashMap::new();
        for (id, completed, (kind, name)) in finished_runs {
            let key = run_key(&id);
            let ttl = *ttls
                .entry((key.namespace.clone(), kind.clone(), name.clone()))
                .or_insert_with(|| {
                    let spec =
                        inputs::workflow(&self.resources, &key.namespace, &kind, &name).ok()?;
                    let ttl = duration::parse(&spec.ttl_after_completion).ok()?;
                    Some(ttl.as_secs() as i64)
                });
            let Some(ttl) = ttl else { continue };
            if completed + ttl > now {
                continue;
            }
            match self
                .resources
                .delete(&key, Origin::ControlPlane, 0, false)
                .await
            {
                Ok(_) | Err(Error::NotFound(_)) => {
                    tracing::info!(run = %id, "a finished run outlived its workflow's ttlAfterCompletion; deleted");
                }
                Err(e) => tracing::warn!(run = %id, error = %e, "could not delete an expired run"),
            }
        }
    }
}
