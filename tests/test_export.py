"""Export (torch.export, TorchScript, ONNX, safetensors) and bench of the pruned network."""

import importlib.util
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from bayesprune.cli import main
from bayesprune.export import EXPORT_FORMATS, deterministic_network, export_model
from bayesprune.guides import GateGuide
from bayesprune.models import GatedMLP, GatedNet, HyperPrior
from bayesprune.runs import RunWriter

# Loads each format with torch (and onnxruntime / safetensors) only: bayesprune is blocked.
LOADER = textwrap.dedent(
    """
    import json, sys
    sys.modules["bayesprune"] = None  # importing bayesprune now fails
    import torch
    fmt, path, x_path, out_path = sys.argv[1:]
    x = torch.load(x_path)
    extra = {"bayesprune.json": ""}  # filled by the loaders of pt2 and TorchScript
    if fmt == "pt2":
        y = torch.export.load(path, extra_files=extra).module()(x)
        meta = json.loads(extra["bayesprune.json"])
    elif fmt == "torchscript":
        y = torch.jit.load(path, _extra_files=extra)(x)
        meta = json.loads(extra["bayesprune.json"])
    elif fmt == "onnx":
        import onnxruntime
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        y = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
        meta = session.get_modelmeta().custom_metadata_map
    else:
        from safetensors import safe_open
        from safetensors.torch import load_file
        with safe_open(path, "pt") as f:
            meta = f.metadata()
            layers = json.loads(meta["layers"])
        modules = []
        for spec in layers:
            kind = spec["type"]
            if kind == "Conv2d":
                modules.append(torch.nn.Conv2d(
                    spec["in"], spec["out"], tuple(spec["kernel"]), padding=tuple(spec["padding"])))
            elif kind == "Linear":
                modules.append(torch.nn.Linear(spec["in"], spec["out"]))
            elif kind == "BatchNorm2d":
                modules.append(torch.nn.BatchNorm2d(spec["features"], eps=spec["eps"]))
            elif kind == "MaxPool2d":
                modules.append(torch.nn.MaxPool2d(spec["kernel"]))
            else:
                modules.append(getattr(torch.nn, kind)())
        net = torch.nn.Sequential(*modules)
        net.load_state_dict(load_file(path))
        y = net.eval()(x)
    torch.save(y.detach(), out_path)
    with open(out_path + ".json", "w") as f:
        json.dump(meta, f)
    """
)


def _network(kind):
    torch.manual_seed(0)
    if kind == "mlp":
        net, x = GatedMLP(6, (8, 5), 3), torch.randn(7, 6)
    else:
        plan = [("conv", 6, 3, 1), ("pool",), ("conv", 5, 3, 1), ("pool",), ("fc", 7)]
        net, x = GatedNet((2, 8, 8), plan, 3, batch_norm=True), torch.randn(7, 2, 8, 8)
    torch.nn.init.normal_(net.layers["out"].weight)
    guide = GateGuide(net, HyperPrior())
    for name in net.gated:  # some units off: the export must drop them
        theta = torch.ones(net.width(name))
        theta[1] = 0.0
        guide.set_gate_probs(name, theta)
    net.eval()
    return net, guide, x


@pytest.mark.parametrize("fmt", ["pt2", "torchscript", "onnx", "safetensors"])
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_exported_network_predicts_as_the_trained_one_without_bayesprune(tmp_path, fmt, kind):
    if fmt == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("the optional extra bayesprune[onnx] (onnx, onnxruntime) is not installed")
    net, guide, x = _network(kind)
    det = deterministic_network(guide)
    RunWriter(tmp_path).model(det, net.in_shape)
    out = (tmp_path / "model").with_suffix(EXPORT_FORMATS[fmt])
    path = export_model(tmp_path / "model.pt", fmt, out)
    torch.save(x, tmp_path / "x.pt")
    subprocess.run(
        [
            sys.executable,
            "-c",
            LOADER,
            fmt,
            str(path),
            str(tmp_path / "x.pt"),
            str(tmp_path / "y.pt"),
        ],
        check=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )
    got = torch.load(tmp_path / "y.pt")
    meta = json.loads((tmp_path / "y.pt.json").read_text())  # the file says what goes in
    assert json.loads(meta["in_shape"]) == list(net.in_shape)
    shape = ", ".join(map(str, net.in_shape))
    assert meta["inputs"].startswith(f"float32 of shape (batch, {shape})")
    assert "no config.json" in meta["inputs"]  # a model.pt on its own here
    with torch.no_grad():
        want = det(x)
        gated = net(x, gates={n: guide.gate_probs(n).detach() for n in net.gated})
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(want, gated, rtol=1e-4, atol=1e-5)  # gates folded in
    assert sum(p.numel() for p in det.parameters()) < sum(p.numel() for p in net.parameters())


