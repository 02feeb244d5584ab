"""Zeroconf discovery on the loopback interface: an agent advertises ``_devlab._tcp.local.``
and a browser finds it with its TXT properties; failures are warnings, never crashes.

Multicast on 127.0.0.1 works in this sandbox (zeroconf with ``interfaces=["127.0.0.1"]``); if
it does not where the tests run, the round-trip test is skipped with the reason.
"""

from __future__ import annotations

import logging
import secrets

import pytest

from backends.agent.discovery import (
    SERVICE_TYPE,
    AgentBrowser,
    advertise_service,
    browse_agents,
    properties_for,
)
from support.waiting import wait_until


def wait_for_board(browser: AgentBrowser, board: str, timeout: float = 8.0):
    return wait_until(
        lambda: [a for a in browser.endpoints() if a.board == board],
        timeout,
        what=f"an agent announcing board {board!r}",
        interval=0.05,
    )


def test_advertise_and_browse_on_loopback() -> None:
    board = f"zc-test-{secrets.token_hex(4)}"  # other agents may advertise here too
    browser = AgentBrowser(interfaces=["127.0.0.1"]).start()
    try:
        if browser.error:
            pytest.skip(f"no multicast on loopback here: {browser.error}")
        advertisement = advertise_service(
            board, "dpu", ["xdputil", "onnxruntime"], "127.0.0.1", 18055
        )
        if advertisement is None:
            pytest.skip("zeroconf could not register on loopback here")
        try:
            found = wait_for_board(browser, board)
            assert len(found) == 1, browser.endpoints()
            agent = found[0]
            assert agent.url == "http://127.0.0.1:18055"
            assert agent.api_url == "http://127.0.0.1:18055/v1"
            assert agent.kind == "dpu"
            assert agent.runners == ("xdputil", "onnxruntime")
            assert agent.api == "1"
            assert agent.name.endswith("." + SERVICE_TYPE)
            assert agent.properties == properties_for(board, "dpu", ["xdputil", "onnxruntime"])
        finally:
            advertisement.close()
        assert wait_until(
            lambda: not [a for a in browser.endpoints() if a.board == board],
            5,
            what="the announcement withdrawn",
            interval=0.05,
        ), "not withdrawn"
    finally:
        browser.stop()


def test_unusable_interface_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with AgentBrowser(interfaces=["203.0.113.77"]) as browser:  # not an address of this host
        assert browser.endpoints() == []
    advertisement = advertise_service("x", "host", ["onnxruntime"], "203.0.113.77", 1)
    if advertisement is not None:  # some kernels accept it; then it must still close cleanly
        advertisement.close()
    else:
        assert "cannot advertise" in caplog.text
    if browser.error:
        assert "cannot browse" in caplog.text


def test_browse_agents_returns_a_list() -> None:
    assert isinstance(browse_agents(0.2, interfaces=["127.0.0.1"]), list)
