"""How devices are named across a cluster, and which Dask resource stands for each.

Phones and boards carry ids that are unique in the world (``adb:<serial>``, ``dpu:<url>``);
ids that only say "the CPU of this machine" (``host:cpu``, ``openvino:CPU``, ``ncs:<usb
path>``: the kinds whose backend is ``machine_local``, asked of the device registry) get the
worker's name appended (``host:cpu@lab-a``), so two hosts never claim the same id for two
different things. An *alias* (``--alias sim:gpu0=host:cpu``) lets a worker
advertise one of its devices under an extra, shared id: every worker that advertises the
same alias holds that id, and a job queued for it may run on any of them.

A device id becomes the Dask resource ``device:<id>``; characters Dask's own resource
syntax uses (``=``, ``,``, spaces...) are percent-encoded so the name stays reversible.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from backends.devices.registry import is_machine_local

RESOURCE_PREFIX = "device:"
_SAFE = "/:@._-+~"


def resource_name(device_id: str) -> str:
    """The Dask resource that stands for ``device_id`` (one unit per holder)."""
    return RESOURCE_PREFIX + quote(device_id, safe=_SAFE)


def device_of_resource(name: str) -> str | None:
    """The device id a resource name stands for; None for resources that are not devices."""
    if not name.startswith(RESOURCE_PREFIX):
        return None
    return unquote(name[len(RESOURCE_PREFIX) :])


def cluster_device_id(local_id: str, worker_name: str) -> str:
    """The id a worker publishes for one of its devices: machine-local ids get ``@<worker>``."""
    return f"{local_id}@{worker_name}" if is_machine_local(local_id) else local_id


def parse_aliases(items: list[str]) -> dict[str, str]:
    """``["sim:gpu0=host:cpu", ...]`` -> ``{"sim:gpu0": "host:cpu"}`` (shared id -> local id)."""
    aliases: dict[str, str] = {}
    for item in items:
        shared, sep, local = item.partition("=")
        shared, local = shared.strip(), local.strip()
        if not sep or not shared or not local:
            raise ValueError(
                f"--alias {item!r}: expected SHARED_ID=LOCAL_ID, e.g. sim:gpu0=host:cpu"
            )
        if shared in aliases:
            raise ValueError(f"--alias {shared!r} is given twice")
        aliases[shared] = local
    return aliases
