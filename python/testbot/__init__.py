"""testbot's Python side: the `Client` class for writing a testbot client
(a worker whose jobs are Python code) against testbot's REST API."""

__version__ = "0.1.0"
