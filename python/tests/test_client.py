"""testbot.client.Client against the real `testbot serve`: the original
testbot documentation's three examples, and the protocol's promises
(client_info and push_status, stop, timeouts, cancels, exceptions, logs,
results kept while the server is away, tokens)."""

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from testbot.client import Client, Refused, detect_platform, parse_duration

from conftest import wait_until


# --- The original documentation's examples, almost verbatim.

class MyClient(Client):
    jobtypes = ['my-test-type']

    def do_job(self, job):
        return {'result': False, 'debug': 'The quick brown fox failed to jump.'}


class MobileClient(Client):
    jobtypes = ['mobile-test']

    @property
    def platform(self):
        return {'os.name': 'Maemo', 'device': 'Nokia N900'}

    def do_job(self, job):
        return {'result': True, 'device': self.platform['device']}


class MultiPythonClient(Client):
    jobtypes = ['python-test']
    capabilities = {
        'jobtypes': ['python-test'],
        'platforms': [{'python.version': '2.6.2'}, {'python.version': '3.1'}],
    }

    def do_job(self, job):
        return {'result': True, 'ran_on': job['platform']['python.version']}


def started(client):
    client.start()
    return client


def test_my_client_reports_a_failure_with_its_debug_text(server):
    client = started(MyClient(server.url, name='my-client', heartbeat_interval=1))
    try:
        job_id = server.submit({'jobtype': 'my-test-type'})
        job = server.wait_final(job_id)
    finally:
        client.stop(timeout=30)
    assert job['state'] == 'failed'
    assert job['worker'] == 'my-client'
    assert job['result']['debug'] == 'The quick brown fox failed to jump.'


def test_a_platform_override_is_what_jobs_match(server):
    client = started(MobileClient(server.url, name='n900', heartbeat_interval=1))
    try:
        job_id = server.submit({'jobtype': 'mobile-test', 'platform': {'device': 'Nokia*'}})
        job = server.wait_final(job_id)
    finally:
        client.stop(timeout=30)
    assert job['state'] == 'passed'
    assert job['platform']['device'] == 'Nokia N900'
    assert job['result']['device'] == 'Nokia N900'
    worker = server.get('/api/v1/workers/n900')
    # The override wins over what is detected, which it adds to (as a
    # shell worker's config does): os.family, hostname... stay.
    [platform] = worker['platforms']
    assert platform['os.name'] == 'Maemo' and platform['device'] == 'Nokia N900'
    assert platform['hostname'] and platform['os.family'] == 'linux', platform


def test_a_job_goes_to_the_matching_one_of_several_platforms(server):
    client = started(MultiPythonClient(server.url, name='pythons', heartbeat_interval=1))
    try:
        old = server.submit({'jobtype': 'python-test', 'platform': {'python.version': '2.6.2'}})
        new = server.submit({'jobtype': 'python-test', 'platform': {'python.version': '3.1'}})
        old_job, new_job = server.wait_final(old), server.wait_final(new)
    finally:
        client.stop(timeout=30)
    assert old_job['state'] == 'passed' and new_job['state'] == 'passed'
    assert (old_job['platform_index'], old_job['result']['ran_on']) == (0, '2.6.2')
    assert (new_job['platform_index'], new_job['result']['ran_on']) == (1, '3.1')


# --- client_info, push_status, stop.

class Gate(Client):
    """do_job waits for the test to open the gate."""
    jobtypes = ['gated']

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.seen_info_job = None

    def do_job(self, job):
        self.seen_info_job = self.client_info.get('job', {}).get('id')
        self.entered.set()
        self.gate.wait(30)
        return {'result': True}


