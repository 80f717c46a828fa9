"""The GPU checks, in one process, for a machine lent for a few minutes (issues 12 and 13).

Parts, each written to the JSON as soon as it ends (so that a run cut short keeps what it did),
skipped once ``--budget`` seconds have passed:

1. ``cifar10``: whether CIFAR-10 is on the machine (``--data-dir`` or a search of the usual
   places); if it is, ``benchmarks/cifar10_vgg16.py``'s recipe for ``--vgg-epochs`` epochs.
2. ``step_cost``: milliseconds per full-width step on the GPU, plain PyTorch against SVI with
   ``GatedELBO`` (fast and traced), for LeNet-300-100 and LeNet-5 (batch 100) and VGG16 (batch
   128, CIFAR-shaped random data): :func:`common.step_cost`, interleaved blocks.
3. ``lenet5_fmnist``: LeNet-5 on Fashion-MNIST, dense against bayesprune, ``--epochs`` epochs
   (:func:`common.compare` with ``device=args.device``): wall time, error, widths.
4. ``vgg16_fmnist32``: where CIFAR-10 is absent, VGG16 (BatchNorm) on Fashion-MNIST padded to
   32×32 and repeated to 3 channels, the CIFAR recipe (Adam, cosine, batch 128, crop 4 + flip;
   ``--vgg-optimizer sgd --vgg-lr R`` for SGD with momentum 0.9 instead): a real image set, so
   test error, time to final width and weights kept mean something; it is not CIFAR-10's number.
5. ``layouts``: milliseconds per full-width step of LeNet-5 (batch 100) and VGG16 (batch 128),
   plain PyTorch and SVI, with the convolutions contiguous (the default on a GPU) against
   channels-last (``--memory-format channels-last``), all four interleaved block by block.
6. ``profile``: ``torch.profiler`` over the same full-width steps, plain and SVI: per step, the
   kernels launched, the time the GPU spent in them against the step's wall time (how long the
   GPU waits for Python), and the operators with the most host time.

Setup there: the machine's own CUDA build of torch, with Pyro carried as wheels (the lent H200
has no Pyro and no network): ``pip download --no-deps --only-binary=:all: --python-version 3.12
-d .whl pyro-ppl==1.9.2 pyro-api`` here, then there ``pip install --no-index --no-deps --target
/tmp/site .whl/*.whl`` and ``PYTHONPATH=/tmp/site:$PWD``. Fashion-MNIST travels as the four
``.gz`` files in ``<data-dir>/FashionMNIST/raw/``. (On a machine with a network,
``make .venv/.installed TORCH='torch==2.14.1'`` installs a CUDA build instead of the CPU one.)

Usage (on the GPU machine): ``python benchmarks/gpu.py --data-dir DIR [--parts P1,P2] [--seed S]
[--run-dir NEW_DIR] [--out FILE]`` (parts in the order given; default
``benchmarks/results/gpu.json`` and the table in benchmarks/README.md). The CLI's own
GPU paths (``--device cuda``, ``--strategy ddp --accelerator gpu``) are run beside it from the
shell.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import (  # noqa: E402
    RESULTS,
    compare,
    description,
    environment,
    interleaved_ms,
    output_dir,
    render_readme,
    seed_type,
    step_cost,
)
from memory_format import measure as layout_cost  # noqa: E402
from memory_format import random_data, step_runners  # noqa: E402

from bayesprune.config import TrainConfig  # noqa: E402
from bayesprune.data import DataError, Dataset, RandomCropFlip, load_dataset  # noqa: E402
from bayesprune.loop import synchronize  # noqa: E402
from bayesprune.models.network import GatedMLP, lenet5, vgg16  # noqa: E402
from bayesprune.runs import new_or_empty  # noqa: E402

CIFAR_PLACES = ("/data", "/datasets", "/usr/share/datasets", "/root", "/opt", "/tmp", "/mnt")


def find_cifar(data_dir: str | None) -> str | None:
    """A folder holding ``cifar-10-batches-py``, or None."""
    places = ([data_dir] if data_dir else []) + list(CIFAR_PLACES)
    for place in places:
        if not os.path.isdir(place):
            continue
        for root, dirs, _ in os.walk(place):
            if root.count(os.sep) - place.count(os.sep) > 4:
                dirs[:] = []
                continue
            batch = Path(root) / "cifar-10-batches-py" / "data_batch_1"
            if batch.is_file() and batch.stat().st_size > 30_000_000:  # real, not a test's copy
                return root
    return None


def fmnist32(data: Dataset) -> Dataset:
    """Fashion-MNIST as 3×32×32 images (2 pixels of background on each side, the grey channel
    repeated), with the CIFAR augmentation (random crop, padding 4, and flip)."""
    fill = float(data.x_train.min())

    def grow(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (2, 2, 2, 2), value=fill).repeat(1, 3, 1, 1)

    return Dataset(
        "fashion-mnist-32x32x3",
        grow(data.x_train),
        data.y_train,
        grow(data.x_test),
        data.y_test,
        data.num_classes,
        meta={**data.meta, "stand_in_for": "cifar10"},
        augment=RandomCropFlip(4, torch.full((3,), fill)),
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=None, help="default: benchmarks/results/gpu.json")
    parser.add_argument("--epochs", type=int, default=10, help="LeNet-5 on Fashion-MNIST")
    parser.add_argument("--vgg-epochs", type=int, default=5)
    parser.add_argument(
        "--vgg-optimizer", default="adam", choices=("adam", "sgd"), help="VGG16's weights"
    )
    parser.add_argument("--vgg-lr", type=float, default=1e-3, help="VGG16's learning rate")
    parser.add_argument("--budget", type=float, default=400, help="seconds; later parts skipped")
    parser.add_argument("--subset", type=int, default=None, help="training examples (smoke)")
    parser.add_argument("--device", default="cuda", help="cpu: a smoke run of the script")
    parser.add_argument("--seed", type=seed_type, default=0, help="of the LeNet-5 and VGG16 runs")
    parser.add_argument(
        "--parts",
        default="cifar10,step_cost,lenet5_fmnist,vgg16_fmnist32",
        help="comma-separated, run in the order given",
    )
    parser.add_argument(
        "--run-dir",
        default=None,
        help="a new folder for the bayesprune VGG16 run (metrics per epoch, checkpoints; a "
        "summary saying 'interrupted' if the script is stopped with SIGTERM)",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    result: dict = {"environment": environment(args.device), "parts": {}}

    # (its own path: the committed results/gpu.json only where the results go there; a CPU
    # smoke run with $BAYESPRUNE_RESULTS_DIR set wrote over it and re-rendered the README)
    out = Path(args.out) if args.out else output_dir() / "gpu.json"

    def save() -> None:
        out.write_text(json.dumps(result, indent=1, default=str))

    def part(name: str, run) -> None:
        left = args.budget - (time.perf_counter() - start)
        if left <= 0:
            result["parts"][name] = {"skipped": "budget spent"}
            save()
            return
        t0 = time.perf_counter()
        print(f"== {name} ({left:.0f} s of budget left)", flush=True)
        try:
            out = run()
        except Exception as err:  # a failing part is recorded, the others still run
            out = {"error": f"{type(err).__name__}: {err}"}
        out["part_seconds"] = time.perf_counter() - t0
        result["parts"][name] = out
        print(name, json.dumps(out, default=str)[:2000], flush=True)
        save()

    cifar_root = find_cifar(args.data_dir)

    def vgg_recipe(data: Dataset) -> dict:
        """Dense and bayesprune VGG16 with cifar10_vgg16.py's recipe (Adam, cosine, batch 128;
        or ``--vgg-optimizer sgd`` with momentum 0.9 at ``--vgg-lr``)."""
        config = TrainConfig(
            epochs=args.vgg_epochs,
            batch_size=128,
            lr_schedule="cosine",
            device=args.device,
            seed=args.seed,
            optimizer=args.vgg_optimizer,
            lr=args.vgg_lr,
        )
        run = compare(
            data,
            lambda: vgg16(data.in_shape, 10),
            config,
            measure_step_cost=False,
            out=args.run_dir,
        )
        return {"recipe": {"optimizer": args.vgg_optimizer, "lr": args.vgg_lr}, **summarise(run)}

    def cifar_part():
        if cifar_root is None:
            return {"found": False, "searched": [args.data_dir, *CIFAR_PLACES]}
        data = load_dataset("cifar10", cifar_root)
        return {"found": True, "root": cifar_root, **vgg_recipe(data)}

    def step_part():
        out = {}
        base = TrainConfig(device=args.device)
        nets = {
            "mlp": (lambda: GatedMLP(784, (300, 100), 10), (1, 28, 28), 100),
            "lenet5": (lambda: lenet5((1, 28, 28), 10), (1, 28, 28), 100),
            "vgg16": (lambda: vgg16((3, 32, 32), 10), (3, 32, 32), 128),
        }
        for name, (make, shape, batch) in nets.items():
            torch.manual_seed(0)
            config = replace(base, batch_size=batch)
            out[name] = step_cost(
                random_data(shape, batch, batches=4), make, config, blocks=5, steps=20
            )
            print(name, out[name], flush=True)
        return out

    conv_nets = {
        "lenet5": (lambda: lenet5((1, 28, 28), 10), (1, 28, 28), 100),
        "vgg16": (lambda: vgg16((3, 32, 32), 10), (3, 32, 32), 128),
    }

    def layouts_part():
        return {
            name: layout_cost(
                make,
                random_data(shape, batch, batches=4),
                5,
                20,
                device=args.device,
                batch_size=batch,
            )
            for name, (make, shape, batch) in conv_nets.items()
        }

    def profile_part():
        return {
            name: step_profile(make, random_data(shape, batch, batches=4), args.device, batch)
            for name, (make, shape, batch) in conv_nets.items()
        }

    fmnist = None

    def fmnist_data() -> Dataset:
        nonlocal fmnist
        if fmnist is None:
            fmnist = load_dataset("fashion-mnist", args.data_dir)
            if args.subset:
                fmnist = fmnist.subset(args.subset)
        return fmnist

    def lenet5_part():
        data = fmnist_data()
        config = TrainConfig(epochs=args.epochs, device=args.device, seed=args.seed)
        run = compare(data, lambda: lenet5(data.in_shape, 10), config, measure_step_cost=False)
        return summarise(run)

    def vgg_part():
        if cifar_root is not None:
            return {"skipped": "CIFAR-10 found: part cifar10 ran the real recipe"}
        return vgg_recipe(fmnist32(fmnist_data()))

    parts = {
        "cifar10": cifar_part,
        "step_cost": step_part,
        "lenet5_fmnist": lenet5_part,
        "vgg16_fmnist32": vgg_part,
        "layouts": layouts_part,
        "profile": profile_part,
    }
    # checked here, not after the dense run has spent the lease's minutes (RunWriter's rule)
    if args.run_dir and not new_or_empty(Path(args.run_dir)):
        parser.error(f"--run-dir {args.run_dir} is not an empty folder: a new run needs one")
    for name in args.parts.split(","):
        if name not in parts:
            parser.error(f"--parts: unknown part {name!r} (known: {', '.join(parts)})")
    for name in args.parts.split(","):
        part(name, parts[name])
    result["total_seconds"] = time.perf_counter() - start
    save()
    if args.out is None and out.parent.resolve() == RESULTS.resolve():
        render_readme()
    return result


def device_us(event) -> float:
    """An averaged profiler event's own time on the device, microseconds (the attribute's name
    changed across torch versions)."""
    for attr in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(event, attr):
            return float(getattr(event, attr))
    return 0.0


def step_profile(make_net, data: Dataset, device: str, batch: int, steps: int = 20) -> dict:
    """Per step of each runner of ``memory_format.step_runners`` (the default layout, plain and
    bayesprune's): wall ms without the profiler, and under it the kernels launched, the
    device's busy ms (the sum of the kernels' own times) and the ten operators with the most
    host time."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    dev = torch.device(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    runners = step_runners(make_net, data, "auto", device, batch)
    wall = interleaved_ms(runners, blocks=3, steps=steps, device=dev)
    out = {}
    for kind, run in runners.items():
        for _ in range(5):
            run()
        synchronize(dev)
        with profile(activities=activities) as prof:
            for _ in range(steps):
                run()
            synchronize(dev)
        events = prof.key_averages()
        kernels = [e for e in events if e.device_type == DeviceType.CUDA]
        host = sorted(
            (e for e in events if e.device_type == DeviceType.CPU),
            key=lambda e: e.self_cpu_time_total,
            reverse=True,
        )
        launches = sum(  # (cudaLaunchKernel, cudaLaunchKernelExC, cuLaunchKernel, ...)
            e.count for e in events if e.key.startswith(("cudaLaunchKernel", "cuLaunchKernel"))
        )
        out[kind] = {
            "wall_ms": wall[f"{kind}_ms"],
            "kernels_per_step": sum(e.count for e in kernels) / steps,
            "launches_per_step": launches / steps,
            "device_busy_ms": sum(device_us(e) for e in kernels) / steps / 1000,
            "host_ops": [
                {
                    "op": e.key,
                    "calls": e.count / steps,
                    "self_host_ms": e.self_cpu_time_total / steps / 1000,
                }
                for e in host[:10]
            ],  # fmt: skip
        }
        out[kind]["device_busy_fraction"] = out[kind]["device_busy_ms"] / out[kind]["wall_ms"]
    return out


KEYS = (
    "test_error",
    "widths",
    "weights_kept",
    "weights_kept_fraction",
    "flops_kept_fraction",
    "train_wall_seconds",
    "epoch_train_seconds",
    "status",
    "status_reason",
    "last_prune_epoch",
    "warmup_step",
    "release_steps",
    "total_steps",
    "step_seconds_full_width",
    "prune_events",
)


def summarise(run: dict) -> dict:
    """The summary keys that matter here, dense and bayesprune (the whole summaries are long)."""
    out = {}
    for side in ("dense", "bayesprune"):
        summary = run[side]
        out[side] = {k: summary[k] for k in KEYS if k in summary}
        out[side]["other_keys"] = sorted(set(summary) - set(KEYS))
    return out


if __name__ == "__main__":
    try:
        main()
    except DataError as err:
        sys.exit(f"gpu.py: {err}")
