"""Float tolerances that follow from the dtype, not from one machine's run.

A sum of ``n`` products computed in floating point lies within
``gamma_n * sum |x_i y_i|`` of the exact sum, ``gamma_n = n u / (1 - n u)`` with the unit
roundoff ``u = eps / 2`` (Higham, *Accuracy and Stability of Numerical Algorithms*, 2002,
eq. 3.5). Two implementations that order the same sum differently (BLAS blocking, a
convolution algorithm, the thread count, the torch version) therefore differ by at most
about ``n * eps * sum |x_i y_i|``: that is the tolerance used wherever a test compares two
such computations in float32. Tests about the equations compare in float64 instead.
"""
from __future__ import annotations

import torch

EPS32 = torch.finfo(torch.float32).eps
EPS64 = torch.finfo(torch.float64).eps


def reorder_atol(n_terms: int, abs_sum, dtype=torch.float32) -> float:
    """The largest difference between two summation orders of ``n_terms`` products whose
    absolute values sum to at most ``abs_sum`` (a number or a tensor: its maximum is used)."""
    eps = torch.finfo(dtype).eps
    bound = float(abs_sum.max()) if isinstance(abs_sum, torch.Tensor) else float(abs_sum)
    return n_terms * eps * bound
