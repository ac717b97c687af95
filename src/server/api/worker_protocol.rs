//! The worker protocol's handlers: registration and the name binding,
//! heartbeats, claims (with the result they carry), log uploads and
//! results, each acting only for the worker its token registered.

use super::*;

/// A worker acts only for itself: its token must be the one its name was
/// registered with (the database keeps the binding; a name registered
/// without a token is bound by the first worker token that uses it).
/// Unknown names pass: the store answers them 404.
pub(super) async fn bind(st: &AppState, caller: &Caller, name: &str) -> ApiResult<()> {
    let Caller::Worker(hash) = caller else {
        return Ok(());
    };
    if st.auth.is_bound(name, hash) {
        return Ok(());
    }
    let (n, h) = (name.to_string(), crate::server::auth::hex(hash));
    match st.db(move |s| s.worker_binding(&n, &h)).await? {
        None => Ok(()),
        Some(bound) if bound == crate::server::auth::hex(hash) => {
            st.auth.remember(name, *hash);
            Ok(())
        }
        Some(_) => Err(ApiError::Forbidden(format!(
            "worker {name:?} is registered with another worker token; a worker acts only for itself"
        ))),
    }
}

/// The worker a log or result acts for: the one it names, or when it names
/// none the attempt's holder, checked against the caller's token either
/// way.
pub(super) async fn acting_worker(
    st: &AppState,
    caller: &Caller,
    id: i64,
    named: &str,
) -> ApiResult<String> {
    let name = if named.is_empty() {
        let job = st.db(move |s| s.job(id)).await?;
        match (job.state, job.worker) {
            (JobState::Running, Some(w)) => w,
            (state, _) => {
                return Err(ApiError::conflict(format!(
                    "job {id} is {state}; no attempt of it is running"
                )))
            }
        }
    } else {
        named.to_string()
    };
    bind(st, caller, &name).await?;
    Ok(name)
}

pub(super) async fn register(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(mut reg): Body<Registration>,
) -> ApiResult<Json<Registered>> {
    if reg.platforms.is_empty() {
        reg.platforms.push(Props::new());
    }
    check_registration(&reg)?;
    let hash = match &caller {
        Caller::Worker(h) => Some(*h),
        _ => None,
    };
    let name = reg.name.clone();
    let auth = st.auth.clone();
    let out = st
        .db(move |s| {
            let hex = hash.as_ref().map(crate::server::auth::hex);
            s.register(&reg, hex.as_deref(), &|h| auth.revoked(h), now_ms())
        })
        .await?;
    if let Some(h) = hash {
        st.auth.remember(&name, h);
    }
    tracing::info!(worker = %name, requeued = out.requeued, "worker registered");
    if out.requeued > 0 {
        st.wake_claims();
        st.job_changed();
    }
    Ok(Json(Registered {
        name,
        lease_ms: out.lease_ms,
        claim_results: true,
        log_cap: Some(st.store.log_cap()),
        artifact_max_file: Some(st.artifacts.max_file),
        artifact_max_job: Some(st.artifacts.max_job),
    }))
}

pub(super) async fn list_workers(State(st): State<AppState>) -> ApiResult<Json<Vec<Worker>>> {
    st.db(|s| s.workers(now_ms())).await.map(Json)
}

