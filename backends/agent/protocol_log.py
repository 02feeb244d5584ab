"""How aiohttp's server reports requests it cannot parse, on the agent's terms.

aiohttp answers a malformed request (a NUL byte in a header, a broken request line) with 400
itself and logs it at ERROR with a traceback. That is a client's mistake, not the agent's: it is
logged at WARNING in one line. Anything else aiohttp reports keeps its level and traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger("backends.agent.http")


class ProtocolLogger(logging.LoggerAdapter):
    """The ``logger`` given to aiohttp's request handlers (see ``serve.start_site``)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        super().__init__(logger or logging.getLogger("aiohttp.server"), {})

    def exception(self, msg: Any, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError) and exc_info.code < 500:
            remote = args[0] if args else "?"  # aiohttp: ("... from %s", request.remote)
            log.warning(
                "malformed request from %s refused with %s: %s",
                remote,
                exc_info.code,
                _reason(exc_info),
            )
            return
        self.error(msg, *args, exc_info=exc_info, **kwargs)


def _reason(error: HttpProcessingError) -> str:
    """The parser's first line (the bad bytes it quotes after it may hold a token)."""
    lines = str(error.message or type(error).__name__).strip().splitlines()
    return (lines[0] if lines else type(error).__name__).rstrip(":")[:200]
