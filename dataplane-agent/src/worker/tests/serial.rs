//! The state operations run one after the other, each apply awaited in place: what the
//! worker does concurrently, in the shape the tests of `core` read best.

use crate::worker::core::{Core, Failure};

impl Core {
    /// Begins, applies and finishes an upsert.
    pub(in crate::worker) async fn upsert(
        &mut self,
        upsert: crate::worker::Upsert,
    ) -> Result<(), Failure> {
        let Some((started, objects)) = self.begin_upsert(upsert)? else {
            return Ok(());
        };
        let result = self.applier.apply(started.release(), &objects).await;
        self.finish(started, result).map(|_| ())
    }

    /// Applies `release` again as held; true when health changed.
    async fn apply_again(&mut self, release: &str) -> Result<bool, Failure> {
        let Some((started, objects)) = self.begin_reapply(release) else {
            return Ok(false);
        };
        let result = self.applier.apply(started.release(), &objects).await;
        self.finish(started, result)
    }

    /// Applies again everything held; true when health changed.
    pub(in crate::worker) async fn correct_drift(&mut self) -> bool {
        let mut changed = false;
        for release in self.held_releases() {
            changed |= self.apply_again(&release).await.unwrap_or(false);
        }
        changed
    }

    /// Prunes and forgets `release`.
    pub(in crate::worker) async fn remove(
        &mut self,
        release: &str,
        generation: i64,
    ) -> Result<(), Failure> {
        let result = self.applier.prune(release).await;
        self.finish_remove(release, generation, result)
    }

    /// Applies again what waits for an object now free; true when health changed.
    pub(in crate::worker) async fn apply_waiting(&mut self) -> bool {
        let mut changed = false;
        for release in self.waiting() {
            changed |= self.apply_again(&release).await.unwrap_or(false);
        }
        changed
    }

    /// Runs the retries due: whether health changed, and the removals that succeeded.
    pub(in crate::worker) async fn retry_due(&mut self) -> (bool, Vec<(String, i64)>) {
        let (removals, applies) = self.due(|_| false);
        let mut removed = Vec::new();
        for (release, generation) in removals {
            if self.remove(&release, generation).await.is_ok() {
                removed.push((release, generation));
            }
        }
        let mut changed = false;
        for release in applies {
            match self.apply_again(&release).await {
                Ok(c) => changed |= c,
                Err(_) => self.retry_later(&release),
            }
        }
        (changed, removed)
    }
}
