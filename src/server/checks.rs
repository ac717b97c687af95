//! What the API accepts: the limits on every request and the checks that
//! enforce them, each refusal a 400 naming the field.
//!
//! Every number that crosses the wire has a range here (and in the OpenAPI
//! document), so nothing a client sends can wrap when it is stored or
//! turned into a time; every free-form JSON value is bounded in size and
//! depth, so whatever the server stores every client can read back.

use super::error::{ApiError, ApiResult};
use crate::wire::*;

/// Limits on what one request may carry, so no client can make the
/// server store or send without bound.
pub mod limits {
    pub const PARAMS: usize = 200;
    pub const KEY_LEN: usize = 128;
    pub const PARAM_VALUE_LEN: usize = 64 << 10;
    /// A result's reason, in characters; a longer one is cut.
    pub const REASON_LEN: usize = 64 << 10;
    /// One environment variable holds at most 128 KiB on Linux.
    pub const PARAM_VALUE_BYTES: usize = 120 << 10;
    /// All params of a job together, as environment variables: well inside
    /// what `exec` takes (2 MiB with the default stack limit), with room for
    /// the worker's own variables.
    pub const PARAMS_BYTES: usize = 512 << 10;
    pub const REQUIREMENTS: usize = 64;
    pub const PROPERTY_VALUE_LEN: usize = 256;
    pub const META_BYTES: usize = 64 << 10;
    pub const EXTRA_BYTES: usize = 64 << 10;
    pub const JOBS_PER_REQUEST: usize = 10_000;
    pub const PLATFORMS: usize = 32;
    pub const JOBTYPES: usize = 256;
    pub const INFO_BYTES: usize = 64 << 10;
    pub const RESULT_BYTES: usize = 4 << 20;
    pub const ATTEMPTS: u32 = 100;
    pub const SHARDS: u32 = 1000;
    /// How deeply free-form JSON (`meta`, `info`, result `data`, unknown
    /// fields) may nest: a summary wraps it a few levels deeper still, and
    /// every client (serde_json stops at 128) must read it back.
    pub const JSON_DEPTH: usize = 32;
    /// `priority` is at most this far from 0.
    pub const PRIORITY: i64 = 1_000_000_000;
    pub const SLOTS: u32 = 1024;
    pub const MIN_HEARTBEAT_MS: u64 = 100;
    pub const MAX_HEARTBEAT_MS: u64 = 86_400_000;
    /// The longest a claim or a heartbeat is held open; a longer `wait` is
    /// clamped to it.
    pub const MAX_WAIT_S: f64 = 60.0;
    /// Ids, offsets, sizes and durations: JSON-safe and within `i64`.
    pub const MAX_INT: u64 = crate::wire::MAX_SAFE_INTEGER;
}

/// Lengths are counted in characters, as JSON Schema's `maxLength` does.
fn chars(s: &str) -> usize {
    s.chars().count()
}

fn too_big(field: &str, what: String) -> ApiError {
    ApiError::bad(format!("{field}: {what}"))
}

/// At most `max` of something: `field: N things, at most MAX`.
fn at_most(field: &str, n: usize, max: usize, things: &str) -> ApiResult<()> {
    if n > max {
        return Err(too_big(field, format!("{n} {things}, at most {max}")));
    }
    Ok(())
}

/// Text a list is filtered by: no NUL (PostgreSQL text cannot hold one),
/// at most 1,000 characters (as the OpenAPI document's maxLength counts).
pub fn check_filter(what: &str, text: &str) -> ApiResult<()> {
    if chars(text) > 1000 {
        return Err(ApiError::bad(format!(
            "{what}: at most 1000 characters, got {}",
            chars(text)
        )));
    }
    if text.contains('\0') {
        return Err(ApiError::bad(format!(
            "{what}: must not contain a NUL character"
        )));
    }
    Ok(())
}

