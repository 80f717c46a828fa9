"""The deployable network: the posterior mode as a plain ``torch.nn`` module, and its summary."""

from __future__ import annotations

import torch
from torch import nn

from bayesprune.guides.gate_guide import GateGuide


@torch.no_grad()
def deterministic_network(guide: GateGuide) -> nn.Sequential:
    """The most probable network under q: ξ_s = 1 where θ_s > ½, units with ξ_s = 0 dropped.

    With binary gates (P1) this is the only network q gives any mass to. Returns a plain
    ``nn.Sequential`` of ``Linear`` and ``ReLU`` layers with no trace of gates or Pyro.
    """
    net = guide.net
    modules: list[nn.Module] = []
    keep_in = None
    for name, layer in net.layers.items():
        weight, bias = layer.weight, layer.bias
        if keep_in is not None:
            weight = weight[:, keep_in]
        keep = (
            torch.arange(layer.out_features)
            if name == "out"
            else torch.nonzero(guide.gate_probs(name) > 0.5).flatten()
        )
        if keep.numel() == 0:  # every gate off: the layer emits zeros; keep one silent unit
            keep = torch.tensor([0])
            weight, bias = torch.zeros_like(weight), torch.zeros_like(bias)
        linear = nn.Linear(weight.shape[1], len(keep))
        linear.weight.copy_(weight[keep])
        linear.bias.copy_(bias[keep])
        modules.append(linear)
        if name != "out":
            modules.append(nn.ReLU())
        keep_in = keep
    return nn.Sequential(nn.Flatten(), *modules)


def count_weights(module: nn.Module) -> int:
    """Weights and biases of a plain network."""
    return sum(p.numel() for p in module.parameters())


def count_flops(module: nn.Module) -> int:
    """Multiply-accumulates of the Linear layers for one example."""
    return sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))


def hidden_widths(module: nn.Module) -> list[int]:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return [m.out_features for m in linears[:-1]]


def summarize(network: nn.Module, *, initial: dict, initial_widths: list[int], **fields) -> dict:
    """The machine-readable ``summary.json`` record of a trained network (issue 2's keys)."""
    kept = count_weights(network)
    return {
        **{k: v for k, v in fields.items() if k in ("arch", "dataset", "seed", "epochs")},
        "initial_widths": list(initial_widths),
        "widths": hidden_widths(network),
        **{k: v for k, v in fields.items() if k not in ("arch", "dataset", "seed", "epochs")},
        "weights_total": initial["weights"],
        "weights_kept": kept,
        "weights_kept_fraction": kept / initial["weights"],
        "flops_kept_fraction": count_flops(network) / initial["flops"],
    }
