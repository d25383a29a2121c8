"""Tables for the terminal that never cut a number or a name.

rich shrinks a table that is wider than the console by cutting its cells (`5.71…` for 5.71e-03,
`001_h…` for a layer). Here numbers are written compactly (`5.71e-4`), each column is as wide as
its longest cell, and columns that do not fit beside the key columns (the layer, the job) go
into a further table below, which repeats the key columns: a stacked layout, chosen by width.
Output that is not a terminal (a pipe, a file, a log) is laid out at least as wide as a wide
terminal, never at rich's default of 80 columns.
"""

import math
import os
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

PIPE_WIDTH = 200  # columns for output that is not a terminal


def fmt(value: float | None) -> str:
    """Three significant digits, in at most 9 characters: 0.0146, 52.3, 5.71e-4, 2.91e-19, 1.2e6;
    plain from 0.001 to 999, powers of ten outside."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.2e}".split("e")  # rounded first, so 9.9996e-4 reads as 0.001
    if -3 <= int(exponent) < 3:
        return f"{float(f'{mantissa}e{exponent}'):.3g}"
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def make_console(**kwargs) -> Console:
    """The terminal's width when there is one; otherwise PIPE_WIDTH columns (or COLUMNS, if wider)."""
    console = Console(**kwargs)
    if console.is_terminal:
        return console
    width = max(PIPE_WIDTH, int(os.environ.get("COLUMNS", "0") or 0))
    return Console(width=width, **kwargs)


@dataclass
class Column:
    heading: str
    right: bool = True  # numbers are right-aligned


def stacked_tables(
    title: str, keys: list[Column], columns: list[Column], rows: list[list[str]], width: int
) -> list[Table]:
    """One table, or several stacked, each within `width` columns: every row's key cells (the
    first len(keys) of it) start each table, and the other columns follow in order for as long
    as they fit. Each column gets a fixed width, never less than its widest cell: its heading's
    when the whole table fits so, else its heading's longest word (the heading wraps). Cells may
    hold rich markup."""
    every = keys + columns
    cells = [max((Text.from_markup(row[i]).cell_len for row in rows), default=0) for i in range(len(every))]
    natural = [max(cell, len(c.heading)) for cell, c in zip(cells, every)]
    compact = [max(cell, *(len(word) for word in c.heading.split())) for cell, c in zip(cells, every)]
    widths = natural if _span(natural) <= width else compact
    parts: list[list[int]] = [[]]
    for i in range(len(keys), len(every)):
        if (
            parts[-1]
            and _span([widths[k] for k in range(len(keys))] + [widths[k] for k in [*parts[-1], i]]) > width
        ):
            parts.append([])
        parts[-1].append(i)
    tables = []
    for n, part in enumerate(parts):
        table = Table(title=title + (f" ({n + 1} of {len(parts)})" if len(parts) > 1 else ""))
        shown = [*range(len(keys)), *part]
        for i in shown:
            justify = "right" if every[i].right else "left"
            table.add_column(every[i].heading, justify=justify, width=widths[i], overflow="fold")
        for row in rows:
            table.add_row(*(row[i] for i in shown))
        tables.append(table)
    return tables


def _span(widths: list[int]) -> int:
    """A table's width in the terminal: each column padded by a space a side, with borders."""
    return sum(w + 3 for w in widths) + 1