/// Names of workers, jobtypes and platform properties: letters, digits and
/// `._-`, so they are safe in paths, environment names and pages.
pub fn check_name(what: &str, name: &str) -> ApiResult<()> {
    if name.is_empty() || name.len() > 128 {
        return Err(ApiError::bad(format!(
            "{what} must be 1 to 128 characters, got {}",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(ApiError::bad(format!(
            "{what} {name:?} has the character {c:?}; use letters, digits, '.', '_' and '-'"
        )));
    }
    // `.` and `..` are path steps, not names: a page at /workers/.. is
    // another page.
    if name.chars().all(|c| c == '.') {
        return Err(ApiError::bad(format!(
            "{what} {name:?} is only dots; use a letter or digit too"
        )));
    }
    Ok(())
}

/// How deeply a JSON value nests: a scalar is 0, `{}` and `[]` are 1.
pub fn json_depth(v: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &serde_json::Value>> = match v {
            serde_json::Value::Array(a) => Box::new(a.iter()),
            serde_json::Value::Object(o) => Box::new(o.values()),
            _ => {
                deepest = deepest.max(d);
                continue;
            }
        };
        deepest = deepest.max(d + 1);
        stack.extend(children.map(|c| (c, d + 1)));
    }
    deepest
}

/// A free-form JSON object a client sends and the server keeps: at most
/// `max` bytes and [`limits::JSON_DEPTH`] levels.
pub fn check_json(field: &str, value: &Extra, max: usize) -> ApiResult<()> {
    check_json_size(field, value, max)?;
    let depth = 1 + value.values().map(json_depth).max().unwrap_or(0);
    if depth > limits::JSON_DEPTH {
        return Err(too_big(
            field,
            format!("nested {depth} levels deep, at most {}", limits::JSON_DEPTH),
        ));
    }
    Ok(())
}

pub fn check_json_size(field: &str, value: &impl serde::Serialize, max: usize) -> ApiResult<()> {
    let n = serde_json::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if n > max {
        return Err(too_big(
            field,
            format!("{n} bytes is over the limit of {max}"),
        ));
    }
    Ok(())
}

/// A number within `lo..=hi`, or a 400 naming the field and the range.
pub fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    value: T,
    lo: T,
    hi: T,
) -> ApiResult<()> {
    if value < lo || value > hi {
        return Err(ApiError::bad(format!(
            "{field} must be {lo} to {hi}, not {value}"
        )));
    }
    Ok(())
}

/// A `wait` in seconds: finite and not negative; over the maximum it is
/// clamped (documented so).
pub fn check_wait(field: &str, wait: f64) -> ApiResult<f64> {
    if !wait.is_finite() || wait < 0.0 {
        return Err(ApiError::bad(format!(
            "{field} must be a number of seconds, 0 or more"
        )));
    }
    Ok(wait.min(limits::MAX_WAIT_S))
}

pub fn check_props(field: &str, props: &Props, max: usize) -> ApiResult<()> {
    at_most(field, props.len(), max, "entries")?;
    for (k, v) in props {
        if k.is_empty() || chars(k) > limits::KEY_LEN {
            return Err(too_big(
                field,
                format!("key {k:?} must be 1 to {} characters", limits::KEY_LEN),
            ));
        }
        if chars(v) > limits::PROPERTY_VALUE_LEN {
            return Err(too_big(
                field,
                format!(
                    "the value of {k:?} is over {} characters",
                    limits::PROPERTY_VALUE_LEN
                ),
            ));
        }
    }
    Ok(())
}

fn check_params(params: &Props) -> ApiResult<()> {
    // Two params that reach the command as one environment variable: one
    // would silently hide the other.
    let mut seen: std::collections::BTreeMap<String, &str> = Default::default();
    for k in params.keys() {
        if let Some(other) = seen.insert(param_env_name(k), k) {
            return Err(ApiError::bad(format!(
                "params: {other:?} and {k:?} both reach the command as {}; rename one",
                param_env_name(k)
            )));
        }
    }
    at_most("params", params.len(), limits::PARAMS, "params")?;
    for (k, v) in params {
        if k.is_empty() || chars(k) > limits::KEY_LEN {
            return Err(too_big(
                "params",
                format!("key {k:?} must be 1 to {} characters", limits::KEY_LEN),
            ));
        }
        if chars(v) > limits::PARAM_VALUE_LEN || v.len() > limits::PARAM_VALUE_BYTES {
            return Err(too_big(
                "params",
                format!(
                    "the value of {k:?} is over {} characters ({} bytes): an environment \
                     variable holds no more",
                    limits::PARAM_VALUE_LEN,
                    limits::PARAM_VALUE_BYTES
                ),
            ));
        }
        // Params reach the command as environment variables, which end at
        // a NUL: the command could not be started at all.
        if k.contains('\0') || v.contains('\0') {
            return Err(ApiError::bad(format!(
                "params: {k:?} holds a NUL character, which an environment variable cannot"
            )));
        }
    }
    let total: usize = params.iter().map(|(k, v)| k.len() + v.len() + 16).sum();
    if total > limits::PARAMS_BYTES {
        return Err(too_big(
            "params",
            format!(
                "{total} bytes together, at most {} (they reach the command as its \
                 environment, which the system caps)",
                limits::PARAMS_BYTES
            ),
        ));
    }
    Ok(())
}

/// Fields of the answers the server sets itself: a client's unknown field
/// of the same name would be returned beside the server's, twice.
const JOB_FIELDS: &[&str] = &[
    "id",
    "state",
    "requirements",
    "attempt",
    "worker",
    "platform_index",
    "matched_platform",
    "shard_tests",
    "reruns",
    "flaky",
    "flaky_tests",
    "created_at",
    "started_at",
    "finished_at",
    "cancel_requested",
    "reason",
    "result",
    "info",
    "warning",
    "attempts",
];
const BUILD_FIELDS: &[&str] = &["id", "state", "created_at", "counts", "flaky"];
const WORKER_FIELDS: &[&str] = &[
    "status",
    "drained",
    "quarantined_until",
    "infra_failures",
    "registered_at",
    "last_seen",
    "jobs",
];

/// Unknown fields are kept, except those the server itself sets.
fn check_reserved(reserved: &[&str], extra: &Extra) -> ApiResult<()> {
    match extra.keys().find(|k| reserved.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad(format!(
            "{k}: set by the server, not by a client"
        ))),
        None => Ok(()),
    }
}