def test_export_and_bench_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(["train", "--epochs", "2", "--widths", "12,8", "--no-progress", "--no-report",
              "--out", str(out)])
        == 0
    )
    assert main(["export", str(out), "--format", "torchscript"]) == 0
    assert (out / "model.ts").stat().st_size > 0
    capsys.readouterr()
    assert main(["bench", str(out), "--batch", "1,8"]) == 0
    table = capsys.readouterr().out
    assert "parameters" in table and "batch 8 ms" in table
    result = json.loads((out / "bench.json").read_text())
    assert set(result["batches"]) == {"1", "8"} and result["threads"] == 1
    summary = json.loads((out / "summary.json").read_text())
    assert result["pruned"]["params"] == summary["weights_kept"]
    assert result["dense"]["params"] == summary["weights_total"]
    # 4-12-8-3: 4·12 + 12·8 + 8·3 multiply-accumulates, two FLOPs each ("flops" held the MACs)
    assert (result["dense"]["macs"], result["dense"]["flops"]) == (168, 336)
    assert result["pruned"]["flops"] == 2 * result["pruned"]["macs"] > 0
    assert "FLOPs/ex." in table
    for row in result["batches"].values():
        assert row["dense_ms"] > 0 and row["pruned_ms"] > 0

    # a run that did not finish is neither exported nor benched: one line naming its status
    import shutil

    for status, reason, said in [
        ("collapsed", "the run never learnt", "its status is collapsed (the run never learnt)"),
        ("running", None, "summary.json says running"),
    ]:
        copy = tmp_path / status
        shutil.copytree(out, copy)
        (copy / "model.ts").unlink()
        (copy / "summary.json").write_text(
            json.dumps({**summary, "status": status, "status_reason": reason})
        )
        before = (copy / "bench.json").read_bytes()
        for command in (["export", str(copy), "--format", "torchscript"], ["bench", str(copy)]):
            capsys.readouterr()
            assert main(command) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and said in err[0] and "needs a finished run" in err[0], err
        assert not (copy / "model.ts").exists() and (copy / "bench.json").read_bytes() == before
    # a summary that records no status (or cannot be read) is not taken for a finished run
    for text, said in [(json.dumps({"architecture": "4-12-8"}), "records no status"),
                       ("[1, 2]", "cannot be read")]:  # fmt: skip
        (copy / "summary.json").write_text(text)
        capsys.readouterr()
        assert main(["export", str(copy), "--format", "torchscript"]) == 2
        assert said in capsys.readouterr().err


def test_export_mistakes_are_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no model.pt" in err[0]


def test_export_of_a_run_on_ones_own_tensors_says_they_go_in_as_given(tmp_path, capsys):
    """A run trained from Python on a user's own Dataset records no normalisation; export says
    so instead of calling the run older than the record."""
    from bayesprune.config import TrainConfig
    from bayesprune.data import Dataset
    from bayesprune.inference.trainer import Trainer

    torch.manual_seed(0)
    x, xt = torch.randn(60, 6), torch.randn(20, 6)
    data = Dataset("mine", x, (x[:, 0] > 0).long(), xt, (xt[:, 0] > 0).long(), 2)
    out = tmp_path / "run"
    Trainer(GatedMLP(6, (8,), 2), data, TrainConfig(epochs=1, batch_size=20), out=out).fit(
        progress=False
    )
    # from Python too, config.json records the thread count a --resume computes with
    assert json.loads((out / "config.json").read_text())["run"] == {
        "threads": torch.get_num_threads()
    }
    capsys.readouterr()
    assert main(["export", str(out), "--format", "safetensors"]) == 0
    note = capsys.readouterr().err
    assert "as the run's dataset 'mine' gave them to the Trainer" in note
    assert "predates" not in note


