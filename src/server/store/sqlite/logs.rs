//! Logs, appended with offsets and cut in the middle past the cap.

use rusqlite::{params, OptionalExtension, Transaction};

use super::*;

impl SqliteStore {
    /// Deletes the oldest chunks after the log's head until the attempt
    /// keeps at most `log_cap` bytes: the first half of the cap stays, and
    /// the newest output.
    fn cut_log_middle(
        &self,
        tx: &Transaction,
        id: i64,
        attempt: u32,
        mut stored: u64,
        newest: u64,
    ) -> StoreResult<()> {
        let head = (self.log_cap / 2) as i64;
        let victims: Vec<(i64, i64)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT pos, length(data) FROM log_chunks WHERE job_id = ?1 AND attempt = ?2 \
                 AND pos >= ?3 AND pos < ?4 ORDER BY pos",
            )?;
            let rows = stmt.query_map(params![id, attempt, head, newest as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let mut del = tx.prepare_cached(
            "DELETE FROM log_chunks WHERE job_id = ?1 AND attempt = ?2 AND pos = ?3",
        )?;
        for (pos, len) in victims {
            if stored <= self.log_cap {
                break;
            }
            del.execute(params![id, attempt, pos])?;
            stored -= len as u64;
        }
        tx.exec(
            "UPDATE attempts SET log_stored = ?3 WHERE job_id = ?1 AND attempt = ?2",
            params![id, attempt, stored as i64],
        )?;
        Ok(())
    }
}

impl Logs for SqliteStore {
    fn append_log(&self, id: i64, q: &LogQuery, bytes: &[u8], _now: i64) -> StoreResult<LogReply> {
        self.with_tx(|tx| {
            let job = check_current(tx, id, &q.worker, q.attempt)?;
            let size: u64 = tx.row(
                "SELECT log_size FROM attempts WHERE job_id = ?1 AND attempt = ?2",
                params![id, q.attempt],
                |r| r.get::<_, i64>(0).map(|n| n as u64),
            )?;
            let offset = q.offset.unwrap_or(size);
            if offset > size {
                return Err(StoreError::invalid(format!(
                    "log offset {offset} is past the {size} bytes stored for attempt {}",
                    q.attempt
                )));
            }
            let skip = (size - offset) as usize;
            if skip < bytes.len() {
                let new = &bytes[skip..];
                tx.exec(
                    "INSERT INTO log_chunks (job_id, attempt, pos, data) VALUES (?1, ?2, ?3, ?4)",
                    params![id, q.attempt, size as i64, new],
                )?;
                let stored: i64 = tx.row(
                    "UPDATE attempts SET log_size = log_size + ?3, log_stored = log_stored + ?3 \
                     WHERE job_id = ?1 AND attempt = ?2 RETURNING log_stored",
                    params![id, q.attempt, new.len() as i64],
                    |r| r.get(0),
                )?;
                if stored as u64 > self.log_cap {
                    self.cut_log_middle(tx, id, q.attempt, stored as u64, size)?;
                }
            }
            Ok(LogReply {
                size: size.max(offset + bytes.len() as u64),
                cancel: job.cancel_requested,
            })
        })
    }

    fn read_log(&self, id: i64, attempt: Option<u32>, from: u64) -> StoreResult<LogSlice> {
        self.with_conn(|c| {
            let job = load_job(c, id)?;
            let attempt = attempt.unwrap_or(job.attempt);
            let size: u64 = c
                .row(
                    "SELECT log_size FROM attempts WHERE job_id = ?1 AND attempt = ?2",
                    params![id, attempt],
                    |r| r.get::<_, i64>(0).map(|n| n as u64),
                )
                .optional()?
                .unwrap_or(0);
            let mut stmt = c.prepare_cached(
                "SELECT pos, data FROM log_chunks WHERE job_id = ?1 AND attempt = ?2 \
                 AND pos + length(data) > ?3 ORDER BY pos",
            )?;
            let mut rows = stmt.query(params![id, attempt, from as i64])?;
            let mut log = LogJoin::from(from);
            while let Some(row) = rows.next()? {
                let pos = row.get::<_, i64>(0)? as u64;
                log.push(
                    pos,
                    row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?,
                );
            }
            Ok(log.slice(&job, attempt, size))
        })
    }

    fn log_cap(&self) -> u64 {
        self.log_cap
    }
}
