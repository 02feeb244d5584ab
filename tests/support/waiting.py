"""The one way tests wait for something another thread or process does: poll, then fail loudly."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 15.0


def wait_until(
    predicate: Callable[[], T],
    timeout: float = DEFAULT_TIMEOUT_S,
    what: str = "",
    interval: float = 0.02,
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that value; after
    ``timeout`` seconds fail with an AssertionError that names ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what or predicate} (last: {value!r})"
            )
        time.sleep(interval)


PILOT_STEP_S = 0.05


async def pilot_wait_for(
    pilot: Any, condition: Callable[[], Any], what: str, timeout: float = DEFAULT_TIMEOUT_S
) -> None:
    """The same for a Textual app under test: let it run (``pilot.pause``) until
    ``condition()`` holds, bounded by ``timeout``, then assert it, naming ``what``."""
    for _ in range(int(timeout / PILOT_STEP_S)):
        if condition():
            return
        await pilot.pause(PILOT_STEP_S)
    assert condition(), f"timed out waiting for: {what}"