def test_push_status_shows_client_info_within_a_second(server):
    client = started(Gate(server.url, name='pusher', heartbeat_interval=60))
    try:
        assert wait_until(10, lambda: server.call('GET', '/api/v1/workers/pusher')[0] == 200)
        job_id = server.submit({'jobtype': 'gated'})
        assert client.entered.wait(10)
        assert client.seen_info_job == job_id, 'the running job is in client_info["job"]'
        client.client_info['battery'] = 87
        t = time.time()
        client.push_status()
        shown = wait_until(1.0, lambda: server.get('/api/v1/workers/pusher')['info'].get('battery') == 87)
        assert shown, server.get("/api/v1/workers/pusher")["info"]
        assert time.time() - t < 1.0
        info = server.get('/api/v1/workers/pusher')['info']
        assert info['job']['id'] == job_id
    finally:
        client.gate.set()
        client.stop(timeout=30)


def test_stop_returns_only_after_do_job_finished_and_its_result_was_recorded(server):
    client = started(Gate(server.url, name='stopper', heartbeat_interval=1))
    job_id = server.submit({'jobtype': 'gated'})
    assert client.entered.wait(10)
    threading.Timer(1.5, client.gate.set).start()
    t = time.time()
    client.stop(timeout=30)
    assert time.time() - t >= 1.0, 'stop() did not wait for do_job'
    job = server.get('/api/v1/jobs/%d' % job_id)
    assert job['state'] == 'passed', job
    # Stopped: it claims nothing more.
    other = server.submit({'jobtype': 'gated'})
    time.sleep(1.0)
    assert server.get('/api/v1/jobs/%d' % other)['state'] == 'queued'


# --- Exceptions, logs, timeouts, cancels.

class Crashy(Client):
    jobtypes = ['crash', 'chatty']

    def do_job(self, job):
        if job['jobtype'] == 'crash':
            raise RuntimeError('the probe fell off')
        self.log('hello from', job['id'])
        self.log('second line')
        return {'state': 'passed', 'lines': 2}


def test_an_exception_is_an_error_with_its_traceback_in_the_log(server):
    client = started(Crashy(server.url, name='crashy', heartbeat_interval=1))
    try:
        crash = server.submit({'jobtype': 'crash'})
        chatty = server.submit({'jobtype': 'chatty'})
        crashed, talked = server.wait_final(crash), server.wait_final(chatty)
    finally:
        client.stop(timeout=30)
    assert crashed['state'] == 'error'
    assert 'RuntimeError: the probe fell off' in crashed['reason']
    log = server.log(crash)
    assert 'Traceback' in log and 'the probe fell off' in log
    assert talked['state'] == 'passed' and talked['result']['lines'] == 2
    assert server.log(chatty) == 'hello from %d\nsecond line\n' % chatty


class Sleepy(Client):
    jobtypes = ['sleepy']

    def do_job(self, job):
        time.sleep(float(job['params'].get('seconds', '10')))
        return {'result': True}


def test_a_timeout_and_a_cancel_are_honoured(server):
    client = started(Sleepy(server.url, name='sleepy', heartbeat_interval=60))
    try:
        slow = server.submit({'jobtype': 'sleepy', 'timeout': 1, 'params': {'seconds': '8'}})
        job = server.wait_final(slow, timeout=10)
        assert job['state'] == 'timed_out', job
        long = server.submit({'jobtype': 'sleepy', 'params': {'seconds': '30'}})
        server.wait_state(long, 'running')
        time.sleep(0.5)
        t = time.time()
        status, _ = server.call('POST', '/api/v1/jobs/%d/cancel' % long)
        assert status == 200
        job = server.wait_final(long, timeout=10)
        assert job['state'] == 'canceled', job
        assert time.time() - t < 3, 'the cancel took %.1fs' % (time.time() - t)
    finally:
        client.stop(timeout=40)


# --- The server away, tokens.

def test_a_result_made_while_the_server_is_away_arrives_when_it_is_back(make_server, tmp_path):
    server = make_server()
    client = started(Gate(server.url, name='patient', heartbeat_interval=1))
    try:
        job_id = server.submit({'jobtype': 'gated'})
        assert client.entered.wait(10)
        server.kill9()
        client.gate.set()
        time.sleep(2)
        server.start(server.addr)
        job = server.wait_final(job_id, timeout=30)
        assert job['state'] == 'passed', job
        assert job['attempt'] == 1, job
    finally:
        client.gate.set()
        client.stop(timeout=30)


