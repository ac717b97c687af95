"""The test queue of a sharded testbot job, over HTTP.

Inside a job of a sharded submission (``testbot submit JOBTYPE --shards
N``) the worker gives the command ``TESTBOT_SERVER``, ``TESTBOT_JOB_ID``,
``TESTBOT_JOB_TOKEN`` and, for https, ``TESTBOT_CA_FILE``. The N shard jobs
share one queue of tests: each takes a batch, runs it, reports it, and
takes the next, until the queue says it is done::

    from testbot.queue import TestQueue

    queue = TestQueue.from_env()
    answer = queue.next(tests=all_my_test_ids, repro="./run-one {id}")
    while not (answer["done"] and not answer["tests"]):
        ...  # run answer["tests"], then queue.report([...])
        answer = queue.next(tests=all_my_test_ids if answer["need_list"] else None)
    summary = queue.finish()   # summary["failing"]: exit non-zero if any

Calls that meet a server away or failing (connection refused, 5xx) are
retried with backoff for about a minute, moving on to the next server of
``TESTBOT_SERVER`` (a comma-separated list) on connection errors. A refusal
(401/403: the token is bad or the attempt no longer current; 409: the
attempt no longer current; any other 4xx) raises :class:`QueueRefused` at
once: the run should stop. Standard library only.
"""

import http.client
import json
import os
import ssl
import sys
import time
import urllib.parse

from .client import _Backoff

__all__ = ["TestQueue", "QueueError", "QueueRefused", "QueueUnavailable"]

#: How long the server holds a ``next`` that finds nothing when the call
#: does not say (the contract's default).
DEFAULT_WAIT = 30.0
#: The longest ``wait`` the server accepts.
MAX_WAIT = 60.0
#: How long a call keeps retrying a server that is away or failing.
RETRY_FOR = 60.0
#: A report bigger than this (long failure texts) goes in several calls,
#: well under the size of body the server reads.
REPORT_BYTES = 4 << 20


class QueueError(Exception):
    """The test queue cannot be used any more: stop the run."""


class QueueRefused(QueueError):
    """The server refused a call for good: ``status`` (401/403: bad token or
    an attempt no longer current; 409: attempt no longer current; other
    4xx: a bad request) and its ``message``."""

    def __init__(self, status, message, url=""):
        why = {
            401: "the job token was refused",
            403: "the job token was refused or this attempt is no longer current",
            409: "this attempt is no longer current (the job went elsewhere)",
        }.get(status, "the server refused the call")
        super().__init__("%s (%d %s): %s" % (why, status, url, message))
        self.status = status
        self.message = message


class QueueUnavailable(QueueError):
    """No server of the list answered within the retry budget."""


class _Retry(Exception):
    """One call failed in a way worth another try; ``connection``: the
    server could not be reached (try the next one)."""

    def __init__(self, text, connection):
        super().__init__(text)
        self.connection = connection


def _servers(value):
    if isinstance(value, str):
        value = value.split(",")
    out = []
    for s in value or ():
        s = s.strip()
        if not s:
            continue
        if "://" not in s:
            s = "http://" + s
        out.append(s.rstrip("/"))
    return out


