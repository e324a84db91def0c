"""Published ("reported") numbers, kept as data beside the measured results.

``leaderboards/reported.csv`` (in the repository, found relative to this package,
whatever ``--results`` and ``--out`` are) holds one row per published number:

    method, task, nfe, metric, value, protocol, source

``nfe`` is blank where the source does not say (the protocol column then says
so); ``protocol`` says what is known of how the number was obtained (samples,
statistics file, feature extractor, NFE convention, seeds) and what is not;
``source`` names the paper and table. The leaderboards show these rows beside
the measured ones, labelled "reported" with their source, and never use them in
a measured mean, interval, ranking or "best" marker.

    from bench.report.reported import load_reported
    rows = load_reported()            # the repository's file
    rows = load_reported("my.csv")    # another one
"""
from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

COLUMNS = ("method", "task", "nfe", "metric", "value", "protocol", "source")
DEFAULT_PATH = Path(__file__).resolve().parents[2] / "leaderboards" / "reported.csv"


def load_reported(path=DEFAULT_PATH) -> list[dict]:
    """The rows of a reported-numbers CSV, each a dict with the columns above (``nfe``
    an int or None, ``value`` a float, ``value_text`` the value as written, ``line``
    its line number). Bad rows are skipped with a warning naming file and line; a
    missing file gives no rows and a warning."""
    if path is None:
        return []
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        warnings.warn(f"reported numbers {path} not read ({e.strerror or e}); the leaderboards show measured "
                      f"results only", stacklevel=2)
        return []
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        warnings.warn(f"reported numbers {path}: columns {', '.join(missing)} missing (need {', '.join(COLUMNS)}); "
                      f"no reported rows used", stacklevel=2)
        return []
    extra = [c for c in header if c not in COLUMNS]
    if extra:
        warnings.warn(f"reported numbers {path}: ignoring unknown column(s) {', '.join(extra)}", stacklevel=2)
    rows, seen = [], {}
    for line, raw in enumerate(reader, start=2):
        row = {c: (raw.get(c) or "").strip() for c in COLUMNS}
        where = f"{path}, line {line}"
        problem = _check(row)
        if problem:
            warnings.warn(f"reported numbers {where}: {problem}; row skipped", stacklevel=2)
            continue
        key = (row["method"], row["task"], row["nfe"], row["metric"], row["protocol"])
        if key in seen:
            warnings.warn(f"reported numbers {where}: same method, task, NFE, metric and protocol as line "
                          f"{seen[key]}; row skipped (one row per published number)", stacklevel=2)
            continue
        seen[key] = line
        rows.append(dict(row, nfe=int(row["nfe"]) if row["nfe"] else None, value=float(row["value"]),
                         value_text=row["value"], line=line, kind="reported"))
    return rows


def _check(row: dict) -> str | None:
    empty = [c for c in COLUMNS if c != "nfe" and not row[c]]
    if empty:
        return f"empty {', '.join(empty)}"
    try:
        v = float(row["value"])
    except ValueError:
        return f"value {row['value']!r} is not a number"
    if not math.isfinite(v):
        return f"value {row['value']!r} is not finite"
    if row["nfe"]:
        if not row["nfe"].isdigit():
            return f"nfe {row['nfe']!r} is not a non-negative integer (leave it blank when unknown)"
    elif "nfe" not in row["protocol"].lower():
        return "nfe is blank but the protocol does not say why (say e.g. 'NFE not reported')"
    return None
