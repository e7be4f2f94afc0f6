"""Offline OpenAI-compatible model server with scripted replies, latency and injected faults.

Tests and `devswarm demo` point the real openai client at it over HTTP on 127.0.0.1. Every
answer is a pure function of the scenario and the request (agent header, attempt header,
messages), never of counters kept in the server, so retries and resumed runs see the same
replies a real deterministic model would give. The scenario and request-log formats are
documented in docs/model-server.md. Modules: scenario (the format), routes, replies, refusals
and faults (answering, pure), server (HTTP), `python -m devswarm.offline` (a process).
"""
