"""Tests of bench.nets.edm.checkpoint: EDM-format pickles are built here the way
NVlabs/edm's torch_utils.persistence writes them (every persistent object
reduces to ``torch_utils.persistence._reconstruct_persistent_obj(meta)``, meta
holding the module source, the class name and the object's ``__dict__`` with
``_init_args``/``_init_kwargs``), with a stand-in ``torch_utils`` module that is
removed before loading. The loader must rebuild identical networks, never
execute ``module_src``, refuse every global off its allow-list, and round-trip
through safetensors."""
from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from bench.nets.edm import checkpoint
from bench.nets.edm.checkpoint import convert_checkpoint, load_edm_pickle, load_network
from bench.nets.edm.networks import NETWORK_CLASSES, DhariwalUNet, EDMPrecond, SongUNet, VEPrecond, VPPrecond, iDDPMPrecond

SONG = dict(model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8], dropout=0.1)
DDPMPP = dict(SONG, model_type="SongUNet", embedding_type="positional", encoder_type="standard",
              decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1], augment_dim=9)
NCSNPP = dict(SONG, model_type="SongUNet", embedding_type="fourier", encoder_type="residual",
              decoder_type="standard", channel_mult_noise=2, resample_filter=[1, 3, 3, 1])
ADM = dict(model_type="DhariwalUNet", model_channels=64, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8])

PRECONDS = {
    "vp-ddpmpp": (VPPrecond, dict(label_dim=0, **DDPMPP)),
    "ve-ncsnpp": (VEPrecond, dict(label_dim=0, **NCSNPP)),
    "iddpm-adm": (iDDPMPrecond, dict(label_dim=5, **ADM)),
    "edm-adm-cond": (EDMPrecond, dict(label_dim=5, **ADM)),
    "edm-ddpmpp-cond-skip": (EDMPrecond, dict(label_dim=5, **dict(DDPMPP, encoder_type="skip", decoder_type="skip"))),
}


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------
# Writing EDM-format pickles (a stand-in for torch_utils.persistence).
# ---------------------------------------------------------------------------

class EDMLoss:
    """Stand-in for EDM's persistent loss object (not a network)."""

    def __init__(self, P_mean=-1.2, P_std=1.2, sigma_data=0.5):
        self.P_mean, self.P_std, self.sigma_data = P_mean, P_std, sigma_data
        self._init_args, self._init_kwargs = (), dict(P_mean=P_mean, P_std=P_std, sigma_data=sigma_data)


@contextlib.contextmanager
def fake_torch_utils():
    """A ``torch_utils.persistence`` module for pickle to name; removed on exit."""
    pkg, mod = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("upstream reconstructor must never be called")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj, pkg.persistence = _reconstruct_persistent_obj, mod
    sys.modules["torch_utils"], sys.modules["torch_utils.persistence"] = pkg, mod
    try:
        yield mod
    finally:
        del sys.modules["torch_utils"], sys.modules["torch_utils.persistence"]


class EDMPickler(pickle.Pickler):
    """Reduces persistent objects as EDM's ``persistent_class.__reduce__`` does."""

    def __init__(self, f, persistence, module_src, protocol):
        super().__init__(f, protocol=protocol)
        self.persistence, self.module_src = persistence, module_src
        self.persistent_types = set(NETWORK_CLASSES.values()) | {EDMLoss}

    def reducer_override(self, obj):
        if type(obj) not in self.persistent_types:
            return NotImplemented
        meta = dict(type="class", version=6, module_src=self.module_src, class_name=type(obj).__name__,
                    state=dict(obj.__dict__))
        return self.persistence._reconstruct_persistent_obj, (meta,)


def write_edm_pickle(path, data, module_src="", protocol=4):
    with fake_torch_utils() as persistence, open(path, "wb") as f:
        EDMPickler(f, persistence, module_src, protocol).dump(data)
    assert "torch_utils" not in sys.modules


