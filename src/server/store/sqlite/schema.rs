//! The SQLite schema, as the migrations that build it, in order. A
//! migration is never edited once released; a change is a new one.

/// Schema versions, applied in order; `PRAGMA user_version` says how many
/// have run. Never edit one that has shipped: add the next.
pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE workers (
    name          TEXT PRIMARY KEY,
    jobtypes      TEXT NOT NULL,
    platforms     TEXT NOT NULL,
    info          TEXT NOT NULL DEFAULT '{}',
    extra         TEXT NOT NULL DEFAULT '{}',
    slots         INTEGER NOT NULL,
    heartbeat_ms  INTEGER NOT NULL,
    lease_ms      INTEGER NOT NULL,
    version       TEXT NOT NULL DEFAULT '',
    status        TEXT NOT NULL DEFAULT 'idle',
    registered_at INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL
);
CREATE TABLE builds (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL,
    meta       TEXT NOT NULL,
    extra      TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    jobtype          TEXT NOT NULL,
    state            TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    platform         TEXT NOT NULL,
    params           TEXT NOT NULL,
    timeout_ms       INTEGER,
    max_attempts     INTEGER NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    worker           TEXT,
    platform_index   INTEGER,
    matched_platform TEXT,
    build_id         INTEGER REFERENCES builds(id),
    shard_index      INTEGER,
    shard_total      INTEGER,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    lease_expires    INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    reason           TEXT,
    result           TEXT,
    info             TEXT,
    extra            TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX jobs_queue ON jobs(state, jobtype, priority DESC, id);
CREATE INDEX jobs_build ON jobs(build_id);
CREATE INDEX jobs_worker ON jobs(worker, state);
CREATE TABLE attempts (
    job_id         INTEGER NOT NULL,
    attempt        INTEGER NOT NULL,
    worker         TEXT NOT NULL,
    platform_index INTEGER,
    started_at     INTEGER NOT NULL,
    finished_at    INTEGER,
    state          TEXT,
    reason         TEXT,
    log_size       INTEGER NOT NULL DEFAULT 0,
    log_stored     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, attempt)
);
CREATE TABLE log_chunks (
    job_id  INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    pos     INTEGER NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (job_id, attempt, pos)
);
"#,
    r#"
ALTER TABLE jobs ADD COLUMN retry_failed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN reruns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN failed_before TEXT;
ALTER TABLE jobs ADD COLUMN flaky_tests TEXT;
ALTER TABLE jobs ADD COLUMN shard_tests TEXT;
CREATE TABLE test_durations (
    jobtype     TEXT NOT NULL,
    test        TEXT NOT NULL,
    duration_ms INTEGER,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (jobtype, test)
);
"#,
    r#"
ALTER TABLE workers ADD COLUMN accept TEXT NOT NULL DEFAULT '[]';
ALTER TABLE workers ADD COLUMN drained INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN infra_streak INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN quarantines INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN quarantined_until INTEGER;
ALTER TABLE jobs ADD COLUMN avoid_worker TEXT;
ALTER TABLE jobs ADD COLUMN avoid_until INTEGER;
"#,
    r#"
ALTER TABLE workers ADD COLUMN token_hash TEXT;
ALTER TABLE workers ADD COLUMN instance TEXT;
ALTER TABLE workers ADD COLUMN host TEXT NOT NULL DEFAULT '';
ALTER TABLE workers ADD COLUMN last_strike_at INTEGER;
ALTER TABLE jobs ADD COLUMN claim_slot INTEGER;
ALTER TABLE jobs ADD COLUMN claim_seq INTEGER;
CREATE TABLE health_probe (id INTEGER PRIMARY KEY, at INTEGER NOT NULL);
"#,
    // The test queue, build-level test results and test history.
    r#"
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE test_queues (
    id           INTEGER PRIMARY KEY,
    jobtype      TEXT NOT NULL,
    build_id     INTEGER,
    shards       INTEGER NOT NULL,
    retry_failed INTEGER NOT NULL,
    repro        TEXT,
    created_at   INTEGER NOT NULL,
    pending_n    INTEGER NOT NULL DEFAULT 0,
    pending_ms   INTEGER NOT NULL DEFAULT 0,
    lists        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX test_queues_build ON test_queues(build_id);
CREATE TABLE queue_tests (
    queue_id    INTEGER NOT NULL,
    test        TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    est_ms      INTEGER NOT NULL,
    est_known   INTEGER NOT NULL DEFAULT 0,
    state       TEXT NOT NULL,
    job_id      INTEGER,
    attempt     INTEGER,
    avoid_job   INTEGER,
    runs        INTEGER NOT NULL DEFAULT 0,
    failures    INTEGER NOT NULL DEFAULT 0,
    outcome     TEXT,
    duration_ms INTEGER,
    message     TEXT,
    flaky       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (queue_id, test)
);
CREATE INDEX queue_tests_order ON queue_tests(queue_id, state, est_ms DESC, seq);
CREATE INDEX queue_tests_avoid ON queue_tests(queue_id, avoid_job);
CREATE TABLE test_runs (
    queue_id    INTEGER NOT NULL,
    test        TEXT NOT NULL,
    run         INTEGER NOT NULL,
    job_id      INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    worker      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    message     TEXT,
    at          INTEGER NOT NULL,
    PRIMARY KEY (queue_id, test, run)
);
CREATE INDEX test_runs_job ON test_runs(job_id, attempt);
CREATE TABLE test_history (
    jobtype   TEXT NOT NULL,
    test      TEXT NOT NULL,
    avg_ms    INTEGER,
    runs      INTEGER NOT NULL DEFAULT 0,
    failures  INTEGER NOT NULL DEFAULT 0,
    flaky     INTEGER NOT NULL DEFAULT 0,
    recent    TEXT NOT NULL DEFAULT '',
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (jobtype, test)
);
CREATE INDEX test_history_seen ON test_history(last_seen);
INSERT INTO test_history (jobtype, test, avg_ms, last_seen)
    SELECT jobtype, test, duration_ms, updated_at FROM test_durations;
DROP TABLE test_durations;
ALTER TABLE jobs ADD COLUMN queue_id INTEGER;
CREATE INDEX jobs_test_queue ON jobs(queue_id);
ALTER TABLE attempts ADD COLUMN tests_listed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN tests_done INTEGER NOT NULL DEFAULT 0;
"#,
    // Artifacts: the metadata of the files jobs leave behind.
    r#"
CREATE TABLE artifacts (
    job_id     INTEGER NOT NULL,
    attempt    INTEGER NOT NULL,
    path       TEXT NOT NULL,
    size       INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    state      TEXT NOT NULL,
    received   INTEGER NOT NULL DEFAULT 0,
    note       TEXT,
    expires_at INTEGER,
    created_at INTEGER NOT NULL,
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
ALTER TABLE workers ADD COLUMN drained_at INTEGER;
"#,
    // When a shard took each test it holds: a shard with nothing left
    // stops waiting for tests held far past their estimates.
    r#"
ALTER TABLE queue_tests ADD COLUMN reserved_at INTEGER;
"#,
    // Submissions' idempotency keys, kept a day: a client that lost the
    // answer sends the same request again and gets the same jobs.
    r#"
CREATE TABLE submit_keys (
    key TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    build_id INTEGER,
    job_ids TEXT
);
CREATE INDEX submit_keys_age ON submit_keys(created_at);
"#,
];
