"""Gated networks: fully connected and convolutional, a Bernoulli gate on every unit and filter.

The gate multiplies a unit's output *after* its activation (Eq. (1) of docs/method.md), so a unit
(a hidden neuron, or a whole feature map of a convolution) whose gate is 0 emits exactly 0 and can
be removed without changing the network's function. Removal is physical:
:meth:`GatedNet.remove_units_` slices the unit's weights, its BatchNorm entries and the consumer
layer's input columns, for every pattern these networks contain (Conv→Conv, Conv→BatchNorm,
Conv→pool→Flatten→Linear, Linear→Linear).
"""

from __future__ import annotations

import copy
import math
import numbers
import operator
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

INITS = ("kaiming", "xavier", "normal")

# The layer plans of the paper's networks: ("conv", channels, kernel, padding), ("pool",),
# ("flatten",), ("fc", width). The classifier ("out") is appended by GatedNet.
LENET5 = (
    ("conv", 20, 5, 0),
    ("pool",),
    ("conv", 50, 5, 0),
    ("pool",),
    ("flatten",),
    ("fc", 500),
)
VGG16_CHANNELS = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


def layout(t: torch.Tensor) -> torch.memory_format:
    """The memory format a sliced copy of ``t`` keeps: channels-last for a 4-d tensor stored so
    (:func:`use_memory_format`), contiguous otherwise."""
    last = t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
    if last and not t.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def sliced_copy(t: torch.Tensor, index: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``index(t)`` as a new tensor in ``t``'s memory format (a physical removal keeps a
    channels-last layer channels-last, and its optimiser state with it)."""
    return index(t).clone(memory_format=layout(t))


def _slice_data(param: torch.Tensor, index: Callable[[torch.Tensor], torch.Tensor]) -> None:
    param.data = sliced_copy(param.data, index)
    param.grad = None


# the layouts of convolutions' weights and maps while training (TrainConfig.memory_format)
MEMORY_FORMATS = ("auto", "channels-last", "contiguous")


def channels_last_applies(net: nn.Module, memory_format: str, device) -> bool:
    """Whether ``memory_format`` (``TrainConfig.memory_format``) puts ``net``'s convolutions in
    channels-last on ``device``: "auto" does for a network with convolutions on the CPU."""
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(
            f"memory_format must be {', '.join(MEMORY_FORMATS)}, got {memory_format!r}"
        )
    convs = any(isinstance(m, nn.Conv2d) for m in net.modules())
    if memory_format == "auto":
        return convs and torch.device(device).type == "cpu"
    return convs and memory_format == "channels-last"


def use_memory_format(net: nn.Module, memory_format: str, device) -> bool:
    """Store ``net``'s 4-d weights channels-last where :func:`channels_last_applies` (the
    feature maps follow the weights), contiguous otherwise; returns whether channels-last.
    Values are unchanged; the arithmetic runs in another order (oneDNN's NHWC kernels)."""
    last = channels_last_applies(net, memory_format, device)
    if last:
        net.to(memory_format=torch.channels_last)
    elif any(layout(t) == torch.channels_last for t in [*net.parameters(), *net.buffers()]):
        net.to(memory_format=torch.contiguous_format)  # (a network handed in channels-last)
    return last


def _pool_views(h: torch.Tensor) -> list[torch.Tensor]:
    """The four strided views of 2×2 windows, in max_pool2d's scan order (odd edges dropped)."""
    h = h[..., : h.shape[-2] // 2 * 2, : h.shape[-1] // 2 * 2]
    return [h[..., 0::2, 0::2], h[..., 0::2, 1::2], h[..., 1::2, 0::2], h[..., 1::2, 1::2]]


def _window_max(h: torch.Tensor) -> torch.Tensor:
    """Each 2×2 window's maximum from the strided views (scriptable: MaxPool2x2 calls it)."""
    views = _pool_views(h)
    return torch.maximum(torch.maximum(views[0], views[1]), torch.maximum(views[2], views[3]))


class _MaxPool2x2(torch.autograd.Function):
    """``F.max_pool2d(h, 2)`` from elementwise maxima of strided views, same gradient.

    On the CPU, torch's max_pool2d kernel for NCHW maps took 8.3 ms for LeNet-5's first pool
    at batch 100 (1 thread), longer than the convolution before it; three elementwise maxima
    take 1.2 ms (``benchmarks/README.md``, "pooling"). The backward routes each window's gradient to
    the first maximal element in max_pool2d's scan order, as its indices do, so values and
    gradients are those of max_pool2d (``tests/models/test_network.py``).
    """

    @staticmethod
    def forward(ctx, h):
        out = _window_max(h)
        ctx.save_for_backward(h, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        h, out = ctx.saved_tensors
        a, b, c, _ = _pool_views(h)
        width = h.shape[-1]
        # the flat index in its map of each window's first maximum, as max_pool2d records it
        # (not a) · (1 + (not b) · (width − 1 + (not c))): 0, 1, width or width + 1
        later = (c != out).long().add_(width - 1).mul_(b != out).add_(1)
        offset = later.mul_(a != out)
        rows = torch.arange(out.shape[-2], device=h.device).unsqueeze(-1) * (2 * width)
        corner = rows + 2 * torch.arange(out.shape[-1], device=h.device)
        indices = offset + corner
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad, h, [2, 2], [2, 2], [0, 0], [1, 1], False, indices
        )


def max_pool_2x2(h: torch.Tensor) -> torch.Tensor:
    """2×2 max-pooling with stride 2: ``F.max_pool2d(h, 2)``, computed faster on the CPU.

    Without gradients, the window maxima of :func:`_window_max` (NCHW and NHWC). With them,
    :class:`_MaxPool2x2` for NCHW maps; for channels-last maps torch's own kernel, whose NHWC
    forward (with its indices) and backward take less than computing the indices here (LeNet-5's
    first pool at batch 100, 1 thread: 1.2 ms against 2.8 ms, forward and backward;
    ``benchmarks/README.md``, "pooling"). Values and gradients are max_pool2d's either way."""
    if h.device.type != "cpu" or h.shape[-1] < 2 or h.shape[-2] < 2:
        return F.max_pool2d(h, 2)
    if torch.is_grad_enabled() and h.requires_grad:
        if layout(h) == torch.channels_last:
            return F.max_pool2d(h, 2)
        return _MaxPool2x2.apply(h)
    return _window_max(h)


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)`` with :func:`max_pool_2x2`'s forward (scriptable, exportable): what the
    deployable network uses."""

    def __init__(self):
        super().__init__(2)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _window_max(input)


def _scaled(width: int, mult: float) -> int:
    """A hidden width times ``width_mult``, rounded, at least 1; a width that is not a positive
    integer or a factor that is not a positive number is a ``ValueError`` (10.5 is not 10)."""
    width = _positive_int(width, "a hidden width")
    try:
        factor = float(mult) if not isinstance(mult, (bool, str)) else math.nan
    except (TypeError, ValueError):
        factor = math.nan
    if not 0 < factor < math.inf:
        raise ValueError(f"width_mult must be a positive number, got {mult!r}")
    return max(1, round(width * factor))


_PLAN_FORMS = {
    "conv": "('conv', channels, kernel, padding): channels and kernel ≥ 1, padding ≥ 0",
    "pool": "('pool',): 2×2 max-pooling, no arguments",
    "flatten": "('flatten',): no arguments",
    "fc": "('fc', width): width ≥ 1",
}


def _positive_int(value, what: str, least: int = 1) -> int:
    """``value`` as an int if it is an integer (not a bool or a float) of at least ``least``."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {value!r}") from None
    if number < least:
        raise ValueError(f"{what} must be at least {least}, got {number}")
    return number


