"""The digits task: splits, shipped weights, classifier feature space, image metrics, end to end."""
import json
import shutil

import numpy as np
import pytest
import scipy.linalg
import torch

import bench
from bench.metrics import fidelity
from bench.denoiser import Guided
from bench.nets.toynet import load_denoiser, load_weights, save_denoiser, sha256
from bench.tasks import digits
from tolerance import reorder_atol

EVAL_ACCURACY = 0.9975  # measured: 399 of the 400 evaluation images (classifier seed 0)


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread: on a shared, loaded CPU, two threads per process run several times slower."""
    from threadpoolctl import threadpool_limits
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(n)


def test_splits_disjoint_deterministic_cover_everything_once():
    idx = digits.split_indices()
    assert {k: len(v) for k, v in idx.items()} == dict(evaluation=400, tuning=300, train=1097)
    allidx = np.concatenate(list(idx.values()))
    assert len(allidx) == 1797 and np.array_equal(np.sort(allidx), np.arange(1797))
    digits.split_indices.cache_clear()
    again = digits.split_indices()
    assert all(np.array_equal(idx[k], again[k]) for k in idx)
    _, y = digits.load_data()
    for name, n in (("evaluation", 400), ("tuning", 300)):  # stratified: each class in proportion, +-2
        counts = np.bincount(y.numpy()[idx[name]], minlength=10)
        expected = np.bincount(y.numpy(), minlength=10) * n / 1797
        assert np.abs(counts - expected).max() <= 2


def test_task_data_access():
    task = bench.get_task("digits")
    x, y = task.sample_reference(10_000, 0)  # more than there is: the whole reference, train and evaluation
    parts = [digits.split("train"), digits.split("evaluation")]
    assert x.shape == (1497, 1, 8, 8) and torch.equal(x, torch.cat([p[0] for p in parts]))
    assert torch.equal(y, torch.cat([p[1] for p in parts]))
    tune = {bytes(im.numpy()) for im in digits.split("tuning")[0]}
    assert len(tune & {bytes(im.numpy()) for im in x}) <= 5  # disjoint splits (a few images repeat in sklearn's set)
    sub_x, _ = task.sample_reference(100, 1)
    assert len(sub_x) == 100 and torch.equal(sub_x, task.sample_reference(100, 1)[0])
    assert x.min() >= -1 and x.max() <= 1 and x.dtype == torch.float32
    a, _ = task.sample_tuning(50, seed=3)
    b, _ = task.sample_tuning(50, seed=3)
    assert torch.equal(a, b) and len(a) == 50
    xt, yt = task.sample_train(200_000, 0)
    assert len(xt) == 1097 and len(task.sample_tuning(10_000)[0]) == 300
    assert bench.get_task("digits-uncond").sample_reference(400)[1] is None


def test_weights_pass_sha256_and_load(tmp_path):
    task = bench.get_task("digits")
    d = task.denoiser()
    assert d.shape == (1, 8, 8) and d.num_classes == 10 and d.has_uncond and d.sigma_data == 0.5
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        out = d(x, torch.full((4,), 1.0), torch.arange(4))
    assert out.shape == x.shape and torch.isfinite(out).all()
    net = digits.load_classifier()
    assert isinstance(net, digits.DigitsCNN)
    manifest = json.loads((digits.WEIGHTS / "manifest.json").read_text())
    for name in ("digits.safetensors", "digits-classifier.safetensors"):
        assert manifest[name] == sha256(digits.WEIGHTS / name)
    # a tampered file fails its check
    bad = tmp_path / "digits.safetensors"
    shutil.copy(task.weights_path(), bad)
    (tmp_path / "manifest.json").write_text(json.dumps({"digits.safetensors": "0" * 64}))
    with pytest.raises(ValueError, match="sha256"):
        load_denoiser(bad)
    # the older toy files (no arch key) still load as MLPNets
    for f in sorted(digits.WEIGHTS.glob("gmm*.safetensors"))[:1]:
        if f.name in manifest and manifest[f.name] == sha256(f):
            assert type(load_denoiser(f).model).__name__ == "MLPNet"


def test_unet_weight_file_roundtrip_and_allow_list(tmp_path):
    task = bench.get_task("digits")
    d = task.build_denoiser().eval()
    save_denoiser(d, tmp_path / "u.safetensors", dict(note="test"))
    back = load_denoiser(tmp_path / "u.safetensors")
    x, s = torch.randn(3, 1, 8, 8), torch.tensor([0.1, 1.0, 10.0])
    with torch.no_grad():
        assert torch.equal(d(x, s, torch.tensor([0, 5, 10])), back(x, s, torch.tensor([0, 5, 10])))
    state, meta = load_weights(tmp_path / "u.safetensors")
    from bench.nets.toynet import save_weights
    save_weights(state, tmp_path / "evil.safetensors", dict(meta, arch="os.system"))
    with pytest.raises(ValueError, match="unknown network architecture"):
        load_denoiser(tmp_path / "evil.safetensors")


def test_train_config_comes_from_the_task():
    from bench.nets.train import train_config, train_denoiser
    task = bench.get_task("digits")
    assert train_config(task) == dict(train_config(bench.get_task("gmm8")), **task.train_config)
    log = {}
    net = train_denoiser(task, steps=2, batch=8, progress=False, log=log)
    assert log["steps"] == 2 and log["batch"] == 8 and log["lr"] == task.train_config["lr"]
    assert np.isfinite(log["final_loss"]) and net.shape == (1, 8, 8)


def test_classifier_accuracy_on_the_evaluation_split():
    net = digits.load_classifier()
    assert digits.accuracy(net, *digits.split("evaluation")) >= EVAL_ACCURACY - 0.015


def _independent_fd(f1, f2):
    """float64, the symmetric form Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), scipy sqrtm."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    m1, m2 = f1.mean(0), f2.mean(0)
    s1 = (f1 - m1).T @ (f1 - m1) / (len(f1) - 1)
    s2 = (f2 - m2).T @ (f2 - m2) / (len(f2) - 1)
    r1 = np.real(scipy.linalg.sqrtm(s1))
    cross = np.real(scipy.linalg.sqrtm(r1 @ s2 @ r1))
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross))


