"""Write a testbot client in Python, as the original testbot did.

Subclass :class:`Client`, name your ``jobtypes``, implement
``do_job(self, job)`` returning a JSON-able dict, and call ``run()``::

    from testbot.client import Client

    class MyClient(Client):
        jobtypes = ['my-test-type']

        def do_job(self, job):
            return {'result': False, 'debug': 'the widget did not frob'}

    MyClient('http://ci.example.org:8080').run()

The client speaks testbot's REST API as testbot's own worker does: it
registers its capabilities, long-polls for jobs it can run, renews the
leases of its running job with heartbeats (which carry ``client_info``),
honours a job's timeout and cancels, and delivers each result exactly once:
retried with backoff while the server is away, dropped only when the server
says the attempt is no longer current (409). Standard library only.
"""

import json
import os
import platform as _platform
import random
import re
import socket
import ssl
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

__all__ = ["Client", "Refused", "Unavailable", "detect_platform", "parse_duration"]

DEFAULT_SERVER = "http://127.0.0.1:8080"
#: A job without a timeout of its own gets this many seconds, as the
#: shell worker's default.
DEFAULT_TIMEOUT = 3600.0
#: The longest the server holds a heartbeat of a busy client open.
MAX_HOLD = 30.0
#: How long one claim waits on the server: short, so that ``stop()`` on an
#: idle client returns soon.
CLAIM_WAIT = 5.0
FINAL_STATES = ("passed", "failed", "timed_out", "canceled", "error")
#: The largest result the server takes (bytes of JSON); a larger one is
#: sent without its data, saying so.
RESULT_MAX = 3 << 20
#: The deepest JSON the server takes in a result's data or ``client_info``.
JSON_DEPTH = 32
#: The most bytes of log sent in one request.
LOG_CHUNK = 1 << 20


class Refused(Exception):
    """The server refused a request for good (4xx other than 401, 403, 408,
    429, which may pass): ``status`` and the server's ``message``."""

    def __init__(self, status, message):
        super().__init__("the server refused the request (%d): %s" % (status, message))
        self.status = status
        self.message = message


class Unavailable(Exception):
    """The server is away, failing, or refusing for a while (a token being
    rotated): try again (``push_status()`` raises it when no server
    answers)."""


_Unavailable = Unavailable


def _json_problem(value):
    """Why ``value`` is not JSON the server takes (NaN or infinity, a lone
    surrogate, nesting deeper than :data:`JSON_DEPTH`), or None."""
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")
    except (TypeError, ValueError) as e:
        return str(e)
    except UnicodeEncodeError:
        return "it holds a string that is not Unicode text (a lone surrogate)"
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    if deepest > JSON_DEPTH:
        return "it nests %d levels deep, over the %d the server takes" % (deepest, JSON_DEPTH)
    return None


#: os-release IDs and the names testbot's own worker gives them (the
#: ``os_info`` crate's), so one requirement matches both kinds of worker.
_OS_NAMES = {
    "almalinux": "AlmaLinux", "alpine": "Alpine Linux", "amzn": "Amazon Linux AMI",
    "arch": "Arch Linux", "archarm": "Arch Linux", "artix": "Artix Linux",
    "centos": "CentOS", "debian": "Debian", "elementary": "Elementary OS",
    "fedora": "Fedora", "kali": "Kali Linux", "linuxmint": "Linux Mint",
    "manjaro-arm": "Manjaro", "mariner": "Mariner", "neon": "KDE neon",
    "nixos": "NixOS", "ol": "Oracle Linux", "opensuse": "openSUSE",
    "opensuse-leap": "openSUSE", "opensuse-tumbleweed": "openSUSE",
    "opensuse-microos": "openSUSE", "pop": "Pop!_OS", "rhel": "Red Hat Enterprise Linux",
    "rocky": "Rocky Linux", "sled": "SUSE Linux Enterprise Server",
    "sles": "SUSE Linux Enterprise Server", "ubuntu": "Ubuntu", "void": "Void Linux",
    "zorin": "Zorin OS",
}