def _input_shape(in_shape) -> tuple[int, ...]:
    """One input's shape, ``(D,)`` or ``(C, H, W)``, as positive ints (else a ``ValueError``)."""
    try:
        dims = tuple(in_shape)
    except TypeError:
        raise ValueError(f"in_shape must be (D,) or (C, H, W), got {in_shape!r}") from None
    if len(dims) not in (1, 3):
        raise ValueError(
            f"in_shape must be (D,) for flat inputs or (C, H, W) for images, got {in_shape!r} "
            f"(a {len(dims)}-d shape; for an MLP pass the number of values, (prod(shape),))"
        )
    return tuple(_positive_int(d, f"in_shape {in_shape!r}: each dimension") for d in dims)


def channels_last_error(in_shape, what: str) -> str | None:
    """The refusal of image inputs that look like (H, W, C), numpy's and TensorFlow's order, for
    ``what`` (a network or a plan whose first layer is a convolution); None where they do not."""
    if len(in_shape) == 3 and in_shape[2] <= 4 < min(in_shape[:2]):
        return (
            f"{what} takes images as (channels, height, width), and these are "
            f"{tuple(in_shape)}: channels last, it seems; transpose them "
            "(numpy: x.transpose(0, 3, 1, 2); torch: x.permute(0, 3, 1, 2))"
        )
    return None


