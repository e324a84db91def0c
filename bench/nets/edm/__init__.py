"""EDM's networks (Karras et al. 2022, NVlabs/edm ``training/networks.py``),
reimplemented with identical parameter names and shapes, and a loader for the
released ``.pkl`` checkpoints that runs no code from the file.

    from bench.nets.edm import load_network
    net = load_network("edm-cifar10-32x32-cond-vp.pkl")   # a bench Denoiser
"""
from bench.nets.edm.checkpoint import convert_checkpoint, load_edm_pickle, load_network
from bench.nets.edm.networks import (NETWORK_CLASSES, DhariwalUNet, EDMPrecond, SongUNet, VEPrecond,
                                VPPrecond, iDDPMPrecond)

__all__ = ["load_network", "load_edm_pickle", "convert_checkpoint", "NETWORK_CLASSES", "SongUNet",
           "DhariwalUNet", "VPPrecond", "VEPrecond", "iDDPMPrecond", "EDMPrecond"]