pub fn check_spec(spec: &JobSpec) -> ApiResult<()> {
    check_name("jobtype", &spec.jobtype)?;
    check_reserved(JOB_FIELDS, &spec.extra)?;
    check_props("platform", &spec.platform, limits::REQUIREMENTS)?;
    crate::matching::validate(&spec.platform).map_err(ApiError::BadRequest)?;
    check_params(&spec.params)?;
    check_json("extra fields", &spec.extra, limits::EXTRA_BYTES)?;
    check_range(
        "priority",
        spec.priority,
        -limits::PRIORITY,
        limits::PRIORITY,
    )?;
    if let Some(n) = spec.max_attempts {
        check_range("max_attempts", n, 1, limits::ATTEMPTS)?;
    }
    if let Some(n) = spec.retry_failed {
        check_range("retry_failed", n, 0, limits::ATTEMPTS)?;
    }
    if let Some(n) = spec.shard_total {
        check_range("shard_total", n, 1, limits::SHARDS)?;
    }
    if spec.shard_index.is_some() != spec.shard_total.is_some() {
        return Err(ApiError::bad("shard_index and shard_total go together"));
    }
    if let (Some(i), Some(n)) = (spec.shard_index, spec.shard_total) {
        if i >= n {
            return Err(ApiError::bad(format!(
                "shard_index {i} must be below shard_total {n}"
            )));
        }
    }
    if let Some(BuildRef::Id(id)) = spec.build {
        check_id("build", id)?;
    }
    if let Some(BuildRef::Name(name)) = &spec.build {
        check_build_name("build", name)?;
    }
    Ok(())
}

pub fn check_build_name(field: &str, name: &str) -> ApiResult<()> {
    if name.trim().is_empty() || chars(name) > 200 {
        return Err(ApiError::bad(format!(
            "{field}: a build needs a name of 1 to 200 characters"
        )));
    }
    Ok(())
}

/// Ids are positive and JSON-safe.
pub fn check_id(field: &str, id: i64) -> ApiResult<()> {
    check_range(field, id, 1, limits::MAX_INT as i64)
}

