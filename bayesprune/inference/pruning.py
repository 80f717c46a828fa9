"""The pruning handler: a Messenger that drops collapsed units' sites from a model or guide."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.trace_messenger import TraceMessenger

from bayesprune.models.distributions import GaussianScaleMixture
from bayesprune.models.network import GatedNet


class PruneMessenger(Messenger):
    """Run a model or guide as if the collapsed units of a network were physically removed.

    For each gated layer ``l`` with a boolean mask ``pruned[l]`` of shape ``(S,)``:

    - ``"{l}.gate"``: the gates of pruned units get probability 0, so their value is exactly 0
      (also when replayed or conditioned) and their log density adds nothing;
    - ``"{l}.weight"`` (a :class:`GaussianScaleMixture`): the rows of pruned units are dropped
      from the density; so are, in the consumer's ``"{next}.weight"`` site, the columns those
      units fed (the read-out's Gaussian site included);
    - ``"{l}.slab_var"`` and ``"{next}.slab_var"``: the inverse-gamma hyper-prior gets the
      α, β of the layer's pruned shape (α ∝ its number of weights, β = α / fan-in, Eq. (5)).

    So the traced objective, in value and in the gradients of the kept parameters, is the one of
    the physically pruned network (``tests/inference/test_pruning.py``), while every tensor keeps
    its shape: a training step can run under the handler from the check that finds units
    collapsed until their physical removal (:meth:`GateGuide.remove_units`). The fast evaluation
    of :class:`~bayesprune.inference.GatedELBO` reads the active handlers (:func:`active_pruning`)
    and computes the same.

    :param net: the network whose units are pruned (for the shapes of its layers).
    :param pruned: per gated layer name, a 1-d boolean tensor that is ``True`` for pruned units.
    """

    def __init__(self, net: GatedNet, pruned: dict[str, torch.Tensor]):
        super().__init__()
        for name, mask in pruned.items():
            if name not in net.gated:
                raise ValueError(f"pruned[{name!r}]: not a gated layer of the network")
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() != 1:
                raise ValueError(f"pruned[{name!r}] must be a 1-d boolean tensor")
            if mask.numel() != net.width(name):
                raise ValueError(
                    f"pruned[{name!r}] has {mask.numel()} entries for {net.width(name)} units"
                )
            if bool(mask.all()):  # as GateGuide.remove_units: a layer keeps at least one unit
                raise ValueError(f"pruned[{name!r}] prunes every unit of the layer; keep one")
        self.net = net
        self.keep = {name: ~mask for name, mask in pruned.items()}

    def column_mask(self, name: str) -> torch.Tensor | None:
        """Kept columns of layer ``name``'s augmented rows (``None``: its inputs are all kept)."""
        previous = self.net.previous_gated(name)
        if previous not in self.keep:
            return None
        return self.net.column_probs(name, self.keep[previous].float()).bool()

    def shape(self, name: str) -> tuple[int, int]:
        """(width, fan-in) of layer ``name`` once the pruned units are removed."""
        width = self.net.width(name)
        if name in self.keep:
            width = int(self.keep[name].sum())
        previous = self.net.previous_gated(name)
        fan_in = self.net.fan_in(name)
        if previous in self.keep:
            fan_in = self.net.blocks[name] * int(self.keep[previous].sum())
        return width, fan_in

    def _process_message(self, msg):
        if msg["type"] != "sample":
            return
        layer, _, kind = msg["name"].rpartition(".")
        if layer not in self.net.layers:
            return
        fn = msg["fn"]
        if kind == "gate" and layer in self.keep:
            base = fn.base_dist if isinstance(fn, dist.Independent) else fn
            masked = type(base)(probs=base.probs * self.keep[layer].to(base.probs.dtype))
            msg["fn"] = masked.to_event(fn.event_dim) if fn.event_dim else masked
            msg["fn"]._bayesprune_pruned = True  # (GatedELBO reads what the handler changed)
        elif kind == "weight":
            columns = self.column_mask(layer)
            if isinstance(fn, GaussianScaleMixture):
                if layer in self.keep:
                    fn = fn.mask_rows(self.keep[layer])
                if columns is not None:
                    fn = fn.mask_columns(columns)
                msg["fn"] = fn
            elif columns is not None and isinstance(fn, dist.Independent):  # the read-out
                base = fn.base_dist
                msg["fn"] = base.mask(columns).to_event(fn.reinterpreted_batch_ndims)
        elif kind == "slab_var" and isinstance(fn, dist.InverseGamma):
            # the hyper-prior of the layer's pruned shape, once, for all the handlers of this
            # network on the stack together (each rescaling the full shape's α by its own
            # ratio would multiply the ratios of nested handlers); the mark is on the new
            # distribution, which no replayed trace shares (msg["infer"] is the replayed
            # node's own dict)
            if getattr(fn, "_bayesprune_pruned_shape", False):
                return
            combined = active_pruning(self.net) or self
            width, fan_in = self.net.width(layer), self.net.fan_in(layer)
            kept_width, kept_fan_in = combined.shape(layer)
            if (kept_width, kept_fan_in) != (width, fan_in):
                ratio = kept_width * (kept_fan_in + 1) / (width * (fan_in + 1))
                alpha = fn.concentration * ratio
                msg["fn"] = dist.InverseGamma(alpha, alpha / kept_fan_in)
                msg["fn"]._bayesprune_pruned_shape = True
        if kind == "gate" and layer in self.keep and msg["value"] is not None:
            # a value given before this handler (replayed or conditioned inside it): zero
            # its pruned units now, before an enclosing trace records it
            msg["value"] = self._zeroed(layer, msg["value"])

    def _zeroed(self, layer: str, value: torch.Tensor) -> torch.Tensor:
        return value * self.keep[layer].to(value.dtype)

    def _postprocess_message(self, msg):
        layer, _, kind = msg["name"].rpartition(".")
        if msg["type"] == "sample" and kind == "gate" and layer in self.keep:
            value = msg["value"] = self._zeroed(layer, msg["value"])
            # a value given after this handler's turn (by a replay or condition outside it):
            # the traces outside this handler have recorded it already (their
            # _postprocess_message runs first); they get the value the network computes with
            for frame in _PYRO_STACK:
                if frame is self:
                    break
                node = (
                    frame.trace.nodes.get(msg["name"])
                    if isinstance(frame, TraceMessenger) else None
                )  # fmt: skip
                if node is not None and node["fn"] is msg["fn"]:  # this message's record
                    node["value"] = value


def prune(fn=None, net: GatedNet | None = None, pruned: dict[str, torch.Tensor] | None = None):
    """Functional form of :class:`PruneMessenger`, like ``pyro.poutine.mask``."""
    if net is None:
        raise ValueError("prune needs the network whose units are pruned (net=...)")
    msngr = PruneMessenger(net, pruned or {})
    return msngr(fn) if fn is not None else msngr


def active_pruning(net: GatedNet) -> PruneMessenger | None:
    """The pruning in force for ``net``: every :class:`PruneMessenger` on Pyro's stack combined
    into one (not entered), or ``None`` when no handler prunes it."""
    keep: dict[str, torch.Tensor] = {}
    for frame in _PYRO_STACK:
        if isinstance(frame, PruneMessenger) and frame.net is net:
            for name, mask in frame.keep.items():
                keep[name] = mask if name not in keep else keep[name] & mask
    if not keep:
        return None
    return PruneMessenger(net, {name: ~mask for name, mask in keep.items()})
