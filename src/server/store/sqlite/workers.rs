//! Registration, heartbeats, worker status and drain.

use rusqlite::{params, OptionalExtension, Transaction};

use super::*;

/// Who holds a worker name now, as registration needs to know.
pub(crate) fn holder_of(tx: &Transaction, name: &str) -> StoreResult<Option<worker_rules::Holder>> {
    Ok(tx
        .row(
            "SELECT token_hash, instance, host, last_seen, lease_ms, platforms, status \
             FROM workers WHERE name = ?1",
            [name],
            |r| {
                let mut host: String = r.get(2)?;
                if host.is_empty() {
                    // Registered before hosts were sent: the detected one.
                    let platforms: Vec<Props> = json_or(r.get(5)?);
                    host = platforms
                        .first()
                        .and_then(|p| p.get("hostname").cloned())
                        .unwrap_or_default();
                }
                Ok(worker_rules::Holder {
                    token_hash: r.get(0)?,
                    instance: r.get(1)?,
                    host,
                    last_seen: r.get(3)?,
                    lease_ms: r.get(4)?,
                    stopped: r.get::<_, String>(6)? == "stopped",
                })
            },
        )
        .optional()?)
}

impl SqliteStore {
    fn heartbeat_to_db(
        &self,
        name: &str,
        hb: &Heartbeat,
        status: &str,
        info: &str,
        now: i64,
    ) -> StoreResult<HeartbeatReply> {
        if let Some(c) = self
            .claimants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(name)
        {
            c.1 = hb.status == "draining";
        }
        self.with_tx(|tx| {
            let lease: Option<i64> = tx
                .row(
                    "SELECT lease_ms FROM workers WHERE name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(lease) = lease else {
                return Err(StoreError::not_found(format!(
                    "unknown worker {name:?}; register first"
                )));
            };
            tx.exec(
                "UPDATE workers SET last_seen = ?2, info = ?3, status = ?4 WHERE name = ?1",
                params![name, now, info, status],
            )?;
            let mut renew = tx.prepare_cached(
                "UPDATE jobs SET lease_expires = ?4, info = coalesce(?5, info) \
                 WHERE id = ?1 AND attempt = ?2 AND worker = ?3 AND state = 'running'",
            )?;
            for j in &hb.jobs {
                let info = j.info.as_ref().map(|v| v.to_string());
                renew.execute(params![j.id, j.attempt, name, now + lease, info])?;
            }
            Ok(HeartbeatReply {
                cancel: cancels_of(tx, name)?,
            })
        })
    }
}

impl Workers for SqliteStore {
    fn worker_binding(&self, name: &str, token_hash: &str) -> StoreResult<Option<String>> {
        self.with_tx(|tx| {
            tx.exec(
                "UPDATE workers SET token_hash = ?2 WHERE name = ?1 AND token_hash IS NULL",
                params![name, token_hash],
            )?;
            Ok(tx
                .row(
                    "SELECT token_hash FROM workers WHERE name = ?1",
                    [name],
                    |r| r.get::<_, Option<String>>(0),
                )
                .optional()?
                .flatten())
        })
    }