def test_a_deployers_mistaken_files_are_named_and_a_bench_that_cannot_be_saved_is_shown(
    tmp_path, capsys
):
    """What a deployer meets around a run (found walking it): a model.pt copied in from another
    run, a summary without its starting widths, a damaged config.json, a model.pt of another
    format version each get a line that says which; bench prints its table before writing
    bench.json, so a run directory that cannot be written loses no measurement."""
    import os
    import shutil

    from bayesprune.export import MODEL_FORMAT, input_note

    run = tmp_path / "run"
    args = ["--epochs", "1", "--widths", "6,4", "--no-progress", "--no-report", "--threads", "1"]
    assert main(["train", *args, "--out", str(run)]) == 0
    swapped = tmp_path / "swapped"
    shutil.copytree(run, swapped)
    net, guide, _ = _network("mlp")  # another network: six inputs, not the teacher's four
    (swapped / "model.pt").unlink()
    RunWriter(swapped).model(deterministic_network(guide), net.in_shape)
    capsys.readouterr()
    export_pt2 = ["export", str(swapped), "--format", "pt2"]
    for command in (["bench", str(swapped), "--batch", "1"], export_pt2):
        assert main(command) == 2  # export wrote it with this run's input recipe
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "model.pt is not this run's network" in err[0], err
    assert not (swapped / "model.pt2").exists()

    arch = json.loads((run / "summary.json").read_text())["architecture"]  # 4-6-4 less settled
    for model in (GatedMLP(4, (5, 3), 3), GatedMLP(4, (9, 9), 3)):  # this shape, not this run
        (swapped / "model.pt").unlink()
        RunWriter(swapped).model(deterministic_network(GateGuide(model, HyperPrior())), (4,))
        for command in (["bench", str(swapped), "--batch", "1"], export_pt2):
            assert main(command) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and f"summary.json a {arch} one: model.pt is not this" in err[0]

    bare = tmp_path / "bare"
    shutil.copytree(run, bare)
    summary = json.loads((bare / "summary.json").read_text())
    del summary["initial_widths"]
    (bare / "summary.json").write_text(json.dumps(summary))
    assert main(["bench", str(bare), "--batch", "1"]) == 2
    assert "records no initial_widths" in capsys.readouterr().err

    (bare / "config.json").write_text("{")
    note = input_note(bare)
    assert "config.json" in note and "predates" not in note, note

    record = torch.load(bare / "model.pt", weights_only=True)
    record["format"] = MODEL_FORMAT[:-1] + "2"
    torch.save(record, bare / "model.pt")
    assert main(["export", str(bare), "--format", "safetensors"]) == 2
    err = capsys.readouterr().err
    assert "another version of bayesprune (format bayesprune.sequential/2" in err, err

    if os.geteuid() == 0:  # root writes anywhere: make bench.json a folder it cannot replace
        (run / "bench.json").mkdir()
    else:
        run.chmod(0o555)
    try:
        assert main(["bench", str(run), "--batch", "1"]) == 2
    finally:
        run.chmod(0o755)
    captured = capsys.readouterr()
    assert "parameters" in captured.out and "batch 1 ms" in captured.out  # shown all the same



