//! Idempotency keys of submissions, the same on both backends.
//!
//! A client that sends a submission and loses the answer (a server that
//! hung or died after it wrote the jobs, a connection cut on the way back)
//! cannot tell whether the jobs exist. With an `Idempotency-Key` it sends
//! the same request again, to the same server or another one sharing the
//! database, and gets the jobs the first one made instead of a second set.
//! The key is taken in the submission's own transaction, before its jobs
//! are written: two requests with one key at once are one submission (on
//! PostgreSQL the second waits for the first's commit, then finds its key).

use super::portable::{one, vals, Sql};
use super::{StoreError, StoreResult};

/// How long a key is kept: a client resends within seconds, a person who
/// reruns a script with the same key the next day makes new jobs.
pub const KEEP_MS: i64 = 24 * 3600 * 1000;

/// A submission's key and a digest of its body: the same key with another
/// body is a client's mistake, refused rather than answered with jobs that
/// are not what it asked for.
#[derive(Debug, Clone)]
pub struct SubmitKey {
    pub key: String,
    pub digest: String,
}

/// What a key says about a submission.
pub(crate) enum Seen {
    /// The first time: write the jobs, then [`record`] them.
    New,
    /// Made before: these jobs (and build).
    Before { build: Option<i64>, ids: Vec<i64> },
}

/// Takes `key` for this transaction's submission, or finds what an earlier
/// one with the same key made. Keys older than [`KEEP_MS`] are forgotten
/// first.
pub(crate) fn take(s: &mut dyn Sql, key: &SubmitKey, now: i64) -> StoreResult<Seen> {
    s.exec(
        "DELETE FROM submit_keys WHERE created_at < $1",
        vals![now.saturating_sub(KEEP_MS)],
    )?;
    let taken = s.exec(
        "INSERT INTO submit_keys (key, digest, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (key) DO NOTHING",
        vals![&key.key, &key.digest, now],
    )?;
    if taken == 1 {
        return Ok(Seen::New);
    }
    let row = one(
        s,
        "SELECT digest, build_id, job_ids FROM submit_keys WHERE key = $1",
        vals![&key.key],
    )?
    .ok_or_else(|| StoreError::Unavailable("the idempotency key vanished; send again".into()))?;
    if row[0].s() != key.digest {
        return Err(StoreError::conflict(format!(
            "Idempotency-Key {:?} was sent before with another request; \
             a new submission needs a new key",
            key.key
        )));
    }
    let ids: Vec<i64> = serde_json::from_str(&row[2].s()).map_err(|e| {
        StoreError::Broken(anyhow::anyhow!(
            "the jobs of idempotency key {:?} cannot be read: {e}",
            key.key
        ))
    })?;
    Ok(Seen::Before {
        build: row[1].int(),
        ids,
    })
}

/// Records what the submission that took `key` made.
pub(crate) fn record(
    s: &mut dyn Sql,
    key: &SubmitKey,
    build: Option<i64>,
    ids: &[i64],
) -> StoreResult<()> {
    let ids = serde_json::to_string(ids).map_err(|e| StoreError::Broken(e.into()))?;
    s.exec(
        "UPDATE submit_keys SET build_id = $1, job_ids = $2 WHERE key = $3",
        vals![build, &ids, &key.key],
    )?;
    Ok(())
}