def _plan_step(index: int, step) -> tuple:
    """Plan step ``index`` checked against its documented form, as a tuple of plain ints."""
    where = f"plan step {index} {step!r}"
    if not isinstance(step, (tuple, list)) or not step or not isinstance(step[0], str):
        raise ValueError(f"{where}: a step is a tuple whose first item names its kind: "
                         + "; ".join(_PLAN_FORMS.values()))
    kind = step[0]
    if kind == "out":
        raise ValueError(
            f"{where}: the classifier 'out' is appended by GatedNet from num_classes; "
            "leave it out of the plan"
        )
    if kind not in _PLAN_FORMS:
        raise ValueError(f"{where}: unknown kind {kind!r}; the kinds are "
                         + "; ".join(_PLAN_FORMS.values()))
    arity = {"conv": 4, "pool": 1, "flatten": 1, "fc": 2}[kind]
    if len(step) != arity:
        raise ValueError(f"{where}: expected {_PLAN_FORMS[kind]}")
    try:
        if kind == "conv":
            return (
                "conv",
                _positive_int(step[1], "channels"),
                _positive_int(step[2], "kernel"),
                _positive_int(step[3], "padding", least=0),
            )
        if kind == "fc":
            return ("fc", _positive_int(step[1], "width"))
    except ValueError as error:
        raise ValueError(f"{where}: {error}; expected {_PLAN_FORMS[kind]}") from None
    return (kind,)


