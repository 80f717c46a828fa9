"""A run directory: written during training (:class:`RunWriter`) and read back (:func:`load_run`).

Layout: ``config.json`` (the settings as resolved), ``metrics.jsonl`` (one record per epoch),
``traces.jsonl`` (per-step unit states, with ``--trace-every``), ``checkpoints/epoch_NNN.pt``,
``summary.json`` and ``model.pt`` (the deployable network) at the end.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from bayesprune.config import TrainConfig
from bayesprune.guides.gate_guide import GateGuide
from bayesprune.models.network import GatedNet


class RunWriter:
    """Writes the files of one run directory (created if missing).

    :param path: the run directory.
    :param traces: whether ``traces.jsonl`` is written.
    """

    def __init__(self, path: str | Path, traces: bool = False):
        self.path = Path(path)
        self.traces = traces

    def start(self, config: dict) -> None:
        """Create the directory, write ``config.json`` and empty record files."""
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (self.path / "metrics.jsonl").write_text("")
        if self.traces:
            (self.path / "traces.jsonl").write_text("")

    def _append(self, name: str, record: dict) -> None:
        with open(self.path / name, "a") as f:
            f.write(json.dumps(record) + "\n")

    def epoch(self, record: dict) -> None:
        """Append one epoch's record to ``metrics.jsonl``."""
        self._append("metrics.jsonl", record)

    def trace(self, record: dict) -> None:
        """Append one step's unit state to ``traces.jsonl``."""
        self._append("traces.jsonl", record)

    def checkpoint(self, epoch: int, state: dict) -> None:
        """Save ``checkpoints/epoch_NNN.pt`` (plain tensors and containers: loads with
        ``weights_only=True``)."""
        folder = self.path / "checkpoints"
        folder.mkdir(exist_ok=True)
        torch.save({"epoch": epoch, **state}, folder / f"epoch_{epoch:03d}.pt")

    def finish(self, summary: dict, model: torch.nn.Module) -> None:
        """Write ``summary.json`` and ``model.pt`` (the network on the CPU)."""
        (self.path / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        torch.save(model.cpu(), self.path / "model.pt")  # loads anywhere without map_location


class RunError(Exception):
    """A directory is not a readable run directory; the message says what is wrong."""


@dataclass
class Run:
    """What ``bayesprune train`` left in a run directory, with the guide rebuilt at one epoch.

    :param path: the run directory.
    :param config: the training settings (``config.json``).
    :param epoch: the epoch of the loaded checkpoint.
    :param guide: the guide (network, θ, σ̂₁², unit ids) as saved at that epoch.
    :param metrics: the per-epoch records (``metrics.jsonl``).
    :param traces: the per-step records (``traces.jsonl``, written with ``--trace-every``; else
        empty).
    :param summary: ``summary.json``, or ``None`` if training did not finish.
    """

    path: Path
    config: TrainConfig
    epoch: int
    guide: GateGuide
    metrics: list[dict]
    traces: list[dict]
    summary: dict | None


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file (one object per non-empty line)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def load_run(run_dir: str | Path, epoch: int | None = None) -> Run:
    """Read a run directory and rebuild its guide from a checkpoint.

    :param run_dir: a directory written by ``bayesprune train`` (or :class:`Trainer` with ``out``).
    :param epoch: the checkpoint to load; ``None``: the last one.
    :raises RunError: the directory, ``config.json``, ``metrics.jsonl`` or the checkpoint is
        missing or unreadable.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise RunError(f"run directory {path} does not exist")
    try:
        raw = json.loads((path / "config.json").read_text())
        metrics = read_jsonl(path / "metrics.jsonl")
        traces_path = path / "traces.jsonl"
        traces = read_jsonl(traces_path) if traces_path.exists() else []
    except (OSError, ValueError) as err:
        raise RunError(f"{path} is not a readable run directory ({err})") from None
    config = TrainConfig.from_dict(raw)
    checkpoints = sorted((path / "checkpoints").glob("epoch_*.pt"))
    if not checkpoints or not metrics:
        raise RunError(f"{path} has no checkpoints or no epoch records: did training start?")
    if "unit_ids" not in metrics[0]:
        raise RunError(f"{path} was written by a bayesprune without unit ids; train it again")
    ckpt = checkpoints[-1] if epoch is None else path / "checkpoints" / f"epoch_{epoch:03d}.pt"
    try:
        saved = torch.load(ckpt, weights_only=True, map_location="cpu")
        net = GatedNet.from_spec(saved["net_spec"])
        guide = GateGuide(net, config.hyper(), weights=config.weights, posterior=config.posterior)
        guide.load_state_dict(saved["guide"])
    except (OSError, RuntimeError, KeyError, ValueError, pickle.UnpicklingError) as err:
        raise RunError(f"cannot load checkpoint {ckpt}: {err}".splitlines()[0]) from None
    summary_path = path / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    return Run(path, config, int(saved["epoch"]), guide, metrics, traces, summary)
