"""The image tasks (cifar10, cifar10-cond, imagenet64) and what they stand on: downloads
(bench.data.fetch), the published dataset formats (bench.data.datasets), the convert subcommand.

Nothing here touches the real network: downloads go to a local ``http.server`` on
127.0.0.1 or to a closed local port (through ``BENCH_URL_BASE``), the EDM network is a
tiny SongUNet in an EDM-format pickle, and Inception is replaced by a small feature
extractor registered with torch-fidelity."""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pickle
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import time
import types
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

import bench
from bench.metrics import fidelity
from bench.cli import main as cli_main
from bench.data.datasets import DatasetError, ImageFolder, load_cifar10, load_image_folder, read_cifar10_batch
from bench.nets.edm.networks import NETWORK_CLASSES, VPPrecond
from bench.data.fetch import FetchError, OfflineError, cache_dir, fetch
from bench.task import Unsupported

ROOT = Path(__file__).resolve().parents[1]
TINY_FE = "bench-test-tiny-fe"


pytestmark = pytest.mark.usefixtures("one_thread")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def files_under(path: Path) -> list:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) if path.exists() else []


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty cache and every download pointed at a closed local port."""
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("BENCH_URL_BASE", f"http://127.0.0.1:{closed_port()}")
    return tmp_path / "cache"


# ---------------------------------------------------------------------------------------------
# bench.data.fetch
# ---------------------------------------------------------------------------------------------

PAYLOAD = bytes(range(256)) * 40  # 10240 bytes


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.hits.append(self.path)
        if self.path.endswith("/ok.bin"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif self.path.endswith("/truncated.bin"):  # announces everything, sends half, hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[:len(PAYLOAD) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif self.path.endswith("/nolength.bin"):  # HTTP/1.0, no Content-Length: read to EOF
            self.send_response(200)
            self.end_headers()
            self.wfile.write(PAYLOAD)
        else:
            self.send_error(404)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.hits = []
    thread = threading.Thread(target=srv.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)
    thread.start()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def test_fetch_downloads_then_reuses_the_cache_without_network(server, tmp_path):
    cache = tmp_path / "c"
    path = fetch(f"{server.base}/files/ok.bin", cache=cache, progress=False)
    assert path == cache / "downloads" / "ok.bin" and path.read_bytes() == PAYLOAD
    assert files_under(cache) == ["downloads/ok.bin"]  # no temporary file left
    server.shutdown()
    server.server_close()
    t0 = time.perf_counter()
    again = fetch(f"{server.base}/files/ok.bin", cache=cache, expected_size=len(PAYLOAD))
    assert again == path and again.read_bytes() == PAYLOAD and time.perf_counter() - t0 < 1
    assert server.hits == ["/files/ok.bin"]


def test_fetch_size_mismatch_leaves_nothing(server, tmp_path):
    with pytest.raises(FetchError, match=r"10240 bytes, expected size says 10000"):
        fetch(f"{server.base}/ok.bin", cache=tmp_path, expected_size=10000, progress=False)
    with pytest.raises(FetchError, match="expected size says 5"):
        fetch(f"{server.base}/nolength.bin", cache=tmp_path, expected_size=5, progress=False)
    assert files_under(tmp_path) == []
    assert fetch(f"{server.base}/nolength.bin", cache=tmp_path, progress=False).read_bytes() == PAYLOAD


def test_fetch_truncated_transfer_leaves_nothing(server, tmp_path):
    with pytest.raises(FetchError, match=r"truncated\.bin.*(interrupted|Content-Length)"):
        fetch(f"{server.base}/truncated.bin", cache=tmp_path, progress=False)
    assert files_under(tmp_path) == []


def test_fetch_http_error(server, tmp_path):
    with pytest.raises(FetchError, match="HTTP 404") as e:
        fetch(f"{server.base}/missing.bin", cache=tmp_path, progress=False)
    assert not isinstance(e.value, OfflineError) and files_under(tmp_path) == []


def test_fetch_offline_fails_at_once_naming_url_and_flags(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/x"
    t0 = time.perf_counter()
    with pytest.raises(OfflineError) as e:
        fetch(url, cache=tmp_path)
    assert time.perf_counter() - t0 < 5
    msg = str(e.value)
    assert "\n" not in msg and url in msg and "--checkpoint PATH" in msg and "--ref-stats PATH" in msg
    assert str(tmp_path / "downloads" / "x") in msg  # where to put a copy by hand
    assert files_under(tmp_path) == []


def test_fetch_mirror_and_default_cache(server, monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "env"))
    monkeypatch.setenv("BENCH_URL_BASE", server.base + "/mirror/")
    assert cache_dir() == tmp_path / "env" / "downloads"
    path = fetch("https://example.invalid/some/ok.bin", progress=False)
    assert server.hits == ["/mirror/example.invalid/some/ok.bin"] and path == tmp_path / "env" / "downloads" / "ok.bin"


# ---------------------------------------------------------------------------------------------
# bench.data.datasets
# ---------------------------------------------------------------------------------------------

def py2_pickle(d: dict) -> bytes:
    """A dict pickled the way Python 2's cPickle wrote the official CIFAR-10 batches (protocol 2,
    Python 2 str as BINSTRING, arrays through numpy.core.multiarray._reconstruct)."""
    out = bytearray(b"\x80\x02")

    def string(b):
        out.extend(b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b)

    def integer(v):
        out.extend(b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v))

    def value(v):
        if isinstance(v, bytes):
            string(v)
        elif isinstance(v, int):
            integer(v)
        elif isinstance(v, list):
            out.extend(b"](")
            for item in v:
                value(item)
            out.extend(b"e")
        elif isinstance(v, np.ndarray):
            assert v.dtype == np.uint8 and v.ndim == 2
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")
            integer(0)
            out.extend(b"\x85")
            string(b"b")
            out.extend(b"\x87R(")
            integer(1)
            integer(v.shape[0])
            integer(v.shape[1])
            out.extend(b"\x86cnumpy\ndtype\n")
            string(b"u1")
            integer(0)
            integer(1)
            out.extend(b"\x87R(")
            integer(3)
            string(b"|")
            out.extend(b"NNN")
            integer(-1)
            integer(-1)
            integer(0)
            out.extend(b"tb\x89")
            string(v.tobytes())
            out.extend(b"tb")
        else:
            raise TypeError(type(v))

    out.extend(b"}(")
    for k, v in d.items():
        string(k)
        value(v)
    out.extend(b"u.")
    return bytes(out)


def cifar_batch(n, seed, name=b"training batch 1 of 5"):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    y = [int(v) for v in rng.integers(0, 10, size=n)]
    return dict(batch_label=name, labels=y, data=x, filenames=[f"img_{seed}_{i}.png".encode() for i in range(n)])


def write_cifar(folder: Path, n=20, style="py2") -> dict:
    """A cifar-10-batches-py folder of 5 train batches and a test batch of ``n`` images each."""
    batches = {f"data_batch_{i}": cifar_batch(n, i) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(n, 9, b"testing batch 1 of 1")
    folder.mkdir(parents=True, exist_ok=True)
    for name, d in batches.items():
        d = {k.encode(): v for k, v in d.items()}
        (folder / name).write_bytes(py2_pickle(d) if style == "py2" else pickle.dumps(d, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"]}, protocol=2))
    return batches


def expected(batches, names):
    x = np.concatenate([batches[n]["data"] for n in names]).reshape(-1, 3, 32, 32)
    y = np.concatenate([batches[n]["labels"] for n in names])
    return torch.from_numpy(x), torch.from_numpy(y).long()


def test_py2_batch_reads_pixel_exact():
    d = cifar_batch(7, 0)
    x, y = read_cifar10_batch(py2_pickle({k.encode(): v for k, v in d.items()}))
    assert x.dtype == np.uint8 and x.shape == (7, 3, 32, 32) and y.dtype == np.int64
    assert np.array_equal(x.reshape(7, -1), d["data"]) and y.tolist() == d["labels"]
    # the layout: 1024 red, 1024 green, 1024 blue, row-major
    assert x[3, 1, 2, 5] == d["data"][3, 1024 + 2 * 32 + 5]


@pytest.mark.parametrize("style", ["py2", "py3-protocol2"])
def test_cifar10_folder_parent_and_tarball(tmp_path, style):
    batches = write_cifar(tmp_path / "cifar-10-batches-py", style=style)
    want_train = expected(batches, [f"data_batch_{i}" for i in range(1, 6)])
    want_test = expected(batches, ["test_batch"])
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    for src in (tmp_path / "cifar-10-batches-py", tmp_path, tmp_path / "cifar-10-python.tar.gz"):
        for split, want in (("train", want_train), ("test", want_test)):
            x, y = load_cifar10(src, split)
            assert x.dtype == torch.uint8 and y.dtype == torch.int64 and x.shape == (len(want[0]), 3, 32, 32)
            assert torch.equal(x, want[0]) and torch.equal(y, want[1]), (src, split)


class Boom:
    def __init__(self, mark):
        self.mark = mark

    def __reduce__(self):
        return os.system, (f"touch {self.mark}",)


def test_malicious_batch_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    mark = tmp_path / "PWNED"
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Boom(mark), b"labels": []}, protocol=2))
    with pytest.raises(DatasetError, match=r"data_batch_3.*refused global '(posix|nt)\.system'"):
        load_cifar10(folder, "train")
    assert not mark.exists()
    # an object array (e.g. to smuggle objects through numpy) is refused as well
    obj = np.empty((1, 3072), dtype=object)
    with pytest.raises(DatasetError, match="refused"):
        read_cifar10_batch(pickle.dumps({b"data": obj, b"labels": [0]}, protocol=2))
    with pytest.raises(DatasetError, match=r"\[N, 3072\]"):
        read_cifar10_batch(pickle.dumps({b"data": np.zeros((2, 5), np.uint8), b"labels": [0, 1]}, protocol=2))


def test_cifar10_missing_data_names_the_flag(tmp_path):
    with pytest.raises(DatasetError, match="--data"):
        load_cifar10(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="--data"):
        load_cifar10(tmp_path)


def png_bytes(arr: np.ndarray) -> bytes:
    import PIL.Image
    buf = io.BytesIO()
    PIL.Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def write_image_zip(path: Path, n=6, res=8, labels=True, seed=0):
    """A zip in EDM dataset_tool's layout: 00000/img0000000i.png + dataset.json."""
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, size=(n, res, res, 3), dtype=np.uint8)
    ys = [int(v) for v in rng.integers(0, 1000, size=n)]
    names = [f"{i // 1000:05d}/img{i:08d}.png" for i in range(n)]
    with zipfile.ZipFile(path, "w") as z:
        for name, im in reversed(list(zip(names, imgs))):  # archive order must not matter
            z.writestr(name, png_bytes(im))
        z.writestr("dataset.json", json.dumps(dict(labels=[[nm, y] for nm, y in zip(names, ys)] if labels else None)))
    return torch.from_numpy(imgs.transpose(0, 3, 1, 2).copy()), torch.tensor(ys)