pub(super) async fn get_worker(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Worker>> {
    st.db(move |s| s.worker(&name, now_ms())).await.map(Json)
}

/// Records the heartbeat (renewing leases) at once; then, when the worker
/// asks to `wait`, holds the answer until one of its jobs is canceled.
pub(super) async fn heartbeat(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Body(hb): Body<Heartbeat>,
) -> ApiResult<Json<HeartbeatReply>> {
    let wait = check_heartbeat(&hb)?;
    bind(&st, &caller, &name).await?;
    let known: Vec<i64> = hb
        .jobs
        .iter()
        .filter(|j| j.canceling)
        .map(|j| j.id)
        .collect();
    let wait = Duration::from_secs_f64(wait);
    let mut cancels = st.cancels.subscribe();
    cancels.borrow_and_update();
    let draining = hb.status == "draining";
    // An idle worker repeating itself is noted in memory, here, without a
    // trip to the blocking pool.
    let recorded = match st.store.note_idle_heartbeat(&name, &hb, now_ms()) {
        Some(reply) => Ok(reply),
        None => {
            let n = name.clone();
            st.db_quick(move |s| s.heartbeat(&n, &hb, now_ms())).await
        }
    };
    if draining {
        // Its open claims end now instead of at their timeout: told by the
        // store, or, when the store failed to record the drain, by the
        // same failure when they ask it again.
        st.wake_claims();
    }
    let mut reply = recorded?;
    let news = |r: &HeartbeatReply| r.cancel.iter().any(|id| !known.contains(id));
    if wait.is_zero() || news(&reply) {
        return Ok(Json(reply));
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut shutdown = st.shutdown.clone();
    loop {
        tokio::select! {
            changed = cancels.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep_until(deadline) => break,
            _ = shutdown.wait_for(|s| *s) => break,
        }
        let n = name.clone();
        reply.cancel = st.db_quick(move |s| s.pending_cancels(&n)).await?;
        if news(&reply) {
            break;
        }
    }
    Ok(Json(reply))
}

/// A [`ClaimRequest`] as the server reads it: the outcome stays JSON until
/// [`parse_outcome`] reads it as `/result` would, so a result the claim
/// carries is as forgiving as one sent alone, and a bad one is the
/// result's refusal, not the claim's.
#[derive(Deserialize)]
pub(super) struct ClaimBody {
    #[serde(default = "default_wait")]
    wait: f64,
    #[serde(default)]
    result: Option<ClaimBodyResult>,
    #[serde(default)]
    slot: Option<u32>,
    #[serde(default)]
    seq: Option<u64>,
}

#[derive(Deserialize)]
pub(super) struct ClaimBodyResult {
    job: i64,
    outcome: serde_json::Value,
}

/// Long-poll: answers with a job as soon as one the worker can run is
/// queued, or 204 after `wait` seconds.
pub(super) async fn claim(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    // Boxed, like the work with a result below: a handler's arguments live
    // as long as its future, and thousands of claims are held open at once;
    // a result inline would cost each a kilobyte or so.
    Body(req): Body<Box<ClaimBody>>,
) -> ApiResult<Response> {
    let wait = check_wait("wait", req.wait)?;
    let tag = match (req.slot, req.seq) {
        (Some(slot), Some(seq)) => {
            check_range("seq", seq, 0, limits::MAX_INT)?;
            Some((slot, seq))
        }
        (None, None) => None,
        _ => return Err(ApiError::bad("slot and seq go together")),
    };
    bind(&st, &caller, &name).await?;
    // Subscribed before the result is recorded: a job it queues again (an
    // infrastructure failure) wakes the wait below, as any submit would.
    let mut queue = st.queue.subscribe();
    let (mut first, answer) = match req.result {
        Some(r) => Box::pin(claim_with_result(&st, &name, r, tag)).await?,
        None => (None, None),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(wait);
    let mut shutdown = st.shutdown.clone();
    // A tagged claim asks the store once whatever the queue looks like: it
    // may be a retry whose job is already this worker's.
    let mut ask = tag.is_some();
    loop {
        let claim = match first.take() {
            // Made before any news since subscribing: that news is still
            // unseen and ends the wait at once.
            Some(c) => c,
            None => {
                queue.borrow_and_update();
                if !std::mem::take(&mut ask) && !st.store.may_claim(&name) {
                    tokio::select! {
                        changed = queue.changed() => if changed.is_err() { break },
                        _ = tokio::time::sleep_until(deadline) => break,
                        _ = shutdown.wait_for(|s| *s) => break,
                    }
                    continue;
                }
                let n = name.clone();
                st.db_quick(move |s| s.claim(&n, tag, now_ms())).await?
            }
        };
        match claim {
            Claim::Job(mut job) => {
                job.job_token = Some(st.job_tokens.mint(job.id, job.attempt));
                if job.shard_tests.is_some() {
                    let id = job.id;
                    job.shard_known = Some(st.db(move |s| s.shard_known(id)).await?);
                }
                tracing::info!(job = job.id, attempt = job.attempt, worker = %name, "job claimed");
                st.job_changed();
                if job.attempt == 1 {
                    if let Some(t) = crate::time::parse_rfc3339(&job.created_at) {
                        st.metrics.observe_dispatch((now_ms() - t) as f64 / 1000.0);
                    }
                }
                return Ok(with_result_answer(Json(job).into_response(), &answer));
            }
            Claim::Draining => break,
            // Drained or quarantined workers wait like idle ones; undrain
            // wakes them.
            Claim::Held | Claim::Nothing => {}
        }
        tokio::select! {
            changed = queue.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep_until(deadline) => break,
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    Ok(with_result_answer(
        StatusCode::NO_CONTENT.into_response(),
        &answer,
    ))
}

/// The slot's last outcome is recorded with the first claim, in one
/// transaction. A refusal (stale attempt, bad input) is the result's, not
/// the claim's: the claim goes on and the answer says why; a failure of the
/// server fails the request, and the worker sends the result again. Returns
/// the claim made, and what the `Testbot-Result` header is to say.
pub(super) async fn claim_with_result(
    st: &AppState,
    name: &str,
    r: ClaimBodyResult,
    tag: Option<crate::server::store::ClaimTag>,
) -> ApiResult<(Option<Claim>, Option<String>)> {
    let id = r.job;
    check_id("result.job", id)?;
    let mut outcome = match parse_outcome(r.outcome.clone()).and_then(|mut o| {
        check_result(&mut o)?;
        Ok(o)
    }) {
        Ok(o) => o,
        Err(e) => {
            let _ = end_refused(st, id, name, &r.outcome, &e).await;
            return Ok((None, Some(format!("refused: {e}"))));
        }
    };
    if outcome.worker.is_empty() {
        outcome.worker = name.to_string();
    }
    if outcome.worker != name {
        return Err(ApiError::bad(format!(
            "result.outcome.worker: {:?} is not the claiming worker {name:?}",
            outcome.worker
        )));
    }
    let n = name.to_string();
    let ran = Recorded::of(&outcome);
    let (finished, claim) = st
        .db_short_if(is_small(&outcome), move |s| {
            s.finish_and_claim(id, &outcome, &n, tag, now_ms())
        })
        .await?;
    let answer = match finished {
        Ok(job) => {
            ran.after(st, &job);
            crate::wire::RESULT_RECORDED.to_string()
        }
        Err(e) => {
            tracing::warn!(job = id, worker = %name, "result sent with a claim refused: {e}");
            format!("refused: {e}")
        }
    };
    Ok((Some(claim), Some(answer)))
}

/// A result the server cannot take (malformed, nested too deep) still ends
/// its attempt, as `error` with the refusal for its reason, when the body
/// says which attempt it is for and `worker` holds it: otherwise the job
/// would wait for its lease to run out and then run again, to the same end.
/// `worker` has been checked against the caller's token.
pub(super) async fn end_refused(
    st: &AppState,
    id: i64,
    worker: &str,
    body: &serde_json::Value,
    why: &ApiError,
) -> Option<u32> {
    let attempt = body
        .get("attempt")
        .and_then(|a| a.as_u64())
        .and_then(|a| u32::try_from(a).ok())
        .filter(|&a| a >= 1)?;
    let outcome = Outcome {
        worker: worker.to_string(),
        attempt,
        state: JobState::Error,
        exit_code: body
            .get("exit_code")
            .and_then(|c| c.as_i64())
            .and_then(|c| i32::try_from(c).ok()),
        duration_ms: 0,
        started_at: String::new(),
        finished_at: String::new(),
        reason: Some(format!("the worker's result was refused: {why}")),
        infrastructure: false,
        tests: None,
        data: Extra::new(),
    };
    match st.db(move |s| s.finish(id, &outcome, now_ms())).await {
        Ok(job) => {
            tracing::warn!(
                job = id,
                attempt,
                "result refused, job ended as error: {why}"
            );
            st.job_changed();
            let _ = job;
            Some(attempt)
        }
        Err(e) => {
            tracing::debug!(job = id, attempt, "a refused result ended nothing: {e}");
            None
        }
    }
}

/// Says in the claim's answer what became of the result sent with it. A
/// worker that gets no such header is talking to a server that does not
/// know results with claims, and sends the result on its own.
pub(super) fn with_result_answer(mut resp: Response, answer: &Option<String>) -> Response {
    if let Some(msg) = answer {
        // Only visible ASCII goes in a header.
        let clean: String = msg
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        if let Ok(v) = axum::http::HeaderValue::from_str(&clean) {
            resp.headers_mut().insert(crate::wire::RESULT_HEADER, v);
        }
    }
    resp
}

pub(super) async fn append_log(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
    Query(q): Query<LogQuery>,
    Raw(bytes): Raw,
) -> ApiResult<Json<LogReply>> {
    check_log_query(&q)?;
    let mut q = q;
    q.worker = acting_worker(&st, &caller, id, &q.worker).await?;
    if bytes.len() > LOG_CHUNK_MAX {
        return Err(ApiError::TooLarge(format!(
            "a log chunk may hold at most {LOG_CHUNK_MAX} bytes, this one has {}",
            bytes.len()
        )));
    }
    let reply = st
        .db(move |s| s.append_log(id, &q, &bytes, now_ms()))
        .await?;
    st.wake_followers();
    Ok(Json(reply))
}

pub(super) async fn finish(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
    Body(body): Body<serde_json::Value>,
) -> ApiResult<Json<Job>> {
    let named = body
        .get("worker")
        .and_then(|w| w.as_str())
        .unwrap_or_default()
        .to_string();
    let checked = parse_outcome(body.clone()).and_then(|mut o| {
        check_result(&mut o)?;
        Ok(o)
    });
    match checked {
        Ok(mut outcome) => {
            outcome.worker = acting_worker(&st, &caller, id, &named).await?;
            record_result(&st, id, outcome).await.map(Json)
        }
        Err(e) => {
            // Refused whatever comes of it; it ends a running attempt only
            // when the caller holds it.
            let mut ended = None;
            if let Ok(worker) = acting_worker(&st, &caller, id, &named).await {
                ended = end_refused(&st, id, &worker, &body, &e).await;
            }
            match (e, ended) {
                // Said, so a client does not take the attempt to be still
                // open for a corrected result.
                (ApiError::BadRequest(m), Some(attempt)) => Err(ApiError::bad(format!(
                    "{m}; attempt {attempt} of job {id} was ended as error with this for its \
                     reason (a result the server cannot take would otherwise wait for its \
                     lease)"
                ))),
                (e, _) => Err(e),
            }
        }
    }
}

/// The fields of a result the server reads; any other a client sends is
/// kept with the result, among its `data`.
const OUTCOME_FIELDS: &[&str] = &[
    "worker",
    "attempt",
    "state",
    "passed",
    "exit_code",
    "duration_ms",
    "started_at",
    "finished_at",
    "reason",
    "infrastructure",
    "retry",
    "tests",
    "data",
];

/// Reads a result; it may say `passed` or give `exit_code` instead of
/// `state`. Errors name the field.
pub(super) fn parse_outcome(mut body: serde_json::Value) -> ApiResult<Outcome> {
    whole_numbers(&mut body);
    if let Some(obj) = body.as_object_mut() {
        let names: Vec<String> = obj
            .keys()
            .filter(|k| !OUTCOME_FIELDS.contains(&k.as_str()))
            .cloned()
            .collect();
        let unknown: serde_json::Map<String, serde_json::Value> =
            names.iter().filter_map(|k| obj.remove_entry(k)).collect();
        if !unknown.is_empty() {
            // Beside the data's own fields, which win; `data` that is not
            // an object is refused below whatever it had beside it.
            match obj.entry("data").or_insert(serde_json::Value::Null) {
                d @ serde_json::Value::Null => *d = serde_json::Value::Object(unknown),
                serde_json::Value::Object(d) => {
                    for (k, v) in unknown {
                        d.entry(k).or_insert(v);
                    }
                }
                _ => {}
            }
        }
        if !obj.contains_key("state") {
            let passed = match (obj.get("passed"), obj.get("exit_code")) {
                (Some(serde_json::Value::Bool(p)), _) => Some(*p),
                (_, Some(code)) if code.is_i64() => Some(code.as_i64() == Some(0)),
                _ => None,
            };
            let Some(passed) = passed else {
                return Err(ApiError::bad(
                    "a result needs a state (or passed, or exit_code)",
                ));
            };
            obj.insert(
                "state".into(),
                if passed { "passed" } else { "failed" }.into(),
            );
        }
    }
    serde_path_to_error::deserialize(body)
        .map_err(|e| ApiError::bad(format!("invalid result: {}: {}", e.path(), e.inner())))
}

/// Records a job's outcome (from `/result` or sent with a claim).
pub(super) async fn record_result(st: &AppState, id: i64, outcome: Outcome) -> ApiResult<Job> {
    let ran = Recorded::of(&outcome);
    let job = st
        .db_short_if(is_small(&outcome), move |s| {
            s.finish(id, &outcome, now_ms())
        })
        .await?;
    ran.after(st, &job);
    Ok(job)
}

/// An outcome with no result file and a short test report is recorded in
/// a fraction of a millisecond (see [`AppState::db_quick`]); a long report
/// (each test's duration goes to the history) or a result file is not.
fn is_small(o: &Outcome) -> bool {
    o.data.is_empty()
        && o.tests
            .as_ref()
            .is_none_or(|t| t.failures.len() + t.durations.len() + t.skipped_tests.len() <= 64)
}

/// What is noted once an outcome is recorded.
pub(super) struct Recorded {
    ran: f64,
    stopped: bool,
}

impl Recorded {
    fn of(outcome: &Outcome) -> Recorded {
        Recorded {
            ran: outcome.duration_ms as f64 / 1000.0,
            stopped: outcome.infrastructure || outcome.state == JobState::Canceled,
        }
    }

    fn after(&self, st: &AppState, job: &Job) {
        if !self.stopped {
            st.metrics.observe_duration(&job.jobtype, self.ran);
        }
        tracing::info!(job = job.id, attempt = job.attempt, state = %job.state, "result recorded");
        if job.state == JobState::Queued {
            st.wake_claims();
        }
        st.job_changed();
    }
}
