"""The pytest plugin end to end: the real `testbot serve`, real workers
(`testbot worker --config`, or the one `serve --worker` runs inside the
server), and the real `python -m pytest` of this test run's interpreter
(where this package is installed, so the plugin's entry point is there) as
the jobtype's command, on small pytest projects written in tmp_path.

Every process started here (server, workers, `submit --wait`) is ended by
PID in a fixture finalizer, and so are jobs' pytest processes a killed
worker leaves behind (each job's command writes its PID, which leads its
process group, to a file). Loopback only; waits are on conditions, each
bounded."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from conftest import Server, binary, wait_until

JOBTYPE = "pytest-suite"
FINAL = ("passed", "failed", "skipped", "error")


def clean_env(**extra):
    """This process's environment without testbot's or pytest's variables
    (a job's pytest must not see the outer run's), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TESTBOT_", "PYTEST_"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def toml_str(value):
    return json.dumps(str(value))  # a TOML basic string for paths and commands


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----- the pytest projects

CONFTEST = '''
import os, time
import pytest

@pytest.fixture(autouse=True)
def _take_some_time():
    time.sleep({sleep!r})
    yield
'''

ALPHA = '''
import pytest

def test_one():
    assert 1 + 1 == 2

def test_two():
    assert "abc".upper() == "ABC"

@pytest.mark.parametrize("word", ["a", "b c", "d"])
def test_param(word):
    assert word.strip()
'''

BETA = '''
import os
import pytest

def test_three():
    assert [1, 2][::-1] == [2, 1]

@pytest.mark.skip(reason="skipped on purpose")
def test_skip_marked():
    assert False

@pytest.mark.xfail(reason="xfail on purpose", strict=False)
def test_expected_to_fail():
    assert False
'''

BROKEN = '''
def test_always_fails():
    assert 2 + 2 == 5, "this test always fails"
'''

FLAKY = '''
import os

def test_flaky():
    """Fails the first time it runs (per FLAKY_DIR), passes after."""
    marker = os.path.join(os.environ["FLAKY_DIR"], "test_flaky.ran")
    if not os.path.exists(marker):
        open(marker, "w").close()
        assert False, "first run of a flaky test"
'''

SKIPPED_MODULE = '''
import pytest

pytest.skip("this whole module is skipped at import", allow_module_level=True)

def test_never_collected():
    assert False
'''

MANY = '''
import pytest

@pytest.mark.parametrize("n", range({n}))
def test_many(n):
    assert n >= 0
'''

FAIL_ID = "tests/test_broken.py::test_always_fails"
FLAKY_ID = "tests/test_flaky.py::test_flaky"


def write(root, files):
    for name, text in files.items():
        path = Path(root) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())


def make_project(root, broken=True, sleep=0.0, many=0):
    """A pytest project: passing tests in two modules (one parametrized),
    a skip-marked test, an xfail, a module skipped at import and, with
    ``broken``, an always-failing test and a flaky one; ``many``
    parametrized tests more; each test sleeps ``sleep`` seconds."""
    files = {
        "pytest.ini": "[pytest]\n",
        "tests/conftest.py": CONFTEST.format(sleep=float(sleep)),
        "tests/test_alpha.py": ALPHA,
        "tests/test_beta.py": BETA,
        "tests/test_skipped_module.py": SKIPPED_MODULE,
    }
    if broken:
        files["tests/test_broken.py"] = BROKEN
        files["tests/test_flaky.py"] = FLAKY
    if many:
        files["tests/test_many.py"] = MANY.format(n=many)
    write(root, files)
    return Path(root)


OUTCOMES_PLUGIN = '''
"""Writes each collected test's outcome, as the testbot plugin counts it
(failed in the call: failed; in setup or teardown: error; skip or xfail:
skipped), to $E2E_OUTCOMES as JSON."""
import json, os

_seen = {}

def pytest_runtest_logreport(report):
    r = _seen.setdefault(report.nodeid, set())
    if report.failed:
        r.add("failed" if report.when == "call" else "error")
    elif report.skipped:
        r.add("skipped")

def pytest_sessionfinish(session):
    out = {}
    for nodeid, r in _seen.items():
        out[nodeid] = next((o for o in ("failed", "error", "skipped") if o in r), "passed")
    with open(os.environ["E2E_OUTCOMES"], "w") as f:
        json.dump(out, f)
'''


