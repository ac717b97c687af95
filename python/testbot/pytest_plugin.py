"""A pytest plugin: the shards of a testbot job take their tests from one
queue.

Installed with this package (entry point ``pytest11``, name ``testbot``),
it wakes up by itself only inside a sharded testbot job, when
``TESTBOT_JOB_TOKEN``, ``TESTBOT_JOB_ID`` and ``TESTBOT_SHARD_TOTAL`` are
all set. Then, after the usual collection, each shard's pytest sends the
ids of every test it collected to the job's test queue and, instead of
running them all, loops: take a batch from the queue, run it (in collection
order), report each test's outcome, duration and failure text, until the
queue is empty for this job. A failure may be put back in the queue and
rerun elsewhere (``--retry-failed``): the exit code goes by the tests'
final outcomes, which the queue gives at the end.

Turn it off with ``-p no:testbot`` or ``--testbot-off``. With
``--collect-only``, after collection errors, inside pytest-xdist or inside
a pytest started by such a run (the tests' own pytest subprocesses), it
does nothing.
"""

import os
import shlex
import sys

import pytest

from .queue import QueueError, TestQueue

#: All set inside a sharded testbot job; the plugin wakes up only then.
TRIGGER_ENV = ("TESTBOT_JOB_TOKEN", "TESTBOT_JOB_ID", "TESTBOT_SHARD_TOTAL")
#: Set while a run takes tests from the queue: a pytest the tests start
#: (in-process or as a subprocess) leaves the queue alone.
RUNNING_ENV = "TESTBOT_PYTEST_PID"
#: How the server may tell a person to rerun one test.
REPRO = "python -m pytest {id}"
#: The most of a failure's text sent with its result.
MESSAGE_LIMIT = 64 * 1024
PLUGIN_NAME = "testbot-queue"


def pytest_addoption(parser):
    group = parser.getgroup("testbot", "testbot: take tests from a sharded job's queue")
    group.addoption(
        "--testbot-off", action="store_true", default=False,
        help="run every collected test here, as if outside testbot, even inside a sharded "
             "testbot job (TESTBOT_JOB_TOKEN, TESTBOT_JOB_ID and TESTBOT_SHARD_TOTAL set)")
    group.addoption(
        "--testbot-batch", type=int, default=None, metavar="N",
        help="take at most N tests from the queue at a time (default: the server's choice)")


def _asleep_because(config):
    """Why the plugin stays asleep, or None when it takes tests from the queue."""
    if not all(os.environ.get(k) for k in TRIGGER_ENV):
        return "not inside a sharded testbot job"
    if config.getoption("testbot_off"):
        return "--testbot-off"
    if os.environ.get(RUNNING_ENV):
        return "a pytest started by a run that takes tests from the queue"
    if hasattr(config, "workerinput"):
        return "a pytest-xdist worker"
    if config.getoption("collectonly", False):
        return "--collect-only"
    if getattr(config.option, "dist", "no") not in (None, "no"):
        config.issue_config_time_warning(pytest.PytestConfigWarning(
            "testbot: pytest-xdist distributes the tests itself: the testbot test queue is "
            "not used, and every shard runs every test (drop -n/--dist, or add --testbot-off)"),
            stacklevel=2)
        return "pytest-xdist"
    return None


def pytest_configure(config):
    if _asleep_because(config) is not None:
        return
    runner = QueueRunner(config)
    try:
        runner.queue = TestQueue.from_env(log=runner.say)
    except ValueError as e:
        raise pytest.UsageError("testbot: %s (or run with --testbot-off)" % e)
    config.pluginmanager.register(runner, PLUGIN_NAME)
    os.environ[RUNNING_ENV] = str(os.getpid())


def pytest_unconfigure(config):
    runner = config.pluginmanager.get_plugin(PLUGIN_NAME)
    if runner is not None:
        config.pluginmanager.unregister(runner, PLUGIN_NAME)
        if os.environ.get(RUNNING_ENV) == str(os.getpid()):
            del os.environ[RUNNING_ENV]


