//! Logs on PostgreSQL, appended with offsets and cut in the middle past
//! the cap, as in the SQLite store.

use super::*;

impl PgStore {
    /// Deletes the oldest chunks after the log's head until the attempt
    /// keeps at most `log_cap` bytes: the first half of the cap stays, and
    /// the newest output.
    fn cut_log_middle(
        &self,
        tx: &mut Tx,
        id: i64,
        attempt: u32,
        mut stored: u64,
        newest: u64,
    ) -> StoreResult<()> {
        let head = self.log_cap / 2;
        let victims: Vec<(i64, u64)> = tx.rows(
            "SELECT pos, length(data)::BIGINT FROM log_chunks WHERE job_id = $1 AND attempt = $2 \
             AND pos >= $3 AND pos < $4 ORDER BY pos",
            args![id, attempt, head, newest],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        for (pos, len) in victims {
            if stored <= self.log_cap {
                break;
            }
            tx.exec(
                "DELETE FROM log_chunks WHERE job_id = $1 AND attempt = $2 AND pos = $3",
                args![id, attempt, pos],
            )?;
            stored = stored.saturating_sub(len);
        }
        tx.exec(
            "UPDATE attempts SET log_stored = $3 WHERE job_id = $1 AND attempt = $2",
            args![id, attempt, stored],
        )?;
        Ok(())
    }
}

impl Logs for PgStore {
    fn append_log(&self, id: i64, q: &LogQuery, bytes: &[u8], _now: i64) -> StoreResult<LogReply> {
        self.with_tx(|tx, _| {
            let job = check_current(tx, id, &q.worker, q.attempt)?;
            let size: u64 = tx.one(
                "SELECT log_size FROM attempts WHERE job_id = $1 AND attempt = $2 FOR UPDATE",
                args![id, q.attempt],
                |r| r.get(0),
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
                    "INSERT INTO log_chunks (job_id, attempt, pos, data) VALUES ($1, $2, $3, $4)",
                    args![id, q.attempt, size, new],
                )?;
                let stored: u64 = tx.one(
                    "UPDATE attempts SET log_size = log_size + $3, log_stored = log_stored + $3 \
                     WHERE job_id = $1 AND attempt = $2 RETURNING log_stored",
                    args![id, q.attempt, new.len()],
                    |r| r.get(0),
                )?;
                if stored > self.log_cap {
                    self.cut_log_middle(tx, id, q.attempt, stored, size)?;
                }
            }
            Ok(LogReply {
                size: size.max(offset.saturating_add(bytes.len() as u64)),
                cancel: job.cancel_requested,
            })
        })
    }

    fn read_log(&self, id: i64, attempt: Option<u32>, from: u64) -> StoreResult<LogSlice> {
        self.with_conn(|c, _| {
            let job = load_job(c, id)?;
            let attempt = attempt.unwrap_or(job.attempt);
            let size: u64 = c
                .row(
                    "SELECT log_size FROM attempts WHERE job_id = $1 AND attempt = $2",
                    args![id, attempt],
                    |r| r.get(0),
                )?
                .unwrap_or(0);
            let chunks: Vec<(u64, Vec<u8>)> = c.rows(
                "SELECT pos, data FROM log_chunks WHERE job_id = $1 AND attempt = $2 \
                 AND pos + length(data) > $3 ORDER BY pos",
                args![id, attempt, from],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let mut log = LogJoin::from(from);
            for (pos, chunk) in chunks {
                log.push(pos, &chunk);
            }
            Ok(log.slice(&job, attempt, size))
        })
    }

    fn log_cap(&self) -> u64 {
        self.log_cap
    }
}
