"""The latency-table layouts a run can write (``--table-format``) and the writer of each.

The layout names are declared once, with the other options, in ``backends.core.options``;
this module only says which writer makes each, beside results.* and iterations.csv.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from backends.core.options import DEFAULT_TABLE_FORMAT, TABLE_FORMATS
from backends.core.records import Device
from backends.results.nnabla_nas import write_nnabla_nas_table
from backends.results.tables import Row, write_iterations, write_latency_table, write_results

LatencyWriter = Callable[[Path, Sequence[Row], Mapping[str, Device]], list[Path]]

TABLE_WRITERS: dict[str, LatencyWriter] = {
    "devlab": write_latency_table,
    "nnabla-nas": write_nnabla_nas_table,
}


def write_all(
    out_dir: str | os.PathLike[str],
    rows: Sequence[Row],
    devices: Mapping[str, Device],
    formats: Iterable[str] = ("csv", "json"),
    table_format: str = DEFAULT_TABLE_FORMAT,
) -> list[Path]:
    """Results, iterations and the latency table in ``table_format``'s layout, in one folder."""
    if table_format not in TABLE_WRITERS:
        raise ValueError(
            f"unknown table format {table_format!r}; choose from {', '.join(TABLE_FORMATS)}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = write_results(out, rows, devices, formats)
    paths.append(write_iterations(out, rows))
    paths.extend(TABLE_WRITERS[table_format](out, rows, devices))
    return paths