def _os_release():
    """``/etc/os-release`` as a dict (read here: Python before 3.10 has no
    ``platform.freedesktop_os_release``); empty when there is none."""
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        out = {}
        for line in lines:
            key, sep, value = line.partition("=")
            if sep and key.strip() and not key.startswith("#"):
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                    value = value[1:-1]
                out[key.strip()] = value
        return out
    return {}


def _os_name():
    if sys.platform.startswith("linux"):
        return _OS_NAMES.get(_os_release().get("ID", "").lower(), "Linux")
    if sys.platform == "darwin":
        return "Mac OS"
    if sys.platform.startswith("win"):
        return "Windows"
    return _platform.system() or "unknown"


def _semantic(version):
    """A version as testbot's own worker writes it (the ``os_info`` crate):
    one to three numbers become MAJOR.MINOR.PATCH (``12`` is ``12.0.0``,
    ``22.04`` is ``22.4.0``), so one requirement matches both kinds of
    worker on the same machine; anything else stays as it is."""
    parts = version.strip().split(".")
    if 1 <= len(parts) <= 3 and all(p.isdigit() for p in parts):
        numbers = [int(p) for p in parts] + [0] * (3 - len(parts))
        return "%d.%d.%d" % tuple(numbers)
    return version


def _os_version():
    if sys.platform.startswith("linux"):
        found = _os_release().get("VERSION_ID") or _platform.release()
    elif sys.platform == "darwin":
        found = _platform.mac_ver()[0]
    else:
        found = _platform.version()
    return _semantic(found)


def detect_platform():
    """The properties testbot's worker detects (``os.name``, ``os.version``,
    ``os.family``, ``os.arch``, ``hostname``), plus ``python.version``: what
    the original testbot read from ``os.uname()`` and the running Python."""
    family = {"linux": "linux", "darwin": "macos", "win32": "windows"}
    arch = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64",
            "i386": "x86", "i486": "x86", "i586": "x86", "i686": "x86",
            "armv6l": "arm", "armv7l": "arm", "ppc64le": "powerpc64", "s390x": "s390x",
            "riscv64": "riscv64"}
    machine = _platform.machine()
    return {
        "os.name": _os_name(),
        "os.version": _os_version(),
        "os.family": family.get(sys.platform, re.sub(r"\d+$", "", sys.platform)),
        "os.arch": arch.get(machine.lower(), machine),
        "hostname": socket.gethostname(),
        "python.version": _platform.python_version(),
    }


_UNITS = {
    "ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "sec": 1, "secs": 1, "second": 1,
    "seconds": 1, "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600, "d": 86400, "day": 86400,
    "days": 86400, "w": 604800, "week": 604800, "weeks": 604800,
}


