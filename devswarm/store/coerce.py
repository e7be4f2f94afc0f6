"""Record values -> column types. Records come from many writers: a bad value becomes NULL (and
is counted), never a failed import."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from devswarm.records import truncate_utf8
from devswarm.store.schema import TABLES, TEXT_LIMITS, Table, columns


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, dict | list | tuple):
        return json.dumps(v, default=str)
    return str(v)


def _json(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=str)


def _integer(bits: int) -> Callable[[Any], int]:
    bound = 2 ** (bits - 1)

    def convert(v: Any) -> int:
        if isinstance(v, float):
            if not v.is_integer():
                raise ValueError(v)
            v = int(v)
        elif not isinstance(v, int):  # bool is an int: True -> 1
            v = int(str(v).strip())
        if not -bound <= v < bound:
            raise ValueError(v)
        return int(v)

    return convert


def _double(v: Any) -> float:
    f = float(v)
    if not math.isfinite(f):  # JSON has no NaN/inf
        raise ValueError(v)
    return f


_TRUTHS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in _TRUTHS:
        return _TRUTHS[v.strip().lower()]
    raise ValueError(v)


def _timestamp(v: Any) -> str:
    """A UTC timestamp as DuckDB TIMESTAMP text; naive inputs are taken to be UTC already."""
    if isinstance(v, str):
        t = datetime.fromisoformat(v.strip())
    elif isinstance(v, datetime):
        # A subclass (Prefect's pendulum DateTime) goes through text: its replace() differs.
        t = v if type(v) is datetime else datetime.fromisoformat(v.isoformat())
    elif isinstance(v, int | float) and not isinstance(v, bool):
        t = datetime.fromtimestamp(v, UTC)
    else:
        raise ValueError(v)
    if t.tzinfo is not None:
        t = t.astimezone(UTC).replace(tzinfo=None)
    return t.isoformat(sep=" ", timespec="microseconds")


_COERCE: dict[str, Callable[[Any], Any]] = {
    "text": _text,
    "json": _json,
    "int": _integer(32),
    "bigint": _integer(64),
    "double": _double,
    "bool": _bool,
    "timestamp": _timestamp,
}

_INT_BOUNDS = {"int": 2**31, "bigint": 2**63}


def _coercers(table: Table) -> dict[str, Callable[[Any], Any]]:
    out = {name: _COERCE[kind] for name, kind in columns(table).items()}
    for (tname, col), limit in TEXT_LIMITS.items():
        if tname == table.name:
            out[col] = lambda v, _limit=limit: truncate_utf8(_text(v), _limit)
    return out


# Per table: column -> the function that converts a value to its type.
COERCERS = {name: _coercers(table) for name, table in TABLES.items()}
# Per table: the Python types of key values that need no coercion.
KEY_TYPES = {
    name: tuple(int if table.columns[c] in _INT_BOUNDS else str for c in table.key)
    for name, table in TABLES.items()
}


class Coercion:
    """Coerce record values to column types, counting (not raising on) bad values.

    Most values already have the right type; the fast paths keep a 50k-line import in Python
    from being dominated by per-value function calls.
    """

    def __init__(self) -> None:
        self.bad = 0

    def value(self, convert: Callable[[Any], Any], v: Any) -> Any:
        """``convert(v)``, or None (counted as bad) if ``v`` does not fit."""
        if v is None:
            return None
        try:
            return convert(v)
        except (TypeError, ValueError, OverflowError):
            self.bad += 1
            return None

    def column(self, kind: str, convert: Callable[[Any], Any], values: list) -> list:
        """Every value of one column (type tag ``kind``) converted."""
        slow = self.value
        if kind in ("text", "json") and convert in (_text, _json):  # not a length-limited one
            return [v if v is None or type(v) is str else slow(convert, v) for v in values]
        if kind in _INT_BOUNDS:
            b = _INT_BOUNDS[kind]
            return [
                v if v is None or (type(v) is int and -b <= v < b) else slow(convert, v)
                for v in values
            ]
        if kind == "double":
            fin = math.isfinite
            return [
                v if v is None or (type(v) is float and fin(v)) else slow(convert, v)
                for v in values
            ]
        if kind == "bool":
            return [v if v is None or type(v) is bool else slow(convert, v) for v in values]
        if kind == "timestamp":
            # now()'s own UTC "...Z" text goes to DuckDB as is (TRY_CAST there); anything else
            # (offsets, datetimes, epochs) is normalised to UTC here.
            return [
                v if v is None or (type(v) is str and v[-1:] == "Z") else slow(convert, v)
                for v in values
            ]
        return [slow(convert, v) for v in values]
