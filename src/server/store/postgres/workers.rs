//! Registration, heartbeats, worker status and drain on PostgreSQL.

use super::*;

/// Who holds a worker name now, its row locked.
pub(crate) fn holder_of(tx: &mut Tx, name: &str) -> StoreResult<Option<worker_rules::Holder>> {
    tx.row(
        "SELECT token_hash, instance, host, last_seen, lease_ms, platforms, status \
         FROM workers WHERE name = $1 FOR UPDATE",
        args![name],
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
                stopped: r.get::<String>(6)? == "stopped",
            })
        },
    )
}

impl Workers for PgStore {
    fn worker_binding(&self, name: &str, token_hash: &str) -> StoreResult<Option<String>> {
        self.with_tx(|tx, _| {
            tx.exec(
                "UPDATE workers SET token_hash = $2 WHERE name = $1 AND token_hash IS NULL",
                args![name, token_hash],
            )?;
            Ok(tx
                .row(
                    "SELECT token_hash FROM workers WHERE name = $1",
                    args![name],
                    |r| r.get::<Option<String>>(0),
                )?
                .flatten())
        })
    }

    fn register(
        &self,
        reg: &Registration,
        token_hash: Option<&str>,
        revoked: &dyn Fn(&str) -> bool,
        _now: i64,
    ) -> StoreResult<RegisterOutcome> {
        let lease = lease_ms(reg.heartbeat_interval_ms);
        // What it last said here is no longer what the database holds.
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&reg.name);
        self.with_tx(|tx, now| {
            // One registration of a name at a time, across replicas, even
            // for a name not yet stored.
            tx.exec(
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                args![&reg.name],
            )?;
            if let Some(held) = holder_of(tx, &reg.name)? {
                check_may_take(&held, reg, token_hash, revoked, None, now)?;
            }
            tx.exec(
                "INSERT INTO workers (name, jobtypes, platforms, info, extra, slots, heartbeat_ms, \
                 lease_ms, version, registered_at, last_seen, accept, token_hash, instance, host) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13, $14) \
                 ON CONFLICT (name) DO UPDATE SET jobtypes = $2, platforms = $3, info = $4, \
                 extra = $5, slots = $6, heartbeat_ms = $7, lease_ms = $8, version = $9, \
                 registered_at = $10, last_seen = $10, status = 'idle', accept = $11, \
                 token_hash = $12, instance = $13, host = $14",
                args![
                    &reg.name,
                    serde_json::to_string(&reg.jobtypes)?,
                    serde_json::to_string(&reg.platforms)?,
                    serde_json::to_string(&reg.info)?,
                    serde_json::to_string(&reg.extra)?,
                    reg.slots,
                    reg.heartbeat_interval_ms,
                    lease,
                    &reg.version,
                    now,
                    serde_json::to_string(&reg.accept)?,
                    token_hash,
                    &reg.instance,
                    &reg.host,
                ],
            )?;
            // Jobs the database says run there but the worker does not
            // list were lost with its previous process.
            let running: Vec<(i64, u32)> = tx.rows(
                "SELECT id, attempt FROM jobs WHERE worker = $1 AND state = 'running' \
                 ORDER BY id FOR UPDATE",
                args![&reg.name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let mut requeued = 0;
            for (id, attempt) in running {
                if reg
                    .running
                    .iter()
                    .any(|j| j.id == id && j.attempt == attempt)
                {
                    tx.exec(
                        "UPDATE jobs SET lease_expires = $2 WHERE id = $1",
                        args![id, now.saturating_add(lease as i64)],
                    )?;
                } else if lose_job(tx, id, "worker restarted", now)? {
                    requeued += 1;
                }
            }
            Ok(RegisterOutcome {
                lease_ms: lease,
                requeued,
            })
        })
    }

    fn note_idle_heartbeat(&self, name: &str, hb: &Heartbeat, _now: i64) -> Option<HeartbeatReply> {
        // An idle worker saying what it said last time is only noted here,
        // and written with the others once a second (flush_heartbeats).
        if !hb.jobs.is_empty() {
            return None;
        }
        let status = heartbeat_status(hb);
        let info = serde_json::to_string(&hb.info).ok()?;
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let said = idle.get_mut(name)?;
        if said.info == info && said.status == status && said.written.elapsed() < IDLE_REWRITE {
            said.pending = true;
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
        let reply = self.with_tx(|tx, now| {
            let Some(lease) = tx.row(
                "UPDATE workers SET last_seen = $2, info = $3, status = $4 WHERE name = $1 \
                 RETURNING lease_ms",
                args![name, now, info.as_str(), status],
                |r| r.get::<i64>(0),
            )?
            else {
                return Err(StoreError::not_found(format!(
                    "unknown worker {name:?}; register first"
                )));
            };
            for j in &hb.jobs {
                let info = j.info.as_ref().map(|v| v.to_string());
                tx.exec(
                    "UPDATE jobs SET lease_expires = $4, info = coalesce($5, info) \
                     WHERE id = $1 AND attempt = $2 AND worker = $3 AND state = 'running'",
                    args![j.id, j.attempt, name, now.saturating_add(lease), info],
                )?;
            }
            Ok(HeartbeatReply {
                cancel: cancels_of(tx, name)?,
            })
        })?;
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if hb.jobs.is_empty() {
            let beat = IdleBeat {
                info,
                status,
                written: std::time::Instant::now(),
                pending: false,
            };
            idle.insert(name.to_string(), beat);
        } else {
            idle.remove(name);
        }
        Ok(reply)
    }

    fn pending_cancels(&self, name: &str) -> StoreResult<Vec<i64>> {
        self.with_conn(|c, _| cancels_of(c, name))
    }

    fn flush_heartbeats(&self) -> StoreResult<()> {
        let heard: Vec<String> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.iter_mut()
                .filter_map(|(name, said)| std::mem::take(&mut said.pending).then(|| name.clone()))
                .collect()
        };
        if heard.is_empty() {
            return Ok(());
        }
        // Heard within the last second: every server sees them seen now.
        self.with_tx(|tx, now| {
            tx.exec(
                "UPDATE workers SET last_seen = GREATEST(last_seen, $2) WHERE name = ANY($1)",
                &[
                    super::sql::Arg::TextArray(heard.clone()),
                    super::sql::Arg::from(now),
                ],
            )?;
            Ok(())
        })
    }

    fn may_claim(&self, name: &str) -> bool {
        // Not since this worker's last claim found nothing has any server
        // said it queued a job of its jobtypes: the answer is the same.
        self.gens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .may_claim(name)
    }

    fn workers(&self, _now: i64) -> StoreResult<Vec<Worker>> {
        self.with_conn(|c, now| load_worker_list(c, now, None))
    }

    fn worker(&self, name: &str, _now: i64) -> StoreResult<Worker> {
        self.with_conn(|c, now| load_worker_list(c, now, Some(name)))?
            .pop()
            .ok_or_else(|| StoreError::not_found(format!("no worker {name:?}")))
    }

    fn set_drained(&self, name: &str, drained: bool, now: i64) -> StoreResult<Worker> {
        self.with_tx(|tx, at| {
            let changed = tx.exec(
                "UPDATE workers SET drained = $2::BIGINT, \
                 drained_at = CASE WHEN $2 = 1 THEN coalesce(drained_at, $3) ELSE NULL END, \
                 quarantined_until = CASE WHEN $2 = 1 THEN quarantined_until ELSE NULL END, \
                 infra_streak = CASE WHEN $2 = 1 THEN infra_streak ELSE 0 END, \
                 quarantines = CASE WHEN $2 = 1 THEN quarantines ELSE 0 END WHERE name = $1",
                args![name, drained, at],
            )?;
            if changed == 0 {
                return Err(StoreError::not_found(format!("no worker {name:?}")));
            }
            notify(tx, Change::Claims)?;
            Ok(())
        })?;
        self.worker(name, now)
    }
}
