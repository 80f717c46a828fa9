"""The speed and size numbers the benchmark scripts report, on fake clocks, fake runs and
synthetic result files: common.interleaved_ms (median per call of timed blocks, no warm-up, a
synchronize before each clock read), step_cost's ratios, compare's and fashion_mnist_main's
thread count and epochs, plain_step's optimiser, inference.py's dense-over-pruned ratios and
rows, the inference table, and training_cost's figure and JSON. Each test was written against a
mutant the rest of the suite let through (most of this code was reached only by the test that
re-renders the committed results)."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.test_benchmarks import BENCHMARKS, _script

sys.path.insert(0, str(BENCHMARKS))
import common  # noqa: E402


def test_interleaved_ms_is_the_median_per_call_of_timed_blocks_without_warmup(monkeypatch):
    clock = {"t": 0.0}
    events = []
    calls = {"n": 0}
    warmup, steps = 2, 4
    block_ms = [1.0, 1.0, 10.0]  # per call, in each block: median 1, mean 4

    def perf_counter():
        events.append("clock")
        return clock["t"]

    def run():
        i = calls["n"]
        calls["n"] += 1
        block, within = divmod(i, warmup + steps)
        clock["t"] += 1.0 if within < warmup else block_ms[block] / 1000  # warm-up: 1 s a call
        events.append("run")

    monkeypatch.setattr(common, "time", SimpleNamespace(perf_counter=perf_counter))
    monkeypatch.setattr(common, "synchronize", lambda device: events.append("sync"))
    out = common.interleaved_ms({"a": run}, blocks=3, steps=steps, warmup=warmup)
    assert out == {"a_ms": pytest.approx(1.0)}
    # the clock is read only after the device has finished what was queued
    assert all(events[i - 1] == "sync" for i, e in enumerate(events) if e == "clock")


def test_step_cost_ratios_are_each_svi_time_over_the_plain_step(monkeypatch):
    monkeypatch.setattr(common, "plain_step", lambda *a, **k: (lambda: None))
    monkeypatch.setattr(common, "Trainer", lambda *a, **k: SimpleNamespace(train_step=None))
    monkeypatch.setattr(common, "interleaved_ms", lambda runners, *a, **k: {
        "dense_ms": 2.0, "svi_ms": 3.0, "svi_traced_ms": 5.0})
    data = SimpleNamespace(x_train=torch.zeros(8, 4), y_train=torch.zeros(8, dtype=torch.long))
    out = common.step_cost(data, lambda: torch.nn.Linear(4, 2), common.TrainConfig(batch_size=4))
    assert out["svi_ratio"] == pytest.approx(1.5) and out["svi_traced_ratio"] == pytest.approx(2.5)


def test_compare_runs_and_records_the_thread_count(monkeypatch):
    seen = []

    def dense(*a, **k):
        seen.append(torch.get_num_threads())
        return {"train_wall_seconds": 1.0}

    class FakeTrainer:
        def __init__(self, *a, **k):
            pass

        def fit(self, progress=False):
            seen.append(torch.get_num_threads())
            return {"train_wall_seconds": 2.0}

    monkeypatch.setattr(common, "train_dense", dense)
    monkeypatch.setattr(common, "Trainer", FakeTrainer)
    monkeypatch.setattr(common, "environment", lambda device="cpu": {"commit": "c"})
    before = torch.get_num_threads()
    target = 2 if before != 2 else 1
    try:
        out = common.compare(None, lambda: None, common.TrainConfig(epochs=1), threads=target,
                             measure_step_cost=False)
    finally:
        torch.set_num_threads(before)
    assert seen == [target, target] and out["environment"]["threads"] == target


def test_fashion_mnist_main_passes_threads_and_epochs_on(monkeypatch):
    import bayesprune.data

    got = {}

    def compare(data, make_net, config, threads=1, side_by_side=False):
        got.update(config=config, threads=threads, side_by_side=side_by_side)
        return {"x": 1}

    monkeypatch.setattr(bayesprune.data, "load_dataset", lambda *a: "data")
    monkeypatch.setattr(common, "compare", compare)
    monkeypatch.setattr(common, "write", lambda name, result: got.update(name=name))
    monkeypatch.setattr(sys, "argv", ["fmnist.py", "--threads", "3", "--epochs", "4"])
    common.fashion_mnist_main("d", "fmnist_x", lambda data: None)
    assert got["threads"] == 3 and got["config"].epochs == 4 and got["name"] == "fmnist_x"
    assert not got["side_by_side"]
    monkeypatch.setattr(sys, "argv", ["fmnist.py", "--side-by-side"])
    common.fashion_mnist_main("d", "fmnist_x", lambda data: None)
    assert got["side_by_side"]


def test_side_by_side_runs_the_arms_at_once_in_their_own_processes():
    """Each arm in its own process, the two at once (each waits for the other to have
    started before it ends), results in the arms' order; a failing arm raises here."""
    import os
    import time

    def run(arm):
        start = time.time()
        time.sleep(0.5)
        return {"arm": arm, "pid": os.getpid(), "start": start, "end": time.time()}

    dense, pruned = common.side_by_side_runs(run, ("dense", "bayesprune"))
    assert (dense["arm"], pruned["arm"]) == ("dense", "bayesprune")
    assert len({dense["pid"], pruned["pid"], os.getpid()}) == 3
    assert dense["start"] < pruned["end"] and pruned["start"] < dense["end"]  # overlapping

    def failing(arm):
        if arm == "bayesprune":
            raise ValueError("no such unit")
        return {}

    with pytest.raises(RuntimeError, match="bayesprune run failed(.|\n)*no such unit"):
        common.side_by_side_runs(failing, ("dense", "bayesprune"))


