"""``bayesprune bench``: the pruned network against the dense one it started from, where it runs."""

from __future__ import annotations

import io
import json
import statistics
import time
from pathlib import Path

import torch

from bayesprune.export import (
    architecture,
    build_sequential,
    count_macs,
    count_weights,
    load_model_record,
    model_record,
)
from bayesprune.loop import synchronize
from bayesprune.runs import RunError, atomic_write_text, read_config, read_summary

# the layouts ``bench`` times both networks in (--memory-format): as model.pt loads, or NHWC
BENCH_MEMORY_FORMATS = ("contiguous", "channels-last")


def dense_network(
    run_dir: Path, record: dict, pruned: torch.nn.Sequential | None = None
) -> torch.nn.Sequential:
    """The dense network the run started from (same architecture, starting widths; fresh
    weights: the timing does not depend on their values), after checking that ``pruned`` (the
    run's ``model.pt``, built from ``record`` if not given) is this run's network."""
    from bayesprune.models.network import build_network

    config = read_config(run_dir)
    run = config.get("run") or {}
    try:
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        raise RunError(f"{run_dir} has no finished summary.json: bench a finished run") from None
    initial = summary.get("initial_widths") if isinstance(summary, dict) else None
    if not isinstance(initial, list):
        raise RunError(
            f"{run_dir}/summary.json records no initial_widths (the starting widths bench "
            "compares with)"
        )
    in_shape, num_classes = record["in_shape"], record["layers"][-1]["out"]
    if pruned is None:  # (bench_run has it loaded already)
        pruned = build_sequential(record["layers"])
    net = check_run_model(run_dir, record, pruned, config, summary)  # initial_spec's network
    if net is None and "arch" not in run:
        raise RunError(
            f"{run_dir}/config.json records neither the starting network nor the architecture "
            "(a run made before bayesprune recorded them)"
        )
    if net is None and run["arch"] == "mlp":
        net = build_network("mlp", in_shape, num_classes, initial)
    elif net is None:  # runs before initial_spec: the CLI's own settings
        net = build_network(
            run["arch"], in_shape, num_classes, run.get("widths"), run.get("width_mult", 1.0)
        )
    if list(net.widths) != list(initial):
        raise RunError(f"cannot rebuild the starting network of {run_dir} ({initial})")
    return net.to_sequential().eval()


def check_run_model(
    run_dir, record: dict, pruned: torch.nn.Sequential, config=None, summary=None
):
    """Refuse (:class:`RunError`) a ``model.pt`` that is not this run's network: one copied in
    from another run, told by its inputs and classes against the run's recorded starting
    network, or by its architecture against ``summary.json``'s. Returns the starting network
    built from config.json's ``initial_spec`` (None for runs that did not record it)."""
    from bayesprune.models.network import GatedNet

    config = read_config(run_dir) if config is None else config
    summary = (read_summary(run_dir) or {}) if summary is None else summary
    in_shape, num_classes = record["in_shape"], record["layers"][-1]["out"]
    net = None
    if config.get("initial_spec") is not None:
        try:
            net = GatedNet.from_spec(config["initial_spec"])
        except (KeyError, TypeError, ValueError) as err:
            raise RunError(f"{run_dir}/config.json: unreadable initial_spec ({err})") from None
        start = (list(net.in_shape), net.num_classes)
        if start != (list(in_shape), num_classes):  # a model.pt copied in from another run
            raise RunError(
                f"{run_dir}/model.pt takes inputs {tuple(in_shape)} to {num_classes} classes, "
                f"the run's starting network {tuple(start[0])} to {start[1]}: model.pt is not "
                "this run's network"
            )
    said = summary.get("architecture") if isinstance(summary, dict) else None
    if isinstance(said, str) and architecture(pruned) != said:  # another run's, of this shape
        raise RunError(
            f"{run_dir}/model.pt is a {architecture(pruned)} network, the run's summary.json a "
            f"{said} one: model.pt is not this run's network"
        )
    return net


def _latency_ms(module, x, device, repeats: int) -> float:
    with torch.no_grad():
        start = time.perf_counter()
        for _ in range(repeats):
            module(x)
        synchronize(device)
    return (time.perf_counter() - start) / repeats * 1000