    fn register(
        &self,
        reg: &Registration,
        token_hash: Option<&str>,
        revoked: &dyn Fn(&str) -> bool,
        now: i64,
    ) -> StoreResult<RegisterOutcome> {
        let lease = lease_ms(reg.heartbeat_interval_ms);
        let seen_at = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&reg.name)
            .and_then(|s| s.pending);
        let mut lost = Vec::new();
        let out = self.with_tx(|tx| {
            if let Some(held) = holder_of(tx, &reg.name)? {
                check_may_take(&held, reg, token_hash, revoked, seen_at, now)?;
            }
            tx.exec(
                "INSERT INTO workers (name, jobtypes, platforms, info, extra, slots, heartbeat_ms, \
                 lease_ms, version, registered_at, last_seen, accept, token_hash, instance, host) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12, ?13, ?14) \
                 ON CONFLICT(name) DO UPDATE SET jobtypes = ?2, platforms = ?3, info = ?4, \
                 extra = ?5, slots = ?6, heartbeat_ms = ?7, lease_ms = ?8, version = ?9, \
                 registered_at = ?10, last_seen = ?10, status = 'idle', accept = ?11, \
                 token_hash = ?12, instance = ?13, host = ?14",
                params![
                    reg.name,
                    serde_json::to_string(&reg.jobtypes)?,
                    serde_json::to_string(&reg.platforms)?,
                    serde_json::to_string(&reg.info)?,
                    serde_json::to_string(&reg.extra)?,
                    reg.slots,
                    reg.heartbeat_interval_ms as i64,
                    lease as i64,
                    reg.version,
                    now,
                    serde_json::to_string(&reg.accept)?,
                    token_hash,
                    reg.instance,
                    reg.host,
                ],
            )?;
            // Jobs the server believes run there but the worker does not
            // list were lost with its previous process.
            let running: Vec<(i64, u32)> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT id, attempt FROM jobs WHERE worker = ?1 AND state = 'running'",
                )?;
                let rows = stmt.query_map([&reg.name], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut requeued = 0;
            for (id, attempt) in running {
                if reg
                    .running
                    .iter()
                    .any(|j| j.id == id && j.attempt == attempt)
                {
                    tx.exec(
                        "UPDATE jobs SET lease_expires = ?2 WHERE id = ?1",
                        params![id, now + lease as i64],
                    )?;
                } else {
                    lost.push(id);
                    if lose_job(tx, id, "worker restarted", now)? {
                        requeued += 1;
                    }
                }
            }
            Ok(RegisterOutcome {
                lease_ms: lease,
                requeued,
            })
        })?;
        self.claimants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(reg.name.clone(), (reg.jobtypes.clone(), false));
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&reg.name);
        self.resync(&lost)?;
        Ok(out)
    }

    fn note_idle_heartbeat(&self, name: &str, hb: &Heartbeat, now: i64) -> Option<HeartbeatReply> {
        if !hb.jobs.is_empty() {
            return None;
        }
        let status = heartbeat_status(hb);
        let info = serde_json::to_string(&hb.info).ok()?;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let s = seen.get_mut(name)?;
        if s.info == info && s.status == status {
            s.pending = Some(now);
            return Some(HeartbeatReply::default());
        }
        None
    }

    fn heartbeat(&self, name: &str, hb: &Heartbeat, now: i64) -> StoreResult<HeartbeatReply> {
        if let Some(reply) = self.note_idle_heartbeat(name, hb, now) {
            return Ok(reply);
        }
        let status = heartbeat_status(hb);
        let info = serde_json::to_string(&hb.info)?;
        let reply = match self.heartbeat_to_db(name, hb, status, &info, now) {
            Err(StoreError::Unavailable(cause)) => {
                // The worker is alive; the storage is not its fault.
                if !hb.jobs.is_empty() {
                    self.outage_heartbeats
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name.to_string());
                }
                return Err(StoreError::Unavailable(cause));
            }
            other => other?,
        };
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if hb.jobs.is_empty() {
            seen.insert(
                name.to_string(),
                Seen {
                    info,
                    status,
                    pending: None,
                },
            );
        } else {
            seen.remove(name);
        }
        Ok(reply)
    }

    fn pending_cancels(&self, name: &str) -> StoreResult<Vec<i64>> {
        self.with_conn(|c| cancels_of(c, name))
    }

    fn flush_heartbeats(&self) -> StoreResult<()> {
        let pending: Vec<(String, i64)> = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.iter_mut()
                .filter_map(|(n, s)| s.pending.take().map(|t| (n.clone(), t)))
                .collect()
        };
        if pending.is_empty() {
            return Ok(());
        }
        self.with_tx(|tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE workers SET last_seen = max(last_seen, ?2) WHERE name = ?1",
            )?;
            for (name, t) in &pending {
                stmt.execute(params![name, t])?;
            }
            Ok(())
        })
    }

    fn may_claim(&self, name: &str) -> bool {
        let claimants = self.claimants.lock().unwrap_or_else(|e| e.into_inner());
        let Some((jobtypes, draining)) = claimants.get(name) else {
            // Unknown here: let the store answer (perhaps 404).
            return true;
        };
        if *draining {
            return true;
        }
        let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        jobtypes.iter().any(|t| queue.has_jobtype(t))
    }

    fn workers(&self, now: i64) -> StoreResult<Vec<Worker>> {
        self.with_conn(|c| {
            let mut stmt =
                c.prepare_cached(&format!("SELECT {WORKER_COLS} FROM workers ORDER BY name"))?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(worker_from_row(c, row, now)?);
            }
            Ok(out)
        })
    }

    fn worker(&self, name: &str, now: i64) -> StoreResult<Worker> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {WORKER_COLS} FROM workers WHERE name = ?1"
            ))?;
            let mut rows = stmt.query([name])?;
            match rows.next()? {
                Some(row) => worker_from_row(c, row, now),
                None => Err(StoreError::not_found(format!("no worker {name:?}"))),
            }
        })
    }

    fn set_drained(&self, name: &str, drained: bool, now: i64) -> StoreResult<Worker> {
        self.with_tx(|tx| {
            let changed = tx.exec(
                "UPDATE workers SET drained = ?2, \
                 drained_at = CASE WHEN ?2 THEN coalesce(drained_at, ?3) ELSE NULL END, \
                 quarantined_until = CASE WHEN ?2 THEN quarantined_until ELSE NULL END, \
                 infra_streak = CASE WHEN ?2 THEN infra_streak ELSE 0 END, \
                 quarantines = CASE WHEN ?2 THEN quarantines ELSE 0 END WHERE name = ?1",
                params![name, drained, now],
            )?;
            if changed == 0 {
                return Err(StoreError::not_found(format!("no worker {name:?}")));
            }
            Ok(())
        })?;
        self.worker(name, now)
    }
}
