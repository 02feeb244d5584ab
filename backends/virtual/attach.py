"""Start a virtual phone and attach it to a running adb server (``devlab virtual phone``)."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from adbutils import AdbClient

from backends.devices.android.adb import DevlabAdbClient
from backends.devices.android.adb_server import START_HINT
from backends.devices.android.backend import AndroidBackend, AndroidConfig
from backends.virtual import registry
from backends.virtual.adbd import VirtualPhone
from backends.virtual.profile import PhoneProfile


class AttachError(RuntimeError):
    """The phone could not be attached; the message says what to start or set."""


@dataclasses.dataclass
class AttachedPhone:
    phone: VirtualPhone
    client: AdbClient
    config: AndroidConfig

    @property
    def serial(self) -> str:
        return self.phone.serial

    def detach(self) -> None:
        """Disconnect from the adb server (so it forgets the phone at once), then stop.

        Only a reachable server is asked: adbutils would otherwise start a new one itself.
        """
        try:
            if AndroidBackend(self.config).server_reachable():
                self.client.disconnect(self.phone.serial)
        finally:
            registry.unregister(self.phone.serial)
            self.phone.stop()


def attach_virtual_phone(
    config: AndroidConfig,
    port: int = 0,
    name: str | None = None,
    profile_path: str | None = None,
    sandbox: str | None = None,
) -> AttachedPhone:
    """Start an emulated adbd on 127.0.0.1 and ``adb connect`` the configured server to it."""
    if not AndroidBackend(config).server_reachable():
        raise AttachError(
            f"no adb server at {config.adb_host}:{config.adb_port}: start one "
            f"(adb -P {config.adb_port} start-server, or {START_HINT}), or point "
            "ANDROID_ADB_SERVER_PORT or [android] adb_server in the config at yours"
        )
    profile = PhoneProfile.load(profile_path) if profile_path else PhoneProfile()
    if name:
        profile = dataclasses.replace(profile, model=name)
    folder = Path(sandbox) if sandbox else Path(tempfile.mkdtemp(prefix="devlab-phone-"))
    phone = VirtualPhone(folder, profile, host="127.0.0.1", port=port).start()
    client = DevlabAdbClient(config.adb_host, config.adb_port)
    answer = client.connect(phone.serial, timeout=10)
    if "connected" not in answer:
        phone.stop()
        raise AttachError(f"adb connect {phone.serial} said: {answer}")
    registry.register(phone.serial, folder)
    return AttachedPhone(phone, client, config)
