"""Pieces several devlab subcommands share: the bench options on a parser, opening a store."""

from __future__ import annotations

import argparse
from pathlib import Path

from backends.core.options import BENCH_OPTIONS
from backends.core.store import Store, StoreLocked
from console.cli.exit_codes import UsageError


def add_bench_options(parser: argparse.ArgumentParser) -> None:
    """Every measurement setting as a flag; an absent flag is None, so the config's value holds
    (the settings are checked, choices included, when the job's settings are built)."""
    for option in BENCH_OPTIONS:
        if option.kind is bool:
            parser.add_argument(
                option.flag, dest=option.field, action="store_true", default=None, help=option.help
            )
        else:
            parser.add_argument(
                option.flag,
                dest=option.field,
                type=option.kind,
                metavar=option.metavar,
                help=option.help,
            )


def open_store(path: Path, *, fresh: bool = False) -> Store:
    """The results store at ``path``; a store another devlab holds, or a folder that cannot be
    used, is a usage error naming it."""
    try:
        return Store(path, fresh=fresh)
    except StoreLocked as error:
        raise UsageError(str(error)) from None
    except OSError as error:
        raise UsageError(f"cannot use --out {path.parent}: {error.strerror or error}") from None
