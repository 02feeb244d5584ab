"""Keyed-row table updates shared by the views: add, update in place, remove; never refill."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist

Cell = str | Text


def upsert_row(
    table: DataTable, key: str, cells: Sequence[Cell], update_width: bool = False
) -> None:
    """Update a row's cells in place, or add the row when it is new.

    Plain strings become ``Text`` so names from disk or devices are never read as markup.
    ``update_width``: a column widens when a cell outgrows it (else a longer value is cut).
    """
    cells = [Text(cell) if isinstance(cell, str) else cell for cell in cells]
    if key in table.rows:
        for column, value in zip(table.columns, cells, strict=True):
            try:
                if table.get_cell(key, column) != value:
                    table.update_cell(key, column, value, update_width=update_width)
            except CellDoesNotExist:
                table.update_cell(key, column, value, update_width=update_width)
    else:
        table.add_row(*cells, key=key)


def remove_rows(table: DataTable, keys: Iterable[str]) -> None:
    for key in keys:
        with contextlib.suppress(RowDoesNotExist):
            table.remove_row(key)


def cursor_key(table: DataTable) -> str | None:
    """The key of the row under the cursor, if any."""
    if table.row_count == 0:
        return None
    try:
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
    except CellDoesNotExist:
        return None
