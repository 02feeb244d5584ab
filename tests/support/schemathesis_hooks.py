"""schemathesis hooks for the agent's runs (loaded through ``SCHEMATHESIS_HOOKS``).

In ``multipart/form-data`` a list is a part repeated: ``settings: []`` goes on the wire as no
``settings`` part and ``model: [b"..."]`` as one ``model`` part. So a body whose negative
mutation made a part a list is sent as a valid request, and the agent's (correct) acceptance
of it reads as a "schema-violating request accepted". The agent's document has no repeated
parts, so such bodies are dropped; every other negative body is still sent and checked.
"""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.hook
def filter_body(context: Any, body: Any) -> bool:
    operation = getattr(context, "operation", None)
    if operation is None or getattr(operation, "path", "") != "/v1/jobs":
        return True
    parts = getattr(body, "body", body)  # FormBodyWithContentTypes wraps the dict
    return not (isinstance(parts, dict) and any(isinstance(v, list) for v in parts.values()))