pub fn check_build(spec: &BuildSpec) -> ApiResult<()> {
    check_build_name("name", &spec.name)?;
    if spec.jobs.is_empty() {
        return Err(ApiError::bad("jobs: a build needs at least one job"));
    }
    check_jobs_count(spec.jobs.len())?;
    check_json("meta", &spec.meta, limits::META_BYTES)?;
    check_json("extra fields", &spec.extra, limits::EXTRA_BYTES)?;
    check_reserved(BUILD_FIELDS, &spec.extra)?;
    for job in &spec.jobs {
        check_spec(job)?;
    }
    Ok(())
}

pub fn check_jobs_count(n: usize) -> ApiResult<()> {
    at_most("jobs", n, limits::JOBS_PER_REQUEST, "jobs in one request")
}

pub fn check_registration(reg: &Registration) -> ApiResult<()> {
    check_name("name", &reg.name)?;
    at_most("jobtypes", reg.jobtypes.len(), limits::JOBTYPES, "jobtypes")?;
    for t in &reg.jobtypes {
        check_name("jobtypes", t)?;
    }
    at_most(
        "platforms",
        reg.platforms.len(),
        limits::PLATFORMS,
        "platforms",
    )?;
    for p in &reg.platforms {
        check_props("platforms", p, limits::REQUIREMENTS)?;
    }
    check_json("info", &reg.info, limits::INFO_BYTES)?;
    check_json("extra fields", &reg.extra, limits::EXTRA_BYTES)?;
    check_reserved(WORKER_FIELDS, &reg.extra)?;
    at_most("accept", reg.accept.len(), limits::REQUIREMENTS, "rules")?;
    for rule in &reg.accept {
        if chars(rule) > limits::KEY_LEN + limits::PROPERTY_VALUE_LEN + 1 {
            return Err(too_big(
                "accept",
                format!(
                    "rule of {} characters, at most {}",
                    chars(rule),
                    limits::KEY_LEN + limits::PROPERTY_VALUE_LEN + 1
                ),
            ));
        }
        if rule
            .split_once('=')
            .is_none_or(|(k, v)| k.is_empty() || v.is_empty())
        {
            return Err(ApiError::bad(format!(
                "accept: rule {rule:?} must be KEY=VALUE"
            )));
        }
    }
    check_range("slots", reg.slots, 1, limits::SLOTS)?;
    check_range(
        "heartbeat_interval_ms",
        reg.heartbeat_interval_ms,
        limits::MIN_HEARTBEAT_MS,
        limits::MAX_HEARTBEAT_MS,
    )?;
    if let Some(i) = &reg.instance {
        if i.is_empty() || chars(i) > 128 {
            return Err(ApiError::bad("instance must be 1 to 128 characters"));
        }
    }
    if chars(&reg.host) > 255 {
        return Err(ApiError::bad("host must be at most 255 characters"));
    }
    if chars(&reg.version) > 128 {
        return Err(ApiError::bad("version must be at most 128 characters"));
    }
    check_running("running", &reg.running)
}

/// The jobs a worker says it runs (registration, heartbeat).
pub fn check_running(field: &str, jobs: &[RunningJob]) -> ApiResult<()> {
    for j in jobs {
        check_id(&format!("{field}[].id"), j.id)?;
        check_range(&format!("{field}[].attempt"), j.attempt, 1, u32::MAX)?;
        if let Some(serde_json::Value::Object(info)) = &j.info {
            check_json(&format!("{field}[].info"), info, limits::INFO_BYTES)?;
        } else if let Some(v) = &j.info {
            if json_depth(v) > limits::JSON_DEPTH {
                return Err(ApiError::bad(format!(
                    "{field}[].info: nested too deep, at most {} levels",
                    limits::JSON_DEPTH
                )));
            }
        }
    }
    Ok(())
}

/// The worker statuses a heartbeat may report.
pub const HEARTBEAT_STATUSES: [&str; 4] = ["idle", "busy", "draining", "stopped"];

pub fn check_heartbeat(hb: &Heartbeat) -> ApiResult<f64> {
    if !HEARTBEAT_STATUSES.contains(&hb.status.as_str()) {
        return Err(ApiError::bad(format!(
            "status must be idle, busy, draining or stopped, not {:?}",
            hb.status
        )));
    }
    check_json("info", &hb.info, limits::INFO_BYTES)?;
    check_json_size("jobs", &hb.jobs, limits::INFO_BYTES * 16)?;
    check_running("jobs", &hb.jobs)?;
    check_wait("wait", hb.wait)
}

