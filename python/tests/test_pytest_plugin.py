"""The pytest plugin (testbot.pytest_plugin) and testbot.queue.TestQueue
against a fake test queue: an in-memory implementation of the contract
(batches of 2, failures optionally put back once) served by http.server on
127.0.0.1, and small pytest projects run as subprocesses. No testbot
binary needed; the package must be installed (`pip install ./python`) for
its pytest11 entry point, while the code is taken from this checkout."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from testbot.pytest_plugin import MESSAGE_LIMIT, cap_message
from testbot.queue import QueueRefused, QueueUnavailable, TestQueue

SOURCE = Path(__file__).resolve().parents[1]  # python/, where the package is
TOKEN = "job-token-7"
JOB = "7"


# ----- the fake queue

class FakeQueue:
    """One job's test queue, as the contract describes it. ``batch``: ids
    per `next`; ``retries``: how often a failed or errored test goes back
    into the queue; ``failing``: what finish answers, instead of the tests
    whose last outcome is failed or error; ``extra``: ids handed out that
    no runner collected; ``forget_list``: how many times to answer a list
    with need_list; ``errors``: {"next"|"report"|"finish": [status, ...]}
    answered before the real answers."""

    def __init__(self, batch=2, retries=0, failing=None, extra=(), forget_list=0, errors=None):
        self.batch, self.retries, self.failing_override = batch, retries, failing
        self.extra, self.forget_list = list(extra), forget_list
        self.errors = {k: list(v) for k, v in (errors or {}).items()}
        self.lock = threading.Lock()
        self.calls = []       # (what, body)
        self.lists = []       # every list of ids received
        self.repro = []
        self.pending = None   # ids not handed out yet, next first
        self.reserved = []
        self.reports = []     # every result received, in order
        self.last = {}        # id -> last outcome
        self.reruns = {}      # id -> times put back
        self.given_back = []  # reserved ids finish gave back
        self.finished = 0

    def handle(self, what, body, auth):
        with self.lock:
            self.calls.append((what, body))
            if auth != "Bearer " + TOKEN:
                return 401, {"error": "bad job token"}
            queued = self.errors.get(what)
            if queued:
                return queued.pop(0), {"error": "injected"}
            return 200, getattr(self, "_" + what)(body)

    def _next(self, body):
        if "tests" in body:
            self.lists.append(body["tests"])
            self.repro.append(body.get("repro"))
            if self.forget_list:
                self.forget_list -= 1
            elif self.pending is None:
                # Longest first: here, the reverse of collection order.
                self.pending = self.extra + list(reversed(body["tests"]))
        if self.pending is None:
            return {"tests": [], "done": False, "need_list": True}
        n = min(self.batch, body.get("max") or self.batch)
        out, self.pending = self.pending[:n], self.pending[n:]
        self.reserved += out
        return {"tests": out, "done": not out and not self.reserved, "need_list": False}

    def _report(self, body):
        recorded, retrying, ignored = 0, [], []
        for r in body["results"]:
            if r["id"] not in self.reserved:
                ignored.append({"id": r["id"], "why": "not reserved"})
                continue
            self.reserved.remove(r["id"])
            self.reports.append(r)
            self.last[r["id"]] = r["outcome"]
            recorded += 1
            if r["outcome"] in ("failed", "error") and self.reruns.get(r["id"], 0) < self.retries:
                self.reruns[r["id"]] = self.reruns.get(r["id"], 0) + 1
                self.pending.append(r["id"])
                retrying.append(r["id"])
        return {"recorded": recorded, "retrying": retrying, "ignored": ignored}

    def _finish(self, body):
        self.finished += 1
        self.given_back += self.reserved
        if self.pending is not None:
            self.pending = self.reserved + self.pending
        self.reserved = []
        counts = {k: sum(1 for v in self.last.values() if v == k)
                  for k in ("passed", "failed", "skipped", "error")}
        flaky = sum(1 for i in self.reruns if self.last.get(i) == "passed")
        failing = [i for i, v in self.last.items() if v in ("failed", "error")]
        if self.failing_override is not None:
            failing = list(self.failing_override)
        return dict(counts, flaky=flaky, failing=failing, retrying=list(self.pending or []))

    def reported(self):
        """id -> the list of results received for it."""
        out = {}
        for r in self.reports:
            out.setdefault(r["id"], []).append(r)
        return out


def serve(fake):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            prefix = "/api/v1/jobs/%s/tests/" % JOB
            what = self.path[len(prefix):] if self.path.startswith(prefix) else None
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if what not in ("next", "report", "finish"):
                status, answer = 404, {"error": "no such path: %s" % self.path}
            else:
                status, answer = fake.handle(what, body, self.headers.get("Authorization"))
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return httpd, thread, "http://127.0.0.1:%d" % httpd.server_address[1]


@pytest.fixture
def queue_server():
    """make(**FakeQueue options) -> (fake, url); every server made is shut down."""
    made = []

    def make(**kwargs):
        fake = FakeQueue(**kwargs)
        httpd, thread, url = serve(fake)
        made.append((httpd, thread))
        return fake, url

    yield make
    for httpd, thread in made:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ----- the pytest project the plugin runs

PROJECT = {
    "pytest.ini": "[pytest]\n",
    "test_basic.py": """
        import pytest

        def test_pass():
            assert True

        def test_fail():
            assert 1 + 1 == 3, "arithmetic is broken"

        @pytest.mark.skip(reason="not today")
        def test_skip():
            pass

        @pytest.fixture
        def broken():
            raise RuntimeError("fixture exploded")

        def test_fixture_error(broken):
            pass

        @pytest.mark.parametrize("n", [1, 2, 3])
        def test_param(n):
            assert n > 0
    """,
    "test_more.py": """
        import pytest

        @pytest.fixture
        def bad_teardown():
            yield
            raise RuntimeError("teardown exploded")

        def test_teardown_error(bad_teardown):
            pass

        @pytest.mark.xfail(reason="known bug")
        def test_xfail():
            assert False

        @pytest.mark.xfail(strict=True, reason="should fail")
        def test_xpass_strict():
            pass

        def test_skip_inside():
            pytest.skip("skipped at run time")
    """,
    "test_module_skip.py": """
        import pytest
        pytest.skip("not on this machine", allow_module_level=True)

        def test_never():
            pass
    """,
}

EXPECTED = {
    "test_basic.py::test_pass": "passed",
    "test_basic.py::test_fail": "failed",
    "test_basic.py::test_skip": "skipped",
    "test_basic.py::test_fixture_error": "error",
    "test_basic.py::test_param[1]": "passed",
    "test_basic.py::test_param[2]": "passed",
    "test_basic.py::test_param[3]": "passed",
    "test_more.py::test_teardown_error": "error",
    "test_more.py::test_xfail": "skipped",
    "test_more.py::test_xpass_strict": "failed",
    "test_more.py::test_skip_inside": "skipped",
}
COLLECTED = list(EXPECTED)  # collection order
FAILING = [i for i, v in EXPECTED.items() if v in ("failed", "error")]


def write_project(path, files=PROJECT):
    for name, text in files.items():
        (path / name).write_text(textwrap.dedent(text))
    return path


def child_env(url=None, token=TOKEN, **extra):
    """The environment of a shard's pytest: this one's minus anything of
    testbot or of pytest's own configuration, the code of this checkout
    first on the path, no proxy for 127.0.0.1."""
    skip = ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTEST_CURRENT_TEST")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TESTBOT_") and k not in skip and not k.lower().endswith("_proxy")}
    env["PYTHONPATH"] = os.pathsep.join([str(SOURCE)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    if url is not None:
        env.update({"TESTBOT_SERVER": url, "TESTBOT_JOB_ID": JOB, "TESTBOT_ATTEMPT": "1",
                    "TESTBOT_SHARD_INDEX": "0", "TESTBOT_SHARD_TOTAL": "1"})
        if token is not None:
            env["TESTBOT_JOB_TOKEN"] = token
    env.update(extra)
    return env


def run_pytest(path, env, *args):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=str(path), env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
    )
    return proc.returncode, proc.stdout.decode("utf-8", "replace")


# ----- the plugin

def test_plugin_is_registered_as_a_pytest11_entry_point():
    from importlib import metadata
    eps = metadata.entry_points()
    group = eps.select(group="pytest11") if hasattr(eps, "select") else eps.get("pytest11", [])
    found = {ep.name: ep.value for ep in group}
    assert found.get("testbot") == "testbot.pytest_plugin", (
        "the testbot package is not installed with its pytest11 entry point: pip install ./python")


def test_shard_takes_runs_and_reports_every_test_from_the_queue(tmp_path, queue_server):
    fake, url = queue_server()
    code, out = run_pytest(write_project(tmp_path), child_env(url))

    assert fake.lists == [COLLECTED], out
    assert fake.repro == ["python -m pytest {id}"]
    got = fake.reported()
    assert sorted(got) == sorted(COLLECTED), out
    for nodeid, outcome in EXPECTED.items():
        assert len(got[nodeid]) == 1, (nodeid, got[nodeid])
        r = got[nodeid][0]
        assert r["outcome"] == outcome, (nodeid, r, out)
        assert isinstance(r["duration_ms"], int) and r["duration_ms"] >= 0, r
        if outcome in ("failed", "error"):
            assert r["message"].strip(), r
        else:
            assert "message" not in r, r
    assert "arithmetic is broken" in got["test_basic.py::test_fail"][0]["message"]
    assert "assert (1 + 1) == 3" in got["test_basic.py::test_fail"][0]["message"]
    assert "fixture exploded" in got["test_basic.py::test_fixture_error"][0]["message"]
    assert "teardown exploded" in got["test_more.py::test_teardown_error"][0]["message"]
    assert "XPASS(strict)" in got["test_more.py::test_xpass_strict"][0]["message"]

    # Batches of 2, handed out in reverse; each run in collection order.
    reports = [body for what, body in fake.calls if what == "report"]
    assert [len(b["results"]) for b in reports] == [2] * 5 + [1]
    for body in reports:
        ids = [r["id"] for r in body["results"]]
        assert ids == sorted(ids, key=COLLECTED.index), ids

    assert fake.finished == 1 and fake.given_back == []
    assert [w for w, _ in fake.calls][-2:] == ["next", "finish"]
    # finish lists the four failing tests: the job fails.
    assert code == 1, out
    assert "testbot: ran 11 tests from the queue (shard 1 of 1): 4 failing for good, 0 failures rerun, 0 flaky" in out
    for nodeid in FAILING:
        assert "testbot: failing: %s" % nodeid in out


@pytest.mark.parametrize("failing, code", [([], 0), (["test_basic.py::test_fail"], 1)])
def test_exit_code_follows_what_finish_says(tmp_path, queue_server, failing, code):
    fake, url = queue_server(failing=failing)
    got, out = run_pytest(write_project(tmp_path), child_env(url))
    assert sorted(fake.reported()) == sorted(COLLECTED)
    assert got == code, out
    assert "%d failing for good" % len(failing) in out


def test_a_failure_rerun_that_passes_does_not_fail_the_job(tmp_path, queue_server):
    write_project(tmp_path, {"pytest.ini": "[pytest]\n", "test_flaky.py": """
        from pathlib import Path

        def test_steady():
            pass

        def test_flaky():
            mark = Path(__file__).with_name("ran-once")
            if not mark.exists():
                mark.write_text("x")
                assert False, "first run fails"
    """})
    fake, url = queue_server(retries=1)
    code, out = run_pytest(tmp_path, child_env(url))
    got = fake.reported()
    assert [r["outcome"] for r in got["test_flaky.py::test_flaky"]] == ["failed", "passed"], out
    assert "first run fails" in got["test_flaky.py::test_flaky"][0]["message"]
    assert [r["outcome"] for r in got["test_flaky.py::test_steady"]] == ["passed"]
    assert code == 0, out
    assert "0 failing for good, 1 failure rerun, 1 flaky" in out


def test_a_test_failing_again_on_its_rerun_fails_the_job(tmp_path, queue_server):
    write_project(tmp_path, {"pytest.ini": "[pytest]\n", "test_one.py": """
        def test_broken():
            assert False, "always"
    """})
    fake, url = queue_server(retries=1)
    code, out = run_pytest(tmp_path, child_env(url))
    assert [r["outcome"] for r in fake.reported()["test_one.py::test_broken"]] == ["failed", "failed"]
    assert code == 1, out


def test_an_id_not_collected_here_is_reported_as_an_error(tmp_path, queue_server):
    fake, url = queue_server(extra=["test_gone.py::test_vanished"], failing=[])
    code, out = run_pytest(write_project(tmp_path), child_env(url))
    got = fake.reported()
    assert sorted(got) == sorted(COLLECTED + ["test_gone.py::test_vanished"])
    [r] = got["test_gone.py::test_vanished"]
    assert r["outcome"] == "error"
    assert r["message"].startswith("not collected in this job: test_gone.py::test_vanished")
    assert code == 0, out


def test_the_list_is_sent_again_when_the_server_asks(tmp_path, queue_server):
    fake, url = queue_server(forget_list=1, failing=[])
    code, out = run_pytest(write_project(tmp_path), child_env(url))
    assert fake.lists == [COLLECTED, COLLECTED]
    assert sorted(fake.reported()) == sorted(COLLECTED)
    assert code == 0, out


def test_repro_says_where_the_ids_are_from(tmp_path, queue_server):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "test_x.py").write_text("def test_x():\n    pass\n")
    fake, url = queue_server()
    code, out = run_pytest(sub, child_env(url))
    assert fake.lists == [["sub/test_x.py::test_x"]]
    assert fake.repro == ["cd .. && python -m pytest {id}"]
    assert code == 0, out


def test_server_errors_are_retried_and_a_dead_server_is_skipped(tmp_path, queue_server):
    fake, url = queue_server(errors={"next": [503], "report": [502]}, failing=[])
    servers = "http://127.0.0.1:%d,%s" % (closed_port(), url)
    code, out = run_pytest(write_project(tmp_path), child_env(servers))
    assert sorted(fake.reported()) == sorted(COLLECTED), out
    assert all(len(v) == 1 for v in fake.reported().values())
    assert code == 0, out


def test_a_refused_token_stops_the_run_at_once(tmp_path, queue_server):
    fake, url = queue_server()
    code, out = run_pytest(write_project(tmp_path), child_env(url, token="stale"))
    assert [w for w, _ in fake.calls] == ["next"]
    assert code == 2, out
    assert "testbot" in out and "401" in out and "bad job token" in out


def test_maxfail_stops_and_gives_the_reserved_tests_back(tmp_path, queue_server):
    fake, url = queue_server()
    code, out = run_pytest(write_project(tmp_path), child_env(url), "-x")
    got = fake.reported()
    # The queue hands out test_more.py's last two first: test_xpass_strict
    # runs first (collection order) and fails, which stops the run.
    assert {i: [r["outcome"] for r in v] for i, v in got.items()} == {
        "test_more.py::test_xpass_strict": ["failed"]}, out
    assert fake.finished == 1
    assert fake.given_back == ["test_more.py::test_skip_inside"]
    assert len(fake.pending) == len(COLLECTED) - 1
    assert code == 1, out
    assert "stopped early" in out


def test_pytest_started_by_a_test_leaves_the_queue_alone(tmp_path, queue_server):
    inner = tmp_path / "inner"
    inner.mkdir()
    write_project(inner, {"pytest.ini": "[pytest]\n", "test_inner.py": "def test_inner():\n    pass\n"})
    outer = tmp_path / "outer"
    outer.mkdir()
    write_project(outer, {"pytest.ini": "[pytest]\n", "test_outer.py": """
        import subprocess, sys
        from pathlib import Path

        def test_runs_pytest():
            inner = Path(__file__).resolve().parent.parent / "inner"
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                                  cwd=str(inner), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            assert proc.returncode == 0, proc.stdout.decode()
            assert b"1 passed" in proc.stdout

        def test_runs_pytest_in_process():
            import pytest
            inner = Path(__file__).resolve().parent.parent / "inner"
            assert pytest.main(["-q", "-p", "no:cacheprovider", str(inner)]) == 0
    """})
    fake, url = queue_server()
    code, out = run_pytest(outer, child_env(url))
    assert fake.lists == [["test_outer.py::test_runs_pytest", "test_outer.py::test_runs_pytest_in_process"]]
    assert {i: [r["outcome"] for r in v] for i, v in fake.reported().items()} == {
        "test_outer.py::test_runs_pytest": ["passed"],
        "test_outer.py::test_runs_pytest_in_process": ["passed"]}, out
    assert code == 0, out


@pytest.mark.parametrize("how", ["no token", "--testbot-off", "-p no:testbot", "--collect-only"])
def test_inactive_runs_are_plain_pytest(tmp_path, queue_server, how):
    fake, url = queue_server()
    env, args = child_env(url), []
    if how == "no token":
        env = child_env(url, token=None)
    else:
        args = how.split()
    code, out = run_pytest(write_project(tmp_path), env, *args)
    assert fake.calls == []
    assert "testbot: ran" not in out
    if how == "--collect-only":
        assert code == 0, out
        assert "11 tests collected" in out
    else:
        assert code == 1, out
        assert "2 failed, 5 passed, 3 skipped, 1 xfailed, 2 errors" in out


def test_collection_errors_leave_the_queue_alone(tmp_path, queue_server):
    write_project(tmp_path)
    (tmp_path / "test_broken_import.py").write_text("import no_such_module_here\n")
    fake, url = queue_server()
    code, out = run_pytest(tmp_path, child_env(url))
    assert fake.calls == []
    assert code == 2, out
    assert "error during collection" in out or "errors during collection" in out


def test_long_failure_texts_are_capped_keeping_head_and_tail():
    assert cap_message("short") == "short"
    text = "HEAD\n" + "é" * (MESSAGE_LIMIT) + "\nE   assert the tail"
    capped = cap_message(text)
    assert len(capped.encode("utf-8")) <= MESSAGE_LIMIT
    assert capped.startswith("HEAD\n") and capped.endswith("E   assert the tail")
    assert "bytes cut by testbot" in capped


# ----- TestQueue on its own

def test_queue_calls_and_failover(queue_server):
    fake, url = queue_server(batch=3)
    dead = "http://127.0.0.1:%d" % closed_port()
    q = TestQueue("%s, %s" % (dead, url), JOB, TOKEN)
    assert q.next(tests=["a", "b", "c", "d"], repro="run {id}") == {
        "tests": ["d", "c", "b"], "done": False, "need_list": False}
    assert q.server == url
    assert q.report([{"id": "d", "outcome": "passed", "duration_ms": 3}]) == {
        "recorded": 1, "retrying": [], "ignored": []}
    summary = q.finish()
    assert fake.given_back == ["c", "b"]
    assert summary["retrying"] == ["c", "b", "a"] and summary["failing"] == []
    assert fake.calls[0] == ("next", {"tests": ["a", "b", "c", "d"], "repro": "run {id}"})


def test_queue_sends_a_big_report_in_parts(queue_server, monkeypatch):
    import testbot.queue
    monkeypatch.setattr(testbot.queue, "REPORT_BYTES", 300)
    fake, url = queue_server(batch=3, retries=1)
    q = TestQueue(url, JOB, TOKEN)
    assert q.next(tests=["a", "b", "c"])["tests"] == ["c", "b", "a"]
    results = [{"id": i, "outcome": "failed", "duration_ms": 1, "message": i * 200} for i in "abc"]
    assert q.report(results) == {"recorded": 3, "retrying": ["a", "b", "c"], "ignored": []}
    assert [len(body["results"]) for what, body in fake.calls if what == "report"] == [1, 1, 1]


def test_queue_from_env_and_its_refusals(queue_server):
    fake, url = queue_server(errors={"next": [503, 500], "report": [409]})
    logged = []
    q = TestQueue.from_env({"TESTBOT_SERVER": url, "TESTBOT_JOB_ID": JOB, "TESTBOT_JOB_TOKEN": TOKEN},
                           log=logged.append)
    assert q.next(tests=["a"])["tests"] == ["a"]
    assert [w for w, _ in fake.calls] == ["next"] * 3
    assert len(logged) == 2 and "503" in logged[0] and "answers again" in logged[1]
    with pytest.raises(QueueRefused) as e:
        q.report([{"id": "a", "outcome": "passed", "duration_ms": 1}])
    assert e.value.status == 409 and "no longer current" in str(e.value)
    assert [w for w, _ in fake.calls].count("report") == 1
    with pytest.raises(ValueError):
        TestQueue.from_env({"TESTBOT_JOB_ID": JOB})


def test_queue_gives_up_on_a_server_that_stays_away():
    q = TestQueue("http://127.0.0.1:%d" % closed_port(), JOB, TOKEN, retry_for=0.5, log=lambda line: None)
    t0 = time.monotonic()
    with pytest.raises(QueueUnavailable):
        q.finish()
    assert time.monotonic() - t0 < 3


def test_fixtures_shared_across_batches_are_set_up_once(tmp_path, queue_server):
    # The next batch is asked for before a batch's last test runs, so pytest
    # knows which test follows and keeps the module's fixture for it.
    write_project(tmp_path, {"pytest.ini": "[pytest]\n", "test_mod.py": """
        import pytest

        @pytest.fixture(scope="module")
        def expensive(tmp_path_factory):
            with open("setups.txt", "a") as f:
                f.write("set up\\n")
            return 42

        def test_a(expensive):
            assert expensive == 42

        def test_b(expensive):
            assert expensive == 42

        def test_c(expensive):
            assert expensive == 42

        def test_d(expensive):
            assert expensive == 42
    """})
    fake, url = queue_server(batch=1)
    code, out = run_pytest(tmp_path, child_env(url))
    assert code == 0, out
    assert len(fake.reported()) == 4, out
    assert (tmp_path / "setups.txt").read_text().count("set up") == 1, out