def cap_message(text, limit=MESSAGE_LIMIT):
    """``text`` in at most ``limit`` UTF-8 bytes: its head and its tail
    (where pytest puts the assertion) with a note of what was cut between."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    head = limit // 4
    tail = limit - head - 64  # 64 bytes for the note
    note = "\n\n[... %d bytes cut by testbot ...]\n\n" % (len(data) - head - tail)
    return (data[:head].decode("utf-8", "ignore") + note
            + data[len(data) - tail:].decode("utf-8", "ignore"))


class _Result:
    """What the reports of one test's phases add up to."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.seconds = 0.0
        self.seen = False
        self.call_failed = False
        self.errored = False
        self.skipped = False
        self.messages = []

    def add(self, report):
        if report.when == "setup" and self.seen:
            self.reset()  # run again (pytest-rerunfailures): the last run counts
        self.seen = True
        self.seconds += getattr(report, "duration", 0.0) or 0.0
        if report.failed:
            if report.when == "call":
                self.call_failed = True
            else:
                self.errored = True
            text = report.longreprtext
            if report.when != "call":
                text = "error at %s:\n%s" % (report.when, text)
            self.messages.append(text)
        elif report.skipped:
            self.skipped = True  # a skip or an xfail

    @property
    def outcome(self):
        if self.call_failed:
            return "failed"
        if self.errored:
            return "error"
        if self.skipped:
            return "skipped"
        return "passed" if self.seen else "error"

    def entry(self, nodeid):
        out = {"id": nodeid, "outcome": self.outcome, "duration_ms": int(round(self.seconds * 1000))}
        if out["outcome"] in ("failed", "error"):
            text = "\n\n".join(self.messages) or "pytest reported nothing for this test"
            out["message"] = cap_message(text)
        return out