def test_tokens_from_the_environment(make_server, tmp_path, monkeypatch):
    (tmp_path / 'worker.tokens').write_text('w-secret\n')
    (tmp_path / 'client.tokens').write_text('c-secret\n')
    server = make_server(['--worker-tokens', str(tmp_path / 'worker.tokens'),
                          '--client-tokens', str(tmp_path / 'client.tokens')])
    monkeypatch.setenv('TESTBOT_SERVER', server.url)
    monkeypatch.setenv('TESTBOT_TOKEN', 'w-secret')
    client = started(MyClient(name='tokened', heartbeat_interval=1))
    try:
        job_id = server.submit({'jobtype': 'my-test-type'}, token='c-secret')
        assert server.wait_final(job_id)['state'] == 'failed'
    finally:
        client.stop(timeout=30)
    bad = MyClient(server.url, name='tokened', token='c-secret')
    with pytest.raises(Exception):
        bad._request('POST', '/api/v1/workers', {'name': 'x'})


def test_helpers():
    assert parse_duration('90s') == 90
    assert parse_duration('1h 30m') == 5400
    assert parse_duration('1h30m') == 5400
    assert parse_duration('30d') == 30 * 86400
    assert parse_duration('30days') == 30 * 86400
    assert parse_duration(None) is None
    with pytest.raises(ValueError):
        parse_duration('3 fortnights')
    p = detect_platform()
    for key in ('os.name', 'os.version', 'os.family', 'os.arch', 'hostname', 'python.version'):
        assert p[key], key


def test_the_detected_platform_is_the_rust_workers(tmp_path):
    """One requirement on the detected properties matches a Python client
    and testbot's own worker on the same machine alike."""
    import json
    import subprocess

    from conftest import binary

    config = tmp_path / "w.toml"
    config.write_text(
        'server = "http://127.0.0.1:9"\nname = "same"\nwork_dir = "%s"\n'
        '[jobtypes.x]\ncommand = "true"\n' % (tmp_path / "work")
    )
    out = subprocess.run([binary(), "worker", "--config", str(config), "--check"],
                         capture_output=True, text=True, check=True)
    rust = json.loads(out.stdout)["platforms"][0]["properties"]
    python = detect_platform()
    for key in ('os.name', 'os.version', 'os.family', 'os.arch', 'hostname'):
        assert python[key] == rust[key], (key, python[key], rust[key])


# --- What outside testing found: results and info the server cannot take,
# secrets, names, tokens, server lists, Ctrl-C, stop() from do_job.

class Returns(Client):
    """Returns what the job's ``what`` param names."""
    jobtypes = ['returns']
    values = {
        'nan': {'result': True, 'v': float('nan')},
        'surrogate': {'result': True, 'v': 'x\ud800'},
        'huge': {'result': True, 'v': 'x' * (4 << 20)},
        'bogus-state': {'state': 'bogus'},
        'string-result': {'result': 'false'},
    }

    def do_job(self, job):
        return self.values[job['params']['what']]


def test_a_result_the_server_cannot_take_ends_the_job_once_saying_why(server):
    client = started(Returns(server.url, name='returns', heartbeat_interval=1))
    try:
        ids = {w: server.submit({'jobtype': 'returns', 'params': {'what': w}})
               for w in Returns.values}
        jobs = {w: server.wait_final(i, timeout=30) for w, i in ids.items()}
    finally:
        client.stop(timeout=30)
    for what in ('nan', 'surrogate', 'bogus-state', 'string-result'):
        job = jobs[what]
        assert job['state'] == 'error' and job['attempt'] == 1, (what, job)
        assert job['reason'], job
    assert 'cannot take' in jobs['nan']['reason'], jobs['nan']
    assert "'bogus'" in jobs['bogus-state']['reason']
    huge = jobs['huge']
    assert huge['state'] == 'passed' and huge['attempt'] == 1, huge
    assert 'not sent' in huge['result']['result_trimmed'], huge


