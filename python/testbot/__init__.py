"""testbot's Python side: the `Client` class for writing a testbot client
(a worker whose jobs are Python code) against testbot's REST API;
`queue.TestQueue`, the test queue of a sharded job; and a pytest plugin
(`pytest_plugin`) whose shards take their tests from that queue."""

__version__ = "0.1.0"
