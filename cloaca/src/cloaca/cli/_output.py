"""What the command line prints: aligned text tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

#: What a table shows for a missing value (None), so a blank cell never looks like a misaligned column.
MISSING = "-"


def cell(value: Any) -> str:
    """`value` as one table cell: its first line only, so a row stays one line."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    first, _, rest = text.partition("\n")
    return first + " ..." if rest.strip() else first


def short_time(value: str | None) -> str:
    """An RFC 3339 time cut to whole seconds: tables show when, not the microseconds."""
    if not value:
        return MISSING
    head, dot, tail = value.partition(".")
    if not dot:
        return value
    # The fraction ends where the offset (Z, +hh:mm or -hh:mm) starts.
    for i, ch in enumerate(tail):
        if not ch.isdigit():
            return head + tail[i:]
    return head


def duration(milliseconds: int | None) -> str:
    """A task's duration in the unit a reader takes in at a glance."""
    if milliseconds is None:
        return MISSING
    if milliseconds < 1000:
        return f"{milliseconds} ms"
    seconds = milliseconds / 1000
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def truncate(text: str, width: int) -> str:
    """`text` cut to `width` characters, marking the cut."""
    return text if len(text) <= width else text[: width - 3] + "..."


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Iterable[str] = ()) -> str:
    """Rows under a header line, each column as wide as its widest cell.

    Columns named in `right` (numbers) are right-aligned so their digits line up.
    Two spaces between columns; the last column is not padded, so no line ends
    in blanks.
    """
    aligned_right = set(right)
    body = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    lines = []
    for row in [list(headers), *body]:
        parts = []
        for i, text in enumerate(row):
            last = i == len(row) - 1
            if headers[i] in aligned_right:
                parts.append(text.rjust(widths[i]))
            else:
                parts.append(text if last else text.ljust(widths[i]))
        lines.append("  ".join(parts))
    return "\n".join(lines)


def listing(
    records: Sequence[dict[str, Any]],
    as_json: bool,
    none: str,
    headers: Sequence[str],
    row: Callable[[dict[str, Any]], Sequence[Any]],
) -> None:
    """Print what a `... list` command found: the records as JSON with --json; else
    one table row per record (`row` picks its cells), or the line `none` when there are none."""
    if as_json:
        emit_json(records)
    elif not records:
        emit(none)
    else:
        emit(table(headers, [row(r) for r in records]))


def fields(pairs: Iterable[tuple[str, Any]]) -> str:
    """Name/value lines, the values aligned: one record shown vertically."""
    items = [(name, cell(value)) for name, value in pairs]
    width = max((len(name) for name, _ in items), default=0)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in items)


def emit(text: str) -> None:
    """Print `text` to stdout."""
    sys.stdout.write(text + "\n")


def emit_json(value: Any) -> None:
    """Print `value` as indented JSON; keys keep the order the command built them in."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
