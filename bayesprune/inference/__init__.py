"""Inference: one ELBO, one pruning handler, one optimiser; prior updates, merge moves, removal,
training."""

from bayesprune.inference.elbo import ESTIMATORS, GatedELBO, exact_gate_differences
from bayesprune.inference.merge import MergeMoves
from bayesprune.inference.prior_update import slab_variance, update_slab_variances
from bayesprune.inference.projected_sgd import GateOptim, ProjectedAdam, ProjectedSGD
from bayesprune.inference.pruning import PruneMessenger, active_pruning, prune
from bayesprune.inference.shrink import PruningCondition, remove_units

__all__ = [
    "ESTIMATORS",
    "GateOptim",
    "GatedELBO",
    "MergeMoves",
    "ProjectedAdam",
    "ProjectedSGD",
    "PruneMessenger",
    "PruningCondition",
    "active_pruning",
    "exact_gate_differences",
    "prune",
    "remove_units",
    "slab_variance",
    "update_slab_variances",
]
