"""Agents announced with zeroconf (``_devlab._tcp``, ``[dpu] browse = true``) as endpoints.

Browsing starts once, on the first discovery, and waits a moment for announcements so a
one-shot ``devlab devices`` or ``--run`` sees them. Without zeroconf or multicast it logs why
and finds nothing: configured agents still work.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from backends.core.extras import available, missing_message
from backends.devices.dpu.client import normalise_url
from backends.devices.dpu.config import Endpoint

log = logging.getLogger(__name__)


class AnnouncedAgents:
    """The agents announced on the network (browsing on ``interfaces``, every one when empty);
    each becomes an :class:`Endpoint` with ``token``, the ``[dpu] token`` for browsed agents."""

    def __init__(self, interfaces: list[str], wait_s: float, token: str | None) -> None:
        self.interfaces = list(interfaces)
        self.wait_s = wait_s
        self.token = token
        self._browser: Any = None  # an AgentBrowser; False when it could not start

    def start(self) -> None:
        """Start browsing (once); the first time, give announcements ``wait_s`` to arrive."""
        if self._browser is not None:
            return
        if not available("zeroconf"):  # the agent extra: say so, no traceback
            log.warning(missing_message("zeroconf", "agent", "Browsing for agents ([dpu] browse)"))
            self._browser = False
            return
        try:
            from backends.agent.discovery import AgentBrowser

            self._browser = AgentBrowser(self.interfaces or None).start()
        except Exception:  # zeroconf missing or no multicast: configured agents still work
            log.exception("zeroconf browsing could not start; configured agents still work")
            self._browser = False
            return
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline and not self._browser.endpoints():
            time.sleep(0.1)

    def endpoints(self) -> list[Endpoint]:
        """The agents announced so far (none before :meth:`start`)."""
        if not self._browser:
            return []
        found = []
        for announcement in self._browser.endpoints():
            try:
                url = normalise_url(announcement.url)
            except ValueError:
                continue
            found.append(Endpoint(url, self.token, announcement.board or None, "zeroconf"))
        return found

    def stop(self) -> None:
        if self._browser:
            self._browser.stop()
