"""Inference: the ELBO, prior updates, the pruning handler, physical removal, training."""

from bayesprune.inference.elbo import ESTIMATORS, GatedELBO, exact_gate_differences
from bayesprune.inference.prior_update import slab_variance, update_slab_variances
from bayesprune.inference.pruning import PruneMessenger, prune
from bayesprune.inference.shrink import PruningCondition, remove_units

__all__ = [
    "ESTIMATORS",
    "GatedELBO",
    "PruneMessenger",
    "PruningCondition",
    "exact_gate_differences",
    "prune",
    "remove_units",
    "slab_variance",
    "update_slab_variances",
]
