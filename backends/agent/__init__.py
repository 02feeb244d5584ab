"""``devlab agent``: an HTTP server on a benchmark board that runs the models it is sent.

One job at a time, the rest wait in FIFO order; each job's record is a JSON file under the
agent's work folder, so a console can fetch a result after an agent restart. The API (v1) is
described by :mod:`backends.agent.openapi` and served at ``GET /v1/openapi.json``.
"""
