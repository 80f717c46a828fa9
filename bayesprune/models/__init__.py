"""Pyro models: the gated network, the GSM prior and the flattening hyper-prior."""

from bayesprune.models.distributions import Flattening, GaussianScaleMixture
from bayesprune.models.gated_model import GatedModel, HyperPrior
from bayesprune.models.network import GatedMLP

__all__ = ["Flattening", "GaussianScaleMixture", "GatedMLP", "GatedModel", "HyperPrior"]