def test_image_zip_and_folder(tmp_path):
    want_x, want_y = write_image_zip(tmp_path / "ds.zip")
    x, y = load_image_folder(tmp_path / "ds.zip")
    assert x.dtype == torch.uint8 and x.shape == (6, 3, 8, 8) and torch.equal(x, want_x) and torch.equal(y, want_y)
    x2, y2 = load_image_folder(tmp_path / "ds.zip", indices=[4, 1])
    assert torch.equal(x2, want_x[[4, 1]]) and torch.equal(y2, want_y[[4, 1]])
    with zipfile.ZipFile(tmp_path / "ds.zip") as z:
        z.extractall(tmp_path / "folder")
    x3, y3 = load_image_folder(tmp_path / "folder")
    assert torch.equal(x3, want_x) and torch.equal(y3, want_y)
    write_image_zip(tmp_path / "nolabels.zip", labels=False)
    assert ImageFolder(tmp_path / "nolabels.zip").labels is None


# ---------------------------------------------------------------------------------------------
# The tasks
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def fake_torch_utils():
    """A ``torch_utils.persistence`` for pickle to name, as NVlabs/edm's checkpoints do."""
    pkg, mod = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("never called")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj, pkg.persistence = _reconstruct_persistent_obj, mod
    sys.modules["torch_utils"], sys.modules["torch_utils.persistence"] = pkg, mod
    try:
        yield mod
    finally:
        del sys.modules["torch_utils"], sys.modules["torch_utils.persistence"]


