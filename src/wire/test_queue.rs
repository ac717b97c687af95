//! The bodies of the test queue: what a job's command (the CLI's `tests`
//! commands, the pytest plugin) and readers of build-level test results
//! exchange with the server.

use serde::{Deserialize, Serialize};

/// How one run of a test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestOutcome {
    Passed,
    Failed,
    Skipped,
    Error,
}

impl TestOutcome {
    pub const ALL: [TestOutcome; 4] = [
        TestOutcome::Passed,
        TestOutcome::Failed,
        TestOutcome::Skipped,
        TestOutcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TestOutcome::Passed => "passed",
            TestOutcome::Failed => "failed",
            TestOutcome::Skipped => "skipped",
            TestOutcome::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<TestOutcome> {
        TestOutcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Failed or errored: what a retry is for.
    pub fn is_failure(self) -> bool {
        matches!(self, TestOutcome::Failed | TestOutcome::Error)
    }

    /// One letter, for a test's recent history (`ppfp`).
    pub fn letter(self) -> char {
        match self {
            TestOutcome::Passed => 'p',
            TestOutcome::Failed => 'f',
            TestOutcome::Skipped => 's',
            TestOutcome::Error => 'e',
        }
    }
}

impl std::fmt::Display for TestOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /api/v1/jobs/{id}/tests/next`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TestsNext {
    /// The runner's own test ids; needed once per attempt (the answer says
    /// `need_list` until it came), merged into the queue so none is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<Vec<String>>,
    /// The most tests to take in this batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    /// Seconds to wait when other shards hold the only tests left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<f64>,
    /// How to run one test by hand, `{id}` standing for its id (for
    /// `testbot tests repro`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repro: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestsBatch {
    /// Reserved for this attempt: run them, then report them.
    pub tests: Vec<String>,
    /// Nothing is left for this job: leave the loop.
    pub done: bool,
    /// Send the list of test ids (`tests`) first.
    pub need_list: bool,
}

/// One test's outcome, as a job reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestResult {
    pub id: String,
    pub outcome: TestOutcome,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `POST /api/v1/jobs/{id}/tests/report`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TestsReport {
    pub results: Vec<TestResult>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestsReported {
    pub recorded: u64,
    /// Failed here and queued again, to run on another job.
    pub retrying: Vec<String>,
    /// Results not taken, and why (not reserved for this attempt...).
    pub ignored: Vec<Ignored>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ignored {
    pub id: String,
    pub why: String,
}

/// `POST /api/v1/jobs/{id}/tests/finish`: what this job's tests came to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobTests {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub error: u64,
    /// Tests this job ran that failed somewhere and then passed.
    pub flaky: u64,
    /// Tests whose final outcome is a failure and that this job ran last:
    /// the job fails if there is any.
    pub failing: Vec<String>,
    /// Tests that failed here and wait to be rerun elsewhere.
    pub retrying: Vec<String>,
    /// Reserved and never reported, given back to the queue now.
    pub released: u64,
}

/// `GET /api/v1/builds/{id}/tests`: each test once per build.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BuildTests {
    pub build: i64,
    pub totals: TestTotals,
    /// Tests matching the query (for paging).
    pub count: u64,
    pub offset: u64,
    pub limit: u64,
    /// Failing first, then flaky, then the rest; by id within each.
    pub tests: Vec<BuildTest>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestTotals {
    pub total: u64,
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub error: u64,
    /// Passed (or skipped) after failing: counted in `passed` too.
    pub flaky: u64,
    /// Not run yet: queued, or held by a running job.
    pub pending: u64,
    /// Never run, and every job of its queue has ended.
    pub not_run: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildTest {
    pub id: String,
    pub jobtype: String,
    /// `passed`, `failed`, `skipped`, `error`, `pending` or `not_run`.
    pub outcome: String,
    pub flaky: bool,
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The command to run it by hand, when its runner said how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repro: Option<String>,
    /// Every run, oldest first.
    pub runs: Vec<TestRun>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestRun {
    pub job: i64,
    pub attempt: u32,
    pub worker: String,
    pub outcome: TestOutcome,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A test's history within its jobtype (`GET /api/v1/tests/flaky`, `.../slow`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestStat {
    pub jobtype: String,
    pub id: String,
    /// Smoothed over recent runs (exponential moving average).
    pub avg_ms: Option<u64>,
    pub runs: u64,
    pub failures: u64,
    /// Builds in which it failed and then passed.
    pub flaky: u64,
    /// The latest outcomes, oldest first: `p`assed, `f`ailed, `s`kipped, `e`rror.
    pub recent: String,
    pub last_seen: String,
}

/// Replaces `{id}` in a repro template with the id, quoted for `sh`.
pub fn repro_command(template: &str, id: &str) -> String {
    template.replace("{id}", &shell_quote(id))
}

/// `id` as one `sh` word.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:=+,@%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repro_quotes_ids_for_the_shell() {
        assert_eq!(
            repro_command("python -m pytest {id}", "tests/test_a.py::test_x"),
            "python -m pytest tests/test_a.py::test_x"
        );
        assert_eq!(
            repro_command("pytest {id}", "t.py::test_p[a b]"),
            "pytest 't.py::test_p[a b]'"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn outcomes_round_trip() {
        for o in TestOutcome::ALL {
            assert_eq!(TestOutcome::parse(o.as_str()), Some(o));
        }
        assert!(TestOutcome::Error.is_failure() && !TestOutcome::Skipped.is_failure());
    }
}
