"""Tests of bench.noise: Philox known answers, split invariance of the per-sample
streams, distribution sanity, and invariance through the harness."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import bench
from bench.noise import Noise, philox4x32


def _t(v):
    return torch.tensor([v], dtype=torch.int64)


# Random123 kat_vectors, philox4x32 with 10 rounds.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,want", KAT)
def test_philox_known_answers(counter, key, want):
    out = philox4x32(tuple(_t(c) for c in counter), tuple(_t(k) for k in key))
    assert [int(w.item()) for w in out] == list(want)


def test_philox_known_answers_vectorised():
    # All three vectors in one batched call give the same words.
    counter = tuple(torch.tensor([kat[0][j] for kat in KAT], dtype=torch.int64) for j in range(4))
    key = tuple(torch.tensor([kat[1][j] for kat in KAT], dtype=torch.int64) for j in range(2))
    out = torch.stack(philox4x32(counter, key), dim=1)
    assert out.tolist() == [list(kat[2]) for kat in KAT]


# ---------------------------------------------------------------------------
# Invariance of the per-sample streams.
# ---------------------------------------------------------------------------

SHAPES = [(2,), (3, 5), (), (7,)]  # odd sizes exercise the Box-Muller tail


def _draws(seed, indices, shapes=SHAPES, stream=0, kind="randn"):
    n = Noise(seed, indices, stream=stream)
    return [getattr(n, kind)(s, dtype=torch.float64) for s in shapes]


@pytest.mark.parametrize("kind", ["randn", "rand"])
def test_split_invariance(kind):
    full = _draws(5, torch.arange(100), kind=kind)
    for d, s in zip(full, SHAPES):
        assert d.shape == (100, *s)
    rng = np.random.default_rng(0)
    for trial in range(4):
        perm = torch.as_tensor(rng.permutation(100)) if trial else torch.arange(100)
        cuts = np.sort(rng.choice(np.arange(1, 100), size=rng.integers(1, 12), replace=False))
        pieces = [_draws(5, chunk, kind=kind) for chunk in torch.tensor_split(perm, cuts.tolist())]
        for k in range(len(SHAPES)):
            got = torch.cat([p[k] for p in pieces])
            assert torch.equal(got, full[k][perm])


def test_single_sample_equals_its_row():
    full = _draws(9, torch.arange(50))
    for i in (0, 17, 49):
        one = _draws(9, [i])
        for k in range(len(SHAPES)):
            assert torch.equal(one[k][0], full[k][i])


def test_subset_continues_the_same_streams():
    idx = torch.arange(30)
    a = Noise(3, idx)
    a.randn((4,))
    sub = a.subset(slice(10, 20))
    rest = a.randn((4,))
    assert torch.equal(sub.randn((4,)), rest[10:20])


def test_seeds_streams_and_draws_differ():
    idx = torch.arange(100)
    base = Noise(0, idx).randn((4,))
    assert not torch.equal(base, Noise(1, idx).randn((4,)))
    assert not torch.equal(base, Noise(0, idx, stream=1).randn((4,)))
    assert not torch.equal(base, Noise(0, idx).child(7).randn((4,)))
    assert not torch.equal(base, Noise(0, idx + 100).randn((4,)))
    n = Noise(0, idx)
    first, second = n.randn((4,)), n.randn((4,))
    assert torch.equal(first, base)
    assert n.draws == 2
    # no collisions: every value of every draw differs
    vals = torch.cat([base, second, Noise(1, idx).randn((4,)), Noise(0, idx, stream=1).randn((4,))]).flatten()
    assert len(torch.unique(vals)) == len(vals)
    # different rows differ too
    assert len(torch.unique(base[:, 0])) == 100


def test_same_seed_reproduces_and_dtypes_agree():
    idx = torch.arange(20)
    assert torch.equal(Noise(4, idx).randn((3,)), Noise(4, idx).randn((3,)))
    a = Noise(4, idx).randn((3,), dtype=torch.float64)
    b = Noise(4, idx).randn((3,), dtype=torch.float32)
    assert b.dtype == torch.float32 and a.dtype == torch.float64
    assert torch.equal(a.to(torch.float32), b)
    x = torch.zeros(20, 3, dtype=torch.float64)
    assert torch.equal(Noise(4, idx).randn_like(x), a)


def test_bad_seed_and_index_rejected():
    with pytest.raises(ValueError):
        Noise(-1, [0])
    with pytest.raises(ValueError):
        Noise(2**32, [0])
    with pytest.raises(ValueError):
        Noise(0, [-1])
    Noise(2**32 - 1, [2**32 - 1]).randn((2,))  # the extremes themselves are fine


# ---------------------------------------------------------------------------
# Distribution sanity.
# ---------------------------------------------------------------------------

def test_normals_look_normal():
    z = Noise(2024, torch.arange(2000)).randn((10,), dtype=torch.float64).flatten().numpy()
    assert z.size == 20000
    assert abs(z.mean()) < 4 / math.sqrt(z.size)  # ~4 standard errors
    assert abs(z.std() - 1) < 0.03
    assert stats.kstest(z, "norm").pvalue > 1e-3
    # the cos and sin halves of Box-Muller and neighbouring samples are uncorrelated
    m = Noise(2024, torch.arange(20000)).randn((2,), dtype=torch.float64).numpy()
    assert abs(np.corrcoef(m[:, 0], m[:, 1])[0, 1]) < 0.04
    assert abs(np.corrcoef(m[:-1, 0], m[1:, 0])[0, 1]) < 0.04
    # successive draws of the same samples are uncorrelated
    n = Noise(2024, torch.arange(20000))
    a, b = n.randn(()).numpy(), n.randn(()).numpy()
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.04


def test_uniforms_in_open_unit_interval():
    u = Noise(77, torch.arange(4000)).rand((5,), dtype=torch.float64).flatten().numpy()
    assert u.min() > 0 and u.max() < 1
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    u32 = Noise(77, torch.arange(4000)).rand((5,))
    assert u32.dtype == torch.float32
    assert (u32 > 0).all() and (u32 < 1).all()


def test_float32_uniform_never_rounds_to_one():
    # Sample 2871038 of seed 0 draws the 32-bit word 0xffffffa1 as its third
    # word; (w + 0.5) / 2**32 rounds to 1.0 in float32.
    assert int(Noise(0, [2871038])._bits(4)[0, 2]) == 0xFFFFFFA1
    u = Noise(0, [2871038]).rand((4,))
    assert u.dtype == torch.float32
    assert (u < 1).all() and (u > 0).all()
    assert u[0, 2] > 1 - 1e-7
    u64 = Noise(0, [2871038]).rand((4,), dtype=torch.float64)
    assert (u64 < 1).all()
    assert torch.equal(u[0, [0, 1, 3]], u64[0, [0, 1, 3]].to(torch.float32))


# ---------------------------------------------------------------------------
# End to end through the harness.
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def harness():
    task = bench.get_task("gmm8")
    denoiser = task.denoiser("exact")
    method = bench.get_method("edm-sde", task)
    assert method.config["s_churn"] > 0  # the churn draws are part of what is tested

    def gen(n=40, seed=0, **kw):
        return bench.generate(method.sample, task, denoiser, n, seed, nfe_budget=15, **kw)
    return gen


def test_generate_batch_size_invariance(harness):
    x_big, labels = harness(batch_size=1000)
    assert labels is None
    assert x_big.shape == (40, 2) and x_big.dtype == torch.float32
    assert torch.isfinite(x_big).all()
    x_small, _ = harness(batch_size=7)
    assert torch.equal(x_small, x_big)
    x_one, _ = harness(batch_size=1)
    assert torch.equal(x_one, x_big)


def test_generate_index_subset(harness):
    x_full, _ = harness(batch_size=1000)
    x_sub, _ = harness(indices=torch.arange(10, 20), batch_size=3)
    assert torch.equal(x_sub, x_full[10:20])
    perm = torch.tensor([31, 4, 22, 0])
    x_perm, _ = harness(indices=perm)
    assert torch.equal(x_perm, x_full[perm])


def test_generate_seed_dependence(harness):
    a, _ = harness(seed=0)
    assert torch.equal(a, harness(seed=0)[0])
    b, _ = harness(seed=1)
    assert (a - b).abs().min() > 0  # every sample changes
    # and samples within one run are distinct
    assert len(torch.unique(a[:, 0])) == len(a)
