//! The PostgreSQL schema: the same tables and columns as the SQLite one
//! (integers are BIGINT, flags 0/1 BIGINT, JSON TEXT), as migrations run in
//! order under an advisory lock; `testbot_schema` says how many have run.
//! Never edit one that has shipped: add the next.

pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE workers (
    name              TEXT PRIMARY KEY,
    jobtypes          TEXT NOT NULL,
    platforms         TEXT NOT NULL,
    info              TEXT NOT NULL DEFAULT '{}',
    extra             TEXT NOT NULL DEFAULT '{}',
    slots             BIGINT NOT NULL,
    heartbeat_ms      BIGINT NOT NULL,
    lease_ms          BIGINT NOT NULL,
    version           TEXT NOT NULL DEFAULT '',
    status            TEXT NOT NULL DEFAULT 'idle',
    registered_at     BIGINT NOT NULL,
    last_seen         BIGINT NOT NULL,
    accept            TEXT NOT NULL DEFAULT '[]',
    drained           BIGINT NOT NULL DEFAULT 0,
    infra_streak      BIGINT NOT NULL DEFAULT 0,
    quarantines       BIGINT NOT NULL DEFAULT 0,
    quarantined_until BIGINT,
    token_hash        TEXT,
    instance          TEXT,
    host              TEXT NOT NULL DEFAULT '',
    last_strike_at    BIGINT
);
CREATE TABLE builds (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL,
    meta       TEXT NOT NULL,
    extra      TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE jobs (
    id               BIGSERIAL PRIMARY KEY,
    jobtype          TEXT NOT NULL,
    state            TEXT NOT NULL,
    priority         BIGINT NOT NULL,
    platform         TEXT NOT NULL,
    params           TEXT NOT NULL,
    timeout_ms       BIGINT,
    max_attempts     BIGINT NOT NULL,
    attempt          BIGINT NOT NULL DEFAULT 0,
    worker           TEXT,
    platform_index   BIGINT,
    matched_platform TEXT,
    build_id         BIGINT REFERENCES builds(id),
    shard_index      BIGINT,
    shard_total      BIGINT,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    lease_expires    BIGINT,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    reason           TEXT,
    result           TEXT,
    info             TEXT,
    extra            TEXT NOT NULL DEFAULT '{}',
    retry_failed     BIGINT NOT NULL DEFAULT 0,
    reruns           BIGINT NOT NULL DEFAULT 0,
    failed_before    TEXT,
    flaky_tests      TEXT,
    shard_tests      TEXT,
    avoid_worker     TEXT,
    avoid_until      BIGINT,
    claim_slot       BIGINT,
    claim_seq        BIGINT
);
CREATE INDEX jobs_queue ON jobs(state, jobtype, priority DESC, id);
CREATE INDEX jobs_build ON jobs(build_id);
CREATE INDEX jobs_worker ON jobs(worker, state);
CREATE INDEX jobs_lease ON jobs(state, lease_expires);
CREATE TABLE attempts (
    job_id         BIGINT NOT NULL,
    attempt        BIGINT NOT NULL,
    worker         TEXT NOT NULL,
    platform_index BIGINT,
    started_at     BIGINT NOT NULL,
    finished_at    BIGINT,
    state          TEXT,
    reason         TEXT,
    log_size       BIGINT NOT NULL DEFAULT 0,
    log_stored     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, attempt)
);
CREATE TABLE log_chunks (
    job_id  BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    pos     BIGINT NOT NULL,
    data    BYTEA NOT NULL,
    PRIMARY KEY (job_id, attempt, pos)
);
CREATE TABLE test_durations (
    jobtype     TEXT NOT NULL,
    test        TEXT NOT NULL,
    duration_ms BIGINT,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (jobtype, test)
);
"#,
    // The test queue, build-level test results and test history.
    r#"
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE test_queues (
    id           BIGINT PRIMARY KEY,
    jobtype      TEXT NOT NULL,
    build_id     BIGINT,
    shards       BIGINT NOT NULL,
    retry_failed BIGINT NOT NULL,
    repro        TEXT,
    created_at   BIGINT NOT NULL,
    pending_n    BIGINT NOT NULL DEFAULT 0,
    pending_ms   BIGINT NOT NULL DEFAULT 0,
    lists        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX test_queues_build ON test_queues(build_id);
CREATE TABLE queue_tests (
    queue_id    BIGINT NOT NULL,
    test        TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    est_ms      BIGINT NOT NULL,
    est_known   BIGINT NOT NULL DEFAULT 0,
    state       TEXT NOT NULL,
    job_id      BIGINT,
    attempt     BIGINT,
    avoid_job   BIGINT,
    runs        BIGINT NOT NULL DEFAULT 0,
    failures    BIGINT NOT NULL DEFAULT 0,
    outcome     TEXT,
    duration_ms BIGINT,
    message     TEXT,
    flaky       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (queue_id, test)
);
CREATE INDEX queue_tests_order ON queue_tests(queue_id, state, est_ms DESC, seq);
CREATE INDEX queue_tests_avoid ON queue_tests(queue_id, avoid_job);
CREATE TABLE test_runs (
    queue_id    BIGINT NOT NULL,
    test        TEXT NOT NULL,
    run         BIGINT NOT NULL,
    job_id      BIGINT NOT NULL,
    attempt     BIGINT NOT NULL,
    worker      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    message     TEXT,
    at          BIGINT NOT NULL,
    PRIMARY KEY (queue_id, test, run)
);
CREATE INDEX test_runs_job ON test_runs(job_id, attempt);
CREATE TABLE test_history (
    jobtype   TEXT NOT NULL,
    test      TEXT NOT NULL,
    avg_ms    BIGINT,
    runs      BIGINT NOT NULL DEFAULT 0,
    failures  BIGINT NOT NULL DEFAULT 0,
    flaky     BIGINT NOT NULL DEFAULT 0,
    recent    TEXT NOT NULL DEFAULT '',
    last_seen BIGINT NOT NULL,
    PRIMARY KEY (jobtype, test)
);
CREATE INDEX test_history_seen ON test_history(last_seen);
INSERT INTO test_history (jobtype, test, avg_ms, last_seen)
    SELECT jobtype, test, duration_ms, updated_at FROM test_durations;
DROP TABLE test_durations;
ALTER TABLE jobs ADD COLUMN queue_id BIGINT;
CREATE INDEX jobs_test_queue ON jobs(queue_id);
ALTER TABLE attempts ADD COLUMN tests_listed BIGINT NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN tests_done BIGINT NOT NULL DEFAULT 0;
"#,
    // Artifacts: the metadata of the files jobs leave behind.
    r#"
CREATE TABLE artifacts (
    job_id     BIGINT NOT NULL,
    attempt    BIGINT NOT NULL,
    path       TEXT NOT NULL,
    size       BIGINT NOT NULL,
    sha256     TEXT NOT NULL,
    state      TEXT NOT NULL,
    received   BIGINT NOT NULL DEFAULT 0,
    note       TEXT,
    expires_at BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (job_id, attempt, path)
);
CREATE INDEX artifacts_sha ON artifacts(sha256);
CREATE INDEX artifacts_expiry ON artifacts(expires_at);
CREATE TABLE artifact_garbage (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
"#,
    // A worker's history on its page: its attempts, newest first.
    r#"
CREATE INDEX attempts_worker ON attempts(worker, started_at);
ALTER TABLE workers ADD COLUMN drained_at BIGINT;
"#,
    // When a shard took each test it holds: a shard with nothing left
    // stops waiting for tests held far past their estimates.
    r#"
ALTER TABLE queue_tests ADD COLUMN reserved_at BIGINT;
"#,
    // Submissions' idempotency keys, kept a day: a client that lost the
    // answer sends the same request again and gets the same jobs.
    r#"
CREATE TABLE submit_keys (
    key TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    build_id BIGINT,
    job_ids TEXT
);
CREATE INDEX submit_keys_age ON submit_keys(created_at);
"#,
];
