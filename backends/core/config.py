"""devlab's one TOML configuration file. Every setting has a default; none is required.

Default location: ``<user config dir>/devlab/config.toml`` (platformdirs). A missing default
file is fine; a file named with ``--config`` must exist.

    [defaults]          # measurement defaults, same names as the CLI options
    warmup = 10
    runs = 100
    threads = 1
    table_format = "devlab"   # or "nnabla-nas": the latency table's layout

    [aliases]           # short names for device ids
    pixel = "adb:1A2B3C"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from backends.core.options import (
    BENCH_OPTIONS,
    DEFAULT_TABLE_FORMAT,
    TABLE_FORMATS,
    build_settings,
)
from backends.core.records import JobSettings


class ConfigError(ValueError):
    """The configuration file is missing (when named) or malformed; the message says where."""


@dataclass
class Config:
    path: Path | None = None
    defaults: JobSettings = field(default_factory=JobSettings)
    aliases: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    table_format: str = DEFAULT_TABLE_FORMAT

    def resolve_device(self, name: str) -> str:
        """A device id from an alias or an id."""
        return self.aliases.get(name, name)


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir("devlab")) / "config.toml"


def load_config(path: str | Path | None = None) -> Config:
    """Read the config; ``path`` None means the default location, which may be absent."""
    named = path is not None
    config_path = Path(path) if named else default_config_path()
    if not config_path.is_file():
        if named:
            raise ConfigError(f"config file {config_path} does not exist")
        return Config()
    try:
        raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"cannot read config file {config_path}: {error}") from error
    defaults_table = raw.get("defaults", {})
    if not isinstance(defaults_table, dict):
        raise ConfigError(f"{config_path}: [defaults] must be a table of settings")
    table_format = defaults_table.get("table_format", DEFAULT_TABLE_FORMAT)
    if table_format not in TABLE_FORMATS:
        raise ConfigError(
            f"{config_path} [defaults]: table_format must be one of {', '.join(TABLE_FORMATS)}, "
            f"got {table_format!r}"
        )
    known = {option.field for option in BENCH_OPTIONS} | {"table_format"}
    unknown = sorted(set(defaults_table) - known)
    if unknown:
        raise ConfigError(
            f"{config_path} [defaults]: unknown setting(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )
    try:
        defaults = build_settings(defaults_table)  # reads the measurement settings only
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{config_path} [defaults]: {error}") from error
    aliases = raw.get("aliases", {})
    if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
        raise ConfigError(f"{config_path} [aliases]: values must be device ids (strings)")
    return Config(
        path=config_path,
        defaults=defaults,
        aliases=dict(aliases),
        raw=raw,
        table_format=table_format,
    )