def interleaved_ms(models: dict, x: torch.Tensor, blocks: int = 7, min_seconds: float = 0.05):
    """Median latency (ms) of each module on ``x``: after a warm-up, ``blocks`` rounds in which
    every module runs in turn, each for enough calls to last about ``min_seconds``."""
    device = x.device
    repeats = {}
    for name, module in models.items():  # warm-up, and enough calls per block
        _latency_ms(module, x, device, 3)
        once = max(_latency_ms(module, x, device, 3), 1e-3)
        repeats[name] = max(1, int(min_seconds * 1000 / once))
    times: dict = {name: [] for name in models}
    for _ in range(blocks):
        for name, module in models.items():
            times[name].append(_latency_ms(module, x, device, repeats[name]))
    return {name: statistics.median(t) for name, t in times.items()}


def bench_run(
    run_dir: str | Path,
    device: str = "cpu",
    batches: tuple[int, ...] = (1, 256),
    blocks: int = 7,
    min_seconds: float = 0.05,
    write: bool = True,
    memory_format: str = "contiguous",
) -> dict:
    """Latency (median over interleaved blocks, after warm-up), throughput, parameters,
    multiply-accumulates (``macs``) and FLOPs (``flops``, two per multiply-accumulate) per
    example, and file size of the pruned network and of the dense one it started from; also
    written to ``RUN_DIR/bench.json`` (unless ``write`` is False: :func:`write_bench` then
    writes it). ``memory_format="channels-last"`` times both networks' convolutions, and the
    inputs, in the NHWC layout (``model.pt`` loads contiguous)."""
    if memory_format not in BENCH_MEMORY_FORMATS:
        raise ValueError(
            f"memory_format must be {' or '.join(BENCH_MEMORY_FORMATS)}, not {memory_format!r}"
        )
    run_dir = Path(run_dir)
    dev = torch.device(device)
    pruned, record = load_model_record(run_dir / "model.pt")
    dense = dense_network(run_dir, record, pruned)
    models = {"dense": dense.to(dev), "pruned": pruned.to(dev)}
    in_shape = record["in_shape"]
    buffer = io.BytesIO()
    torch.save(model_record(dense, in_shape), buffer)
    result: dict = {
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "threads": torch.get_num_threads(),
        "memory_format": memory_format,
        "batches": {},
    }
    for name, module in models.items():
        result[name] = {
            "params": count_weights(module),
            "macs": (macs := count_macs(module.cpu(), in_shape)),  # multiply-accumulates
            "flops": 2 * macs,  # a multiply and an add each
            "bytes": (run_dir / "model.pt").stat().st_size
            if name == "pruned"
            else len(buffer.getvalue()),
        }
        models[name] = module.to(dev)
    last = memory_format == "channels-last"
    if last:  # (4-d weights only: an MLP is left as it is)
        models = {name: m.to(memory_format=torch.channels_last) for name, m in models.items()}
    for batch in batches:
        x = torch.randn(batch, *in_shape, device=dev)
        if last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        times = interleaved_ms(models, x, blocks, min_seconds)
        row = {f"{name}_ms": ms for name, ms in times.items()}
        row["speedup"] = row["dense_ms"] / row["pruned_ms"]
        for name in models:
            row[f"{name}_per_s"] = batch / row[f"{name}_ms"] * 1000
        result["batches"][str(batch)] = row
    if write:
        write_bench(run_dir, result)
    return result


def write_bench(run_dir: str | Path, result: dict) -> Path:
    """``RUN_DIR/bench.json``: a :func:`bench_run` result (replacing an earlier one)."""
    path = Path(run_dir) / "bench.json"
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    return path


def format_table(result: dict) -> str:
    """The bench result as a small text table."""
    d, p = result["dense"], result["pruned"]
    lines = [
        f"device {result['device']}, {result['threads']} thread(s)"
        + (", channels-last" if result.get("memory_format") == "channels-last" else ""),
        f"{'':12}{'dense':>14}{'pruned':>14}{'ratio':>9}",
        f"{'parameters':12}{d['params']:>14,}{p['params']:>14,}{d['params'] / p['params']:>8.1f}×",
        f"{'FLOPs/ex.':12}{d['flops']:>14,}{p['flops']:>14,}{d['flops'] / p['flops']:>8.1f}×",
        f"{'file bytes':12}{d['bytes']:>14,}{p['bytes']:>14,}{d['bytes'] / p['bytes']:>8.1f}×",
    ]
    for batch, row in result["batches"].items():
        lines.append(
            f"{'batch ' + batch + ' ms':12}{row['dense_ms']:>14.3f}{row['pruned_ms']:>14.3f}"
            f"{row['speedup']:>8.1f}×"
        )
        lines.append(f"{'  ex./s':12}{row['dense_per_s']:>14,.0f}{row['pruned_per_s']:>14,.0f}")
    return "\n".join(lines)