def test_plain_step_uses_the_optimiser_it_is_given():
    from bayesprune.models import GatedNet

    torch.manual_seed(0)
    net = GatedNet((4,), [("fc", 3)], 2)
    x, y = torch.randn(6, 4), torch.randint(0, 2, (6,))
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    net.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    grads = {n: p.grad.detach().clone() for n, p in net.named_parameters()}
    common.plain_step(net, x, y, 0.1, optimizer="sgd", memory_format="contiguous")()
    for n, p in net.named_parameters():  # first SGD step (momentum buffer = grad): p - lr * grad
        torch.testing.assert_close(p.detach(), before[n] - 0.1 * grads[n])


def test_render_inference_puts_each_number_in_its_column_and_the_threads_recorded():
    result = {
        "epochs": 3, "batch": 64, "threads": 4, "torch": "t", "commit": "c", "processor": "p",
        "lenet5": {"format": "pt2", "dense_ms": 8.0, "pruned_ms": 2.0, "speedup": 4.0,
                   "dense_bytes": 30000, "pruned_bytes": 1000, "size_ratio": 30.0,
                   "model_pt": {"dense_ms": 9.0, "pruned_ms": 3.0, "speedup": 3.0,
                                "dense_bytes": 40000, "pruned_bytes": 5000}},
    }
    lines = common.render_inference(result)
    assert any("CPU, batch 64, 4 thread" in line for line in lines), lines[2]
    row = "| lenet5 | 8.00 | 2.00 | 4.00× | 30,000 | 1,000 | 30.0× | 3.00× | 8.0× |"
    assert row in lines, lines


def test_inference_records_dense_over_pruned_ratios_at_one_thread(tmp_path, monkeypatch):
    script = _script("inference")
    threads_seen = []

    def bench_run(out, device, batches):
        threads_seen.append(torch.get_num_threads())
        return {
            "batches": {"256": {"dense_ms": 9.0, "pruned_ms": 3.0, "speedup": 3.0}},
            "dense": {"params": 1000, "bytes": 40000},
            "pruned": {"params": 100, "bytes": 5000},
        }

    written = {}
    monkeypatch.setattr(script, "cli", lambda flags: 0)
    monkeypatch.setattr(script, "bench_run", bench_run)
    monkeypatch.setattr(script, "exported", lambda out: {
        "format": "pt2", "dense_ms": 8.0, "pruned_ms": 2.0,
        "dense_bytes": 30000, "pruned_bytes": 1000})
    monkeypatch.setattr(script, "environment", lambda: {"commit": "c", "torch": "t"})
    monkeypatch.setattr(script, "write", lambda name, result: written.update({name: result}))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        script.main(["--runs-dir", str(tmp_path), "--epochs", "1"])
    finally:
        torch.set_num_threads(before)
    result = written["inference"]
    assert threads_seen == [1, 1] and result["threads"] == 1
    for name in ("mlp", "lenet5"):
        r = result[name]
        assert r["speedup"] == pytest.approx(4.0)  # dense_ms / pruned_ms of the exported files
        assert r["size_ratio"] == pytest.approx(30.0)
        assert r["dense_bytes"] == 30000 and r["pruned_bytes"] == 1000
        assert r["model_pt"] == {"dense_ms": 9.0, "pruned_ms": 3.0, "speedup": 3.0,
                                 "dense_bytes": 40000, "pruned_bytes": 5000}
        assert r["dense_params"] == 1000 and r["pruned_params"] == 100


