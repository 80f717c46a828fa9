"""Physical removal of pruned units: network, variational and prior tensors, optimiser state."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from bayesprune.guides.gate_guide import GateGuide


def remove_units(
    guide: GateGuide,
    layer: str,
    keep: torch.Tensor,
    optimizers: Iterable[torch.optim.Optimizer] = (),
) -> None:
    """Physically remove the units of ``layer`` not in ``keep``: :meth:`GateGuide.remove_units`."""
    guide.remove_units(layer, keep, optimizers)


class PruningCondition:
    """The practical pruning condition (Eq. (12)): θ_s = 0 at ``patience`` consecutive checks.

    θ = 0 exactly is reachable because θ is projected onto [0, 1], so no threshold is needed;
    by Eq. (6) a unit at θ_s = 0 whose weights sit in the spike has reached the absorbing state.
    A unit that meets the condition is *collapsed*: the training steps run under the pruning
    handler without it until it is removed physically (:meth:`removed` then keeps the counters
    in step with the remaining units).

    :param patience: number of consecutive checks (m).
    """

    def __init__(self, patience: int = 3):
        if patience < 1:
            raise ValueError("patience must be at least 1")
        self.patience = patience
        self.counts: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, guide: GateGuide) -> dict[str, torch.Tensor]:
        """Update the counters; return, per layer with collapsed units, their boolean mask.

        The last unit of a layer is never collapsed (the one with the largest θ stays).
        """
        out = {}
        for name in guide.net.gated:
            theta = guide.gate_probs(name).detach()
            count = self.counts.get(name, torch.zeros_like(theta, dtype=torch.long))
            count = torch.where(theta <= 0, count + 1, torch.zeros_like(count))
            self.counts[name] = count
            collapsed = count >= self.patience
            if collapsed.all():  # never remove the last unit of a layer
                collapsed[torch.argmax(theta)] = False
            if collapsed.any():
                out[name] = collapsed
        return out

    def removed(self, name: str, keep: torch.Tensor) -> None:
        """The units of ``name`` outside ``keep`` were removed: drop their counters."""
        if name in self.counts:
            self.counts[name] = self.counts[name][keep]
