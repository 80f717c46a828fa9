"""The dense baseline: the same network, optimiser, epochs and batch size, in plain PyTorch."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bayesprune.config import TrainConfig, weights_optimizer
from bayesprune.data import Dataset
from bayesprune.export import architecture, count_weights
from bayesprune.inference.projected_sgd import multi_tensor
from bayesprune.loop import batches, evaluate, lr_schedule, steps_per_epoch, synchronize
from bayesprune.models.network import GatedNet


def plain_optimizer(
    params, lr: float, optimizer: str = "adam", momentum: float = 0.9
) -> torch.optim.Optimizer:
    """The weights' optimiser of a run without gates, on a per-example (mean) objective: Adam, or
    SGD with heavy-ball ``momentum`` (:func:`~bayesprune.config.weights_optimizer`, the settings
    checked as :class:`~bayesprune.config.TrainConfig` checks them), with the gated run's
    kernels (:func:`~bayesprune.inference.projected_sgd.multi_tensor`)."""
    config = TrainConfig(lr=lr, optimizer=optimizer, momentum=momentum)
    constructor, kwargs = weights_optimizer(config)
    return multi_tensor(constructor, params, kwargs)


def train_dense(
    net: GatedNet,
    data: Dataset,
    epochs: int,
    batch_size: int = 100,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
    device: str = "cpu",
    schedule: str = "constant",
    monitor: Callable[[int, GatedNet], None] | None = None,
    optimizer: str = "adam",
    momentum: float = 0.9,
) -> dict:
    """Train ``net`` without gates or priors (Adam on the cross-entropy, or SGD with heavy-ball
    ``momentum`` for ``optimizer="sgd"``, as :class:`~bayesprune.config.TrainConfig`); return its
    summary.

    Uses the dataset's augmentation, if any, like the gated run. ``monitor(step, net)``, if
    given, is called after every step (``step`` counts from 1; ``net`` is in training mode and
    must be left so; its time counts in the wall time, not in the step time).
    """
    torch.manual_seed(seed)
    device = torch.device(device)
    net, data = net.to(device), data.to(device)
    opt = plain_optimizer(net.parameters(), lr, optimizer, momentum)  # as the gated run
    scheduler = lr_schedule(opt, schedule, steps_per_epoch(data, batch_size) * epochs)
    step_times: list[float] = []
    epoch_seconds: list[float] = []
    start = time.perf_counter()
    step = 0
    for _ in tqdm(range(epochs), disable=None if progress else True, desc="dense"):
        net.train()
        epoch_start = time.perf_counter()
        for x, y, _ in batches(data, batch_size, device):
            timed = len(step_times) < 60
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            opt.step()
            if scheduler is not None:
                scheduler.step()
            if timed:
                synchronize(device)
                step_times.append(time.perf_counter() - t0)
            step += 1
            if monitor is not None:
                monitor(step, net)
        synchronize(device)
        epoch_seconds.append(time.perf_counter() - epoch_start)
    wall = time.perf_counter() - start
    weights = count_weights(net)
    plain = net.to_sequential().eval()
    return {
        "arch": net.arch,
        "dataset": data.name,
        "seed": seed,
        "epochs": epochs,
        "initial_widths": list(net.widths),
        "widths": list(net.widths),
        "initial_architecture": architecture(plain),
        "architecture": architecture(plain),
        "test_error": evaluate(plain, data.x_test, data.y_test),
        "weights_total": weights,
        "weights_kept": weights,
        "weights_kept_fraction": 1.0,
        "flops_kept_fraction": 1.0,
        "last_prune_epoch": 0.0,
        "gates_binary_fraction": None,
        "train_wall_seconds": wall,
        "epoch_train_seconds": epoch_seconds,
        "step_seconds_full_width": sum(step_times[5:]) / max(len(step_times[5:]), 1),
        **(
            {"teacher_widths": data.meta["teacher_widths"]} if "teacher_widths" in data.meta else {}
        ),
    }