def test_fd_equals_independent_scipy_and_self_is_zero(tmp_path):
    rng = np.random.default_rng(0)
    f1 = rng.standard_normal((500, 32)) @ rng.standard_normal((32, 32)) * 0.5 + 1.0
    f2 = rng.standard_normal((400, 32)) @ rng.standard_normal((32, 32)) * 0.7
    ours = fidelity.fd(torch.as_tensor(f1), torch.as_tensor(f2))
    assert ours == pytest.approx(_independent_fd(f1, f2), rel=1e-9, abs=1e-9)
    assert ours > 1
    assert abs(fidelity.fd(torch.as_tensor(f1), torch.as_tensor(f1))) < 1e-8 * ours
    # against precomputed statistics (npz with mu, sigma) and torch-fidelity's own formula
    np.savez(tmp_path / "ref.npz", **fidelity.stats(f2))
    assert fidelity.fd(torch.as_tensor(f1), tmp_path / "ref.npz") == pytest.approx(ours, rel=1e-12)
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric
    tf = fid_statistics_to_metric(fidelity.stats(f1), fidelity.stats(f2), False)[KEY_METRIC_FID]
    assert tf == pytest.approx(ours, rel=1e-8)


def test_torch_fidelity_registration_and_features():
    import torch_fidelity
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
    name = digits.register_feature_extractor()
    assert digits.register_feature_extractor() == name  # idempotent
    assert FEATURE_EXTRACTORS_REGISTRY[name] is digits.feature_extractor_class()
    x, _ = digits.split("evaluation")
    got = fidelity.features(x, name, ["features", "logits"])
    net = digits.load_classifier()
    with torch.no_grad():
        direct = net.features(fidelity.from_uint8(fidelity.to_uint8(x))[:, :1])
        # the same float32 network on other batch sizes: the sums of its four layers (9, 288, 576
        # and 1024 products) may be ordered differently
        logits = net(fidelity.from_uint8(fidelity.to_uint8(x))[:, :1])
        torch.testing.assert_close(got["features"], direct, rtol=0, atol=reorder_atol(1897, direct.abs()))
        torch.testing.assert_close(got["logits"], logits, rtol=0, atol=reorder_atol(1897 + 64, logits.abs()))
        assert torch.allclose(got["features"], net.features(x), atol=1e-2 * direct.abs().max())  # uint8 rounding
    assert got["features"].shape == (400, 64)
    # our metrics equal torch-fidelity's calculate_metrics with the registered extractor (equal set sizes)
    xt, _ = digits.split("tuning")
    xe = x[:300]
    ours = fidelity.compute_metrics(xt, xe, extractor=name, names=("fd", "kid", "precision", "recall"), seed=0,
                                    kid_subset_size=200)
    theirs = torch_fidelity.calculate_metrics(
        input1=fidelity.ImageDataset(fidelity.to_uint8(xt)), input2=fidelity.ImageDataset(fidelity.to_uint8(xe)),
        feature_extractor=name, fid=True, kid=True, prc=True, kid_subset_size=200, rng_seed=0, cuda=False,
        cache=False, verbose=False, save_cpu_ram=True)
    assert ours["fd"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-4)
    assert ours["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-6)
    assert ours["precision"] == theirs["precision"] and ours["recall"] == theirs["recall"]


def test_reference_stats_file(tmp_path):
    name = digits.register_feature_extractor()
    x, _ = digits.split("evaluation")
    xt, _ = digits.split("tuning")
    s = fidelity.save_reference_stats(tmp_path / "digits_eval.npz", x, name)
    with np.load(tmp_path / "digits_eval.npz") as z:
        assert z["mu"].shape == (64,) and z["sigma"].shape == (64, 64) and str(z["layer"]) == "features"
        assert np.array_equal(z["sigma"], s["sigma"])
    a = fidelity.compute_metrics(xt, x, extractor=name, names=["fd"])["fd"]
    b = fidelity.compute_metrics(xt, extractor=name, names=["fd"], ref_stats=tmp_path / "digits_eval.npz")["fd"]
    assert a == pytest.approx(b, rel=1e-12) and a > 0
    assert abs(fidelity.compute_metrics(x, x, extractor=name, names=["fd"])["fd"]) < 1e-6


def test_end_to_end_edm_conditional(tmp_path):
    (r,) = bench.run("edm", "digits", nfe=5, seed=0, samples=100, out=tmp_path, progress=False)
    assert r["status"] == "ok", r.get("error")
    assert r["nfe"] == 5 and r["n_samples"] == 100
    m = r["metrics"]
    assert set(m) >= {"fd", "kid", "precision", "recall", "accuracy", "is"}
    assert m["fd"] > 0 and 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1
    assert m["accuracy"] > 0.3  # the label conditions the samples even at NFE 5 (measured ~0.65; chance 0.1)
    assert "digits-cnn" in r["protocol"]["feature_extractor"] and r["protocol"]["n_reference"] == 1497


def test_end_to_end_euler_unconditional(tmp_path):
    (r,) = bench.run("euler", "digits-uncond", nfe=6, seed=0, samples=100, out=tmp_path, progress=False)
    assert r["status"] == "ok", r.get("error")
    assert r["nfe"] == 6 and "accuracy" not in r["metrics"] and {"fd", "kid", "precision", "recall"} <= set(
        r["metrics"])


def test_no_oracle_and_guidance(tmp_path):
    from bench.task import Unsupported
    with pytest.raises(Unsupported, match="fresh true samples"):  # every true image is reference or tuning
        bench.run("oracle", "digits", nfe=1, seed=0, samples=100, out=tmp_path, progress=False)
    d = bench.get_task("digits").denoiser()
    g = Guided(d, 2.0)
    x = torch.randn(8, 1, 8, 8, dtype=torch.float64) * 80
    from bench.sampling import euler, karras_sigmas
    with torch.no_grad():
        out = euler(g, x, karras_sigmas(4, d.sigma_min, d.sigma_max), class_labels=torch.arange(8))
    assert torch.isfinite(out).all()


def test_kid_all_pairs_against_a_direct_sum():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((60, 5)), rng.standard_normal((40, 5)) + 0.3
    k = lambda x, y: (x @ y / 5 + 1) ** 3  # noqa: E731
    direct = (sum(k(a[i], a[j]) for i in range(60) for j in range(60) if i != j) / (60 * 59)
              + sum(k(b[i], b[j]) for i in range(40) for j in range(40) if i != j) / (40 * 39)
              - 2 * sum(k(x, y) for x in a for y in b) / (60 * 40))
    assert digits.kid_all_pairs(a, b) == pytest.approx(direct, rel=1e-12)
    same = rng.standard_normal((3000, 5))
    assert abs(digits.kid_all_pairs(same[:1500], same[1500:])) < 0.01  # unbiased: near 0 for one distribution
