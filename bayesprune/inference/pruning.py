"""The pruning handler: a Messenger that removes pruned units' sites from a model or guide."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger

from bayesprune.models.distributions import GaussianScaleMixture


class PruneMessenger(Messenger):
    """Remove the pruned units of each gated layer from a model or guide.

    For a layer ``l`` with a boolean mask ``pruned[l]`` of shape ``(S,)``:

    - site ``"{l}.gate"``: the gates of pruned units get probability 0, so they are exactly 0
      (also when replayed or conditioned) and add nothing to the log density;
    - site ``"{l}.weight"`` (a :class:`GaussianScaleMixture`): the rows of pruned units are left
      out of the prior density and of its expectation.

    Pruned units then contribute neither to the network's output nor to any term of the objective,
    exactly as if they had been removed, but shapes are unchanged; physical removal is
    :func:`bayesprune.inference.remove_units`.

    :param pruned: per layer name, a 1-d boolean tensor that is ``True`` for pruned units.
    """

    def __init__(self, pruned: dict[str, torch.Tensor]):
        super().__init__()
        for name, mask in pruned.items():
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() != 1:
                raise ValueError(f"pruned[{name!r}] must be a 1-d boolean tensor")
        self.keep = {name: ~mask for name, mask in pruned.items()}

    def _site(self, msg) -> tuple[str | None, str]:
        layer, _, kind = msg["name"].rpartition(".")
        return (layer if layer in self.keep else None), kind

    def _process_message(self, msg):
        layer, kind = self._site(msg)
        if layer is None:
            return
        keep = self.keep[layer]
        fn = msg["fn"]
        if kind == "gate":
            base = fn.base_dist if isinstance(fn, dist.Independent) else fn
            masked = type(base)(probs=base.probs * keep.to(base.probs.dtype))
            msg["fn"] = masked.to_event(fn.event_dim) if fn.event_dim else masked
        elif kind == "weight" and isinstance(fn, GaussianScaleMixture):
            msg["fn"] = fn.mask_rows(keep)

    def _postprocess_message(self, msg):
        layer, kind = self._site(msg)
        if layer is not None and kind == "gate":
            msg["value"] = msg["value"] * self.keep[layer].to(msg["value"].dtype)


def prune(fn=None, pruned: dict[str, torch.Tensor] | None = None):
    """Functional form of :class:`PruneMessenger`, like ``pyro.poutine.mask``."""
    msngr = PruneMessenger(pruned or {})
    return msngr(fn) if fn is not None else msngr