class TestQueue:
    """The test queue of one job (all shards of a submission share it).

    ``servers``: a URL or a list of them (a string may be comma-separated);
    ``job_id``, ``token``: the job's id and its per-attempt token;
    ``ca_file``: a CA bundle to trust for https. ``retry_for``: seconds a
    call keeps retrying a server that is away or failing. ``log``: a function
    given one line of text when the queue has something to say (default:
    print to stderr).
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, servers, job_id, token, ca_file=None, retry_for=RETRY_FOR, log=None):
        self.servers = _servers(servers)
        if not self.servers:
            raise ValueError("no testbot server given (TESTBOT_SERVER)")
        self.job_id = str(job_id)
        self.token = token
        self.ca_file = ca_file or None
        self.retry_for = float(retry_for)
        self.log = log or (lambda line: print(line, file=sys.stderr))
        self._ssl = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None
        self._current = 0

    @classmethod
    def from_env(cls, environ=None, **kwargs):
        """The queue of the job this process runs in, from ``TESTBOT_SERVER``,
        ``TESTBOT_JOB_ID``, ``TESTBOT_JOB_TOKEN`` and ``TESTBOT_CA_FILE``."""
        env = os.environ if environ is None else environ
        missing = [k for k in ("TESTBOT_SERVER", "TESTBOT_JOB_ID", "TESTBOT_JOB_TOKEN") if not env.get(k)]
        if missing:
            raise ValueError("not inside a testbot job: %s not set" % ", ".join(missing))
        return cls(env["TESTBOT_SERVER"], env["TESTBOT_JOB_ID"], env["TESTBOT_JOB_TOKEN"],
                   ca_file=env.get("TESTBOT_CA_FILE"), **kwargs)

    @property
    def server(self):
        """The server the calls go to now."""
        return self.servers[self._current]

    # ----- the calls

    def next(self, tests=None, limit=None, wait=None, repro=None):
        """Reserves the next batch of tests for this attempt.

        ``tests``: every test id this runner collected (send it with the
        first call, and again when an answer has ``need_list``); ``limit``:
        the most ids wanted; ``wait``: seconds the server may hold the call
        when nothing is free yet; ``repro``: a command template with
        ``{id}`` that reruns one test. Answers ``{"tests": [...], "done":
        bool, "need_list": bool}``."""
        body = {}
        if tests is not None:
            body["tests"] = list(tests)
        if limit is not None:
            body["max"] = int(limit)
        if wait is not None:
            body["wait"] = min(float(wait), MAX_WAIT)
        if repro is not None:
            body["repro"] = repro
        held = body.get("wait", DEFAULT_WAIT)
        answer = self._call("tests/next", body, timeout=held + 30)
        return {
            "tests": list(answer.get("tests") or []),
            "done": bool(answer.get("done")),
            "need_list": bool(answer.get("need_list")),
        }

    def report(self, results):
        """Records results of tests reserved for this attempt: dicts with
        ``id``, ``outcome`` (passed, failed, skipped, error), ``duration_ms``
        and, optionally, ``message``. Answers ``{"recorded": n, "retrying":
        [ids put back to be rerun elsewhere], "ignored": [...]}``. A big
        report (long failure texts) is sent in several calls."""
        answer = {"recorded": 0, "retrying": [], "ignored": []}
        for chunk in _chunks(list(results), REPORT_BYTES):
            part = self._call("tests/report", {"results": chunk})
            answer["recorded"] += int(part.get("recorded") or 0)
            answer["retrying"] += list(part.get("retrying") or [])
            answer["ignored"] += list(part.get("ignored") or [])
        return answer

    def finish(self, retry_for=None):
        """Gives back what this attempt reserved and did not report; answers
        the job's counts (``passed``, ``failed``, ``skipped``, ``error``,
        ``flaky``), ``failing`` (exit non-zero iff it is not empty) and
        ``retrying``."""
        answer = self._call("tests/finish", {}, retry_for=retry_for)
        answer.setdefault("failing", [])
        answer.setdefault("retrying", [])
        return answer

    # ----- HTTP

    def _call(self, what, body, timeout=60.0, retry_for=None):
        path = "/api/v1/jobs/%s/%s" % (urllib.parse.quote(self.job_id, safe=""), what)
        budget = self.retry_for if retry_for is None else float(retry_for)
        deadline = time.monotonic() + budget
        backoff, said, failed_in_row = _Backoff(first=0.2, cap=10.0), False, 0
        while True:
            server = self.server
            try:
                answer = self._post(server + path, body, timeout)
                if said:
                    self.log("testbot: %s answers again" % server)
                return answer
            except _Retry as e:
                error = e
            if error.connection and len(self.servers) > 1:
                self._current = (self._current + 1) % len(self.servers)
                failed_in_row += 1
                if failed_in_row < len(self.servers):
                    continue  # the next server, at once
            failed_in_row = 0
            delay = backoff.next()
            if time.monotonic() + delay > deadline:
                raise QueueUnavailable("no answer from the test queue after retrying for %.0fs: %s"
                                       % (budget, error))
            if not said:
                self.log("testbot: %s; retrying" % error)
                said = True
            time.sleep(delay)

    def _post(self, url, body, timeout):
        """POSTs over a connection kept open between calls (a batch's next
        and report cost the server no new connection); a connection the
        server closed meanwhile is opened again once, at once."""
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        parts = urllib.parse.urlsplit(url)
        path = parts.path + ("?" + parts.query if parts.query else "")
        for fresh in (False, True):
            conn = self._connection(parts, timeout, fresh)
            try:
                conn.request("POST", path, body=data, headers=headers)
                resp = conn.getresponse()
                status, text = resp.status, resp.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self._drop_connection()
                if fresh:
                    raise _Retry("%s: %s" % (url, e), connection=True)
            except (OSError, http.client.HTTPException) as e:
                self._drop_connection()
                raise _Retry("%s: %s" % (url, getattr(e, "reason", None) or e), connection=True)
        if status >= 400:
            message = _message_of(text, resp.reason)
            if status >= 500 or status in (408, 429):
                raise _Retry("%s: %d %s" % (url, status, message), connection=False)
            raise QueueRefused(status, message, url)
        try:
            answer = json.loads(text) if text else {}
        except ValueError:
            raise _Retry("%s: the answer is not JSON: %r" % (url, text[:200]), connection=False)
        if not isinstance(answer, dict):
            raise _Retry("%s: the answer is not a JSON object: %r" % (url, text[:200]), connection=False)
        return answer

    def _connection(self, parts, timeout, fresh):
        key = (parts.scheme, parts.hostname, parts.port)
        conn = getattr(self, "_conn", None)
        if fresh or conn is None or getattr(self, "_conn_key", None) != key:
            self._drop_connection()
            if parts.scheme == "https":
                conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                                   context=self._ssl)
            else:
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
            self._conn, self._conn_key = conn, key
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _drop_connection(self):
        conn = getattr(self, "_conn", None)
        self._conn = None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass


def _chunks(results, limit):
    """``results`` in runs of at most ``limit`` bytes of JSON (or one result)."""
    chunk, size = [], 0
    for r in results:
        n = len(json.dumps(r).encode()) + 2
        if chunk and size + n > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(r)
        size += n
    if chunk or not results:
        yield chunk


def _message_of(body, reason):
    """The server's ``{"error": ...}``, else the body, else the reason."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    try:
        return str(json.loads(text).get("error", text))
    except (ValueError, AttributeError):
        return text.strip() or str(reason)
