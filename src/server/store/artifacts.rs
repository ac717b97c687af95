//! Artifact metadata, written once for both backends over the shared
//! `Sql` of the test queue: which attempt left which file, its size and
//! SHA-256, how much of it came, when it goes. The bytes are the blob
//! store's (`server::artifacts`).

use super::portable::{one, vals, Sql, V};
use super::{StoreError, StoreResult};
use crate::time::rfc3339;
use crate::wire::*;

const COLS: &str = "attempt, path, size, sha256, state, received, note, expires_at";

fn artifact(r: &[V]) -> Artifact {
    Artifact {
        attempt: r[0].int().unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
        path: r[1].text().unwrap_or_default(),
        size: r[2].int().unwrap_or(0).max(0) as u64,
        sha256: r[3].text().unwrap_or_default(),
        state: ArtifactState::parse(&r[4].text().unwrap_or_default())
            .unwrap_or(ArtifactState::Uploading),
        received: r[5].int().unwrap_or(0).max(0) as u64,
        note: r[6].text(),
        expires_at: r[7].int().map(rfc3339),
    }
}

/// Who is declaring or uploading.
#[derive(Debug, Clone, Copy)]
pub enum Uploader<'a> {
    /// A worker (by name; empty on an open server means whoever ran it):
    /// the attempt must have run there, and may have ended.
    Worker(&'a str),
    /// The job itself, with its token: the attempt must be running.
    Job,
}

/// The server's caps, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub max_file: u64,
    pub max_job: u64,
}

/// Checks that `who` may add artifacts to attempt `attempt` of `job`.
pub(crate) fn check_attempt(
    s: &mut dyn Sql,
    job: i64,
    attempt: u32,
    who: Uploader,
) -> StoreResult<()> {
    let Some(j) = one(
        s,
        "SELECT state, attempt FROM jobs WHERE id = $1",
        vals![job],
    )?
    else {
        return Err(StoreError::not_found(format!("no job {job}")));
    };
    let ran = one(
        s,
        "SELECT worker FROM attempts WHERE job_id = $1 AND attempt = $2",
        vals![job, attempt],
    )?;
    let Some(ran) = ran else {
        return Err(StoreError::conflict(format!(
            "job {job} has no attempt {attempt}"
        )));
    };
    match who {
        Uploader::Job => {
            let (state, at) = (j[0].text().unwrap_or_default(), j[1].int().unwrap_or(0));
            if state != "running" || at != i64::from(attempt) {
                return Err(StoreError::conflict(format!(
                    "attempt {attempt} of job {job} is not running (the job is {state} at attempt {at})"
                )));
            }
        }
        Uploader::Worker(name) => {
            let holder = ran[0].text().unwrap_or_default();
            if !name.is_empty() && holder != name {
                return Err(StoreError::Forbidden(format!(
                    "attempt {attempt} of job {job} ran on worker {holder:?}, not {name:?}"
                )));
            }
        }
    }
    Ok(())
}

/// Declares an attempt's files: each is `uploading` (or `complete` at once
/// when the same bytes are stored already, `skipped` when over a cap). A
/// file declared again with the same content keeps its progress; with
/// other content, an upload under way starts over and a complete one is
/// kept (the new one is answered `skipped`, saying why). `stored` says
/// whether a blob of a hash and size exists.
#[allow(clippy::too_many_arguments)]
pub(crate) fn declare(
    s: &mut dyn Sql,
    job: i64,
    attempt: u32,
    who: Uploader,
    files: &[ArtifactFile],
    keep_ms: Option<u64>,
    caps: Caps,
    stored: &dyn Fn(&str, u64) -> bool,
    now: i64,
) -> StoreResult<Vec<Artifact>> {
    check_attempt(s, job, attempt, who)?;
    let expires = keep_ms.map(|k| now.saturating_add(i64::try_from(k).unwrap_or(i64::MAX)));
    let mut kept: u64 = one(
        s,
        "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM artifacts \
         WHERE job_id = $1 AND attempt = $2 AND state <> 'skipped'",
        vals![job, attempt],
    )?
    .and_then(|r| r[0].int())
    .unwrap_or(0)
    .max(0) as u64;
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let before = one(
            s,
            &format!(
                "SELECT {COLS} FROM artifacts WHERE job_id = $1 AND attempt = $2 AND path = $3"
            ),
            vals![job, attempt, &f.path],
        )?
        .map(|r| artifact(&r));
        if let Some(b) = &before {
            if b.sha256 == f.sha256 && b.size == f.size {
                out.push(b.clone());
                continue;
            }
            if b.state == ArtifactState::Complete {
                // The file stored first stays; this one is not taken, and
                // the rest of the declaration goes on.
                out.push(Artifact {
                    state: ArtifactState::Skipped,
                    received: 0,
                    size: f.size,
                    sha256: f.sha256.clone(),
                    note: Some(format!(
                        "{:?} of attempt {attempt} of job {job} is stored already with other content",
                        f.path
                    )),
                    ..b.clone()
                });
                continue;
            }
            // Declared anew with other content: what came of the old is garbage.
            s.exec(
                "INSERT INTO artifact_garbage (kind, name) VALUES ('partial', $1) \
                 ON CONFLICT (kind, name) DO NOTHING",
                vals![crate::server::artifacts::upload_key(job, attempt, &f.path).as_str()],
            )?;
            if b.state != ArtifactState::Skipped {
                kept = kept.saturating_sub(b.size);
            }
            s.exec(
                "DELETE FROM artifacts WHERE job_id = $1 AND attempt = $2 AND path = $3",
                vals![job, attempt, &f.path],
            )?;
        }
        let (state, note) = if f.size > caps.max_file {
            (
                ArtifactState::Skipped,
                Some(format!(
                    "{} bytes is over the server's --artifact-max-file of {} bytes",
                    f.size, caps.max_file
                )),
            )
        } else if kept.saturating_add(f.size) > caps.max_job {
            (
                ArtifactState::Skipped,
                Some(format!(
                    "the job's artifacts would pass the server's --artifact-max-job of {} bytes",
                    caps.max_job
                )),
            )
        } else if stored(&f.sha256, f.size) {
            (ArtifactState::Complete, None)
        } else {
            (ArtifactState::Uploading, None)
        };
        if state != ArtifactState::Skipped {
            kept = kept.saturating_add(f.size);
        }
        let received = if state == ArtifactState::Complete {
            f.size
        } else {
            0
        };
        s.exec(
            "INSERT INTO artifacts (job_id, attempt, path, size, sha256, state, received, note, \
             expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            vals![
                job,
                attempt,
                &f.path,
                f.size,
                &f.sha256,
                state.as_str(),
                received,
                note.as_deref(),
                expires,
                now
            ],
        )?;
        out.push(Artifact {
            attempt,
            path: f.path.clone(),
            size: f.size,
            sha256: f.sha256.clone(),
            state,
            received,
            note,
            expires_at: expires.map(rfc3339),
        });
    }
    Ok(out)
}

