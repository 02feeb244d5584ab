"""The ``settings`` part of ``POST /v1/jobs``: strict JSON validation with messages that name
the field, so a bad request is a 400 a person can fix, never a crash further down."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

CLIENT_KEY = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
MAX_SETTINGS_BYTES = 64 * 1024
MAX_ROUNDS = 1000
MAX_ROUND_ITERATIONS = 1_000_000
MAX_WARMUP = 100_000
MAX_THREADS = 256
MAX_SECONDS = 3600.0
DEFAULT_WARMUP = 10
DEFAULT_ROUNDS = (50,)
FIELDS = ("runner", "warmup", "rounds", "threads", "seconds", "client_key", "outputs")


class SettingsError(ValueError):
    """Invalid job settings; the message names the field and what is allowed."""


@dataclass
class JobSettingsIn:
    """A job's settings as the agent runs them (defaults filled in)."""

    runner: str
    warmup: int = DEFAULT_WARMUP
    rounds: list[int] = field(default_factory=lambda: list(DEFAULT_ROUNDS))
    threads: int = 1
    seconds: float | None = None
    client_key: str | None = None
    outputs: bool = False  # also return the outputs for devlab's fixed parity input

    @property
    def runs(self) -> int:
        """Timed iterations over all rounds."""
        return sum(self.rounds)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSettingsIn:
        return cls(**{key: data[key] for key in FIELDS if key in data})


def parse_settings(text: str | None, runners: Sequence[str], default_runner: str) -> JobSettingsIn:
    """Validated settings from the JSON text of the ``settings`` part (None, no part: defaults).

    A part that is there must hold a JSON object, as the OpenAPI document says: an empty one is
    refused rather than read as the defaults, so a client's lost settings never go unnoticed.
    """
    if text is None:
        return JobSettingsIn(runner=default_runner)
    if not text.strip():
        raise SettingsError(
            "the 'settings' part is empty: send a JSON object, or leave the part out for "
            "every default"
        )
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise SettingsError(f"settings is not valid JSON: {_short(error)}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"settings must be a JSON object, got {_json_type(data)}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise SettingsError(
            f"unknown settings field(s): {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(FIELDS)}"
        )
    runner = data.get("runner", default_runner)
    if not isinstance(runner, str) or runner not in runners:
        raise SettingsError(
            f"settings.runner must be one of this agent's runners: {', '.join(runners)}"
        )
    settings = JobSettingsIn(runner=runner)
    if "warmup" in data:
        settings.warmup = _int("warmup", data["warmup"], 0, MAX_WARMUP)
    if "rounds" in data:
        settings.rounds = _rounds(data["rounds"])
    if "threads" in data:
        settings.threads = _int("threads", data["threads"], 1, MAX_THREADS)
    if data.get("seconds") is not None:
        settings.seconds = _seconds(data["seconds"])
    if "outputs" in data:
        if not isinstance(data["outputs"], bool):
            raise SettingsError(
                f"settings.outputs must be true or false, got {_json_type(data['outputs'])}"
            )
        settings.outputs = data["outputs"]
    if data.get("client_key") is not None:
        key = data["client_key"]
        if not isinstance(key, str) or not CLIENT_KEY.fullmatch(key):
            raise SettingsError(
                "settings.client_key must be a string of 1 to 128 characters from "
                "A-Z a-z 0-9 . _ : @ -"
            )
        settings.client_key = key
    return settings


def _int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(f"settings.{name} must be an integer, got {_json_type(value)}")
    if not low <= value <= high:
        shown = str(value) if abs(value) < 10**30 else "a huge number"
        raise SettingsError(f"settings.{name} must be between {low} and {high}, got {shown}")
    return value


def _rounds(value: Any) -> list[int]:
    if not isinstance(value, list):
        raise SettingsError(
            f"settings.rounds must be a list of iteration counts, got {_json_type(value)}"
        )
    if not 1 <= len(value) <= MAX_ROUNDS:
        raise SettingsError(f"settings.rounds must hold 1 to {MAX_ROUNDS} counts, got {len(value)}")
    return [_int(f"rounds[{i}]", item, 1, MAX_ROUND_ITERATIONS) for i, item in enumerate(value)]


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(f"settings.seconds must be a number, got {_json_type(value)}")
    seconds = float(value)
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_SECONDS:
        raise SettingsError(f"settings.seconds must be > 0 and <= {MAX_SECONDS:g}, got {value}")
    return seconds


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"[:60]
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _short(error: BaseException) -> str:
    return str(error).splitlines()[0][:200] if str(error) else type(error).__name__
