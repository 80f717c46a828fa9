"""The GPU benchmark script runs end to end on the CPU at a small width on synthetic data."""

import importlib.util
import json
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cifar10_vgg16.py"


def test_vgg16_cifar10_benchmark_smoke_run(fake_cifar10, tmp_path):
    spec = importlib.util.spec_from_file_location("cifar10_vgg16", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--device", "cpu", "--width-mult", "0.25", "--epochs", "1", "--batch-size",
                 "50", "--data-dir", str(fake_cifar10), "--name", "smoke", "--results-dir",
                 str(tmp_path), "--no-step-cost"])  # fmt: skip
    result = json.loads((tmp_path / "smoke.json").read_text())
    dense, pruned = result["dense"], result["bayesprune"]
    assert dense["arch"] == pruned["arch"] == "vgg16"
    assert dense["initial_widths"] == pruned["initial_widths"] == [16, 16, 32, 32] + [64] * 3 + [
        128
    ] * 7
    assert pruned["weights_kept"] <= dense["weights_total"] == pruned["weights_total"]
    assert result["environment"]["device"] == "cpu" and torch.get_num_threads() == 1