pub(crate) fn get(
    s: &mut dyn Sql,
    job: i64,
    attempt: u32,
    path: &str,
) -> StoreResult<Option<Artifact>> {
    Ok(one(
        s,
        &format!("SELECT {COLS} FROM artifacts WHERE job_id = $1 AND attempt = $2 AND path = $3"),
        vals![job, attempt, path],
    )?
    .map(|r| artifact(&r)))
}

/// Notes how much of an upload came, and whether it is complete.
pub(crate) fn progress(
    s: &mut dyn Sql,
    job: i64,
    attempt: u32,
    path: &str,
    received: u64,
    complete: bool,
) -> StoreResult<()> {
    s.exec(
        "UPDATE artifacts SET received = $1, state = $2 \
         WHERE job_id = $3 AND attempt = $4 AND path = $5 AND state = 'uploading'",
        vals![
            received,
            if complete { "complete" } else { "uploading" },
            job,
            attempt,
            path
        ],
    )?;
    Ok(())
}

/// A job's artifacts: of `attempt`, or of the latest attempt that has any.
pub(crate) fn list(s: &mut dyn Sql, job: i64, attempt: Option<u32>) -> StoreResult<Vec<Artifact>> {
    if one(s, "SELECT id FROM jobs WHERE id = $1", vals![job])?.is_none() {
        return Err(StoreError::not_found(format!("no job {job}")));
    }
    let attempt = match attempt {
        Some(a) => i64::from(a),
        None => match one(
            s,
            "SELECT MAX(attempt) FROM artifacts WHERE job_id = $1",
            vals![job],
        )?
        .and_then(|r| r[0].int())
        {
            Some(a) => a,
            None => return Ok(Vec::new()),
        },
    };
    Ok(s.rows(
        &format!("SELECT {COLS} FROM artifacts WHERE job_id = $1 AND attempt = $2 ORDER BY path"),
        vals![job, attempt],
    )?
    .iter()
    .map(|r| artifact(r))
    .collect())
}

/// Moves the artifacts picked by `condition` (SQL over `artifacts`, with
/// `$1`) to the garbage: their blobs and partial uploads, to delete once no
/// artifact names them.
fn discard(s: &mut dyn Sql, condition: &str, arg: V) -> StoreResult<u64> {
    let gone = s.rows(
        &format!("DELETE FROM artifacts WHERE {condition} RETURNING job_id, attempt, path, sha256, state"),
        &[arg],
    )?;
    for r in &gone {
        let (job, attempt) = (r[0].int().unwrap_or(0), r[1].int().unwrap_or(0));
        let key = crate::server::artifacts::upload_key(
            job,
            attempt.clamp(0, i64::from(u32::MAX)) as u32,
            &r[2].text().unwrap_or_default(),
        );
        s.exec(
            "INSERT INTO artifact_garbage (kind, name) VALUES ('partial', $1) \
             ON CONFLICT (kind, name) DO NOTHING",
            vals![key.as_str()],
        )?;
        if r[4].text().as_deref() == Some("complete") {
            s.exec(
                "INSERT INTO artifact_garbage (kind, name) VALUES ('blob', $1) \
                 ON CONFLICT (kind, name) DO NOTHING",
                &[r[3].clone()],
            )?;
        }
    }
    Ok(gone.len() as u64)
}

/// Deletes the artifacts of a job (purged by retention).
pub(crate) fn discard_job(s: &mut dyn Sql, job: i64) -> StoreResult<u64> {
    discard(s, "job_id = $1", V::from(job))
}

/// Deletes the artifacts past their `keep_artifacts`.
pub(crate) fn expire(s: &mut dyn Sql, now: i64) -> StoreResult<u64> {
    discard(
        s,
        "expires_at IS NOT NULL AND expires_at <= $1",
        V::from(now),
    )
}

/// What may be deleted from the blob store now: partial uploads of
/// discarded artifacts, and blobs no artifact names any more. Taken off
/// the garbage list.
pub(crate) fn take_garbage(s: &mut dyn Sql) -> StoreResult<Vec<(String, String)>> {
    let rows = s.rows(
        "DELETE FROM artifact_garbage WHERE kind = 'partial' OR NOT EXISTS \
         (SELECT 1 FROM artifacts a WHERE a.sha256 = artifact_garbage.name) RETURNING kind, name",
        &[],
    )?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r[0].text().unwrap_or_default(),
                r[1].text().unwrap_or_default(),
            )
        })
        .collect())
}
