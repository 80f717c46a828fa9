"""Pyro models: the gated networks, the GSM prior and the flattening hyper-prior."""

from bayesprune.models.distributions import Flattening, GaussianScaleMixture
from bayesprune.models.gated_model import GatedModel, HyperPrior
from bayesprune.models.network import GatedMLP, GatedNet, build_network, lenet5, vgg16

__all__ = [
    "Flattening",
    "GaussianScaleMixture",
    "GatedMLP",
    "GatedModel",
    "GatedNet",
    "HyperPrior",
    "build_network",
    "lenet5",
    "vgg16",
]