def test_bench_times_each_network_in_its_own_row(tmp_path, monkeypatch):
    """Each row's latency is its own network's: a timer that reports which network it was
    given (dense 1 ms, pruned 2 ms) makes the rows, their ratio and throughput checkable (before,
    only `> 0` was asserted)."""
    import bayesprune.bench as bench

    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--widths", "12,8", "--no-progress", "--no-report",
                 "--out", str(out), "--threads", "1"]) == 0  # fmt: skip
    made = {}
    load, dense = bench.load_model_record, bench.dense_network

    def loaded(path):
        made["pruned"], record = load(path)
        return made["pruned"], record

    def rebuilt(run_dir, record, *pruned):
        made["dense"] = dense(run_dir, record, *pruned)
        return made["dense"]

    def timer(module, x, device, repeats):
        return 1.0 if module is made["dense"] else 2.0 if module is made["pruned"] else -1.0

    monkeypatch.setattr(bench, "load_model_record", loaded)
    monkeypatch.setattr(bench, "dense_network", rebuilt)
    monkeypatch.setattr(bench, "_latency_ms", timer)
    result = bench.bench_run(out, batches=(4,), blocks=3, write=False)
    row = result["batches"]["4"]
    assert (row["dense_ms"], row["pruned_ms"], row["speedup"]) == (1.0, 2.0, 0.5)
    assert (row["dense_per_s"], row["pruned_per_s"]) == (4000.0, 2000.0)
    assert not (out / "bench.json").exists()  # write=False: the caller writes it


def test_an_onnx_file_onnxruntime_could_not_check_says_so(tmp_path, capsys, monkeypatch):
    """With onnx installed and onnxruntime not, the file was written and the command said only
    "wrote ...", as if it had been checked like the others."""
    if importlib.util.find_spec("onnx") is None:
        pytest.skip("the optional extra bayesprune[onnx] is not installed")
    from bayesprune.export import export_model

    out = tmp_path / "run"
    argv = ["train", "--epochs", "2", "--widths", "12,8"]
    assert main([*argv, "--no-progress", "--no-report", "--out", str(out)]) == 0
    real = importlib.util.find_spec
    absent = lambda name, *a: None if name == "onnxruntime" else real(name, *a)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", absent)
    capsys.readouterr()
    assert main(["export", str(out), "--format", "onnx"]) == 0
    err = capsys.readouterr().err
    assert "bayesprune: note:" in err and "without checking its predictions" in err, err
    assert (out / "model.onnx").stat().st_size > 0
    with pytest.warns(UserWarning, match="onnxruntime is not installed"):
        export_model(out / "model.pt", "onnx", tmp_path / "again.onnx")
    # only that one is a note: a first version printed every warning raised while exporting
    # (torch.jit's deprecation warnings, twice) as note lines, whatever the filters said
    assert main(["export", str(out), "--format", "torchscript"]) == 0
    assert "note:" not in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_a_layer_whose_every_gate_is_off_deploys_as_one_silent_unit(kind):
    # the mode network of a layer with no unit left: one unit that emits zeros (weights and
    # bias 0), and the network computes what the gated one does with that layer off
    net, guide, x = _network(kind)
    first = net.gated[0]
    with torch.no_grad():
        net.layers[first].bias.fill_(1.0)  # a live unit would show through
    guide.set_gate_probs(first, torch.zeros(net.width(first)))
    det = deterministic_network(guide)
    with torch.no_grad():
        gated = net(x, gates={n: guide.mode_mask(n).float() for n in net.gated})
        torch.testing.assert_close(det(x), gated, rtol=1e-5, atol=1e-6)
    silent = next(m for m in det if isinstance(m, torch.nn.Conv2d | torch.nn.Linear))
    assert (silent.out_features if kind == "mlp" else silent.out_channels) == 1
    assert not silent.weight.any() and not silent.bias.any()


def test_macs_are_counted_with_each_convolutions_output_map_and_kernel():
    # LeNet-5-Caffe on 28×28: 20·24²·25 + 50·8²·(20·25) + 800·500 + 500·10 multiply-accumulates
    from bayesprune.export import count_macs
    from bayesprune.models.network import build_network

    net = build_network("lenet5", (1, 28, 28), 10)
    guide = GateGuide(net, HyperPrior())
    macs = 20 * 24**2 * 25 + 50 * 8**2 * 500 + 800 * 500 + 500 * 10
    assert count_macs(deterministic_network(guide), (1, 28, 28)) == macs == 2_293_000
    mlp = deterministic_network(GateGuide(GatedMLP(784, (300, 100), 10), HyperPrior()))
    assert count_macs(mlp, (784,)) == 784 * 300 + 300 * 100 + 100 * 10