class Unsendable(Client):
    jobtypes = ['unsendable']

    def do_job(self, job):
        self.client_info['battery'] = float('nan')
        time.sleep(5)
        return {'result': True}


def test_client_info_the_server_cannot_take_keeps_the_heartbeats_and_the_job(server):
    client = started(Unsendable(server.url, name='unsendable', heartbeat_interval=1))
    try:
        job_id = server.submit({'jobtype': 'unsendable', 'max_attempts': 1})
        job = server.wait_final(job_id, timeout=30)
        info = server.get('/api/v1/workers/unsendable')['info']
    finally:
        client.stop(timeout=30)
    assert job['state'] == 'passed' and job['attempt'] == 1, job
    assert 'info_error' in info, info


class Holder(Client):
    jobtypes = ['hold']

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.entered, self.gate = threading.Event(), threading.Event()

    def do_job(self, job):
        self.entered.set()
        self.gate.wait(20)
        return {'result': True}


def test_the_job_token_is_not_published_with_client_info(make_server, tmp_path):
    (tmp_path / 'worker.tokens').write_text('w-secret\n')
    (tmp_path / 'client.tokens').write_text('c-secret\n')
    server = make_server(['--worker-tokens', str(tmp_path / 'worker.tokens'),
                          '--client-tokens', str(tmp_path / 'client.tokens')])
    client = started(Holder(server.url, name='holder', token='w-secret', heartbeat_interval=1))
    try:
        job_id = server.submit({'jobtype': 'hold'}, token='c-secret')
        assert client.entered.wait(20)
        assert wait_until(10, lambda: (server.get('/api/v1/workers/holder')['info'].get('job')
                                       or {}).get('id') == job_id)
        info = server.get('/api/v1/workers/holder')['info']
        assert 'job_token' not in info['job'], info
        with urllib.request.urlopen(server.url + '/workers/holder', timeout=10) as page:
            assert b'tbj1.' not in page.read()
        client.gate.set()
        assert server.wait_final(job_id)['state'] == 'passed'
        # Gone from client_info as soon as the job ended.
        assert wait_until(3, lambda: 'job' not in server.get('/api/v1/workers/holder')['info'])
    finally:
        client.gate.set()
        client.stop(timeout=30)


def test_a_second_client_of_one_name_is_refused_and_a_restarted_one_is_not(server):
    first = started(Holder(server.url, name='twin', heartbeat_interval=1))
    try:
        assert wait_until(10, lambda: server.call('GET', '/api/v1/workers/twin')[0] == 200)
        second = started(Holder(server.url, name='twin', heartbeat_interval=1))
        second._thread.join(10)
        assert not second._thread.is_alive()
        assert isinstance(second.error, Refused) and second.error.status == 409, second.error
        t = time.time()
        second.stop()
        assert time.time() - t < 1
    finally:
        first.stop(timeout=30)
    # The same client made again (a restart): the same worker, not refused.
    again = started(Holder(server.url, name='twin', heartbeat_interval=1))
    try:
        job_id = server.submit({'jobtype': 'hold'})
        assert again.entered.wait(20), again.error
        again.gate.set()
        assert server.wait_final(job_id)['state'] == 'passed'
    finally:
        again.gate.set()
        again.stop(timeout=30)


def test_a_token_the_server_refuses_ends_run_at_once(make_server, tmp_path):
    (tmp_path / 'worker.tokens').write_text('w-secret\n')
    server = make_server(['--worker-tokens', str(tmp_path / 'worker.tokens')])
    client = MyClient(server.url, name='bogus', token='not-a-token')
    t = time.time()
    with pytest.raises(Refused) as e:
        client.run()
    assert e.value.status == 401 and time.time() - t < 5