def write_edm_pickle(path, net):
    """``dict(ema=net)`` pickled as EDM's persistent classes reduce."""
    class P(pickle.Pickler):
        def reducer_override(self, obj):
            if type(obj) not in set(NETWORK_CLASSES.values()):
                return NotImplemented
            meta = dict(type="class", version=6, module_src="raise SystemExit('executed')",
                        class_name=type(obj).__name__, state=dict(obj.__dict__))
            return persistence._reconstruct_persistent_obj, (meta,)

    with fake_torch_utils() as persistence, open(path, "wb") as f:
        P(f, protocol=4).dump(dict(ema=net, loss_fn=None, augment_pipe=None, dataset_kwargs={}))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny DDPM++ VP networks at 32x32 (unconditional and 10-class), as EDM .pkl files converted
    to safetensors with ``python -m bench convert``."""
    d = tmp_path_factory.mktemp("ckpt")
    out = {}
    for name, label_dim in (("uncond", 0), ("cond", 10)):
        torch.manual_seed(0)
        net = VPPrecond(img_resolution=32, img_channels=3, label_dim=label_dim, use_fp16=False, model_type="SongUNet",
                        model_channels=8, channel_mult=[1, 1], num_blocks=1, attn_resolutions=[], dropout=0.0,
                        augment_dim=9, embedding_type="positional", encoder_type="standard",
                        decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1]).eval()
        write_edm_pickle(d / f"{name}.pkl", net)
        assert cli_main(["convert", str(d / f"{name}.pkl"), str(d / f"{name}.safetensors")]) == 0
        out[name] = d / f"{name}.safetensors"
    return out


def tiny_extractor_class():
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class TinyFE(FeatureExtractorBase):
        """Stands in for Inception: 2x2 average colour (12-d) -> fixed 6-d projection ('feat') ->
        10 'logits'. Records the weights path it was given."""
        weights_seen: list = []

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            TinyFE.weights_seen.append(feature_extractor_weights_path)
            g = torch.Generator().manual_seed(0)
            self.register_buffer("proj", torch.randn(12, 6, generator=g))
            self.register_buffer("head", torch.randn(6, 10, generator=g))

        @staticmethod
        def get_provided_features_list():
            return ("feat", "logits")

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return dict(fid="feat", kid="feat", prc="feat", isc="logits")[metric]

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

        def forward(self, x):
            assert x.dtype == torch.uint8 and x.shape[1] == 3
            f = torch.nn.functional.adaptive_avg_pool2d(x.float() / 255, 2).flatten(1) @ self.proj
            out = dict(feat=f, logits=f @ self.head)
            return tuple(out[k] for k in self.features_list)

    return TinyFE


@pytest.fixture(scope="module")
def tiny_fe():
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor
    if TINY_FE not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(TINY_FE, tiny_extractor_class())
    return FEATURE_EXTRACTORS_REGISTRY[TINY_FE]


@pytest.fixture(scope="module")
def ref_stats(tmp_path_factory, tiny_fe):
    """Reference statistics in the tiny extractor's space, of 200 smooth random images."""
    d = tmp_path_factory.mktemp("stats")
    g = torch.Generator().manual_seed(1)
    x = torch.nn.functional.interpolate(torch.rand(200, 3, 4, 4, generator=g) * 2 - 1, size=32, mode="bilinear")
    fidelity.save_reference_stats(d / "ref.npz", x, TINY_FE)
    return d / "ref.npz"


