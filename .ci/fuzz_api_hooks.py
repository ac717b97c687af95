"""schemathesis hooks for .ci/fuzz-api.

They keep each request short and teach the fuzzer the one rule a JSON schema
cannot state; none of them turns a valid request into an invalid one or the
other way round.
"""

import math

import schemathesis
from schemathesis.core import NotSet

# Long polls are held up to `wait` seconds (60 at most; a claim without
# `wait` waits 30), and a followed log streams until its job ends: cap the
# one and turn the other off.
LONG_POLLS = {
    "/api/v1/workers/{name}/claim",
    "/api/v1/workers/{name}/heartbeat",
    "/api/v1/jobs/{id}/tests/next",
    "/api/v1/jobs/wait",
}
SHORT_WAIT = 0.2


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@schemathesis.hook
def before_call(context, case, kwargs):
    path = case.operation.path
    if path in LONG_POLLS:
        body = case.body
        if isinstance(body, dict):
            wait = body.get("wait")
            if _number(wait) and math.isfinite(wait) and wait > SHORT_WAIT:
                body["wait"] = SHORT_WAIT
            elif body.get("wait") is None and path.endswith(("/claim", "/next", "/wait")):
                body["wait"] = SHORT_WAIT
        elif isinstance(body, NotSet) and path.endswith(("/claim", "/next", "/wait")):
            case.body = {"wait": SHORT_WAIT}
            case.media_type = "application/json"
    elif path in ("/api/v1/jobs", "/api/v1/builds"):
        _order_shards(case)
    elif path == "/api/v1/jobs/{id}/log" and case.method.upper() == "GET":
        query = case.query
        if isinstance(query, dict) and str(query.get("follow")).lower() == "true":
            query["follow"] = "false"


def _job_specs(case):
    body = case.body
    if case.method.upper() != "POST":
        return []
    if case.operation.path == "/api/v1/jobs":
        return body if isinstance(body, list) else [body]
    if case.operation.path == "/api/v1/builds" and isinstance(body, dict) \
            and isinstance(body.get("jobs"), list):
        return body["jobs"]
    return []


def _order_shards(case):
    """A job's shard_index must be below its shard_total, and its params
    must reach the command as distinct variables, which a JSON schema
    cannot say: a valid case that breaks them is mended."""
    meta = case.meta
    if meta is not None and not meta.generation.mode.is_positive:
        return
    for spec in _job_specs(case):
        if isinstance(spec, dict):
            i, n = spec.get("shard_index"), spec.get("shard_total")
            if _number(i) and _number(n) and i >= n:
                spec["shard_total"] = int(i) + 1
            _distinct_params(spec)


def _env_name(key):
    """The variable a param reaches the command as (TESTBOT_PARAM_...)."""
    return "".join(c.upper() if c.isascii() and c.isalnum() else "_" for c in key)


def _distinct_params(spec):
    """Two params whose keys give the same variable are refused, which a
    JSON schema cannot say either: a valid case keeps the first of them."""
    params = spec.get("params")
    if not isinstance(params, dict):
        return
    seen = set()
    for key in list(params):
        name = _env_name(key)
        if name in seen:
            del params[key]
        seen.add(name)