pub fn check_log_query(q: &LogQuery) -> ApiResult<()> {
    check_range("attempt", q.attempt, 1, u32::MAX)?;
    if let Some(o) = q.offset {
        check_range("offset", o, 0, limits::MAX_INT)?;
    }
    Ok(())
}

/// Checks a result, first trimming what is too big (a result is never
/// refused for its size; it says what was trimmed).
pub fn check_result(outcome: &mut Outcome) -> ApiResult<()> {
    outcome.trim_to(limits::RESULT_BYTES);
    check_range("attempt", outcome.attempt, 1, u32::MAX)?;
    check_range("duration_ms", outcome.duration_ms, 0, limits::MAX_INT)?;
    // Times that are not RFC 3339 are the server's own (when it got the
    // result, when the attempt began), with a note of what was sent.
    for (field, value) in [
        ("started_at", &mut outcome.started_at),
        ("finished_at", &mut outcome.finished_at),
    ] {
        if !value.is_empty() && crate::time::parse_rfc3339(value).is_none() {
            let sent = std::mem::take(value);
            let mut note: String = sent.chars().take(64).collect();
            if note.len() < sent.len() {
                note.push('…');
            }
            outcome.data.insert(
                format!("{field}_error"),
                format!("{note:?} is not an RFC 3339 time; the server's is used").into(),
            );
        }
    }
    // A result is never refused for what its command printed or left: a
    // long reason is cut, data nested too deep is dropped, each with a note.
    if let Some(r) = &mut outcome.reason {
        let n = chars(r);
        if n > limits::REASON_LEN {
            let cut: String = r.chars().take(limits::REASON_LEN - 100).collect();
            *r = format!("{cut}… (cut: {n} characters in all)");
        }
    }
    let depth = outcome
        .data
        .values()
        .map(|v| json_depth(v) + 1)
        .max()
        .unwrap_or(0);
    if depth > limits::JSON_DEPTH {
        outcome.data = serde_json::Map::from_iter([(
            "data_error".to_string(),
            serde_json::Value::from(format!(
                "the result's data nested {depth} levels deep, at most {}; dropped",
                limits::JSON_DEPTH
            )),
        )]);
    }
    check_json("data", &outcome.data, limits::RESULT_BYTES)?;
    if let Some(t) = &outcome.tests {
        check_json_size("tests", t, limits::RESULT_BYTES)?;
        for (field, n) in [
            ("tests.total", t.total),
            ("tests.passed", t.passed),
            ("tests.failed", t.failed),
            ("tests.errors", t.errors),
            ("tests.skipped", t.skipped),
        ] {
            check_range(field, n, 0, limits::MAX_INT)?;
        }
        if let Some((name, ms)) = t.durations.iter().find(|(_, ms)| **ms > limits::MAX_INT) {
            return Err(ApiError::bad(format!(
                "tests.durations[{name:?}] must be 0 to {}, not {ms}",
                limits::MAX_INT
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn depth_counts_containers() {
        assert_eq!(json_depth(&json!(1)), 0);
        assert_eq!(json_depth(&json!({})), 1);
        assert_eq!(json_depth(&json!({"a": [1, {"b": []}]})), 4);
    }

    fn nested(levels: usize) -> serde_json::Value {
        (0..levels).fold(json!(1), |v, _| json!({ "x": v }))
    }

    #[test]
    fn free_json_deeper_than_the_limit_is_refused_naming_the_field() {
        let ok: Extra = nested(limits::JSON_DEPTH).as_object().unwrap().clone();
        check_json("meta", &ok, 1 << 20).unwrap();
        let deep: Extra = nested(limits::JSON_DEPTH + 1).as_object().unwrap().clone();
        let e = check_json("meta", &deep, 1 << 20).unwrap_err().to_string();
        assert!(e.starts_with("meta:") && e.contains("33 levels"), "{e}");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn extreme_u64() -> impl Strategy<Value = u64> {
            prop_oneof![
                Just(0u64),
                Just(1),
                Just(limits::MAX_INT),
                Just(limits::MAX_INT + 1),
                Just(i64::MAX as u64),
                Just(i64::MAX as u64 + 1),
                Just(u64::MAX),
                any::<u64>(),
            ]
        }

        fn extreme_i64() -> impl Strategy<Value = i64> {
            prop_oneof![
                Just(i64::MIN),
                Just(-1i64),
                Just(0),
                Just(1),
                Just(limits::PRIORITY),
                Just(limits::PRIORITY + 1),
                Just(i64::MAX),
                any::<i64>(),
            ]
        }

        proptest! {
            /// Whatever a number is, a request is refused (naming the
            /// field) or accepted with a value that fits where it goes.
            #[test]
            fn registration_numbers_never_wrap(slots in any::<u32>(), hb in extreme_u64()) {
                let reg: Registration = serde_json::from_value(json!({
                    "name": "w", "slots": slots, "heartbeat_interval_ms": hb
                })).unwrap();
                match check_registration(&reg) {
                    Ok(()) => {
                        prop_assert!((1..=limits::SLOTS).contains(&slots));
                        let lease = crate::server::store::lease_ms(hb);
                        prop_assert!(lease >= hb && lease <= i64::MAX as u64);
                    }
                    Err(e) => {
                        let e = e.to_string();
                        prop_assert!(e.starts_with("slots") || e.starts_with("heartbeat_interval_ms"), "{}", e);
                    }
                }
            }

            #[test]
            fn job_numbers_never_wrap(
                priority in extreme_i64(),
                timeout in extreme_u64(),
                attempts in any::<u32>(),
                build in extreme_i64(),
            ) {
                let body = json!({
                    "jobtype": "unit", "priority": priority, "timeout": timeout,
                    "max_attempts": attempts, "build": build,
                });
                let Ok(spec) = serde_json::from_value::<JobSpec>(body) else {
                    // Refused while reading: only an out-of-range timeout.
                    prop_assert!(timeout == 0 || timeout > MAX_TIMEOUT.as_secs());
                    return Ok(());
                };
                let t = spec.timeout.unwrap();
                prop_assert_eq!(t.as_secs(), timeout);
                prop_assert!(i64::try_from(t.as_millis()).is_ok());
                match check_spec(&spec) {
                    Ok(()) => {
                        prop_assert!(priority.abs() <= limits::PRIORITY);
                        prop_assert!((1..=limits::ATTEMPTS).contains(&attempts));
                        prop_assert!(build >= 1 && build as u64 <= limits::MAX_INT);
                    }
                    Err(e) => {
                        let e = e.to_string();
                        prop_assert!(
                            ["priority", "max_attempts", "build"].iter().any(|f| e.starts_with(f)),
                            "{}", e
                        );
                    }
                }
            }

            #[test]
            fn result_and_log_numbers_never_wrap(
                attempt in any::<u32>(),
                duration in extreme_u64(),
                offset in extreme_u64(),
                total in extreme_u64(),
            ) {
                let mut outcome: Outcome = serde_json::from_value(json!({
                    "attempt": attempt, "state": "passed", "duration_ms": duration,
                    "tests": {"total": total, "passed": 0, "failed": 0, "errors": 0,
                              "skipped": 0, "failures": [], "durations": {"t": duration}},
                })).unwrap();
                if check_result(&mut outcome).is_ok() {
                    prop_assert!(attempt >= 1);
                    prop_assert!(i64::try_from(duration).is_ok() && duration <= limits::MAX_INT);
                    prop_assert!(total <= limits::MAX_INT);
                }
                let q = LogQuery { worker: String::new(), attempt, offset: Some(offset) };
                if check_log_query(&q).is_ok() {
                    // The next offset, offset + a chunk, stays an i64.
                    prop_assert!(offset.checked_add(8 << 20).is_some_and(|n| i64::try_from(n).is_ok()));
                }
            }

            #[test]
            fn waits_are_finite_and_clamped(wait in any::<f64>()) {
                match check_wait("wait", wait) {
                    Ok(w) => prop_assert!((0.0..=limits::MAX_WAIT_S).contains(&w)),
                    Err(_) => prop_assert!(!wait.is_finite() || wait < 0.0),
                }
            }
        }
    }
}