def parse_duration(text):
    """Seconds in a duration as testbot writes it (``90s``, ``1h30m``,
    ``30d``; a bare number is seconds); None for None."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text)
    text = str(text).strip()
    if re.fullmatch(r"\d+", text):
        return float(text)
    parts = re.findall(r"(\d+)\s*([a-zA-Z]+)", text)
    if not parts or re.sub(r"[\d\sa-zA-Z]", "", text):
        raise ValueError("not a duration: %r" % text)
    total = 0.0
    for number, unit in parts:
        if unit not in _UNITS:
            raise ValueError("unknown unit %r in %r" % (unit, text))
        total += int(number) * _UNITS[unit]
    return total


class _Unreachable(Exception):
    """No connection to that server (refused, no such host): the next one
    of the list may answer."""


def _format_seconds(seconds):
    """Seconds as testbot writes durations: ``90`` is ``1m30s``."""
    seconds = max(1, int(round(seconds)))
    out = ""
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m"), (1, "s")):
        if seconds >= size:
            out += "%d%s" % (seconds // size, unit)
            seconds %= size
    return out


def _now_rfc3339():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (int(t * 1000) % 1000)


class _Backoff:
    """Capped, jittered delays between retries."""

    def __init__(self, first=0.2, cap=10.0):
        self.delay, self.cap = first, cap

    def next(self):
        d = self.delay
        self.delay = min(self.delay * 2, self.cap)
        return d * random.uniform(0.5, 1.0)


class Client:
    """A testbot client: subclass it, set ``jobtypes``, implement ``do_job``.

    ``server``, ``name``, ``token`` and ``ca_file`` default to
    ``TESTBOT_SERVER`` (else ``http://127.0.0.1:8080``), the host name,
    ``TESTBOT_TOKEN`` and ``TESTBOT_CA_FILE``, as testbot's CLI reads them.
    """

    #: The jobtypes this client runs.
    jobtypes = []
    #: Seconds between heartbeats (the original's default, 60).
    heartbeat_interval = 60.0

    def __init__(self, server=None, name=None, token=None, ca_file=None,
                 heartbeat_interval=None):
        server = server or os.environ.get("TESTBOT_SERVER") or DEFAULT_SERVER
        # A comma-separated list (or a list) of servers sharing a database,
        # as the CLI takes them: when the one in use does not answer, the
        # next is tried and kept.
        given = server if isinstance(server, (list, tuple)) else str(server).split(",")
        self.servers = []
        for one in given:
            one = one.strip()
            if one:
                self.servers.append(("" if "://" in one else "http://") + one.rstrip("/"))
        if not self.servers:
            raise ValueError("no server URL in %r" % (server,))
        #: The server in use.
        self.server = self.servers[0]
        #: Why ``run()`` ended, when it ended with an exception (a refused
        #: registration, for example); None otherwise.
        self.error = None
        self.name = name or socket.gethostname()
        self.token = token or os.environ.get("TESTBOT_TOKEN") or None
        self.ca_file = ca_file or os.environ.get("TESTBOT_CA_FILE") or None
        if heartbeat_interval is not None:
            self.heartbeat_interval = float(heartbeat_interval)
        #: Free-form facts sent with every heartbeat (and at once by
        #: ``push_status()``); ``client_info["job"]`` is the running job.
        self.client_info = {}
        self._ssl = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._poke = threading.Event()
        self._thread = None
        self._running = False
        self._lock = threading.Lock()
        self._job = None  # the running job: {"id", "attempt", "offset"}
        self._job_threads = set()  # the idents of do_job threads
        self._abandoned = set()  # do_job threads whose job ended without them
        self._instance = None
        self._abandon = threading.Event()
        self._identity_lock = None
        self._canceled = set()
        self._seq = int(time.time() * 1000) << 10
        self._beat_begun = 0.0

    # ----- what a subclass may override

    @property
    def platform(self):
        """This machine's platform properties (see :func:`detect_platform`);
        override it (or set it as a class attribute) to add or change some."""
        return detect_platform()

    @property
    def capabilities(self):
        """``{"jobtypes": [...], "platforms": [{...}, ...]}``; override it to
        offer several platforms (for example one per Python version). A job
        records which platform matched as ``job["platform_index"]``."""
        return {"jobtypes": list(self.jobtypes), "platforms": [self.platform]}

    def do_job(self, job):
        """Runs ``job`` (a dict: ``id``, ``jobtype``, ``params``,
        ``platform``...) and returns a JSON-able dict: ``result`` true or false
        (passed or failed; or ``state``, any final state), ``reason``, and
        anything else, which is kept in the job's result. An exception ends
        the job as ``error`` with its traceback in the log."""
        raise NotImplementedError("subclass Client and implement do_job(self, job)")

    # ----- what a caller uses

    def run(self):
        """Registers and runs jobs until ``stop()``; blocks. Ctrl-C (when
        this runs on the main thread) stops it as ``stop()`` does: the
        running job finishes and is reported; a second Ctrl-C gives the job
        back to the server at once, to run elsewhere."""
        if threading.current_thread() is not self._thread:
            self._stop.clear()
        self._done.clear()
        self._running = True
        self.error = None
        self._abandon.clear()
        old_handler = None
        if threading.current_thread() is threading.main_thread():
            import signal
            try:
                old_handler = signal.signal(signal.SIGINT, self._on_sigint)
            except (ValueError, OSError):
                old_handler = None
        try:
            self._register()
            beat = threading.Thread(target=self._heartbeats, name="testbot-heartbeat", daemon=True)
            beat.start()
            while not self._stop.is_set():
                try:
                    job = self._claim()
                except KeyboardInterrupt:
                    self._stop.set()
                    break
                if job is not None:
                    self._run_job(job)
        except BaseException as e:
            self.error = e
            raise
        finally:
            if old_handler is not None:
                import signal
                signal.signal(signal.SIGINT, old_handler)
            self._running = False
            self._done.set()
            self._poke.set()
            try:
                self._heartbeat(0)
            except Exception:  # the server may be gone; it notices by itself
                pass

    def start(self):
        """Runs the client on a background thread; returns that thread.
        Whatever ended it early (a refused registration) is ``self.error``."""
        self._stop.clear()
        self._done.clear()
        self._running = True
        self._thread = threading.Thread(target=self._run_quietly, name="testbot-client",
                                        daemon=True)
        self._thread.start()
        return self._thread

    def _on_sigint(self, signum, frame):
        """Ctrl-C: stop once the running job ends; again, give the job
        back now. Idle, stop at once."""
        if self._job is None:
            self._stop.set()
            raise KeyboardInterrupt
        if not self._stop.is_set():
            print("testbot: stopping once job %d ends (Ctrl-C again to give it back "
                  "to the server now)" % self._job["id"], file=sys.stderr)
            self._stop.set()
            self._poke.set()
        else:
            self._abandon.set()

    def _run_quietly(self):
        try:
            self.run()
        except BaseException as e:  # kept in self.error, said once
            print("testbot: the client stopped: %s" % e, file=sys.stderr)

    def stop(self, timeout=None):
        """Stops claiming; returns once the running ``do_job`` (if any) has
        finished and its result was delivered (or could not be, the server
        being away), or after ``timeout`` seconds. Called from ``do_job``
        itself, it only asks: the job ends, and then the client."""
        self._stop.set()
        self._poke.set()
        if threading.get_ident() in self._job_threads or not self._running:
            return
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        else:
            self._done.wait(timeout)

    def push_status(self):
        """Sends ``client_info`` now rather than with the next heartbeat."""
        self._heartbeat(0)
        # The heartbeat thread's last beat (its body made before this
        # change) may reach the server after this one and undo it: when one
        # began a moment ago, say it again once that one surely arrived.
        if time.monotonic() - self._beat_begun < 1.0:
            time.sleep(0.1)
            self._heartbeat(0)

    def log(self, *parts):
        """Appends a line to the running job's log (like ``print``). From a
        ``do_job`` that ran past its job's end (a timeout, a cancel), the
        line goes to standard error instead, never into another job's log."""
        text = " ".join(str(p) for p in parts) + "\n"
        if threading.get_ident() in self._abandoned:
            sys.stderr.write("testbot: after its job ended: " + text)
            return
        self._append_log(text.encode("utf-8", "replace"))

    # ----- the protocol

    def _request(self, method, path, body=None, raw=None, timeout=60.0, content_type=None):
        """One request to the server in use; while it cannot be reached, to
        the others of the list in turn (the first that answers is kept)."""
        start = self.servers.index(self.server) if self.server in self.servers else 0
        for k in range(len(self.servers)):
            server = self.servers[(start + k) % len(self.servers)]
            try:
                out = self._request_to(server, method, path, body, raw, timeout, content_type)
            except _Unreachable as e:
                if k + 1 < len(self.servers):
                    continue
                raise Unavailable(str(e))
            if server != self.server:
                print("testbot: %s did not answer; using %s now" % (self.server, server),
                      file=sys.stderr)
                self.server = server
            return out

    def _request_to(self, server, method, path, body, raw, timeout, content_type):
        data = raw if raw is not None else (json.dumps(body, default=str).encode() if body is not None else None)
        req = urllib.request.Request(server + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type or "application/json")
        if self.token:
            req.add_header("Authorization", "Bearer " + self.token)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._ssl) as resp:
                text = resp.read()
                return resp.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            try:
                message = json.loads(text).get("error", text)
            except (ValueError, AttributeError):
                message = text
            if e.code in (401, 403) and path == "/api/v1/workers":
                # A registration refused for its token: no retry mends it.
                raise Refused(e.code, message)
            if e.code in (401, 403, 408, 429) or e.code >= 500:
                raise Unavailable("%s %s: %d %s" % (method, path, e.code, message))
            raise Refused(e.code, message)
        except urllib.error.URLError as e:
            if isinstance(e.reason, (ConnectionRefusedError, socket.gaierror)):
                raise _Unreachable("%s %s%s: %s" % (method, server, path, e.reason))
            raise Unavailable("%s %s: %s" % (method, path, e))
        except (OSError, ValueError) as e:
            raise Unavailable("%s %s: %s" % (method, path, e))

    def _retrying(self, what, call, give_up=None):
        """Calls ``call`` until it does not raise ``_Unavailable``."""
        backoff, said = _Backoff(), False
        while True:
            try:
                out = call()
                if said:
                    print("testbot: %s: the server answers again" % what, file=sys.stderr)
                return out
            except _Unavailable as e:
                if not said:
                    print("testbot: %s: %s; retrying" % (what, e), file=sys.stderr)
                    said = True
                if give_up is not None and give_up():
                    raise
                time.sleep(backoff.next())

    def _identity(self):
        """Who this client is to the server, across restarts: a client
        started again on this machine under the same name is the same
        worker (its running job is its own), while a second one running at
        the same time is another, which the server refuses (409). Kept in
        a file in the temporary directory, held locked while the client
        runs."""
        if self._instance is not None:
            return self._instance
        fresh = "%032x" % random.getrandbits(128)
        try:
            import fcntl
            import tempfile
            path = os.path.join(tempfile.gettempdir(), "testbot-client-%s-%s.identity" % (
                re.sub(r"[^A-Za-z0-9._-]", "_", self.name), getattr(os, "getuid", lambda: 0)()))
            f = open(path, "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()  # another client of this name runs here now
                self._instance = fresh
                return fresh
            f.seek(0)
            kept = f.read().strip()
            if re.fullmatch(r"[0-9a-f]{32}", kept):
                self._instance = kept
            else:
                f.seek(0)
                f.truncate()
                f.write(fresh)
                f.flush()
                self._instance = fresh
            self._identity_lock = f
        except (ImportError, OSError):
            self._instance = fresh
        return self._instance

    def _register(self):
        caps = self.capabilities
        body = {
            "name": self.name,
            "jobtypes": list(caps.get("jobtypes", self.jobtypes)),
            "platforms": [self._platform_props(p) for p in caps.get("platforms") or [{}]],
            "info": self._info(),
            "slots": 1,
            "heartbeat_interval_ms": int(self.heartbeat_interval * 1000),
            "version": "python-client/0.1.0",
            "host": socket.gethostname(),
            "instance": self._identity(),
            "running": [self._running_entry()] if self._job else [],
        }
        self._retrying("registering", lambda: self._request("POST", "/api/v1/workers", body),
                       give_up=self._stop.is_set)

    @staticmethod
    def _platform_props(given):
        """A platform as the server gets it: the detected properties, then
        the platform's own (as the shell worker's config adds to them)."""
        props = detect_platform()
        props.update((str(k), str(v)) for k, v in dict(given).items())
        return props

    def _info(self):
        try:
            info = json.loads(json.dumps(self.client_info, default=str))
        except (TypeError, ValueError) as e:
            return {"info_error": "client_info is not JSON: %s" % e}
        why = _json_problem(info)
        if why is not None:
            return {"info_error": "client_info is not sent: %s" % why}
        return info

    def _running_entry(self):
        return {"id": self._job["id"], "attempt": self._job["attempt"]}

    def _claim(self):
        path = "/api/v1/workers/%s/claim" % urllib.parse.quote(self.name)
        body = {"wait": CLAIM_WAIT, "slot": 0, "seq": self._seq}
        try:
            status, job = self._retrying(
                "claiming", lambda: self._request("POST", path, body, timeout=CLAIM_WAIT + 30),
                give_up=self._stop.is_set)
        except _Unavailable:
            return None
        except Refused as e:
            if e.status == 404:  # the server forgot us (a new database)
                self._register()
                return None
            raise
        self._seq += 1
        return job if status == 200 else None

    def _heartbeats(self):
        said = None
        while not self._done.is_set():
            busy = self._job is not None
            started = time.time()
            try:
                self._beat_begun = time.monotonic()
                self._heartbeat(min(self.heartbeat_interval, MAX_HOLD) if busy else 0)
                answered = True
                said = None
            except (Unavailable, Refused) as e:
                answered = False
                if str(e) != said:
                    print("testbot: heartbeat: %s" % e, file=sys.stderr)
                    said = str(e)
            if self._done.is_set():
                return
            if busy and self._job is not None and answered:
                # Always one held on the server: cancels arrive at once.
                time.sleep(max(0.0, 0.2 - (time.time() - started)))
                continue
            self._poke.wait(max(0.0, self.heartbeat_interval - (time.time() - started)))
            self._poke.clear()

    def _heartbeat(self, wait):
        job = self._job
        if self._done.is_set():
            status = "stopped"
        elif self._stop.is_set():
            status = "draining"
        else:
            status = "busy" if job else "idle"
        body = {
            "status": status,
            "info": self._info(),
            "jobs": [self._running_entry()] if job else [],
            "wait": wait,
        }
        path = "/api/v1/workers/%s/heartbeat" % urllib.parse.quote(self.name)
        try:
            _, reply = self._request("POST", path, body, timeout=wait + 30)
        except Refused as e:
            if e.status == 404:
                self._register()
                return
            raise
        for id_ in (reply or {}).get("cancel", []):
            self._canceled.add(id_)

    def _append_log(self, data):
        job = self._job
        if job is None:
            sys.stderr.write(data.decode("utf-8", "replace"))
            return
        with self._lock:
            for at in range(0, len(data), LOG_CHUNK):
                piece = data[at:at + LOG_CHUNK]
                path = "/api/v1/jobs/%d/log?%s" % (job["id"], urllib.parse.urlencode(
                    {"worker": self.name, "attempt": job["attempt"], "offset": job["offset"]}))
                try:
                    self._retrying("sending the log", lambda: self._request(
                        "POST", path, raw=piece, content_type="application/octet-stream"))
                    job["offset"] += len(piece)
                except Refused as e:
                    print("testbot: log refused: %s" % e, file=sys.stderr)
                    return

    def _run_job(self, job):
        started_at, t0 = _now_rfc3339(), time.time()
        self._job = {"id": job["id"], "attempt": job["attempt"], "offset": 0}
        # The job as do_job gets it, less its secret: client_info is shown
        # to anyone who may read the worker's page.
        self.client_info["job"] = {k: v for k, v in job.items() if k != "job_token"}
        self._poke.set()
        box = {}

        def call():
            self._job_threads.add(threading.get_ident())
            try:
                box["value"] = self.do_job(job)
            except BaseException as e:  # reported, never lost
                box["error"] = e
                box["traceback"] = traceback.format_exc()

        worker = threading.Thread(target=call, name="do_job-%d" % job["id"], daemon=True)
        worker.start()
        self._job_threads.add(worker.ident)
        timeout = parse_duration(job.get("timeout")) or DEFAULT_TIMEOUT
        stopped = None
        interrupted = False
        while worker.is_alive():
            worker.join(0.1)
            if self._abandon.is_set():
                stopped = ("error", "worker shut down")
                interrupted = True
            elif job["id"] in self._canceled:
                stopped = ("canceled", "canceled")
            elif time.time() - t0 > timeout:
                stopped = ("timed_out", "timed out after %s" % _format_seconds(timeout))
            if stopped:
                # A thread cannot be killed: do_job runs on unwatched, and
                # what it returns (or logs) is not this job's.
                self._abandoned.add(worker.ident)
                break
        self._job_threads.discard(worker.ident)
        outcome = self._outcome(box, stopped)
        if interrupted:
            # The machine's doing, not the job's: the server runs it again.
            outcome["infrastructure"] = True
        outcome.update({
            "worker": self.name,
            "attempt": job["attempt"],
            "duration_ms": int((time.time() - t0) * 1000),
            "started_at": started_at,
            "finished_at": _now_rfc3339(),
        })
        if "traceback" in box and not stopped:
            self._append_log(box["traceback"].encode("utf-8"))
        self._deliver(job["id"], outcome)
        self._canceled.discard(job["id"])
        self.client_info.pop("job", None)
        self._job = None
        self._poke.set()
        # Say at once that the job is gone from client_info (the heartbeat
        # thread may be held by the server for a while).
        try:
            self._heartbeat(0)
        except (Unavailable, Refused):
            pass
        if interrupted:
            raise KeyboardInterrupt

    @staticmethod
    def _outcome(box, stopped):
        if stopped:
            return {"state": stopped[0], "reason": stopped[1]}
        if "error" in box:
            e = box["error"]
            return {"state": "error", "reason": "do_job raised %s: %s" % (type(e).__name__, e)}
        value = box.get("value")
        if value is None:
            return {"state": "passed"}
        if isinstance(value, bool):
            return {"state": "passed" if value else "failed"}
        if not isinstance(value, dict):
            return {"state": "error", "reason": "do_job returned %s, not a dict" % type(value).__name__}
        value = dict(value)
        state = value.pop("state", None)
        result = value.pop("result", None)
        reason = value.pop("reason", None)
        if state is not None and state not in FINAL_STATES:
            return {"state": "error",
                    "reason": "do_job returned state %r; a job ends %s" % (state, ", ".join(FINAL_STATES))}
        if result is not None and not isinstance(result, (bool, int)):
            return {"state": "error",
                    "reason": "do_job returned result %r; it must be true or false" % (result,)}
        if state is None:
            state = "failed" if result is not None and not result else "passed"
        try:
            data = json.loads(json.dumps(value))
        except (TypeError, ValueError) as e:
            return {"state": "error", "reason": "do_job returned something that is not JSON: %s" % e}
        why = _json_problem(data)
        if why is not None:
            return {"state": "error", "reason": "do_job returned a result the server cannot take: %s" % why}
        size = len(json.dumps(data, ensure_ascii=False).encode("utf-8"))
        if size > RESULT_MAX:
            data = {"result_trimmed": "do_job returned %d bytes of data, over the %d the server "
                                      "takes; its data was not sent" % (size, RESULT_MAX)}
        out = {"state": state, "data": data}
        if reason is not None:
            out["reason"] = reason if isinstance(reason, str) else json.dumps(reason, default=str)
        return out

    def _deliver(self, job_id, outcome):
        path = "/api/v1/jobs/%d/result" % job_id
        try:
            self._retrying("sending the result", lambda: self._request("POST", path, outcome))
        except Refused as e:
            print("testbot: result of job %d refused: %s" % (job_id, e), file=sys.stderr)
            if e.status == 409 or outcome.get("data") == {}:
                # 409: the attempt is not current any more (the lease ran
                # out and the job went elsewhere).
                return
            # A result the server will not take (too large, not valid):
            # end the attempt anyway, saying why, rather than let its lease
            # run out and the job run again.
            plain = {k: outcome[k] for k in ("worker", "attempt", "duration_ms", "started_at",
                                             "finished_at") if k in outcome}
            plain.update({"state": "error", "data": {},
                          "reason": "the server refused the result: %s" % e.message[:2000]})
            try:
                self._retrying("sending the result", lambda: self._request("POST", path, plain))
            except Refused as again:
                print("testbot: result of job %d refused: %s" % (job_id, again), file=sys.stderr)
