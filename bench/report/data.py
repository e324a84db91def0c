"""The machine-readable boards: ``<task>.csv`` (one line per row, pandas) and ``<task>.json``."""
from __future__ import annotations

import json
import math

import numpy as np

from bench.report.board import CI_LEVEL, GENERATOR, protocol_text, ranked, ranked_reported


def _csv_num(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    v = float(v)
    return "" if math.isnan(v) else repr(v)


def _json_num(v):
    if v is None:
        return None
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v)
    v = float(v)
    return None if math.isnan(v) or math.isinf(v) else v


def _start_cells(v) -> list[str]:
    if not v:
        return [""] * 5
    return [v["start"], _csv_num(v["diff"]), _csv_num(v["diff_low"]), _csv_num(v["diff_high"]),
            v["verdict"] + ("*" if v["close"] else "") + (" undetermined" if v["undetermined"] else "")
            + (" within-floor" if v["within_floor"] else "")]


def csv_bytes(b: dict) -> bytes:
    metrics, primary = b["metrics"], b["primary"]
    mins = [primary] if b["aggregate"] == "min" and primary in metrics else []
    import pandas as pd
    header = (["method", "nfe", "nfe_measured", "seeds", "failed"]
              + [f"{m}_{s}" for m in metrics for s in ("mean", "ci95")] + [f"{m}_min" for m in mins]
              + ["kind", "source", "reported_metric", "reported_value", "seed_list", "protocol_id", "protocol"]
              + ["fit_nfe", "fit_seconds", "sample_seconds"]
              + ["vs_start", "vs_start_diff", "vs_start_low", "vs_start_high", "vs_start_verdict"])
    rows = []
    for e in b["table"]:
        if e["kind"] == "measured":
            rows.append([e["method"], _csv_num(e["nfe"]), _csv_num(e["nfe_measured"]), e["seeds"], e["failed"]]
                       + [_csv_num(e[s][m]) for m in metrics for s in ("mean", "ci")]
                       + [_csv_num(e["min"].get(m)) for m in mins]
                       + ["measured", "measured", "", "", " ".join(map(str, e["seed_list"])),
                          " ".join(e["protocol_ids"]),
                          " | ".join(protocol_text(b["protocols"][i]) for i in e["protocol_ids"])]
                       + [_csv_num(e["fit_nfe"]), _csv_num(e["fit_seconds"]), _csv_num(e["sample_seconds"])]
                       + _start_cells(e.get("vs_start")))
        else:
            rows.append([e["method"], _csv_num(e["nfe"]), "", "", ""] + [""] * (2 * len(metrics) + len(mins))
                        + ["reported", e["source"], e["metric"], e["value_text"], "", e["protocol_ids"][0],
                           e["protocol"], "", "", ""] + [""] * 5)
    # every cell is already the text it should be (numbers as repr): pandas only lays out and quotes
    return pd.DataFrame(rows, columns=header, dtype=str).to_csv(index=False, lineterminator="\n").encode()


def json_bytes(b: dict) -> bytes:
    metrics = b["metrics"]
    measured = []
    for row in ranked(b["rows"], b["primary"], b["higher"]):
        measured.append(dict(
            method=row["method"], nfe=row["nfe"], nfe_measured=_json_num(row["nfe_measured"]), seeds=row["seed_list"],
            failed=row["failed"], protocol=row["protocol_ids"],
            metrics={m: dict(mean=_json_num(row["mean"][m]), ci95=_json_num(row["ci"][m]),
                             **({"min": _json_num(row["min"][m])} if m in row["min"] else {})) for m in metrics
                     if not math.isnan(row["mean"][m])},
            best=any(r is row for rs in b["best"].values() for r in rs),
            fit_nfe=_json_num(row["fit_nfe"]), fit_seconds=_json_num(row["fit_seconds"]),
            sample_seconds=_json_num(row["sample_seconds"]), overhead=_json_num(row["overhead"]), files=row["files"],
            vs_start=None if not row.get("vs_start") else {k: row["vs_start"][k] for k in (
                "start", "seeds", "diff", "diff_low", "diff_high", "p_value", "close", "verdict", "undetermined",
                "within_floor")}))
    reported = [dict(method=r["method"], nfe=r["nfe"], metric=r["metric"], value=r["value"], value_text=r["value_text"],
                     source=r["source"], protocol=r["protocol_ids"][0])
                for r in ranked_reported(b["reported"], b["primary"], b["higher"])]
    n = b["newest"]
    obj = dict(
        generated_by=GENERATOR, task=b["task"], task_version=b["version"], primary_metric=b["primary"],
        higher_is_better={m: bool(b["higher"].get(m, False)) for m in metrics}, seed_aggregate=b["aggregate"],
        interval=f"{CI_LEVEL:.0%} t-interval over seeds (Student's t, seeds - 1 degrees of freedom): ci95 is its "
                 f"half-width (null with one seed)",
        newest_result=None if n is None else dict(created=n.get("created"), git_sha=n.get("git_sha"),
                                                  file=n.get("rel_path")),
        git_shas=b["shas"], protocols={pid: p for pid, p in b["protocols"].items()},
        measured=measured, reported=reported,
        samples=None if b["samples"] is None else {k: v for k, v in b["samples"].items() if k != "grid"})
    obj["paired"] = b["paired"].to_dict("records")
    obj["cost_ratios"] = b["cost_ratios"].to_dict("records")
    obj["privileged"] = b["privileged"]
    text = json.dumps(_clean(obj), indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode()


def _clean(obj):
    if isinstance(obj, float):
        return None if not math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return _clean(float(obj))
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)