class QueueRunner:
    """The plugin's working half, registered only when the queue is used:
    runs the tests the queue hands out, in place of pytest's own loop."""

    def __init__(self, config):
        self.config = config
        self.queue = None
        self.limit = config.getoption("testbot_batch")
        self.running = {}       # nodeid -> _Result, for the batch running now
        self.ran = 0            # tests run here
        self.put_back = []      # ids that failed here and went back to the queue
        self.summary = None     # the answer of finish
        self.stopped = None     # why the run stopped early

    def say(self, line):
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            if getattr(getattr(tr, "_tw", None), "width_of_current_line", 0):
                tr.write("\n")  # after a line of progress dots
            tr.write_line(line)
        else:
            print(line, file=sys.stderr)

    # ----- hooks

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        if session.testsfailed or session.config.option.collectonly:
            return None  # collection errors or --collect-only: pytest's own loop
        try:
            self._loop(session)
        except QueueError as e:
            raise session.Interrupted("testbot: %s" % e) from None
        except BaseException:
            self._finish_quietly()
            raise
        try:
            self.summary = self.queue.finish()
        except QueueError as e:
            raise session.Interrupted("testbot: finish: %s" % e) from None
        # By the tests' final outcome: one that failed here and passed when
        # rerun elsewhere does not fail this job.
        session.testsfailed = len(self.summary["failing"])
        if session.shouldfail:
            raise session.Failed(session.shouldfail)
        if session.shouldstop:
            raise session.Interrupted(session.shouldstop)
        return True

    def pytest_runtest_logreport(self, report):
        result = self.running.get(report.nodeid)
        if result is not None:
            result.add(report)

    def pytest_terminal_summary(self, terminalreporter):
        if self.summary is None:
            return
        failing = list(self.summary.get("failing") or [])
        shard = ""
        index = os.environ.get("TESTBOT_SHARD_INDEX", "")
        if index.isdigit():
            shard = " (shard %d of %s)" % (int(index) + 1, os.environ.get("TESTBOT_SHARD_TOTAL"))
        rerun = len(set(self.put_back))
        line = "testbot: ran %d test%s from the queue%s: %d failing for good, %d failure%s rerun, %d flaky" % (
            self.ran, "" if self.ran == 1 else "s", shard, len(failing), rerun,
            "" if rerun == 1 else "s", int(self.summary.get("flaky") or 0))
        if self.stopped:
            line += "; stopped early (%s), the tests not run went back to the queue" % self.stopped
        terminalreporter.write_sep("=", "testbot test queue")
        terminalreporter.write_line(line, bold=True, red=bool(failing))
        for nodeid in failing[:20]:
            terminalreporter.write_line("testbot: failing: %s" % nodeid)
        if len(failing) > 20:
            terminalreporter.write_line("testbot: ... and %d more" % (len(failing) - 20))

    # ----- the loop

    def _loop(self, session):
        items = {}
        for item in session.items:
            items.setdefault(item.nodeid, item)
        order = {nodeid: i for i, nodeid in enumerate(items)}
        ids = list(items)
        repro = self._repro()

        answer = self.queue.next(tests=ids, limit=self.limit, repro=repro)
        if answer["need_list"]:
            answer = self._ask(ids, repro)
        while True:
            batch = list(dict.fromkeys(answer["tests"]))  # once each, in the server's order
            if not batch:
                if answer["done"]:
                    return
                answer = self._ask(ids, repro)
                continue
            results, answer = self._run_batch(session, items, order, batch, ids, repro)
            if results:
                reply = self.queue.report(results)
                self.put_back.extend(reply["retrying"])
                for ignored in reply["ignored"][:5]:
                    self.say("testbot: the server did not record %s: %s"
                             % (ignored.get("id"), ignored.get("why")))
            if session.shouldfail or session.shouldstop:
                self.stopped = str(session.shouldfail or session.shouldstop)
                return
            if answer is None:
                answer = self._ask(ids, repro)

    def _ask(self, ids, repro, wait=None):
        """The next batch; the list again whenever the server asks for it."""
        answer = self.queue.next(limit=self.limit, wait=wait)
        for _ in range(3):
            if not answer["need_list"]:
                return answer
            answer = self.queue.next(tests=ids, limit=self.limit, repro=repro, wait=wait)
        raise QueueError("the server keeps asking for the list of tests")

    def _repro(self):
        """How to rerun one test by hand: node ids are relative to the
        rootdir, which may not be where pytest was started."""
        root = getattr(self.config, "rootpath", None) or self.config.rootdir
        try:
            rel = os.path.relpath(str(root), str(self.config.invocation_params.dir))
        except ValueError:  # another drive
            rel = str(root)
        if rel == os.curdir:
            return REPRO
        return "cd %s && %s" % (shlex.quote(rel), REPRO)

    def _run_batch(self, session, items, order, batch, ids, repro):
        """Runs the batch; returns its results and the next batch when it
        was asked for already (before the last test, without waiting: so
        pytest keeps the fixtures that test shares with the next one), or
        None."""
        here = sorted((i for i in batch if i in items), key=order.__getitem__)
        results = []
        upcoming = None
        for n, nodeid in enumerate(here):
            item = items[nodeid]
            if n + 1 < len(here):
                nextitem = items[here[n + 1]]
            else:
                upcoming = self._ask(ids, repro, wait=0)
                following = sorted((i for i in upcoming["tests"] if i in items),
                                   key=order.__getitem__)
                nextitem = items[following[0]] if following else None
            self.running = {nodeid: _Result()}
            try:
                item.ihook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            finally:
                result = self.running.pop(nodeid)
            self.ran += 1
            results.append(result.entry(nodeid))
            if session.shouldfail or session.shouldstop:
                return results, upcoming  # the rest goes back to the queue with finish
        for nodeid in batch:
            if nodeid not in items:
                results.append({
                    "id": nodeid, "outcome": "error", "duration_ms": 0,
                    "message": "not collected in this job: %s (this shard's pytest collected %d "
                               "tests; do all shards run the same command on the same checkout?)"
                               % (nodeid, len(items)),
                })
        if upcoming is not None and not upcoming["tests"] and not upcoming["done"]:
            upcoming = None  # nothing yet: ask again, waiting this time
        return results, upcoming

    def _finish_quietly(self):
        """Gives the reserved tests back when the run ends abnormally
        (Ctrl-C, an internal error): a short try, errors only said."""
        try:
            self.queue.finish(retry_for=5)
        except Exception as e:
            self.say("testbot: could not give the reserved tests back: %s" % e)