def plain_run(project, tmp):
    """A plain `python -m pytest` of the project, outside testbot (no
    TESTBOT_* variables), with the flaky test's marker already there (so
    it passes, as it does in the end in a build). Answers each test's
    outcome, and the counts of pytest's summary line."""
    tmp = Path(tmp)
    plugin_dir = tmp / "plain-plugin"
    write(plugin_dir, {"e2e_outcomes.py": OUTCOMES_PLUGIN})
    flaky_dir = tmp / "plain-flaky"
    flaky_dir.mkdir(exist_ok=True)
    (flaky_dir / "test_flaky.ran").touch()
    out_file = tmp / "plain-outcomes.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "e2e_outcomes"],
        cwd=str(project), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        env=clean_env(PYTHONPATH=plugin_dir, FLAKY_DIR=flaky_dir, E2E_OUTCOMES=out_file),
    )
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    outcomes = json.loads(out_file.read_text())
    last = proc.stdout.strip().splitlines()[-1]
    summary = Counter()
    for n, what in re.findall(r"(\d+) (passed|failed|skipped|xfailed|xpassed|errors?|deselected)", last):
        summary[what.rstrip("s") if what.startswith("error") else what] += int(n)
    return outcomes, summary


def expected_totals(outcomes, flaky=0):
    counts = Counter(outcomes.values())
    return {
        "total": len(outcomes), "passed": counts["passed"], "failed": counts["failed"],
        "skipped": counts["skipped"], "error": counts["error"], "flaky": flaky,
        "pending": 0, "not_run": 0,
    }


# ----- server, workers, CLI