def test_a_list_of_servers_moves_on_from_one_that_is_down(server, monkeypatch, capsys):
    monkeypatch.setenv('TESTBOT_SERVER', 'http://127.0.0.1:9,' + server.url)
    client = started(MyClient(name='listed', heartbeat_interval=1))
    try:
        job = server.wait_final(server.submit({'jobtype': 'my-test-type'}))
        assert job['state'] == 'failed' and job['worker'] == 'listed'
    finally:
        client.stop(timeout=30)
    assert client.server == server.url
    assert 'using %s now' % server.url in capsys.readouterr().err


class StopsItself(Client):
    jobtypes = ['stops']

    def do_job(self, job):
        self.stop()
        return {'result': True}


def test_stop_called_from_do_job_ends_the_job_and_then_the_client(server):
    client = started(StopsItself(server.url, name='stopper', heartbeat_interval=1))
    job_id = server.submit({'jobtype': 'stops', 'timeout': 20})
    job = server.wait_final(job_id, timeout=15)
    assert job['state'] == 'passed', job
    client._thread.join(10)
    assert not client._thread.is_alive()


class Overstays(Client):
    jobtypes = ['overstay', 'quick']

    def do_job(self, job):
        if job['jobtype'] == 'overstay':
            time.sleep(2.5)
            self.log('late line from job', job['id'])
            return {'result': True}
        time.sleep(3)
        self.log('quick line')
        return {'result': True}


def test_a_do_job_that_overstays_its_timeout_writes_nothing_into_the_next_jobs_log(server):
    client = started(Overstays(server.url, name='overstays', heartbeat_interval=1))
    try:
        slow = server.submit({'jobtype': 'overstay', 'timeout': 1})
        job = server.wait_final(slow, timeout=15)
        assert job['state'] == 'timed_out' and job['reason'] == 'timed out after 1s', job
        quick = server.submit({'jobtype': 'quick'})
        assert server.wait_final(quick, timeout=15)['state'] == 'passed'
        assert server.log(quick) == 'quick line\n'
    finally:
        client.stop(timeout=30)


def test_ctrl_c_lets_the_running_job_finish_and_a_second_gives_it_back(server, tmp_path):
    script = tmp_path / 'client.py'
    script.write_text(
        'import sys, time\n'
        'from testbot.client import Client\n'
        'class C(Client):\n'
        '    jobtypes = ["slow"]\n'
        '    def do_job(self, job):\n'
        '        print("started", flush=True)\n'
        '        time.sleep(float(job["params"]["s"]))\n'
        '        return {"result": True}\n'
        'C(sys.argv[1], name=sys.argv[2], heartbeat_interval=1).run()\n')
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))

    def run_one(name, seconds, signals):
        proc = subprocess.Popen([sys.executable, str(script), server.url, name],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            job_id = server.submit({'jobtype': 'slow', 'params': {'s': str(seconds)},
                                    'max_attempts': 1 if signals == 1 else 2,
                                    'platform': {'hostname': '*'}})
            assert proc.stdout.readline() == b'started\n'
            for _ in range(signals):
                proc.send_signal(signal.SIGINT)
                time.sleep(0.3)
            proc.wait(timeout=30)
            return job_id, proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    job_id, proc = run_one('ctrl-c-once', 2, 1)
    assert proc.returncode == 0, proc.stderr.read().decode()
    job = server.get('/api/v1/jobs/%d' % job_id)
    assert job['state'] == 'passed' and job['attempt'] == 1, job
    job_id, proc = run_one('ctrl-c-twice', 30, 2)
    assert proc.returncode != 0
    job = server.get('/api/v1/jobs/%d' % job_id)
    # Given back at once: queued again for another worker, not held until
    # its lease ran out.
    assert job['state'] == 'queued' and job['attempt'] == 1, job
