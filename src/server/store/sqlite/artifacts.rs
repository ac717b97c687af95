//! Artifact metadata on SQLite: the shared SQL (`store::artifacts`).

use super::*;
use crate::server::store::artifacts as art;
use crate::server::store::portable::Sql;

impl Artifacts for SqliteStore {
    fn declare_artifacts(
        &self,
        job: i64,
        attempt: u32,
        who: Uploader,
        files: &[ArtifactFile],
        keep_ms: Option<u64>,
        caps: ArtifactCaps,
        stored: &dyn Fn(&str, u64) -> bool,
        now: i64,
    ) -> StoreResult<Vec<Artifact>> {
        self.with_tx(|tx| {
            art::declare(
                &mut lite(tx),
                job,
                attempt,
                who,
                files,
                keep_ms,
                caps,
                stored,
                now,
            )
        })
    }

    fn check_uploader(&self, job: i64, attempt: u32, who: Uploader) -> StoreResult<()> {
        self.with_conn(|c| art::check_attempt(&mut lite(c), job, attempt, who))
    }

    fn artifact(&self, job: i64, attempt: u32, path: &str) -> StoreResult<Option<Artifact>> {
        self.with_conn(|c| art::get(&mut lite(c), job, attempt, path))
    }

    fn artifact_progress(
        &self,
        job: i64,
        attempt: u32,
        path: &str,
        received: u64,
        complete: bool,
    ) -> StoreResult<()> {
        self.with_tx(|tx| art::progress(&mut lite(tx), job, attempt, path, received, complete))
    }

    fn artifacts(&self, job: i64, attempt: Option<u32>) -> StoreResult<Vec<Artifact>> {
        self.with_conn(|c| art::list(&mut lite(c), job, attempt))
    }

    fn expire_artifacts(&self, now: i64) -> StoreResult<u64> {
        self.with_tx(|tx| art::expire(&mut lite(tx), now))
    }

    fn artifact_garbage(&self) -> StoreResult<Vec<(String, String)>> {
        self.with_tx(|tx| art::take_garbage(&mut lite(tx)))
    }
}

fn lite(c: &rusqlite::Connection) -> impl Sql + '_ {
    super::test_queue::Lite(c)
}