def test_cli_without_network_lists_every_missing_file_at_once(tmp_path):
    cache, port = tmp_path / "cache", closed_port()
    env = dict(os.environ, BENCH_CACHE=str(cache), BENCH_URL_BASE=f"http://127.0.0.1:{port}")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "bench", "run", "--method", "irl", "--task", "cifar10",
                        "--out", str(tmp_path / "out")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    took = time.perf_counter() - t0
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert lines[0] == "error: this run needs files it cannot get:" and len(lines) == 5, p.stderr
    base = f"http://127.0.0.1:{port}/"
    want = [("nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-cifar10-32x32-uncond-vp.pkl", "--checkpoint PATH"),
            ("nvlabs-fi-cdn.nvidia.com/edm/fid-refs/cifar10-32x32.npz", "--ref-stats PATH"),
            ("weights-inception-2015-12-05-6726825d.pth", "--feature-weights PATH"),
            ("www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "--data PATH")]
    for line, (url, flag) in zip(lines[1:], want):
        assert line.startswith(f"  - cannot download {base}") and url in line and flag in line, line
    assert "tunes on the tuning split" in lines[4]
    assert took < 30, took  # at once: the interpreter's start and the failed connections
    assert files_under(cache) == [] and files_under(tmp_path / "out") == []


def test_missing_reference_stats_fail_before_sampling(offline, checkpoints, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"fid-refs/cifar10-32x32\.npz.*--ref-stats PATH"):
        bench.run("edm", "cifar10", nfe=5, samples=64, out=tmp_path / "out", progress=False,
                  task_options=dict(checkpoint=str(checkpoints["uncond"])))
    assert files_under(offline) == [] and files_under(tmp_path / "out") == []


def test_cifar10_end_to_end_with_local_files(offline, checkpoints, ref_stats, tiny_fe, tmp_path):
    results = bench.run("edm", "cifar10", nfe=5, seeds=[0], samples=64, out=tmp_path / "out", progress=False,
                        ode_error=False,  # a 766-NFE reference solve of this network: tests/test_ode_error.py
                        cache=tmp_path / "artifacts",
                        task_options=dict(checkpoint=str(checkpoints["uncond"]), ref_stats=str(ref_stats),
                                          feature_extractor=TINY_FE))
    (r,) = results
    assert r["status"] == "ok", r.get("error")
    assert set(r["metrics"]) == {"fid", "is"} and math.isfinite(r["metrics"]["fid"]) and r["metrics"]["fid"] > 0
    assert r["ode_error"]["value"] is None and "not measured" in r["ode_error"]["reason"]
    assert r["nfe"] == 5 and r["n_samples"] == 64 and r["task"] == "cifar10"
    on_disk = json.loads(Path(r["path"]).read_text())
    assert on_disk["metrics"]["fid"] == r["metrics"]["fid"]
    proto = on_disk["protocol"]
    from bench.nets.toynet import sha256
    assert proto["reference_stats"]["sha256"] == sha256(ref_stats) and proto["reference_stats"]["dim"] == 6
    assert proto["feature_extractor"]["name"] == TINY_FE and proto["n_samples"] == 64
    assert proto["checkpoint"]["sha256"] == sha256(checkpoints["uncond"])
    assert files_under(offline) == []  # nothing was downloaded


def test_cifar10_cond_with_data_kid_precision_recall_and_tuning(offline, checkpoints, ref_stats, tiny_fe, tmp_path):
    batches = write_cifar(tmp_path / "cifar-10-batches-py", n=20)
    opts = dict(checkpoint=str(checkpoints["cond"]), ref_stats=str(ref_stats), data=str(tmp_path),
                feature_extractor=TINY_FE)
    (r,) = bench.run("edm", "cifar10-cond", nfe=5, seeds=[1], samples=32, out=tmp_path / "out", progress=False,
                     ode_error=False,
                     cache=tmp_path / "artifacts", task_options=opts)
    assert r["status"] == "ok", r.get("error")
    assert set(r["metrics"]) == {"fid", "kid", "precision", "recall", "is"}
    assert all(math.isfinite(v) for v in r["metrics"].values())
    assert r["protocol"]["n_reference"] == 100  # the 5 training batches: the set EDM's FID statistics describe

    task = bench.get_task("cifar10-cond", **opts)
    x, y = task.sample_tuning(1000)  # the test batch, all of it
    want_x, want_y = expected(batches, ["test_batch"])
    assert x.dtype == torch.float32 and x.shape == (20, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(fidelity.to_uint8(x), want_x) and torch.equal(y, want_y)
    sub, _ = task.sample_reference(30, seed=3)
    assert sub.shape == (30, 3, 32, 32) and torch.equal(sub, task.sample_reference(30, seed=3)[0])
    assert bench.get_task("cifar10", **opts).sample_reference(5)[1] is None  # unconditional: no labels


def test_without_data_tuning_is_unsupported_naming_the_flag(offline, ref_stats, tiny_fe):
    task = bench.get_task("cifar10", ref_stats=str(ref_stats), feature_extractor=TINY_FE)
    with pytest.raises(OfflineError, match=r"cifar-10-python\.tar\.gz.*--data PATH"):  # CIFAR-10 is downloadable
        task.sample_tuning(10)
    with pytest.raises(Unsupported, match="--data PATH"):  # ImageNet-64 is not
        bench.get_task("imagenet64").sample_tuning(10)
    x, y = task.sample_reference(100)
    assert x.shape == (0, 3, 32, 32) and y is None
    with pytest.raises(Unsupported, match="--data"):
        task.metrics(torch.zeros(4, 3, 32, 32), None, x, None, names=["kid"])


def test_convert_refuses_a_malicious_checkpoint(tmp_path, capsys):
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(dict(ema=Boom(tmp_path / "PWNED"))))
    assert cli_main(["convert", str(tmp_path / "evil.pkl"), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "refused global" in err and "\n" not in err
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "out.safetensors").exists()


def test_wrong_checkpoint_or_stats_are_refused(offline, checkpoints, ref_stats, tiny_fe, tmp_path):
    with pytest.raises(ValueError, match="cifar10-cond needs 3x32x32, 10 classes"):
        bench.get_task("cifar10-cond", checkpoint=str(checkpoints["uncond"])).denoiser()
    np.savez(tmp_path / "other.npz", mu=np.zeros(6), sigma=np.eye(6), extractor="inception-v3-compat")
    with pytest.raises(ValueError, match="made with feature extractor 'inception-v3-compat'"):
        bench.get_task("cifar10", ref_stats=str(tmp_path / "other.npz"), feature_extractor=TINY_FE).sample_reference(1)
    np.savez(tmp_path / "wide.npz", mu=np.zeros(2048), sigma=np.eye(2048))  # EDM's layout: mu and sigma only
    with pytest.raises(ValueError, match="2048-d, but feature extractor .* gives 6-d"):
        bench.get_task("cifar10", ref_stats=str(tmp_path / "wide.npz"), feature_extractor=TINY_FE).sample_reference(1)
    with pytest.raises(ValueError, match="takes no option"):
        bench.get_task("gmm8", checkpoint="x")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the hostile file is meant to be odd
def test_feature_extractor_weights_are_checked_and_passed_on(offline, ref_stats, tiny_fe, tmp_path):
    good = tmp_path / "w.pth"
    torch.save({"proj": torch.zeros(12, 6)}, good)
    task = bench.get_task("cifar10", ref_stats=str(ref_stats), feature_extractor=TINY_FE,
                          feature_extractor_weights=str(good))
    task.prepare_evaluation()
    seen = Path(tiny_fe.weights_seen[-1])  # a private copy of the checked bytes, never the path again
    assert seen != good and seen.name == "w.pth" and seen.read_bytes() == good.read_bytes()
    good.write_bytes(pickle.dumps(Boom(tmp_path / "PWNED")))  # swapped after the check: not read again
    assert seen.read_bytes() != good.read_bytes()
    assert task.protocol(1, 0)["feature_extractor"]["weights"] == "w.pth"
    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps(Boom(tmp_path / "PWNED")))
    task = bench.get_task("cifar10", ref_stats=str(ref_stats), feature_extractor=TINY_FE,
                          feature_extractor_weights=str(bad))
    with pytest.raises(ValueError, match="refused: not a plain tensor file"):
        task.prepare_evaluation()
    assert not (tmp_path / "PWNED").exists()
    tensor = tmp_path / "t.pth"
    torch.save(torch.zeros(3), tensor)  # loads safely, but is no weights file: refused before any work
    task = bench.get_task("cifar10", ref_stats=str(ref_stats), feature_extractor=TINY_FE,
                          feature_extractor_weights=str(tensor))
    with pytest.raises(ValueError, match="not a state dict"):
        task.prepare_evaluation()


def test_inception_weights_are_fetched_with_the_fetch_error(offline, monkeypatch, tmp_path):
    """The default extractor's weights come from the cache or a download; offline that fails before
    sampling with the fetch error (torch-fidelity's own cache is pointed at an empty folder)."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    np.savez(tmp_path / "edm-style.npz", mu=np.zeros(4), sigma=np.eye(4))
    task = bench.get_task("cifar10", ref_stats=str(tmp_path / "edm-style.npz"))
    with pytest.raises(OfflineError, match=r"weights-inception-2015-12-05-6726825d\.pth.*--feature-weights PATH"):
        task.sample_reference(10)


def test_imagenet64_splits(offline, tiny_fe, tmp_path):
    want_x, want_y = write_image_zip(tmp_path / "imagenet-64x64.zip", n=10, res=64)
    g = torch.Generator().manual_seed(2)
    fidelity.save_reference_stats(tmp_path / "ref.npz", torch.rand(50, 3, 64, 64, generator=g) * 2 - 1, TINY_FE)
    task = bench.get_task("imagenet64", data=str(tmp_path / "imagenet-64x64.zip"), ref_stats=str(tmp_path / "ref.npz"),
                          feature_extractor=TINY_FE)
    tx, ty = task.sample_tuning(100)
    rx, ry = task.sample_reference(100)
    assert len(tx) == 5 and len(rx) == 5 and tx.shape[1:] == (3, 64, 64)
    both_x, both_y = torch.cat([tx, rx]), torch.cat([ty, ry])
    got = {bytes(fidelity.to_uint8(im[None]).numpy()): int(lab) for im, lab in zip(both_x, both_y)}
    assert got == {bytes(im[None].numpy()): int(lab) for im, lab in zip(want_x, want_y)}  # a partition, labels kept
    write_image_zip(tmp_path / "small.zip", n=4, res=8)
    with pytest.raises(DatasetError, match=r"shape \(3, 8, 8\); task imagenet64 needs \(3, 64, 64\)"):
        bench.get_task("imagenet64", data=str(tmp_path / "small.zip")).sample_tuning(1)