def test_an_onnx_file_whose_predictions_differ_is_refused_and_not_written(tmp_path, monkeypatch):
    # the check compares onnxruntime's output with the network's (a first test only made the
    # comparison fail, so it could not tell what was compared)
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("the optional extra bayesprune[onnx] (onnx, onnxruntime) is not installed")
    import onnxruntime

    from bayesprune.export import ExportError

    net, guide, _ = _network("mlp")
    RunWriter(tmp_path).model(deterministic_network(guide), net.in_shape)
    path = export_model(tmp_path / "model.pt", "onnx", tmp_path / "good.onnx")
    assert path.stat().st_size > 0  # the same network, unpatched: written
    run = onnxruntime.InferenceSession.run
    shifted = lambda self, *a, **k: [o + 1 for o in run(self, *a, **k)]  # noqa: E731
    monkeypatch.setattr(onnxruntime.InferenceSession, "run", shifted)
    with pytest.raises(ExportError, match="predictions differ"):
        export_model(tmp_path / "model.pt", "onnx", tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()


def _run_with_model(tmp_path, widths, classes):
    """A one-epoch teacher run from 4-12-8 whose model.pt is then replaced by a plain MLP of
    ``widths`` to ``classes`` outputs (another run's network, or a narrower one)."""
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--widths", "12,8", "--no-progress", "--no-report",
                 "--out", str(out), "--threads", "1"]) == 0  # fmt: skip
    sizes = (4, *widths)
    layers = [torch.nn.Flatten()]
    for a, b in zip(sizes, sizes[1:], strict=False):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-1], classes))
    (out / "model.pt").unlink()
    RunWriter(out).model(net, (4,))
    return out, net


def test_bench_reports_each_networks_own_size_and_times_each_batch(tmp_path, monkeypatch):
    # a run whose model.pt is narrower than its start (4-6-4 of 4-12-8): parameters and bytes
    # are each network's own, and every batch size is timed at its size (the CLI test's short
    # run pruned nothing, so dense and pruned swapped were the same numbers)
    import bayesprune.bench as bench
    from bayesprune.export import architecture, count_weights

    out, narrow = _run_with_model(tmp_path, (6, 4), 3)
    summary = json.loads((out / "summary.json").read_text())
    summary["architecture"] = architecture(narrow)
    (out / "summary.json").write_text(json.dumps(summary))
    timed = []

    def clock(models, x, blocks=7, min_seconds=0.05):
        timed.append(x.shape[0])
        return {name: 1.0 for name in models}

    monkeypatch.setattr(bench, "interleaved_ms", clock)
    result = bench.bench_run(out, batches=(1, 8), write=False)
    dense, pruned = result["dense"], result["pruned"]
    assert pruned["params"] == count_weights(narrow) == 73
    assert dense["params"] == summary["weights_total"] == 4 * 12 + 12 + 12 * 8 + 8 + 8 * 3 + 3
    assert pruned["bytes"] == (out / "model.pt").stat().st_size < dense["bytes"]
    assert timed == [1, 8]


def test_a_summarys_flops_fraction_is_the_pruned_networks_against_its_start(tmp_path):
    # flops_kept_fraction = MACs of the deployed network / MACs of the network it started as
    # (a fraction of the weights in its place survived: they differ wherever layers differ)
    from bayesprune.export import count_macs, load_model

    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--widths", "12,8", "--no-progress", "--no-report",
                 "--out", str(out), "--threads", "1"]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    start = deterministic_network(GateGuide(GatedMLP(4, (12, 8), 3), HyperPrior()))
    want = count_macs(load_model(out / "model.pt"), (4,)) / count_macs(start, (4,))
    assert summary["flops_kept_fraction"] == pytest.approx(want)
    macs, weights = count_macs(start, (4,)), summary["weights_total"]
    assert macs != weights  # so the two fractions cannot stand for each other


