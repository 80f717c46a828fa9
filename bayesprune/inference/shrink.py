"""Physical removal of pruned units: network, variational and prior tensors, optimiser state."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from bayesprune.guides.gate_guide import GateGuide


def _slice_param(
    param: torch.nn.Parameter,
    index: Callable[[torch.Tensor], torch.Tensor],
    optimizers: Iterable[torch.optim.Optimizer],
) -> None:
    """Apply ``index`` to a parameter in place and to every optimiser state tensor of its shape."""
    for opt in optimizers:
        state = opt.state.get(param, {})
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == param.shape:
                state[key] = index(value).clone()
    param.data = index(param.data).clone()
    param.grad = None


@torch.no_grad()
def remove_units(
    guide: GateGuide,
    layer: str,
    keep: torch.Tensor,
    optimizers: Iterable[torch.optim.Optimizer] = (),
) -> None:
    """Physically remove the units of ``layer`` that are not in ``keep``.

    Slices the layer's rows and biases (and BatchNorm entries), the next layer's input columns
    (:meth:`GatedNet.remove_units_`), θ, the Gaussian posterior scales of both layers, and the
    matching optimiser moments (in place, so the optimisers keep
    working on the same parameter objects). The slab variance is a per-layer scalar and stays.

    :param guide: the guide owning the network and the variational parameters.
    :param layer: a gated layer name.
    :param keep: indices (long) of the units to keep, at least one.
    :param optimizers: optimisers whose state must follow the parameters.
    """
    if layer not in guide.net.gated:
        raise ValueError(f"{layer!r} is not a gated layer")
    keep = torch.as_tensor(keep, dtype=torch.long).flatten()
    if keep.numel() == 0:
        raise ValueError("refusing to remove the last unit of a layer")
    keep = keep.to(guide.gate_probs(layer).device)
    optimizers = list(optimizers)
    net = guide.net
    nxt = net.next_layer(layer)
    columns = torch.cat(  # augmented: the next layer's input columns, and its bias column
        [net.input_columns(nxt, keep), torch.tensor([net.fan_in(nxt)], device=keep.device)]
    )
    net.remove_units_(layer, keep, lambda p, index: _slice_param(p, index, optimizers))

    def rows(t):
        return t.index_select(0, keep)

    _slice_param(guide.raw_param("theta", layer), rows, optimizers)
    setattr(guide, f"unit_ids_{layer}", rows(guide.unit_ids(layer)))  # ids follow their units
    if guide.weights == "gaussian":
        _slice_param(guide.raw_param("log_sigma", layer), rows, optimizers)
        _slice_param(
            guide.raw_param("log_sigma", nxt), lambda t: t.index_select(-1, columns), optimizers
        )


class PruningCondition:
    """The practical pruning condition (Eq. (12)): θ_s = 0 at ``patience`` consecutive checks.

    θ = 0 exactly is reachable because θ is projected onto [0, 1], so no threshold is needed;
    by Eq. (6) a unit at θ_s = 0 whose weights sit in the spike has reached the absorbing state.

    :param patience: number of consecutive checks (m).
    """

    def __init__(self, patience: int = 3):
        if patience < 1:
            raise ValueError("patience must be at least 1")
        self.patience = patience
        self.counts: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, guide: GateGuide) -> dict[str, torch.Tensor]:
        """Update the counters; return, per layer, the indices of units to keep (if any go)."""
        out = {}
        for name in guide.net.gated:
            theta = guide.gate_probs(name).detach()
            count = self.counts.get(name, torch.zeros_like(theta, dtype=torch.long))
            count = torch.where(theta <= 0, count + 1, torch.zeros_like(count))
            remove = count >= self.patience
            if remove.all():  # never remove the last unit of a layer
                remove[torch.argmax(theta)] = False
            self.counts[name] = count[~remove]
            if remove.any():
                out[name] = torch.nonzero(~remove).flatten()
        return out
