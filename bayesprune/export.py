"""The deployable network: the posterior mode as a plain ``torch.nn`` module, and its summary."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from bayesprune.guides.gate_guide import GateGuide
from bayesprune.models.network import MaxPool2x2


@torch.no_grad()
def deterministic_network(guide: GateGuide) -> nn.Sequential:
    """The most probable network under q: ξ_s = 1 where θ_s ≥ ½, units with ξ_s = 0 removed.

    With binary gates (P1) this is the only network q gives any mass to. Returns a plain
    ``nn.Sequential`` (``Conv2d``, ``BatchNorm2d``, ``ReLU``, ``MaxPool2d``, ``Flatten``,
    ``Linear``) in eval mode, with no trace of gates or Pyro, on the network's device.
    """
    net = copy.deepcopy(guide.net)
    for name in net.gated:
        keep = mode_units(guide, name)
        if keep.numel() == 0:  # every gate off: the layer emits zeros; keep one silent unit
            keep = keep.new_zeros(1)
            net.silence_(name, 0)
        if keep.numel() < net.width(name):
            net.remove_units_(name, keep)
    return net.to_sequential().eval()


def mode_units(guide: GateGuide, name: str) -> torch.Tensor:
    """The indices of layer ``name``'s units in the posterior mode (θ_s ≥ ½,
    :meth:`GateGuide.mode_mask`)."""
    return torch.nonzero(guide.mode_mask(name)).flatten()


def mode_widths(guide: GateGuide) -> list[int]:
    """The widths of :func:`deterministic_network` (a layer with no unit keeps a silent one)."""
    return [max(1, mode_units(guide, name).numel()) for name in guide.net.gated]


def count_weights(module: nn.Module) -> int:
    """Trainable weights and biases of a network (BatchNorm's γ and β included)."""
    return sum(p.numel() for p in module.parameters())


def count_macs(module: nn.Module, in_shape: Sequence[int]) -> int:
    """Multiply-accumulates of the Conv2d and Linear layers for one example of ``in_shape``."""
    return sum(layer_macs(module, in_shape))


@torch.no_grad()
def layer_macs(module: nn.Module, in_shape: Sequence[int]) -> list[int]:
    """:func:`count_macs` per Conv2d and Linear layer, in the order the example meets them."""
    macs = []

    def hook(layer, _inputs, output):
        if isinstance(layer, nn.Conv2d):
            macs.append(output[0].numel() * layer.weight[0].numel())
        else:
            macs.append(layer.in_features * layer.out_features)

    handles = [
        m.register_forward_hook(hook)
        for m in module.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    device = next(module.parameters()).device
    was_training = module.training
    try:
        module.eval()
        module(torch.zeros(1, *in_shape, device=device))
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()
    return macs


def hidden_widths(module: nn.Module) -> list[int]:
    """Units or filters of every hidden Conv2d / Linear layer, input to output."""
    layers = [m for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    return [m.out_channels if isinstance(m, nn.Conv2d) else m.out_features for m in layers[:-1]]


def architecture(module: nn.Module) -> str:
    """The literature's notation: hidden widths, with the flattened input of the first Linear.

    LeNet-300-100 reads ``784-300-100``, LeNet-5-Caffe ``20-50-800-500`` (conv1-conv2-fc1in-fc1).
    """
    parts: list[int] = []
    layers = [m for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Conv2d):
            parts.append(layer.out_channels)
            continue
        if i == 0 or isinstance(layers[i - 1], nn.Conv2d):
            parts.append(layer.in_features)
        if i < len(layers) - 1:
            parts.append(layer.out_features)
    return "-".join(map(str, parts))


def summarize(
    network: nn.Module, *, initial: dict, initial_widths: list[int], in_shape, **fields
) -> dict:
    """The machine-readable ``summary.json`` record of a trained network (issue 2's keys)."""
    kept = count_weights(network)
    head = ("arch", "dataset", "seed", "epochs")
    return {
        **{k: v for k, v in fields.items() if k in head},
        "initial_widths": list(initial_widths),
        "widths": hidden_widths(network),
        "initial_architecture": initial.get("architecture"),
        "architecture": architecture(network),
        **{k: v for k, v in fields.items() if k not in head},
        "weights_total": initial["weights"],
        "weights_kept": kept,
        "weights_kept_fraction": kept / initial["weights"],
        "flops_kept_fraction": count_macs(network, in_shape) / initial["macs"],
    }


MODEL_FORMAT = "bayesprune.sequential/1"


def sequential_spec(module: nn.Sequential) -> list[dict]:
    """The layers of a deployable network as plain data (types and sizes, no code)."""
    layers = []
    for m in module:
        if isinstance(m, nn.Conv2d):
            layers.append(
                {
                    "type": "Conv2d",
                    "in": m.in_channels,
                    "out": m.out_channels,
                    "kernel": list(m.kernel_size),
                    "padding": list(m.padding),
                }
            )
        elif isinstance(m, nn.Linear):
            layers.append({"type": "Linear", "in": m.in_features, "out": m.out_features})
        elif isinstance(m, nn.BatchNorm2d):
            layers.append({"type": "BatchNorm2d", "features": m.num_features, "eps": m.eps})
        elif isinstance(m, nn.MaxPool2d):
            layers.append({"type": "MaxPool2d", "kernel": m.kernel_size})
        elif isinstance(m, (nn.ReLU, nn.Flatten)):
            layers.append({"type": type(m).__name__})
        else:
            raise ValueError(f"cannot describe layer {type(m).__name__}")
    return layers


def build_sequential(layers: list[dict]) -> nn.Sequential:
    """The network described by :func:`sequential_spec` (fresh parameters)."""
    modules: list[nn.Module] = []
    for spec in layers:
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind == "Conv2d":
            modules.append(
                nn.Conv2d(
                    spec["in"], spec["out"], tuple(spec["kernel"]), padding=tuple(spec["padding"])
                )
            )
        elif kind == "Linear":
            modules.append(nn.Linear(spec["in"], spec["out"]))
        elif kind == "BatchNorm2d":
            modules.append(nn.BatchNorm2d(spec["features"], eps=spec["eps"]))
        elif kind == "MaxPool2d":
            pool = spec["kernel"] in (2, [2, 2], (2, 2))
            modules.append(MaxPool2x2() if pool else nn.MaxPool2d(spec["kernel"]))
        elif kind in ("ReLU", "Flatten"):
            modules.append(getattr(nn, kind)())
        else:
            raise ValueError(f"unknown layer {spec!r}")
    return nn.Sequential(*modules)


def model_record(module: nn.Sequential, in_shape) -> dict:
    """What ``model.pt`` holds: the layer list, the weights and the input shape, all plain data,
    so it loads with ``torch.load(..., weights_only=True)``: opening a shared file runs no code."""
    # (contiguous whatever the layout it trained in: --memory-format is the run's business)
    state = {
        k: v.detach().cpu().clone(memory_format=torch.contiguous_format)
        for k, v in module.state_dict().items()
    }
    return {
        "format": MODEL_FORMAT,
        "layers": sequential_spec(module),
        "in_shape": list(in_shape),
        "state_dict": state,
    }


def load_model(path) -> nn.Sequential:
    """The deployable network saved in ``model.pt`` (safe: ``weights_only=True``), in eval mode.

    :raises ValueError: the file is not a bayesprune model (or was written by another version).
    """
    return load_model_record(path)[0]


def load_model_record(path) -> tuple[nn.Sequential, dict]:
    """:func:`load_model` and the record it was built from (layers, input shape, weights)."""
    try:
        record = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # unpickling errors of every kind: report, never execute
        # (torch's own message advises weights_only=False, which is not the way for a file
        # that bayesprune did not write: name the error only)
        raise ValueError(
            f"cannot load {path}: not a model.pt written by bayesprune ({type(err).__name__})"
        ) from None
    found = record.get("format") if isinstance(record, dict) else None
    if (
        isinstance(found, str)
        and found.startswith("bayesprune.sequential/")
        and found != MODEL_FORMAT
    ):
        raise ValueError(
            f"{path} was written by another version of bayesprune (format {found}; this one "
            f"reads {MODEL_FORMAT})"
        )
    if found != MODEL_FORMAT:
        raise ValueError(f"{path} is not a bayesprune model ({MODEL_FORMAT})")
    module = build_sequential(record["layers"])
    module.load_state_dict(record["state_dict"])
    return module.eval(), record


def input_note(run_dir) -> str:
    """How the exported network's inputs are made, in words (config.json's data.normalisation;
    printed by ``export`` and written into every exported file)."""
    from bayesprune.runs import RunError, read_config

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():  # a model.pt on its own (export needs no more)
        return (
            "normalised as the data the network was trained on were (this folder has no "
            "config.json to say how)"
        )
    try:
        data = read_config(run_dir).get("data")
    except RunError as err:  # (export needs only model.pt: say what can be said without it)
        return f"normalised as the data the network was trained on were ({err})"
    data = data if isinstance(data, dict) else {}
    norm = data.get("normalisation")
    if not isinstance(norm, dict):
        if data.get("name") == "teacher":
            return "as the teacher data are made (no normalisation)"
        if "normalisation" in data:  # recorded as none: tensors given to Trainer as they were
            return (
                f"as the run's dataset {data.get('name')!r} gave them to the Trainer (no "
                "normalisation was recorded: the data were not read by a bayesprune loader)"
            )
        return (
            "normalised as its data loader does (this run's config.json predates the record "
            "of it: see bayesprune/data.py)"
        )
    if norm.get("pixel_scale") == 1 and norm.get("mean") == [0.0] and norm.get("std") == [1.0]:
        return "x as stored in the training data (the run used them as given: --standardise none)"
    if norm.get("per_feature"):  # Dataset.standardised(per_feature=True): one pair per value
        return (
            f"x = (x - mean) / std per input value, with the {len(norm.get('mean', []))} means "
            "and standard deviations in config.json's data.normalisation"
        )
    scale = norm.get("pixel_scale", 1 / 255)  # the loaders' 8-bit pixels, else the tensors'
    scale = scale if isinstance(scale, (int, float)) else 1 / 255
    value = "pixel / 255" if math.isclose(scale, 1 / 255) else "x" if scale == 1 else f"x * {scale}"
    return (
        f"x = ({value} - mean) / std with mean {norm.get('mean')} and std {norm.get('std')} "
        "(config.json: data.normalisation)"
    )


def input_normalisation(run_dir) -> dict | None:
    """config.json's ``data.normalisation`` (what :func:`input_note` says in words), or None."""
    from bayesprune.runs import RunError, read_config

    try:
        data = read_config(Path(run_dir)).get("data")
    except RunError:
        return None
    norm = data.get("normalisation") if isinstance(data, dict) else None
    return norm if isinstance(norm, dict) else None


EXPORT_FORMATS = {
    "pt2": ".pt2",
    "torchscript": ".ts",
    "onnx": ".onnx",
    "safetensors": ".safetensors",
}


class ExportError(Exception):
    """An export cannot be made here (a missing optional package); the message says what to do."""


def check_export_path(fmt: str, out) -> Path:
    """``out`` as a ``Path`` a ``fmt`` export can be written to: the format's suffix, not a
    directory, in a folder that exists (else a ``ValueError`` naming ``out``; the command line
    puts ``--out`` before it)."""
    out = Path(out)
    if out.suffix != EXPORT_FORMATS[fmt]:
        raise ValueError(f"{out}: the {fmt} format writes {EXPORT_FORMATS[fmt]} files")
    if out.is_dir():
        raise ValueError(f"{out} is a directory; name the file to write")
    if not out.parent.is_dir():
        raise ValueError(f"{out}: the folder {out.parent} does not exist")
    return out


def export_metadata(record: dict, run_dir) -> dict[str, str]:
    """What every exported file carries beside the network, as strings (safetensors metadata,
    ONNX ``metadata_props``, the ``bayesprune.json`` extra file of pt2 and TorchScript):
    ``format``, ``layers`` and ``in_shape`` (JSON), ``inputs`` (how to make the network's
    inputs, in words: :func:`input_note`) and, where the run recorded it, ``normalisation``
    (config.json's ``data.normalisation`` as JSON: ``x = (pixel · pixel_scale − mean) / std``)."""
    metadata = {
        "format": MODEL_FORMAT,
        "layers": json.dumps(record["layers"]),
        "in_shape": json.dumps(record["in_shape"]),
        "inputs": f"float32 of shape (batch, {', '.join(map(str, record['in_shape']))}), "
        + input_note(run_dir),
    }
    norm = input_normalisation(run_dir)
    if norm is not None:
        metadata["normalisation"] = json.dumps(norm)
    return metadata


class UncheckedExportWarning(UserWarning):
    """An exported file written without the check of its predictions against the network's
    (ONNX without onnxruntime)."""


def onnx_checkable() -> bool:
    """Whether an ONNX export can be checked against the network: onnxruntime is installed."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def unchecked_onnx_note(out) -> str:
    return (
        f"{out}: written without checking its predictions against the network's: onnxruntime "
        "is not installed (pip install 'bayesprune[onnx]')"
    )


def export_model(model_path, fmt: str, out) -> Path:
    """Write the deployable network of ``model.pt`` as a file that loads without bayesprune.

    - ``pt2``: a ``torch.export`` program (``torch.export.load(path).module()`` gives the
      network; aten operations and weights, a dynamic batch dimension): the format PyTorch
      recommends now that it deprecates TorchScript;
    - ``torchscript``: ``torch.jit.load(path)`` gives the network (code and weights; PyTorch
      2.14 deprecates ``torch.jit``, so prefer ``pt2``);
    - ``onnx``: an ONNX graph with a dynamic batch dimension (input ``input``, output
      ``logits``); needs the optional extra ``bayesprune[onnx]`` (onnx, onnxruntime), and is
      checked with onnxruntime against the network's predictions (with onnx alone, written
      unchecked, with an :class:`UncheckedExportWarning`, a ``UserWarning``, saying so);
    - ``safetensors``: the weights, with the layer list and input shape as JSON in the file's
      metadata (``layers``, ``in_shape``): no code at all (README shows how to rebuild it).

    Every format carries :func:`export_metadata`: how the inputs are made from the data (the
    run's input normalisation, from ``config.json`` beside ``model_path``), so that a file
    passed on alone says how to use it.

    Gates are folded in: the file is the posterior mode, pruned units absent. ``out`` must end
    in the format's suffix (:data:`EXPORT_FORMATS`), in an existing folder, and must not be
    ``model_path`` itself (a ``ValueError`` otherwise, before anything is written); another
    existing file of that name is replaced, as ``torch.save`` does (the command line refuses
    that too).
    """
    from bayesprune.runs import atomic_write

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown format {fmt!r}: choose {', '.join(EXPORT_FORMATS)}")
    out = check_export_path(fmt, out)
    if out.exists() and out.resolve() == Path(model_path).resolve():
        raise ValueError(f"{out} is the model.pt to export; name another file")
    module, record = load_model_record(model_path)
    example = torch.zeros(2, *record["in_shape"])
    metadata = export_metadata(record, Path(model_path).parent)
    extra = {"bayesprune.json": json.dumps(metadata, indent=1)}
    if fmt == "pt2":
        batch = torch.export.Dim.DYNAMIC
        program = torch.export.export(module, (example,), dynamic_shapes={"input": {0: batch}})
        atomic_write(out, lambda f: torch.export.save(program, f, extra_files=extra))
    elif fmt == "torchscript":
        scripted = torch.jit.script(module)
        atomic_write(out, lambda f: torch.jit.save(scripted, f, _extra_files=extra))
    elif fmt == "safetensors":
        try:
            from safetensors.torch import save as save_safetensors
        except ImportError:
            raise ExportError("safetensors export needs the safetensors package") from None
        tensors = {k: v.contiguous() for k, v in record["state_dict"].items()}
        data = save_safetensors(tensors, metadata=metadata)
        atomic_write(out, lambda f: f.write(data))
    else:
        _export_onnx(module, example, out, metadata)
    return out


def _export_onnx(
    module: nn.Sequential, example: torch.Tensor, out: Path, metadata: dict[str, str]
) -> None:
    import importlib.util
    import io
    import warnings

    from bayesprune.runs import atomic_write

    if importlib.util.find_spec("onnx") is None:
        raise ExportError("ONNX export needs the optional extra: pip install 'bayesprune[onnx]'")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its future
        torch.onnx.export(
            module,
            (example,),
            buffer,
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    import onnx

    graph = onnx.load_from_string(buffer.getvalue())
    graph.doc_string = metadata["inputs"]
    onnx.helper.set_model_props(graph, metadata)
    buffer = io.BytesIO(graph.SerializeToString())
    if onnx_checkable():  # check the file, not the exporter
        import numpy as np
        import onnxruntime

        # the bytes the file will hold, checked before it is written: a file that fails the
        # check is never left where the next export would refuse to replace it
        session = onnxruntime.InferenceSession(
            buffer.getvalue(), providers=["CPUExecutionProvider"]
        )
        x = torch.randn(3, *example.shape[1:])
        got = session.run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            want = module(x).numpy()
        if not np.allclose(got, want, rtol=1e-4, atol=1e-5):
            raise ExportError(
                f"{out}: onnxruntime's predictions differ from the network's (not written)"
            )
    else:  # onnx without onnxruntime: written, and said to be unchecked
        warnings.warn(unchecked_onnx_note(out), UncheckedExportWarning, stacklevel=3)
    atomic_write(out, lambda f: f.write(buffer.getvalue()))