def randomised(net):
    """Perturb every parameter, so that a misplaced weight changes the output."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net.eval()


def make(cls, kw):
    torch.manual_seed(0)
    return randomised(cls(img_resolution=16, img_channels=3, use_fp16=False, **kw))


def payload_src(tmp_path):
    """A module source that would leave a mark if it were ever executed."""
    return f"import os\nos.system('touch {tmp_path / 'PWNED'}')\nopen({str(tmp_path / 'PWNED2')!r}, 'w')\n"


def same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].shape == sb[k].shape and sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


# ---------------------------------------------------------------------------
# Round trips.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("name", list(PRECONDS))
def test_preconditioned_network_round_trip(tmp_path, name, protocol):
    cls, kw = PRECONDS[name]
    net = make(cls, kw)
    path = tmp_path / "net.pkl"
    write_edm_pickle(path, dict(ema=net, loss_fn=EDMLoss(sigma_data=np.float64(0.5)), augment_pipe=None,
                                dataset_kwargs=dict(class_name="training.dataset.ImageFolderDataset",
                                                    path="cifar10.zip", use_labels=True, xflip=False, cache=True,
                                                    resolution=16, max_size=50000)),
                     module_src=payload_src(tmp_path), protocol=protocol)

    data = load_edm_pickle(path)
    loaded = data["ema"]
    assert type(loaded) is cls and not loaded.training
    same_state(loaded, net)
    assert data["loss_fn"] == dict(class_name="EDMLoss", init_args=[],
                                   init_kwargs=dict(P_mean=-1.2, P_std=1.2, sigma_data=0.5))
    assert data["augment_pipe"] is None and data["dataset_kwargs"]["max_size"] == 50000

    torch.manual_seed(1)
    x, sigma = torch.randn(2, 3, 16, 16), torch.tensor([0.1, 7.0])
    labels = torch.tensor([1, 4]) if kw["label_dim"] else None
    with torch.no_grad():
        assert torch.equal(loaded(x, sigma, labels), net(x, sigma, labels))
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "PWNED2").exists()
    assert "torch_utils" not in sys.modules and "torch_utils.persistence" not in sys.modules


@pytest.mark.parametrize("cls,kw", [
    (SongUNet, dict(NCSNPP, label_dim=3)),
    (DhariwalUNet, dict(ADM, label_dim=3, augment_dim=9)),
])
def test_bare_unet_round_trip(tmp_path, cls, kw):
    kw = {k: v for k, v in kw.items() if k != "model_type"}
    torch.manual_seed(0)
    net = randomised(cls(img_resolution=16, in_channels=3, out_channels=3, **kw))
    write_edm_pickle(tmp_path / "u.pkl", dict(ema=net))
    loaded = load_edm_pickle(tmp_path / "u.pkl")["ema"]
    same_state(loaded, net)
    x, noise, labels = torch.randn(2, 3, 16, 16), torch.randn(2), torch.eye(3)[[0, 2]]
    with torch.no_grad():
        assert torch.equal(loaded(x, noise, labels), net(x, noise, labels))
    with pytest.raises(ValueError, match="not a preconditioned"):
        load_network(tmp_path / "u.pkl")  # a bare U-Net is no Denoiser


def test_safetensors_round_trip(tmp_path):
    net = make(EDMPrecond, PRECONDS["edm-adm-cond"][1])
    write_edm_pickle(tmp_path / "n.pkl", dict(ema=net, loss_fn=EDMLoss()), module_src=payload_src(tmp_path))
    convert_checkpoint(tmp_path / "n.pkl", tmp_path / "n.safetensors")
    raw = (tmp_path / "n.safetensors").read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])["__metadata__"]
    assert header["class_name"] == "EDMPrecond" and json.loads(header["init_kwargs"])["label_dim"] == 5

    from_st, from_pkl = load_network(tmp_path / "n.safetensors"), load_network(tmp_path / "n.pkl")
    same_state(from_st, net)
    x, sigma, labels = torch.randn(3, 3, 16, 16), torch.tensor([0.02, 1.0, 50.0]), torch.tensor([0, 2, 4])
    with torch.no_grad():
        ref = net(x, sigma, labels)
        assert torch.equal(from_st(x, sigma, labels), ref) and torch.equal(from_pkl(x, sigma, labels), ref)
    assert (from_st.sigma_min, from_st.sigma_max, from_st.shape, from_st.num_classes) == (0.002, 80.0, (3, 16, 16), 5)
    assert not (tmp_path / "PWNED").exists()


def test_safetensors_without_our_metadata_is_refused(tmp_path):
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "x.safetensors"), metadata={"class_name": "EDMPrecond"})
    with pytest.raises(ValueError, match="not a bench.edm network file"):
        load_network(tmp_path / "x.safetensors")


def test_unknown_persistent_class_is_data_not_code(tmp_path):
    net = make(VEPrecond, PRECONDS["ve-ncsnpp"][1])
    write_edm_pickle(tmp_path / "n.pkl", dict(ema=net))
    raw = (tmp_path / "n.pkl").read_bytes()
    # Rename the top-level class (same length keeps the pickle framing valid).
    (tmp_path / "m.pkl").write_bytes(raw.replace(b"VEPrecond", b"Evilclass", 1))
    assert load_edm_pickle(tmp_path / "m.pkl")["ema"]["class_name"] == "Evilclass"
    with pytest.raises(ValueError, match="not a preconditioned"):
        load_network(tmp_path / "m.pkl")
    # A nested module of another class than ours at that place is rejected, not silently loaded.
    (tmp_path / "g.pkl").write_bytes(raw.replace(b"GroupNorm", b"Groupnorm"))
    with pytest.raises(ValueError, match="checkpoint has a Groupnorm, the network a GroupNorm"):
        load_edm_pickle(tmp_path / "g.pkl")


def test_recorded_arguments_must_fit_the_weights(tmp_path):
    net = make(VPPrecond, PRECONDS["vp-ddpmpp"][1])
    net._init_kwargs["model_channels"] = 32  # the weights are for 16
    write_edm_pickle(tmp_path / "n.pkl", dict(ema=net))
    with pytest.raises(ValueError, match="size mismatch"):
        load_edm_pickle(tmp_path / "n.pkl")


# ---------------------------------------------------------------------------
# Malicious pickles.
# ---------------------------------------------------------------------------

class Reduce:
    """Pickles as ``func(*args)``."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def malicious_payloads(mark):
    code = f"open({str(mark)!r}, 'w').write('x')"
    return {
        "os.system": (Reduce(os.system, (f"touch {mark}",)), f"{os.system.__module__}.system"),
        "builtins.exec": (Reduce(builtins.exec, (code,)), "builtins.exec"),
        "builtins.eval": (Reduce(builtins.eval, (code,)), "builtins.eval"),
        "subprocess.Popen": (Reduce(subprocess.Popen, (["touch", str(mark)],)), "subprocess.Popen"),
        "builtins.getattr": (Reduce(getattr, ("text", "upper")), "builtins.getattr"),
        "torch.load": (Reduce(torch.load, (str(mark),)), "torch.serialization.load"),
    }


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "builtins.eval", "subprocess.Popen",
                                  "builtins.getattr", "torch.load"])
