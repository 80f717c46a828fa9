"""The gated network: an MLP whose hidden units are multiplied by Bernoulli gates.

The gate multiplies the unit's output *after* its activation (Eq. (1) of docs/method.md), so a
unit whose gate is 0 emits exactly 0 and can be removed without changing the network's function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GatedMLP(nn.Module):
    """A fully connected ReLU network with one gate per hidden unit.

    Layers are named ``fc1 .. fcL`` (hidden, gated) and ``out`` (never gated).

    :param in_features: input dimension.
    :param widths: hidden widths, e.g. ``(300, 100)`` for LeNet-300-100.
    :param out_features: number of classes.
    :param init: weight initialisation, ``"kaiming"``, ``"xavier"`` or ``"normal"`` (N(0, 0.01²)).
    """

    def __init__(
        self, in_features: int, widths: tuple[int, ...], out_features: int, init: str = "kaiming"
    ):
        super().__init__()
        if not widths or any(int(w) < 1 for w in widths):
            raise ValueError(f"hidden widths must be positive integers, got {widths}")
        sizes = [in_features, *[int(w) for w in widths], out_features]
        self.layers = nn.ModuleDict()
        for i in range(len(sizes) - 1):
            name = "out" if i == len(sizes) - 2 else f"fc{i + 1}"
            self.layers[name] = nn.Linear(sizes[i], sizes[i + 1])
        self.reset_parameters(init)

    def reset_parameters(self, init: str) -> None:
        """Initialise every layer with one of the supported schemes."""
        for layer in self.layers.values():
            if init == "kaiming":
                nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
            elif init == "xavier":
                nn.init.xavier_uniform_(layer.weight)
            elif init == "normal":
                nn.init.normal_(layer.weight, std=0.01)
            else:
                raise ValueError(f"unknown init {init!r}: choose kaiming, xavier or normal")
            nn.init.zeros_(layer.bias)

    @property
    def gated(self) -> list[str]:
        """Names of the gated (hidden) layers, input to output."""
        return [name for name in self.layers if name != "out"]

    @property
    def widths(self) -> list[int]:
        """Current hidden widths."""
        return [self.layers[name].out_features for name in self.gated]

    def next_layer(self, name: str) -> str:
        """Name of the layer that consumes ``name``'s units."""
        names = list(self.layers)
        return names[names.index(name) + 1]

    def augmented(self, name: str) -> torch.Tensor:
        """The layer's weights with the bias as a last column: row s is the unit's w_s."""
        layer = self.layers[name]
        return torch.cat([layer.weight, layer.bias.unsqueeze(-1)], dim=-1)

    def row_sq_norms(self, name: str) -> torch.Tensor:
        """‖w_s‖² of every unit's augmented row, without building ``[W | b]``."""
        layer = self.layers[name]
        return torch.linalg.vector_norm(layer.weight, dim=-1).pow(2) + layer.bias.pow(2)

    def forward(
        self,
        x: torch.Tensor,
        gates: dict[str, torch.Tensor] | None = None,
        params: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Logits of the gated network.

        :param x: inputs, shape ``(B, in_features)`` (extra trailing dims are flattened).
        :param gates: per layer, gates of shape ``(B, S)`` or ``(S,)``; missing layers are ungated.
        :param params: per layer, augmented weights ``[W | b]`` replacing the module's own.
        """
        h = x.flatten(1)
        for name, layer in self.layers.items():
            if params is not None and name in params:
                wb = params[name]
                h = F.linear(h, wb[:, :-1], wb[:, -1])
            else:
                h = layer(h)
            if name != "out":
                h = F.relu(h)  # Eq. (1): the gate acts after the activation
                if gates is not None and name in gates:
                    h = h * gates[name]
        return h