def test_bench_latency_is_per_call_and_the_median_of_blocks_that_last(monkeypatch):
    # the timer divides a block by its calls, each block runs about min_seconds of calls, and
    # the blocks' median is reported (one slow block, as a busy machine gives, moves nothing)
    import time

    import bayesprune.bench as bench

    calls = []

    def sleeper(x):
        calls.append(1)
        time.sleep(0.002)
        return x

    ms = bench._latency_ms(sleeper, torch.zeros(1), torch.device("cpu"), 5)
    assert 1.9 < ms < 6 and len(calls) == 5  # about 2 ms a call, not 10 for the five
    calls.clear()
    bench.interleaved_ms({"m": sleeper}, torch.zeros(1), blocks=3, min_seconds=0.02)
    assert len(calls) >= 6 + 3 * 2  # the warm-up's six, then blocks of several calls each
    blocks = iter([2.0, 2.0, 2.0, 2.0, 50.0, 2.0, 2.0])  # warm-up, calibration, five blocks
    monkeypatch.setattr(bench, "_latency_ms", lambda *a: next(blocks))
    assert bench.interleaved_ms({"m": sleeper}, torch.zeros(1), blocks=5) == {"m": 2.0}


def test_a_model_pt_with_another_class_count_is_not_this_runs_network(tmp_path, capsys):
    # the architecture string shows the hidden widths, not the classes: a 4-12-8 network to 5
    # classes copied into a 3-class run is told by its outputs, and refused by bench and export
    from bayesprune.export import architecture

    out, other = _run_with_model(tmp_path, (12, 8), 5)
    summary = json.loads((out / "summary.json").read_text())
    assert architecture(other) == summary["architecture"]  # the same string
    capsys.readouterr()
    for command in (["bench", str(out)], ["export", str(out), "--format", "safetensors"]):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert "to 5 classes" in err and "not this run's network" in err, err


def test_bench_channels_last_times_both_convolutional_networks_on_channels_last_inputs(
    tmp_path, monkeypatch
):
    # --memory-format channels-last: the networks' 4-d weights and the input batch in NHWC (an
    # input left contiguous would time a layout conversion in every call instead)
    import numpy as np

    import bayesprune.bench as bench

    rng = np.random.default_rng(0)
    images = rng.normal(size=(240, 2, 28, 28)).astype(np.float32)  # 2 channels: 1 is both
    labels = images[:, 0, :, :9].mean((1, 2)).argsort().argsort() * 3 // 240  # learnable
    np.savez(tmp_path / "img.npz", x_train=images[:200], y_train=labels[:200],
             x_test=images[200:], y_test=labels[200:])  # fmt: skip
    out = tmp_path / "run"
    status = main(["train", "--dataset", "npz", "--data-dir", str(tmp_path / "img.npz"),
                   "--arch", "lenet5", "--width-mult", "0.2", "--epochs", "3", "--no-progress",
                   "--no-report", "--out", str(out), "--threads", "1"])  # fmt: skip
    assert status in (0, 3) and (out / "model.pt").is_file()  # (what it learnt is not the point)
    seen = []

    def clock(models, x, blocks=7, min_seconds=0.05):
        convs = [m for net in models.values() for m in net.modules()
                 if isinstance(m, torch.nn.Conv2d)]  # fmt: skip
        seen.append((x.is_contiguous(memory_format=torch.channels_last),
                     all(c.weight.is_contiguous(memory_format=torch.channels_last)
                         for c in convs), len(convs)))  # fmt: skip
        return {name: 1.0 for name in models}

    monkeypatch.setattr(bench, "interleaved_ms", clock)
    bench.bench_run(out, batches=(4,), write=False, memory_format="channels-last")
    bench.bench_run(out, batches=(4,), write=False)
    assert seen == [(True, True, 4), (False, False, 4)]  # two convolutions in each network