class Cluster:
    """A server, its workers and the `testbot` CLI, all in ``tmp``."""

    def __init__(self, tmp):
        self.tmp = Path(tmp)
        self.server = None
        self.workers = []
        self.procs = []        # other processes started here (submit --wait)
        self.job_pids = self.tmp / "job-pids"  # each job's pytest writes its PID here

    # -- processes

    def start_server(self, embedded_worker=None):
        args = ["--worker", str(embedded_worker)] if embedded_worker else []
        self.server = Server(self.tmp, args)
        return self.server

    def command(self, project, flaky_dir):
        """The jobtype's command: pytest in the project, as on any worker
        (nothing testbot-specific), recording its PID first."""
        return "cd %s && echo $$ >> %s && FLAKY_DIR=%s exec %s -m pytest -q -p no:cacheprovider" % (
            shlex.quote(str(project)), shlex.quote(str(self.job_pids)), shlex.quote(str(flaky_dir)),
            shlex.quote(sys.executable))

    def worker_config(self, name, command, slots=1, heartbeat="1s", server=True):
        work = self.tmp / ("work-" + name)
        work.mkdir(parents=True, exist_ok=True)
        lines = []
        if server:
            lines.append("server = %s" % toml_str(self.server.url))
        lines += [
            "name = %s" % toml_str(name),
            "work_dir = %s" % toml_str(work),
            "heartbeat_interval = %s" % toml_str(heartbeat),
            "slots = %d" % slots,
            'min_free_disk = "0"',
            "",
            "[jobtypes.%s]" % JOBTYPE,
            "command = %s" % toml_str(command),
            'timeout = "2m"',
            "",
        ]
        path = self.tmp / ("%s.toml" % name)
        path.write_text("\n".join(lines))
        return path

    def start_worker(self, name, command, slots=1, heartbeat="1s"):
        config = self.worker_config(name, command, slots, heartbeat)
        log = open(self.tmp / ("worker-%s.log" % name), "ab")
        try:
            proc = subprocess.Popen([binary(), "worker", "--config", str(config)], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, env=clean_env())
        finally:
            log.close()
        self.workers.append((name, proc))
        assert wait_until(15, lambda: proc.poll() is not None or self.server.call(
            "GET", "/api/v1/workers/" + name)[0] == 200), self.diag()
        assert proc.poll() is None, "worker %s exited: %s" % (name, self.diag())
        return proc

    def close(self):
        for name, proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # drains: nothing runs any more by now
        for name, proc in self.workers:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        # Jobs' pytest processes lead their process groups (the worker starts
        # each job in a group of its own, and the command execs pytest): end
        # those a killed worker left behind.
        if self.job_pids.exists():
            for pid in {int(x) for x in self.job_pids.read_text().split()}:
                if alive(pid) and self._is_job(pid):
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        if self.server is not None:
            self.server.stop()

    def _is_job(self, pid):
        try:
            environ = Path("/proc/%d/environ" % pid).read_bytes()
        except OSError:
            return False
        return b"TESTBOT_JOB_TOKEN=" in environ and str(self.tmp).encode() in environ

    # -- the CLI

    def cli(self, *args, timeout=60):
        return subprocess.run([binary(), "--server", self.server.url] + [str(a) for a in args],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, env=clean_env())

    def submit_args(self, build, shards=2, retry_failed=None):
        args = ["submit", JOBTYPE, "--shards", shards, "--build", build, "--wait"]
        if retry_failed is not None:
            args += ["--retry-failed", retry_failed]
        return args

    def submit_wait(self, build, shards=2, retry_failed=None, timeout=60):
        proc = self.cli(*self.submit_args(build, shards, retry_failed), timeout=timeout)
        self.last_submit = proc
        return proc

    def submit_background(self, build, shards=2, retry_failed=None):
        out = open(self.tmp / ("submit-%s.out" % build), "w+")
        proc = subprocess.Popen([binary(), "--server", self.server.url]
                                + [str(a) for a in self.submit_args(build, shards, retry_failed)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=clean_env(), text=True)
        proc.output_file = out
        self.procs.append(proc)
        return proc

    # -- reading the server

    def build_id(self, name):
        builds = [b for b in self.server.get("/api/v1/builds") if b["name"] == name]
        assert len(builds) == 1, (name, builds)
        return builds[0]["id"]

    def build_tests(self, build):
        answer = self.server.get("/api/v1/builds/%d/tests?limit=1000" % build)
        assert answer["count"] == len(answer["tests"]), answer  # all on one page
        return answer

    def jobs(self, build):
        return self.server.get("/api/v1/jobs?build=%d&limit=1000" % build)

    def diag(self, lines=80):
        """What to read when something went wrong: the server's and workers'
        logs (their ends), the last submit's output and the jobs' logs."""
        parts = []
        if self.server is not None:
            log = (self.tmp / "server.log").read_text(errors="replace").splitlines()
            parts.append("--- server.log (last %d lines)\n%s" % (lines, "\n".join(log[-lines:])))
        for name, _ in self.workers:
            path = self.tmp / ("worker-%s.log" % name)
            if path.exists():
                log = path.read_text(errors="replace").splitlines()
                parts.append("--- worker %s (last 30 lines)\n%s" % (name, "\n".join(log[-30:])))
        submit = getattr(self, "last_submit", None)
        if submit is not None:
            parts.append("--- submit rc=%s\n%s%s" % (submit.returncode, submit.stdout, submit.stderr))
        if self.server is not None:
            try:
                for job in self.server.get("/api/v1/jobs?limit=50"):
                    parts.append("--- job %d (%s, attempt %s, worker %s, build %s)\n%s" % (
                        job["id"], job["state"], job["attempt"], job["worker"], job["build"],
                        self.server.log(job["id"])[-3000:]))
            except Exception as e:  # the server may be gone
                parts.append("--- jobs: %r" % e)
        return "\n".join(parts)


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.close()


def failing_lines(log):
    return re.findall(r"^testbot: failing: (.*)$", log, re.M)


def by_id(answer):
    ids = [t["id"] for t in answer["tests"]]
    assert len(ids) == len(set(ids)), "a test listed twice: %s" % sorted(i for i, n in Counter(ids).items() if n > 1)
    return {t["id"]: t for t in answer["tests"]}


# ----- the tests


def test_a_sharded_build_runs_each_test_once_and_reruns_failures_elsewhere(cluster, tmp_path):
    project = make_project(tmp_path / "project")
    outcomes, summary = plain_run(project, tmp_path)
    # The plain run, as the build should count it: every collected test once;
    # the module skipped at import is no test (it is a skipped collection).
    assert outcomes[FAIL_ID] == "failed" and outcomes[FLAKY_ID] == "passed"
    assert not any("test_skipped_module" in i for i in outcomes)
    counts = Counter(outcomes.values())
    assert summary["passed"] == counts["passed"] and summary["failed"] == counts["failed"]
    assert summary["skipped"] + summary["xfailed"] == counts["skipped"] + 1  # + the skipped module

    server = cluster.start_server()
    flaky_dir = tmp_path / "flaky"
    flaky_dir.mkdir()
    command = cluster.command(project, flaky_dir)
    cluster.start_worker("w1", command)
    cluster.start_worker("w2", command)

    submit = cluster.submit_wait("b1", shards=2, retry_failed=1)
    assert submit.returncode == 1, cluster.diag()  # the always-failing test fails the build

    build = cluster.build_id("b1")
    answer = cluster.build_tests(build)
    tests = by_id(answer)
    assert set(tests) == set(outcomes), cluster.diag()
    assert {i: t["outcome"] for i, t in tests.items()} == outcomes, cluster.diag()
    assert answer["totals"] == expected_totals(outcomes, flaky=1), cluster.diag()

    # The always-failing test: failed on one shard, rerun on the other, failed again.
    broken = tests[FAIL_ID]
    assert broken["outcome"] == "failed" and not broken["flaky"]
    assert [r["outcome"] for r in broken["runs"]] == ["failed", "failed"], broken
    assert len({r["job"] for r in broken["runs"]}) == 2, broken
    assert "this test always fails" in (broken.get("message") or broken["runs"][-1].get("message") or "")

    # The flaky test: failed once, passed on the rerun elsewhere; flaky.
    flaky = tests[FLAKY_ID]
    assert flaky["outcome"] == "passed" and flaky["flaky"] is True, flaky
    assert [r["outcome"] for r in flaky["runs"]] == ["failed", "passed"], flaky
    assert flaky["runs"][0]["job"] != flaky["runs"][1]["job"], flaky
    for t in tests.values():
        if t["id"] not in (FAIL_ID, FLAKY_ID):
            assert len(t["runs"]) == 1 and not t["flaky"], t

    # No job fails because of the flaky test; the job that passed it fails
    # only if it also ran the always-failing test last.
    jobs = {j["id"]: j for j in cluster.jobs(build)}
    assert len(jobs) == 2
    for job_id, job in jobs.items():
        failing = failing_lines(server.log(job_id))
        assert FLAKY_ID not in failing, (job, cluster.diag())
        assert job["state"] == ("failed" if failing else "passed"), (job, failing, cluster.diag())
    assert sum(FAIL_ID in failing_lines(server.log(j)) for j in jobs) == 1, cluster.diag()
    passed_on = flaky["runs"][1]["job"]
    if FAIL_ID not in failing_lines(server.log(passed_on)):
        assert jobs[passed_on]["state"] == "passed", (jobs[passed_on], cluster.diag())

    # How to rerun the failure by hand.
    repro = cluster.cli("tests", "repro", build, FAIL_ID)
    assert repro.returncode == 0, repro.stdout + repro.stderr
    lines = [l for l in repro.stdout.splitlines() if l.strip()]
    assert lines[0].startswith("#"), repro.stdout
    assert "python -m pytest" in lines[-1] and FAIL_ID in shlex.split(lines[-1]), repro.stdout
    assert "python -m pytest" in (broken.get("repro") or ""), broken

    # The flaky test is in the history of flaky tests.
    flaky_cli = cluster.cli("tests", "flaky", "--json")
    assert flaky_cli.returncode == 0, flaky_cli.stdout + flaky_cli.stderr
    listed = json.loads(flaky_cli.stdout)
    if isinstance(listed, dict):
        listed = listed.get("tests", listed)
    entries = [e for e in listed if e["id"] == FLAKY_ID]
    assert len(entries) == 1 and entries[0]["flaky"] >= 1 and entries[0]["jobtype"] == JOBTYPE, listed
    assert not any(e["id"] == FAIL_ID for e in listed), listed


def test_a_test_added_between_builds_runs_in_the_next(cluster, tmp_path):
    project = make_project(tmp_path / "project", broken=False)
    flaky_dir = tmp_path / "flaky"
    flaky_dir.mkdir()
    # A worker inside the server, two slots.
    config = cluster.worker_config("inside", cluster.command(project, flaky_dir), slots=2, server=False)
    server = cluster.start_server(embedded_worker=config)

    before, _ = plain_run(project, tmp_path)
    assert set(before.values()) == {"passed", "skipped"}
    first = cluster.submit_wait("b1", shards=2)
    assert first.returncode == 0, cluster.diag()
    b1 = cluster.build_id("b1")
    answer1 = cluster.build_tests(b1)
    assert {i: t["outcome"] for i, t in by_id(answer1).items()} == before, cluster.diag()
    assert answer1["totals"] == expected_totals(before), cluster.diag()
    assert server.get("/api/v1/builds/%d" % b1)["state"] == "passed"

    write(project, {"tests/test_new.py": '''
        def test_new_passes():
            assert True

        def test_new_fails():
            assert 1 == 2, "a new test that fails"
        '''})
    after, _ = plain_run(project, tmp_path)
    new_fail, new_pass = "tests/test_new.py::test_new_fails", "tests/test_new.py::test_new_passes"
    assert after == dict(before, **{new_fail: "failed", new_pass: "passed"})

    second = cluster.submit_wait("b2", shards=2)
    assert second.returncode != 0, cluster.diag()
    b2 = cluster.build_id("b2")
    answer2 = cluster.build_tests(b2)
    tests2 = by_id(answer2)
    assert {i: t["outcome"] for i, t in tests2.items()} == after, cluster.diag()
    assert answer2["totals"] == expected_totals(after), cluster.diag()
    assert len(tests2[new_fail]["runs"]) == 1, tests2[new_fail]
    assert "a new test that fails" in (tests2[new_fail].get("message")
                                       or tests2[new_fail]["runs"][0].get("message") or "")
    assert new_fail not in by_id(cluster.build_tests(b1))  # build 1 stays as it was
    states = sorted(j["state"] for j in cluster.jobs(b2))
    assert states == ["failed", "passed"], (states, cluster.diag())


def test_a_worker_killed_mid_build_loses_no_test(cluster, tmp_path):
    project = make_project(tmp_path / "project", broken=False, sleep=0.2, many=24)
    expected, _ = plain_run(project, tmp_path)
    total = len(expected)
    server = cluster.start_server()
    flaky_dir = tmp_path / "flaky"
    flaky_dir.mkdir()
    command = cluster.command(project, flaky_dir)
    workers = {name: cluster.start_worker(name, command, heartbeat="1s") for name in ("w1", "w2")}

    submit = cluster.submit_background("b1", shards=2)
    assert wait_until(15, lambda: any(b["name"] == "b1" for b in server.get("/api/v1/builds"))), cluster.diag()
    build = cluster.build_id("b1")

    def some_but_not_all():
        """Both shards run and have reported tests, many are still to run."""
        answer = cluster.build_tests(build)
        done = sum(answer["totals"][o] for o in FINAL)
        reported = {r["job"] for t in answer["tests"] for r in t["runs"]}
        running = {j["id"] for j in cluster.jobs(build) if j["state"] == "running"}
        return answer["totals"]["total"] == total and done <= total - 8 and len(running) == 2 \
            and running <= reported

    assert wait_until(30, some_but_not_all), cluster.diag()
    victim_job = min((j for j in cluster.jobs(build) if j["state"] == "running"), key=lambda j: j["id"])
    victim = victim_job["worker"]
    survivor = next(n for n in workers if n != victim)
    os.kill(workers[victim].pid, signal.SIGKILL)
    killed_at = time.time()
    workers[victim].wait()

    try:
        rc = submit.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the build did not end within 60 s of the kill\n" + cluster.diag())
    submit.output_file.seek(0)
    output = submit.output_file.read()
    assert rc == 0, output + cluster.diag()

    answer = cluster.build_tests(build)
    tests = by_id(answer)
    assert set(tests) == set(expected), cluster.diag()
    assert all(t["outcome"] in FINAL for t in tests.values()), cluster.diag()
    assert {i: t["outcome"] for i, t in tests.items()} == expected, cluster.diag()
    assert answer["totals"] == expected_totals(expected), cluster.diag()

    # The killed worker's job came back after its lease (max(3 x 1 s, 5 s)
    # from its last heartbeat) and the survivor ran it.
    job = server.get("/api/v1/jobs/%d" % victim_job["id"])
    assert job["state"] == "passed" and job["worker"] == survivor, (job, cluster.diag())
    lost, last = job["attempts"][victim_job["attempt"] - 1], job["attempts"][-1]
    assert (lost["attempt"], lost["worker"], lost["state"]) == (victim_job["attempt"], victim, "lost"), job
    assert (last["worker"], last["state"]) == (survivor, "passed") and last["attempt"] > lost["attempt"], job
    lease_end = datetime.fromisoformat(lost["finished_at"].replace("Z", "+00:00")).timestamp()
    assert lease_end >= killed_at + 3.5, (lease_end - killed_at, job)  # 5 s from the last beat
    # What the killed attempt reported before the kill is kept, once.
    before_kill = [t for t in tests.values() if any(
        (r["job"], r["attempt"]) == (victim_job["id"], victim_job["attempt"]) for r in t["runs"])]
    assert before_kill, cluster.diag()
    for t in tests.values():
        assert len(t["runs"]) == 1 and t["runs"][0]["worker"] in workers, t
