//! Artifact metadata on PostgreSQL: the shared SQL (`store::artifacts`).

use super::*;
use crate::server::store::artifacts as art;

impl Artifacts for PgStore {
    fn declare_artifacts(
        &self,
        job: i64,
        attempt: u32,
        who: Uploader,
        files: &[ArtifactFile],
        keep_ms: Option<u64>,
        caps: ArtifactCaps,
        stored: &dyn Fn(&str, u64) -> bool,
        _now: i64,
    ) -> StoreResult<Vec<Artifact>> {
        self.with_tx(|tx, now| {
            art::declare(tx, job, attempt, who, files, keep_ms, caps, stored, now)
        })
    }

    fn check_uploader(&self, job: i64, attempt: u32, who: Uploader) -> StoreResult<()> {
        self.with_conn(|tx, _| art::check_attempt(tx, job, attempt, who))
    }

    fn artifact(&self, job: i64, attempt: u32, path: &str) -> StoreResult<Option<Artifact>> {
        self.with_conn(|tx, _| art::get(tx, job, attempt, path))
    }

    fn artifact_progress(
        &self,
        job: i64,
        attempt: u32,
        path: &str,
        received: u64,
        complete: bool,
    ) -> StoreResult<()> {
        self.with_tx(|tx, _| art::progress(tx, job, attempt, path, received, complete))
    }

    fn artifacts(&self, job: i64, attempt: Option<u32>) -> StoreResult<Vec<Artifact>> {
        self.with_conn(|tx, _| art::list(tx, job, attempt))
    }

    fn expire_artifacts(&self, _now: i64) -> StoreResult<u64> {
        self.with_tx(|tx, now| art::expire(tx, now))
    }

    fn artifact_garbage(&self) -> StoreResult<Vec<(String, String)>> {
        self.with_tx(|tx, _| art::take_garbage(tx))
    }
}
