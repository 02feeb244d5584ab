"""Global options may come before a subcommand as well as after it.

``devlab --config F devices`` is ``devlab devices --config F``: options from ``GLOBAL`` that
stand before the subcommand's name are moved behind its arguments, so the subcommand's own
parser reads them. One rule for every subcommand, with no list of subcommands to keep in step:
a subcommand that has no use for an option refuses it the same way whichever side it was given.
"""

from __future__ import annotations

from collections.abc import Sequence

# option -> whether it takes a value (``--config FILE`` or ``--config=FILE``)
GLOBAL: dict[str, bool] = {
    "--config": True,
    "--out": True,
    "--json": False,
    "-v": False,
    "--verbose": False,
}


def after_subcommand(args: Sequence[str]) -> list[str]:
    """``args`` with the global options before a subcommand moved to its end.

    Unchanged when no subcommand follows the leading global options (``devlab --out D --run
    M`` and the console take them at the top level) or when one of them lacks its value.
    """
    leading: list[str] = []
    index = 0
    while index < len(args):
        name, has_value, _ = args[index].partition("=")
        if name not in GLOBAL or (has_value and not GLOBAL[name]):
            break
        width = 2 if GLOBAL[name] and not has_value else 1
        if index + width > len(args):
            return list(args)  # ``--config`` without a value: argparse says so
        leading += args[index : index + width]
        index += width
    rest = list(args[index:])
    if not leading or not rest or rest[0].startswith("-"):
        return list(args)
    return rest + leading