@pytest.mark.parametrize("where", ["top", "inside-network-state"])
def test_malicious_globals_are_refused(tmp_path, kind, where):
    mark = tmp_path / "mark"
    payload, qualname = malicious_payloads(mark)[kind]
    path = tmp_path / "evil.pkl"
    if where == "top":
        path.write_bytes(pickle.dumps(dict(ema=payload), protocol=4))
    else:  # hidden in the state of a persistent module, next to real weights
        net = make(EDMPrecond, PRECONDS["edm-adm-cond"][1])
        net.model.enc["16x16_conv"].__dict__["_forward_hooks"] = {0: payload}
        write_edm_pickle(path, dict(ema=net))
    with pytest.raises(pickle.UnpicklingError, match=f"refused global '{qualname}'"):
        load_edm_pickle(path)
    with pytest.raises(pickle.UnpicklingError, match="refused global"):
        load_network(path)
    assert not mark.exists()


def test_unknown_global_is_refused(tmp_path):
    # protocol-2 GLOBAL opcode for a module that does not exist, called with no arguments
    (tmp_path / "u.pkl").write_bytes(b"\x80\x02cmystery_module\nmystery_name\n)R.")
    with pytest.raises(pickle.UnpicklingError, match="refused global 'mystery_module.mystery_name'"):
        load_edm_pickle(tmp_path / "u.pkl")


def test_malicious_storage_bytes_are_refused(tmp_path):
    """The storage payload goes through torch.load(weights_only=True)."""
    mark = tmp_path / "mark"
    inner = io.BytesIO()
    torch.save(Reduce(os.system, (f"touch {mark}",)), inner, _use_new_zipfile_serialization=False)
    evil_storage = Reduce(torch.storage._load_from_bytes, (inner.getvalue(),))
    (tmp_path / "s.pkl").write_bytes(pickle.dumps(dict(ema=evil_storage), protocol=4))
    with pytest.raises(pickle.UnpicklingError):
        load_edm_pickle(tmp_path / "s.pkl")
    assert not mark.exists()


def test_bad_persistent_meta_is_refused(tmp_path):
    with fake_torch_utils() as persistence:
        bad = Reduce(persistence._reconstruct_persistent_obj, (dict(type="class", version=5, class_name="Linear",
                                                                    module_src="", state={}),))
        (tmp_path / "v.pkl").write_bytes(pickle.dumps(dict(ema=bad), protocol=4))
    with pytest.raises(pickle.UnpicklingError, match="persistence version"):
        load_edm_pickle(tmp_path / "v.pkl")


def test_allow_list_is_short():
    # Every entry maps to the project's own reconstructors or to inert data types.
    assert len(checkpoint._ALLOWED) <= 18
    assert all(not (m.startswith(("os", "posix", "subprocess")) or (m == "builtins" and n in ("eval", "exec")))
               for m, n in checkpoint._ALLOWED)