def test_exported_keeps_each_networks_time_and_size_under_its_own_name(tmp_path, monkeypatch):
    """The existing test's 2-epoch run prunes nothing, so its dense and pruned files are alike
    and a swap of their sizes or times passes; here the two files differ."""
    from types import SimpleNamespace

    script = _script("inference")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    sizes = {"pruned": 1000, "dense": 30000}
    ms = {1000: 2.0, 30000: 8.0}

    def export_model(src, fmt, dst):
        kind = "pruned" if Path(src).parent == run_dir else "dense"
        Path(dst).write_bytes(b"x" * sizes[kind])
        return Path(dst)

    def load(path):
        size = Path(path).stat().st_size
        return SimpleNamespace(module=lambda: SimpleNamespace(ms=ms[size]))

    monkeypatch.setattr(script, "load_model_record", lambda p: ("pruned", {"in_shape": [4]}))
    monkeypatch.setattr(script, "dense_network", lambda run, record, pruned: "dense")
    monkeypatch.setattr(script, "model_record", lambda net, shape: {"net": net})
    monkeypatch.setattr(script, "export_model", export_model)
    monkeypatch.setattr(script.torch.export, "load", load)
    monkeypatch.setattr(script, "interleaved_ms",
                        lambda modules, x, blocks: {n: m.ms for n, m in modules.items()})
    row = script.exported(run_dir, batch=2, blocks=1)
    assert row == {"format": "pt2", "dense_ms": 8.0, "pruned_ms": 2.0,
                   "dense_bytes": 30000, "pruned_bytes": 1000}


# per-epoch seconds and wall of dense, then of bayesprune, and bayesprune's bookkeeping
RUNS = {
    "fmnist_lenet300": ([1.0, 2.0, 3.0], 6.0, [2.0, 3.0, 7.0], 12.0, 0.5),
    "fmnist_lenet5": ([4.0, 4.0], 8.0, [5.0, 6.0], 11.0, 1.5),
}


def test_training_cost_plots_cumulative_sums_and_records_bookkeeping(tmp_path, monkeypatch):
    script = _script("training_cost")
    from common import render_training_cost

    (tmp_path / "results").mkdir()
    for name, (de, dw, be, bw, book) in RUNS.items():
        result = {
            "environment": {"commit": "abc", "processor": "cpu"},
            "dense": {"epoch_train_seconds": de, "train_wall_seconds": dw},
            "bayesprune": {"epoch_train_seconds": be, "train_wall_seconds": bw,
                           "bookkeeping_seconds": book},
        }
        (tmp_path / "results" / f"{name}.json").write_text(json.dumps(result))
    monkeypatch.setattr(script, "HERE", tmp_path)
    monkeypatch.setattr(script, "figure_dir", lambda: tmp_path)
    written = {}
    monkeypatch.setattr(script, "write", lambda name, result: written.update({name: result}))
    made = {}
    subplots = script.plt.subplots

    def capture(*a, **k):
        fig, axes = subplots(*a, **k)
        made["axes"] = axes
        return fig, axes

    monkeypatch.setattr(script.plt, "subplots", capture)
    script.main()
    axes = made["axes"]
    for col, (de, dw, be, bw, _book) in enumerate(RUNS.values()):
        per_epoch = {line.get_label(): line for line in axes[0, col].get_lines()}
        summed = {line.get_label(): line for line in axes[1, col].get_lines()}
        for run, seconds in (("dense", de), ("bayesprune", be)):
            np.testing.assert_allclose(per_epoch[run].get_xdata(), np.arange(1, len(seconds) + 1))
            np.testing.assert_allclose(per_epoch[run].get_ydata(), seconds)
            np.testing.assert_allclose(summed[run].get_ydata(), np.cumsum(seconds))
        assert f"total {bw / dw:.2f}× dense" in axes[0, col].get_title()
    table = written["training_cost"]["training_cost"]
    mlp = table["LeNet-300-100"]
    assert mlp["dense"]["epoch_train_seconds"] == [1.0, 2.0, 3.0]
    assert mlp["bayesprune"]["epoch_train_seconds"] == [2.0, 3.0, 7.0]
    assert mlp["bayesprune"]["bookkeeping_seconds"] == 0.5
    lines = render_training_cost("training_cost", written["training_cost"])
    assert any(f"(0.5 s) {(12.0 + 0.5) / 6.0:.2f}×." in line for line in lines), lines
