"""The batch loop shared by the gated training and the dense baseline, and its helpers."""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator

import numpy as np
import torch

from bayesprune.data import Dataset


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so that a timer reads true time."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    """Test error (fraction) of a deterministic network, ``batch`` examples per forward pass.

    Small passes keep a convolution's maps in the CPU's caches: LeNet-5 on 10,000 images took
    3.9 s in passes of 5,000 and 1.1 s in passes of 256 (1 thread; an MLP is the same at
    either), and the trainer evaluates 20,000 images at every epoch's end."""
    wrong = 0
    for i in range(0, len(x), batch):
        wrong += (net(x[i : i + batch]).argmax(-1) != y[i : i + batch]).sum().item()
    return wrong / len(x)


LR_SCHEDULES = ("constant", "cosine")


def lr_schedule(optimizer: torch.optim.Optimizer, kind: str, total_steps: int):
    """The weights' learning-rate schedule: ``None`` (constant) or a per-step cosine decay."""
    if kind not in LR_SCHEDULES:
        raise ValueError(f"unknown lr schedule {kind!r}: choose {' or '.join(LR_SCHEDULES)}")
    if kind == "constant":
        return None
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))


def steps_per_epoch(data: Dataset, batch_size: int) -> int:
    """Mini-batches per pass over the training set (the last one may be smaller)."""
    return (len(data.x_train) + batch_size - 1) // batch_size


def batches(
    data: Dataset,
    batch_size: int,
    device: torch.device,
    perm: torch.Tensor | None = None,
    start: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One epoch of mini-batches ``(x, y, index)``, with the dataset's augmentation applied to
    ``x``: in the order ``perm`` (a fresh ``torch.randperm`` if ``None``), from batch ``start``
    on (a resumed epoch)."""
    n = len(data.x_train)
    if perm is None:
        perm = torch.randperm(n, device=device)
    for b in range(start, steps_per_epoch(data, batch_size)):
        idx = perm[b * batch_size : (b + 1) * batch_size]
        x = data.x_train[idx] if data.augment is None else data.augment(data.x_train[idx])
        yield x, data.y_train[idx], idx


def global_rng_state() -> tuple:
    """The process's random streams (Python, numpy, torch, CUDA where initialised), which
    ``fit`` seeds for its run (``pyro.set_rng_seed``) and gives back to the caller when it ends:
    a sweep drawing its settings from numpy does not draw the same ones after every run."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


def set_global_rng_state(state: tuple) -> None:
    python, numpy_state, torch_state, cuda = state
    random.setstate(python)
    np.random.set_state(numpy_state)
    torch.set_rng_state(torch_state)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def keeps_global_rng(function):
    """``function``, leaving the caller's random streams as they were
    (:func:`global_rng_state`)."""

    @functools.wraps(function)
    def kept(*args, **kwargs):
        state = global_rng_state()
        try:
            return function(*args, **kwargs)
        finally:
            set_global_rng_state(state)

    return kept
