"""Lists of integers as people write them (``0-4``, ``5,10,20``): seeds and budgets of the command
line and of suite manifests."""
from __future__ import annotations

import argparse


class MalformedList(ValueError, argparse.ArgumentTypeError):
    """A malformed list of integers: a ValueError, and argparse's type error (its message shown)."""


MAX_VALUES = 10_000  # integers one list or range may name (a typo like 0-9999999 is refused, not expanded)


def parse_ints(text: str, what: str) -> list[int]:
    """``"0-2"`` -> [0, 1, 2]; ``"5,10,20"`` -> [5, 10, 20]; mixtures of both (MalformedList otherwise,
    and for more than ``MAX_VALUES`` values)."""
    out = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                lo, hi = int(lo), int(hi)
                if hi < lo:
                    raise ValueError
                if hi - lo + 1 + len(out) > MAX_VALUES:
                    raise MalformedList(f"{what} {text!r} names {hi - lo + 1:,} values; at most {MAX_VALUES:,} at "
                                        f"once")
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
    except MalformedList:
        raise
    except ValueError:
        raise MalformedList(f"malformed {what} {text!r}: use integers, commas and ascending ranges, e.g. 0-2 or "
                            f"5,10,20") from None
    if any(v < 0 for v in out) or not out:
        raise MalformedList(f"malformed {what} {text!r}: values must be non-negative integers")
    if len(out) > MAX_VALUES:
        raise MalformedList(f"{what} {text!r} names {len(out):,} values; at most {MAX_VALUES:,} at once")
    return out