class GatedNet(nn.Module):
    """A feed-forward ReLU network, described by a plan, with one gate per hidden unit or filter.

    Layers are named ``conv1, conv2, ...`` and ``fc1, fc2, ...`` (hidden, gated) and ``out`` (the
    classifier, never gated). A hidden layer computes ReLU(BatchNorm(layer(h))) (BatchNorm only
    for convolutions and only with ``batch_norm``), then the gate, then any pooling.

    :param in_shape: shape of one input, ``(D,)`` or ``(C, H, W)``.
    :param plan: the hidden layers in order: ``("conv", channels, kernel, padding)``,
        ``("pool",)`` (2×2 max-pooling), ``("flatten",)``, ``("fc", width)``.
    :param num_classes: outputs of the classifier.
    :param batch_norm: BatchNorm after every convolution.
    :param init: ``"kaiming"``, ``"xavier"`` or ``"normal"`` (N(0, 0.01²)) for the hidden layers;
        the classifier starts at zero and every bias at 0 (:meth:`reset_parameters`).
    """

    arch = "custom"  # the architecture's name in summaries (set by the named constructors)

    def __init__(
        self,
        in_shape: Sequence[int],
        plan: Sequence[tuple],
        num_classes: int,
        batch_norm: bool = False,
        init: str = "kaiming",
    ):
        super().__init__()
        self.in_shape = _input_shape(in_shape)
        self.num_classes = _positive_int(num_classes, "num_classes")
        self.batch_norm = bool(batch_norm)
        plan = [_plan_step(i, step) for i, step in enumerate(plan)]
        first = next((step[0] for step in plan if step[0] in ("conv", "fc")), None)
        if first == "conv":  # 16×16×3 read as 16 channels of 16×3 (build_network refused it)
            said = channels_last_error(self.in_shape, "a plan that starts with a convolution")
            if said:
                raise ValueError(said)
        if not any(step[0] in ("conv", "fc") for step in plan):
            raise ValueError(
                "the plan needs at least one hidden layer, ('conv', channels, kernel, padding) "
                "or ('fc', width): the gates sit on hidden units (the classifier is appended)"
            )
        if self.batch_norm and not any(step[0] == "conv" for step in plan):
            raise ValueError(
                "batch_norm=True puts BatchNorm after every convolution, and this plan has "
                "none: fully connected layers take no BatchNorm here (leave batch_norm False)"
            )
        self.layers = nn.ModuleDict()
        self.norms = nn.ModuleDict()
        self.ops: list[tuple[str, str | None]] = []
        # columns of a layer's flattened fan-in that belong to one input unit (k² for a
        # convolution, H·W for the Linear after a Flatten, 1 otherwise)
        self.blocks: dict[str, int] = {}
        self.map_sizes: dict[str, tuple[int, int]] = {}  # a convolution's output (H, W)
        shape = self.in_shape
        counts = {"conv": 0, "fc": 0}
        block = 1  # columns per input unit of the next Linear (H·W right after a Flatten)
        for step in [*plan, ("out", num_classes)]:
            kind = step[0]
            if kind in ("fc", "out") and len(shape) == 3:  # feature maps into a Linear: flatten
                shape, block = self._flatten(shape)
            if kind == "pool":
                if len(shape) != 3 or min(shape[1:]) < 2:
                    raise ValueError(f"cannot pool a feature map of shape {shape}")
                shape = (shape[0], shape[1] // 2, shape[2] // 2)
                self.ops.append(("pool", None))
            elif kind == "flatten":
                if len(shape) == 3:
                    shape, block = self._flatten(shape)
            elif kind == "conv":
                _, channels, kernel, padding = step
                if len(shape) != 3:
                    raise ValueError("a convolution needs a (C, H, W) input, not a flat one")
                counts["conv"] += 1
                name = f"conv{counts['conv']}"
                self.layers[name] = nn.Conv2d(shape[0], channels, kernel, padding=padding)
                if batch_norm:
                    self.norms[name] = nn.BatchNorm2d(channels)
                self.blocks[name] = kernel * kernel
                size = [d + 2 * padding - kernel + 1 for d in shape[1:]]
                if min(size) < 1:
                    raise ValueError(f"{name}: kernel {kernel} does not fit a {shape} input")
                shape = (channels, *size)
                self.map_sizes[name] = (size[0], size[1])
                self.ops.append(("conv", name))
            elif kind in ("fc", "out"):
                if kind == "out":
                    name = "out"
                else:
                    counts["fc"] += 1
                    name = f"fc{counts['fc']}"
                self.blocks[name], block = block, 1
                self.layers[name] = nn.Linear(shape[0], step[1])
                shape = (step[1],)
                self.ops.append(("fc", name))
        self.reset_parameters(init)

    def _flatten(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
        """Append a Flatten; return the flat shape and the columns each channel feeds."""
        self.ops.append(("flatten", None))
        return (math.prod(shape),), math.prod(shape[1:])

    def reset_parameters(self, init: str) -> None:
        """Initialise the hidden layers with one of the supported schemes and the classifier at 0.

        A zero classifier makes the initial network a constant predictor: no hidden unit's output
        reaches the loss yet, so no gate gradient can call a unit harmful merely because a random
        read-out turns its activity into noise (with a random classifier every unit looks
        harmful at first and the θ momentum prunes conv filters on that noise; docs/method.md
        §6). BatchNorm starts at γ = 1, β = 0; biases at 0.
        """
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}: choose kaiming, xavier or normal")
        for name, layer in self.layers.items():
            if name == "out":
                nn.init.zeros_(layer.weight)
            elif init == "kaiming":
                nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
            elif init == "xavier":
                nn.init.xavier_uniform_(layer.weight)
            else:
                nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
        for norm in self.norms.values():
            norm.reset_parameters()

    # --- shape -------------------------------------------------------------------------------

    def _layer_names(self) -> tuple[str, ...]:
        """The layers' names, input to output (fixed once the network is built: removal slices
        units, never layers), kept so that the per-step code does not walk the ModuleDict."""
        names = self.__dict__.get("_names")
        if names is None:
            names = self.__dict__["_names"] = tuple(self.layers)
        return names

    @property
    def gated(self) -> list[str]:
        """Names of the gated (hidden) layers, input to output."""
        return list(self._layer_names()[:-1])

    @property
    def widths(self) -> list[int]:
        """Current hidden widths (units or filters per gated layer)."""
        return [self.width(name) for name in self.gated]

    def width(self, name: str) -> int:
        """Number of units (rows) of a layer."""
        return self.layers[name].weight.shape[0]

    def fan_in(self, name: str) -> int:
        """Inputs per unit: in_features, or in_channels · k² for a convolution."""
        return math.prod(self.layers[name].weight.shape[1:])

    def next_layer(self, name: str) -> str:
        """Name of the layer that consumes ``name``'s units."""
        names = self._layer_names()
        return names[names.index(name) + 1]

    def augmented(self, name: str) -> torch.Tensor:
        """The layer's flattened weights with the bias as a last column: row s is the unit's w_s."""
        layer = self.layers[name]
        return torch.cat([layer.weight.flatten(1), layer.bias.unsqueeze(-1)], dim=-1)

    def row_sq_norms(self, name: str) -> torch.Tensor:
        """‖w_s‖² of every unit's augmented row, without building ``[W | b]``."""
        layer = self.layers[name]
        return layer.weight.flatten(1).pow(2).sum(-1) + layer.bias.pow(2)

    def previous_gated(self, name: str) -> str | None:
        """The gated layer whose units feed ``name`` (``None`` for the first layer)."""
        names = self._layer_names()
        i = names.index(name)
        return names[i - 1] if i > 0 else None

    def column_probs(self, name: str, unit_probs: torch.Tensor | None) -> torch.Tensor | None:
        """Per column of ``name``'s augmented row, the probability that its input is on.

        ``unit_probs`` are the gate probabilities of the previous gated layer (``None``: the
        layer reads the network's input, always on, and ``None`` is returned). The bias column
        is always on.
        """
        if unit_probs is None:
            return None
        per_column = unit_probs.repeat_interleave(self.blocks[name], dim=-1)
        return torch.cat([per_column, per_column.new_ones(1)], dim=-1)

    def input_columns(self, name: str, units: torch.Tensor) -> torch.Tensor:
        """Columns of ``name``'s flattened fan-in fed by the given units of the previous layer."""
        block = self.blocks[name]
        units = torch.as_tensor(units, dtype=torch.long, device=self.layers[name].weight.device)
        offsets = torch.arange(block, device=units.device)
        return (units.unsqueeze(-1) * block + offsets).flatten()

    # --- forward ------------------------------------------------------------------------------

    def forward(
        self,
        x: torch.Tensor,
        gates: dict[str, torch.Tensor] | None = None,
        params: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Logits of the gated network.

        :param x: inputs, shape ``(B, *in_shape)`` (flat inputs of the right size are reshaped
            here; the deployable network of :meth:`to_sequential` reshapes only for an MLP, so
            the ``Trainer`` asks a convolutional network's data in its ``in_shape``).
        :param gates: per layer, gates of shape ``(B, S)`` or ``(S,)``, non-negative (a pool
            after a convolution runs before its gates, which commutes only with a scale ≥ 0);
            missing layers are ungated.
        :param params: per layer, augmented weights ``[W | b]`` replacing the module's own.
        """
        return self.run_ops(x.reshape(x.shape[0], *self.in_shape), gates, params)

    def op_index(self, name: str) -> int:
        """Position of layer ``name`` in :attr:`ops` (what :meth:`run_ops` counts)."""
        return next(i for i, (kind, n) in enumerate(self.ops) if n == name)

    def run_ops(
        self,
        h: torch.Tensor,
        gates: dict[str, torch.Tensor] | None = None,
        params: dict[str, torch.Tensor] | None = None,
        start: int = 0,
        stop: int | None = None,
    ) -> torch.Tensor:
        """Apply ``ops[start:stop]`` to ``h`` (the whole network: :meth:`forward`): what a layer
        receives is ``run_ops(x, stop=op_index(layer))``, and the rest of the network
        ``run_ops(h, start=op_index(layer))``."""
        ops = self.ops[start:stop]
        pooled = False  # the pool after this convolution already ran, before its ReLU
        for i, (kind, name) in enumerate(ops):
            if kind == "pool":
                if not pooled:
                    h = max_pool_2x2(h)
                pooled = False
                continue
            if kind == "flatten":
                h = h.flatten(1)
                continue
            if params is not None and name in params:
                wb = params[name]
                weight = wb[:, :-1].reshape(self.layers[name].weight.shape)
                h = self.map(name, h, weight, wb[:, -1])
            else:
                h = self.map(name, h)
            if name == "out":
                break
            pooled = i + 1 < len(ops) and ops[i + 1][0] == "pool"
            h = self.activate(name, h, gates, pool=pooled)
        return h

    def map(self, name: str, h: torch.Tensor, weight=None, bias=None) -> torch.Tensor:
        """Layer ``name``'s convolution or linear map of ``h`` (its own weights unless given)."""
        layer = self.layers[name]
        weight = layer.weight if weight is None else weight
        bias = layer.bias if bias is None else bias
        if weight.dim() == 4:
            return F.conv2d(h, weight, bias, padding=layer.padding)
        return F.linear(h, weight, bias)

    def activate(self, name: str, z: torch.Tensor, gates=None, pool: bool = False) -> torch.Tensor:
        """What follows layer ``name``'s linear map or convolution ``z``: its normalisation, the
        ReLU and its gates (Eq. (1): the gate acts after the activation); ``z`` itself for the
        read-out.

        ``pool``: also the 2×2 max-pooling that follows, applied before the ReLU and the gates.
        Max-pooling commutes with both (the ReLU is monotone, a gate is a non-negative scale
        per channel), so the values are those of pooling last, and the ReLU, the gates and
        their backward passes run on a quarter of the values (LeNet-5's first layer: 100×20×24×24
        values, 4× the pooled map). The weights' gradients are the same; a gate's gradient is
        the same where the gate is positive, and where it is drawn 0 it is now the derivative
        of the pooled output in the gate (the window maxima) instead of max_pool2d's tie-break
        among the zeros (the first value of each window).
        """
        if name == "out":
            return z
        if name in self.norms:
            z = self.norms[name](z)
        if pool:
            z = max_pool_2x2(z)
        h = F.relu(z)
        if gates is not None and name in gates:
            g = gates[name]
            h = h * g.reshape(*g.shape, *([1] * (h.dim() - 2)))
        return h

    # --- physical removal ---------------------------------------------------------------------

    def unit_indices(self, name: str, keep) -> torch.Tensor:
        """``keep`` as the long indices of the units of gated layer ``name`` to keep, or a
        ``ValueError`` / ``TypeError`` saying why it is not: a boolean mask (the pruning
        handler's masks mark the *pruned* units, so a mask's meaning here would be a guess:
        pass ``mask.nonzero().flatten()`` for the units a mask keeps), no index, an index
        outside the layer, or one named twice (its unit would be duplicated)."""
        if name not in self.gated:
            raise ValueError(f"{name!r} is not a gated layer")
        keep = torch.as_tensor(keep)
        if keep.dtype == torch.bool or keep.is_floating_point() or keep.is_complex():
            raise TypeError(
                f"keep must hold the indices of the units to keep (integers), not a "
                f"{keep.dtype} tensor; for a boolean mask of the units to keep pass "
                "mask.nonzero().flatten()"
            )
        keep = keep.to(torch.long).flatten()
        if keep.numel() == 0:
            raise ValueError("refusing to remove the last unit of a layer")
        width = self.width(name)
        if int(keep.min()) < 0 or int(keep.max()) >= width:
            raise ValueError(f"keep has indices outside {name!r}'s {width} units")
        if keep.unique().numel() != keep.numel():
            raise ValueError("keep names a unit more than once (it would be duplicated)")
        return keep

    @torch.no_grad()
    def remove_units_(
        self,
        name: str,
        keep: torch.Tensor,
        slice_param: Callable[[nn.Parameter, Callable], None] = _slice_data,
    ) -> None:
        """Keep only the units ``keep`` of gated layer ``name``, in place.

        Slices the layer's weight rows and biases, its BatchNorm's γ, β and running statistics, and
        the next layer's input columns (a block of k² per channel for a convolution, H·W per
        channel for the Linear after a Flatten, one column for a Linear). ``slice_param(p, index)``
        is called for every parameter so that callers can slice optimiser state alongside.
        """
        keep = self.unit_indices(name, keep).to(self.layers[name].weight.device)
        nxt_name = self.next_layer(name)
        this, nxt = self.layers[name], self.layers[nxt_name]
        columns = self.input_columns(nxt_name, keep)

        def rows(t):
            return t.index_select(0, keep)

        def cols(t):
            if t.dim() > 2:  # a convolution's (out, in, k, k): one slice per input channel
                return t.index_select(1, keep)
            return t.index_select(1, columns)

        slice_param(this.weight, rows)
        slice_param(this.bias, rows)
        if name in self.norms:
            norm = self.norms[name]
            slice_param(norm.weight, rows)
            slice_param(norm.bias, rows)
            norm.running_mean = rows(norm.running_mean).clone()
            norm.running_var = rows(norm.running_var).clone()
            norm.num_features = len(keep)
        slice_param(nxt.weight, cols)
        if isinstance(this, nn.Conv2d):
            this.out_channels = len(keep)
        else:
            this.out_features = len(keep)
        if isinstance(nxt, nn.Conv2d):
            nxt.in_channels = len(keep)
        else:
            nxt.in_features = len(columns)

    @torch.no_grad()
    def silence_(self, name: str, unit: int) -> None:
        """Make one unit emit exactly 0 whatever its input (weights, bias and BatchNorm zeroed)."""
        layer = self.layers[name]
        layer.weight[unit].zero_()
        layer.bias[unit].zero_()
        if name in self.norms:
            self.norms[name].weight[unit].zero_()
            self.norms[name].bias[unit].zero_()

    def spec(self) -> dict:
        """Plain-typed constructor arguments at the *current* widths (for checkpoints).

        ``GatedNet.from_spec(net.spec())`` builds a network of the same architecture and shapes,
        so a pruned checkpoint's state dict loads into it.
        """
        plan: list[list] = []
        for kind, name in self.ops:
            if kind == "conv":
                layer = self.layers[name]
                plan.append(["conv", self.width(name), layer.kernel_size[0], layer.padding[0]])
            elif kind == "fc" and name != "out":
                plan.append(["fc", self.width(name)])
            elif kind in ("pool", "flatten"):
                plan.append([kind])
        return {
            "arch": self.arch,
            "in_shape": list(self.in_shape),
            "plan": plan,
            "num_classes": self.num_classes,
            "batch_norm": self.batch_norm,
        }

    @classmethod
    def from_spec(cls, spec: dict) -> GatedNet:
        """The network described by :meth:`spec` (freshly initialised). A recorded
        ``batch_norm`` on a plan without convolutions (a network built before that was refused)
        had no BatchNorm, and is read as False."""
        plan = [tuple(step) for step in spec["plan"]]
        convolutions = any(step[0] == "conv" for step in plan)
        batch_norm = spec["batch_norm"] and convolutions
        net = GatedNet(spec["in_shape"], plan, spec["num_classes"], batch_norm=batch_norm)
        net.arch = spec["arch"]
        return net

    def to_sequential(self) -> nn.Sequential:
        """The ungated network as a plain ``nn.Sequential`` (copies of the modules).

        A pooling that follows a ReLU comes before it instead: max-pooling commutes with the
        ReLU (both are monotone), so the function is the same and the ReLU runs on a quarter of
        the values (LeNet-5's first ReLU: 1.2 ms at batch 256 on the CPU, 0.2 ms after the
        pool).
        """
        modules: list[nn.Module] = []
        for kind, name in self.ops:
            if kind == "pool":
                if modules and isinstance(modules[-1], nn.ReLU):
                    modules.insert(len(modules) - 1, MaxPool2x2())
                else:
                    modules.append(MaxPool2x2())
            elif kind == "flatten":
                modules.append(nn.Flatten())
            else:
                modules.append(copy.deepcopy(self.layers[name]))
                if name != "out":
                    if name in self.norms:
                        modules.append(copy.deepcopy(self.norms[name]))
                    modules.append(nn.ReLU())
        if self.flattens and self.ops[0][0] != "flatten":
            modules.insert(0, nn.Flatten())
        return nn.Sequential(*modules)

    @property
    def flattens(self) -> bool:
        """Whether the network flattens its inputs first (an MLP: any input shape with
        ``prod(in_shape)`` values per example will do)."""
        return self.ops[0][0] == "flatten" or len(self.in_shape) == 1


class GatedMLP(GatedNet):
    """A fully connected ReLU network with one gate per hidden unit (``fc1 .. fcL``, ``out``).

    :param in_features: input dimension (inputs with more dims are flattened).
    :param widths: hidden widths, e.g. ``(300, 100)`` for LeNet-300-100.
    :param out_features: number of classes.
    :param init: weight initialisation, ``"kaiming"``, ``"xavier"`` or ``"normal"`` (N(0, 0.01²)).
    """

    arch = "mlp"

    def __init__(
        self, in_features: int, widths: tuple[int, ...], out_features: int, init: str = "kaiming"
    ):
        if isinstance(in_features, tuple | list | torch.Size):  # a dataset's in_shape
            raise ValueError(
                f"in_features is the number of input values, got the shape {tuple(in_features)}: "
                f"pass math.prod(shape) = {math.prod(in_features)}"
            )
        if isinstance(in_features, float) and in_features.is_integer():  # 784.0, as widths' 10.0
            in_features = int(in_features)
        in_features = _positive_int(in_features, "in_features")  # 6.7 is not silently 6
        if isinstance(widths, numbers.Number | str):
            raise ValueError(
                f"widths is a sequence of hidden widths, e.g. (300, 100), got {widths!r}"
            )
        if not widths or any(int(w) != w or w < 1 for w in widths):  # 10.5 is not silently 10
            raise ValueError(f"hidden widths must be positive integers, got {widths}")
        plan = [("fc", int(w)) for w in widths]
        super().__init__((in_features,), plan, out_features, init=init)


def lenet5(
    in_shape: Sequence[int],
    num_classes: int,
    width_mult: float = 1.0,
    init: str = "kaiming",
    widths: tuple[int, int, int] | None = None,
) -> GatedNet:
    """LeNet-5-Caffe: conv 20@5×5, pool, conv 50@5×5, pool, fc 800→500, fc 500→classes.

    Gates on both convolutions' filters and on the 500 hidden units; ``widths`` replaces the
    three (conv1, conv2, fc1), and ``width_mult`` scales every hidden layer.
    """
    if widths is not None and len(widths) != 3:
        raise ValueError(f"lenet5 takes three widths (conv1, conv2, fc1), got {len(widths)}")
    sizes = iter(widths or [step[1] for step in LENET5 if step[0] in ("conv", "fc")])
    plan = [
        (kind, _scaled(next(sizes), width_mult), *rest[1:]) if kind in ("conv", "fc") else (kind,)
        for kind, *rest in LENET5
    ]
    net = GatedNet(in_shape, plan, num_classes, init=init)
    net.arch = "lenet5"
    return net


def vgg16(
    in_shape: Sequence[int], num_classes: int, width_mult: float = 1.0, init: str = "kaiming"
) -> GatedNet:
    """VGG16 for CIFAR: 13 convolutions 3×3 (64-64-M-128-128-M-256×3-M-512×3-M-512×3-M), each
    with BatchNorm, then fc 512→512→classes. Gates on every filter and on the 512 fc units."""
    plan: list[tuple] = [
        ("pool",) if c == "M" else ("conv", _scaled(c, width_mult), 3, 1) for c in VGG16_CHANNELS
    ]
    plan += [("flatten",), ("fc", _scaled(512, width_mult))]
    net = GatedNet(in_shape, plan, num_classes, batch_norm=True, init=init)
    net.arch = "vgg16"
    return net


ARCHITECTURES = {"mlp": None, "lenet5": lenet5, "vgg16": vgg16}
# what --widths means when it is not given (before --width-mult)
DEFAULT_WIDTHS = {
    "mlp": (300, 100),  # LeNet-300-100
    "lenet5": tuple(step[1] for step in LENET5 if step[0] in ("conv", "fc")),
}


def build_network(
    arch: str,
    in_shape: Sequence[int],
    num_classes: int,
    widths: Sequence[int] | None = None,
    width_mult: float = 1.0,
    init: str = "kaiming",
) -> GatedNet:
    """Construct a named architecture (``mlp``, ``lenet5``, ``vgg16``) for an input shape.

    ``widths`` sets the MLP's hidden widths (default 300, 100, LeNet-300-100) or LeNet-5's
    conv1, conv2 and fc1 widths (default 20, 50, 500); ``width_mult`` scales every hidden layer
    of any architecture.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}: choose one of {', '.join(ARCHITECTURES)}")
    if widths is not None and len(widths) == 0:
        raise ValueError(f"{arch}: widths is empty; give the hidden widths, or None for defaults")
    if arch == "mlp":
        widths = tuple(DEFAULT_WIDTHS["mlp"] if widths is None else widths)
        return GatedMLP(
            math.prod(in_shape), tuple(_scaled(w, width_mult) for w in widths), num_classes, init
        )
    if widths is not None and arch != "lenet5":
        raise ValueError(f"--widths applies to the mlp and lenet5; scale {arch} with --width-mult")
    if len(in_shape) != 3:
        raise ValueError(f"{arch} needs image inputs (C, H, W), got shape {tuple(in_shape)}")
    said = channels_last_error(in_shape, arch)  # (H, W, C): numpy's and TensorFlow's order
    if said:
        raise ValueError(said)
    if arch == "lenet5" and min(in_shape[1:]) < 16:  # 5×5 conv, 2×2 pool, twice
        raise ValueError(
            f"lenet5 (two 5×5 convolutions, each followed by 2×2 pooling) needs images of at "
            f"least 16×16 pixels, got {tuple(in_shape)}; use mlp for smaller images"
        )
    if widths is not None:
        return lenet5(in_shape, num_classes, width_mult, init, tuple(widths))
    if arch == "vgg16" and min(in_shape[1:]) < 32:  # five 2×2 poolings
        raise ValueError(
            f"vgg16 (CIFAR VGG16-BN, five 2×2 poolings) needs images of at least 32×32 pixels, "
            f"got {tuple(in_shape)}; use mlp or lenet5 for 28×28 images"
        )
    return ARCHITECTURES[arch](in_shape, num_classes, width_mult, init)
