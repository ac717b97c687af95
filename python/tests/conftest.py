"""Fixtures: the real `testbot serve` binary on 127.0.0.1, a temporary
database, and a small HTTP helper. Every process is ended by PID."""

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def binary():
    path = os.environ.get("TESTBOT_BIN") or str(REPO / "target" / "debug" / "testbot")
    if not Path(path).exists():
        pytest.fail("no testbot binary at %s: run `cargo build` or set TESTBOT_BIN" % path)
    return path


class Server:
    def __init__(self, tmp, args=(), listen="127.0.0.1:0"):
        self.tmp = Path(tmp)
        self.args = list(args)
        self.proc = None
        self.start(listen)

    def start(self, listen):
        env = {k: v for k, v in os.environ.items() if not k.startswith("TESTBOT_")}
        self.proc = subprocess.Popen(
            [binary(), "serve", "--listen", listen, "--db", str(self.tmp / "testbot.db")] + self.args,
            stdout=subprocess.PIPE, stderr=open(self.tmp / "server.log", "ab"), env=env,
            stdin=subprocess.DEVNULL,
        )
        first = self.proc.stdout.readline().decode()
        assert first.startswith("testbot listening on "), first
        self.url = first.split()[-1]
        self.addr = self.url.split("://", 1)[1]

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def call(self, method, path, body=None, token=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                text = r.read()
                return r.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def get(self, path):
        status, body = self.call("GET", path)
        assert status == 200, (path, status, body)
        return body

    def submit(self, spec, token=None):
        status, job = self.call("POST", "/api/v1/jobs", spec, token=token)
        assert status == 201, job
        return job["id"]

    def log(self, job_id):
        with urllib.request.urlopen("%s/api/v1/jobs/%d/log" % (self.url, job_id), timeout=30) as r:
            return r.read().decode()

    def wait_final(self, job_id, timeout=30.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.get("/api/v1/jobs/%d" % job_id)
            if job["state"] not in ("queued", "running"):
                return job
            time.sleep(0.05)
        raise AssertionError("job %d not final after %ss: %s" % (job_id, timeout, job))

    def wait_state(self, job_id, state, timeout=30.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.get("/api/v1/jobs/%d" % job_id)
            if job["state"] == state:
                return job
            time.sleep(0.05)
        raise AssertionError("job %d never %s: %s" % (job_id, state, job))


def wait_until(timeout, check):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path)
    yield s
    s.stop()


@pytest.fixture
def make_server(tmp_path):
    made = []

    def make(args=(), listen="127.0.0.1:0"):
        s = Server(tmp_path, args, listen)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()
