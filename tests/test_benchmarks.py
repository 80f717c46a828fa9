"""The GPU benchmark script runs end to end on the CPU at a small width on synthetic data."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str):
    """benchmarks/<name>.py, imported as a module."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_vgg16_cifar10_benchmark_smoke_run(tmp_path):
    from tests.conftest import write_fake_cifar10

    # 5 batches of 10 images: one step of 50 a run (conftest's fake_cifar10 has 250, 5 steps)
    fake_cifar10 = write_fake_cifar10(tmp_path / "data", n_train=10, n_test=10).parent
    script = _script("cifar10_vgg16")
    script.main(["--device", "cpu", "--width-mult", "0.25", "--epochs", "1", "--batch-size",
                 "50", "--data-dir", str(fake_cifar10), "--name", "smoke", "--results-dir",
                 str(tmp_path), "--no-step-cost", "--threads", "2"])  # fmt: skip
    result = json.loads((tmp_path / "smoke.json").read_text())
    dense, pruned = result["dense"], result["bayesprune"]
    assert dense["arch"] == pruned["arch"] == "vgg16"
    assert (
        dense["initial_widths"]
        == pruned["initial_widths"]
        == [16, 16, 32, 32] + [64] * 3 + [128] * 7
    )
    assert pruned["weights_kept"] <= dense["weights_total"] == pruned["weights_total"]
    # the script pins the threads it is given (the test fixture sets 1 before every test)
    assert result["environment"]["device"] == "cpu" and result["environment"]["threads"] == 2
    assert torch.get_num_threads() == 2


def _matrix_script():
    return _script("robustness_matrix")


def test_every_matrix_cell_setting_reaches_the_runs(monkeypatch):
    # a cell's settings go to TrainConfig and to the dense run's schedule (whoever asks for the
    # dense run: benchmarks/kept_widths.py passes no schedule); one the runs would ignore is an
    # error, not a cell that silently trains the default recipe
    import bayesprune.baseline as baseline

    script = _matrix_script()
    assert script.training_settings("out-mlp-cosine")["lr_schedule"] == "cosine"
    for case in script.CASES:
        script.training_settings(case)
    seen = {}
    monkeypatch.setattr(baseline, "train_dense", lambda *a, schedule, **k: seen.update(s=schedule))
    script.CASES["cosine-teacher"] = {**script.CASES["teacher-n1k"], "lr_schedule": "cosine"}
    script.dense_summary("cosine-teacher", 0, script.cell_data("teacher-n1k"), 1, 100, 1e-3)
    assert seen["s"] == "cosine"
    script.CASES["misspelt"] = {**script.FMNIST, "lr_shedule": "cosine"}
    with pytest.raises(ValueError, match="lr_shedule"):
        script.training_settings("misspelt")


def _matrix(tmp_path, *extra):
    script = _matrix_script()
    script.main(["--cells", "teacher-n1k", "teacher-n3k", "--seeds", "0", "--jobs", "1",
                 "--results-dir", str(tmp_path), *extra])  # fmt: skip
    return json.loads((tmp_path / "robustness_matrix.json").read_text())


def test_matrix_refuses_tabular_cells_without_scikit_learn_before_any_run(
    monkeypatch, tmp_path, capsys
):
    # the sklearn-* cells used to fail when their turn came, after the cells before them had
    # run, and those results were lost: the missing extra is now refused up front, exit code 2
    script = _matrix_script()
    real = importlib.util.find_spec
    monkeypatch.setattr(
        script.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "sklearn" else real(name, *a),
    )
    ran = []
    monkeypatch.setattr(script, "run_cell", lambda *a, **k: ran.append(a))
    with pytest.raises(SystemExit) as stop:
        script.main(["--cells", "teacher-n1k", "out-iris-100ep", "--seeds", "0", "--jobs", "1",
                     "--no-dense", "--results-dir", str(tmp_path)])  # fmt: skip
    assert stop.value.code == 2 and ran == []
    assert "need scikit-learn" in capsys.readouterr().err  # not some other refusal
    assert not (tmp_path / "robustness_matrix.json").exists()


def test_matrix_cells_are_listed_and_checked_without_flooding_the_help(capsys):
    # --cells had its ~150 names as argparse choices: --help printed them twice, an error all
    # of them; the names are now checked by name and --list prints them with their recipes
    script = _script("robustness_matrix")
    with pytest.raises(SystemExit) as stop:
        script.arg_parser().parse_args(["--help"])
    assert stop.value.code == 0
    assert "out-mlp-n1k" not in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        script.arg_parser().parse_args(["--list"])
    listed = capsys.readouterr().out.splitlines()
    assert stop.value.code == 0 and [line.split()[0] for line in listed] == list(script.CASES)
    assert listed[0].split()[1:] == ["matrix", "train_subset=3000"]
    with pytest.raises(SystemExit) as stop:
        script.arg_parser().parse_args(["--cells", "mlp-n3k", "mlp-n4k"])
    assert stop.value.code == 2 and "no cell 'mlp-n4k'" in capsys.readouterr().err
    assert script.arg_parser().parse_args(["--cells", "mlp-n3k"]).cells == ["mlp-n3k"]
    with pytest.raises(SystemExit) as stop:  # --outside dropped the cells without a word
        script.main(["--outside", "--cells", "lenet5-n10k"])
    assert stop.value.code == 2 and "name cells with --cells" in capsys.readouterr().err


def test_repeated_set_options_add_up():
    # argparse's nargs="*" alone kept only the last --set: "--set epochs=20 --set
    # theta_confidence=0" ran 10 epochs without a word
    script = _script("robustness_matrix")
    argv = ["--set", "epochs=20", "--set", "theta_confidence=0", "lr=0.01"]
    args = script.arg_parser().parse_args(argv)
    assert script.parse_overrides(args.set) == {"epochs": 20, "theta_confidence": 0, "lr": 0.01}


def test_set_overrides_keep_none_as_a_string_option_value():
    # "none" is a value of the string option window_cap ("data" | "none") and means "no value"
    # for a numeric one; read as None, window_cap fell back to the default without a word
    from bayesprune.config import TrainConfig, evidence_window

    parse = _script("robustness_matrix").parse_overrides
    overrides = parse(["window_cap=none", "warmup_tolerance=none", "lr=0.01", "release=together"])
    assert overrides == {"window_cap": "none", "warmup_tolerance": None, "lr": 0.01,
                         "release": "together"}  # fmt: skip
    config = TrainConfig(window_cap=overrides["window_cap"])
    assert evidence_window(config, 500) == config.theta_window > 500


def test_short_robustness_matrix_does_not_collapse(tmp_path):
    # the short version of benchmarks/robustness_matrix.py: small teacher subsets, where
    # the rule before issue 9 cut every layer to one unit at chance level
    result = _matrix(tmp_path)
    assert result["checks"]["collapsed"] == []
    # the defaults the runs had (a file without them is read as written before them)
    assert (result["merge_groups_default"], result["group_cap_default"]) == ("auto", "excess")
    for cell in result["cells"]:
        pruned, dense = cell["bayesprune"], cell["dense"]
        assert pruned["status"] == "finished" and min(pruned["widths"]) > 5, cell["case"]
        assert pruned["test_error"] <= dense["test_error"] + 0.05, cell["case"]


def test_short_robustness_matrix_sees_the_old_collapse(tmp_path):
    # the same cells under the rule before issue 9 (θ free from the first step, all layers at
    # once, no transit limit, θ on the sign of its evidence, a fixed τ, patience 2): the check
    # must catch its collapse
    result = _matrix(tmp_path, "--no-dense", "--set", "warmup_tolerance=none", "temperature=0.03",
                     "release=together", "theta_transit=1", "theta_confidence=0",
                     "patience=2")  # fmt: skip
    assert sorted(result["checks"]["collapsed"]) == ["teacher-n1k/0", "teacher-n3k/0"]


def test_gpu_script_records_each_part_and_its_failure(tmp_path, capsys):
    script = _script("gpu")
    from bayesprune.data import Dataset

    grey = Dataset("tiny", torch.rand(6, 1, 28, 28), torch.arange(6), torch.rand(2, 1, 28, 28),
                   torch.arange(2), 10)  # fmt: skip
    wide = script.fmnist32(grey)
    assert wide.in_shape == (3, 32, 32) and wide.augment(wide.x_train).shape == (6, 3, 32, 32)
    assert torch.equal(wide.x_train[:, 1, 2:30, 2:30], grey.x_train[:, 0])
    out = tmp_path / "gpu.json"
    # no data there: the Fashion-MNIST part fails, is recorded, and the script goes on
    script.main(["--device", "cpu", "--parts", "cifar10,lenet5_fmnist", "--out", str(out),
                 "--data-dir", str(tmp_path / "nothing")])  # fmt: skip
    parts = json.loads(out.read_text())["parts"]
    assert parts["cifar10"]["found"] is False
    assert parts["lenet5_fmnist"]["error"].startswith("DataError")
    # parts run in the order given (the one that matters most first, on a short lease)
    script.main(["--device", "cpu", "--parts", "lenet5_fmnist,cifar10", "--out", str(out),
                 "--data-dir", str(tmp_path / "nothing")])  # fmt: skip
    assert list(json.loads(out.read_text())["parts"]) == ["lenet5_fmnist", "cifar10"]
    with pytest.raises(SystemExit) as stop:  # a misspelt part is refused before anything runs
        script.main(["--device", "cpu", "--parts", "vgg16", "--out", str(tmp_path / "x.json")])
    assert stop.value.code == 2 and not (tmp_path / "x.json").exists()
    assert "unknown part 'vgg16'" in capsys.readouterr().err
    (tmp_path / "used" / "old").mkdir(parents=True)  # a folder left by an earlier call
    (tmp_path / "afile").write_text("")
    for used in ("used", "afile"):
        with pytest.raises(SystemExit) as stop:
            script.main(["--device", "cpu", "--parts", "cifar10", "--out",
                         str(tmp_path / "x.json"), "--run-dir", str(tmp_path / used)])  # fmt: skip
        assert stop.value.code == 2 and not (tmp_path / "x.json").exists()
        assert "is not an empty folder" in capsys.readouterr().err


def test_gpu_script_writes_where_the_results_variable_says(tmp_path, monkeypatch):
    """$BAYESPRUNE_RESULTS_DIR set and no --out: the JSON goes there, and the committed
    results/gpu.json and the README are left alone (a CPU smoke run wrote over both)."""
    script = _script("gpu")
    import common

    committed = common.RESULTS / "gpu.json"
    before = committed.read_bytes()
    rendered = []
    monkeypatch.setattr(script, "render_readme", lambda: rendered.append(True))
    monkeypatch.setenv(common.OUTPUT_VARIABLE, str(tmp_path))
    script.main(["--device", "cpu", "--parts", "cifar10", "--data-dir", str(tmp_path / "none")])
    assert json.loads((tmp_path / "gpu.json").read_text())["parts"]["cifar10"]["found"] is False
    assert committed.read_bytes() == before and not rendered


def test_gpu_script_times_and_profiles_each_layout_on_a_network_in_that_layout():
    script = _script("gpu")
    from bayesprune.models.network import lenet5

    data = script.random_data((1, 28, 28), 4, batches=4)
    for fmt, last in (("contiguous", False), ("channels-last", True)):
        runners = script.step_runners(lambda: lenet5((1, 28, 28), 10), data, fmt, "cpu", 4)
        for kind, run in runners.items():
            run()
            weight = run.net.layers.conv2.weight  # (conv1, one channel in, is both)
            assert weight.is_contiguous(memory_format=torch.channels_last) is last, (fmt, kind)
            assert weight.is_contiguous() is not last, (fmt, kind)
    profile = script.step_profile(lambda: lenet5((1, 28, 28), 10), data, "cpu", 4, steps=2)
    for kind in ("plain", "step"):
        ops = {op["op"] for op in profile[kind]["host_ops"]}
        assert profile[kind]["kernels_per_step"] == 0 and profile[kind]["wall_ms"] > 0
        assert any("conv" in op for op in ops) or "aten::mm" in ops, ops


def test_channel_blocks_times_each_mode_on_its_own_copy_of_the_network():
    """A channels-last runner must not turn the network the other modes time (``.to`` changes
    a module in place: the first version timed channels-last in every column)."""
    script = _script("channel_blocks")
    net, x = script.lenet5(4, 6, 8), torch.randn(2, 1, 28, 28)
    run = script.runner(net, x, "channels_last")
    run()
    assert net[3].weight.is_contiguous() and not net[3].weight.is_contiguous(
        memory_format=torch.channels_last
    )


def test_memory_format_times_each_layout_in_its_own_layout():
    """benchmarks/memory_format.py: the plain step and the trainer of each column are stored in
    that column's layout (plain_step follows ``memory_format``, as the dense twin does), and
    the table renders."""
    script = _script("memory_format")
    from common import plain_step, render_memory_format

    from bayesprune.models import GatedNet
    from bayesprune.models.network import layout

    def make_net():
        return GatedNet((2, 8, 8), [("conv", 4, 3, 1), ("pool",), ("fc", 6)], 10)

    data = script.random_data((2, 8, 8), 4)
    x, y = data.x_train[:4], data.y_train[:4]
    for memory_format, expected in (("channels-last", torch.channels_last),
                                    ("contiguous", torch.contiguous_format)):  # fmt: skip
        net = make_net()
        plain_step(net, x, y, 1e-3, memory_format=memory_format)()
        assert layout(net.layers["conv1"].weight) == expected
    row = script.measure(make_net, data, blocks=1, steps=1)
    assert row["widths"] == [4, 6] and row["step_speedup"] > 0 and row["plain_speedup"] > 0
    result = {"batch_size": 4, "threads": 1, "torch": "t", "processor": "p", "commit": "c",
              **{name: {**row, "data": "random"} for name in ("lenet5", "lenet5_pruned",
                                                              "vgg_small")}}  # fmt: skip
    assert sum(line.startswith("| lenet5 |") for line in render_memory_format(result)) == 1


def test_teacher_widths_script_runs_and_tabulates_each_kind():
    """benchmarks/teacher_widths.py: one dense and one bayesprune run (1 epoch, a fixed τ), and
    the table of benchmarks/README.md groups them by kind, start, τ and epochs."""
    script = _script("teacher_widths")
    from common import render_teacher_widths  # on sys.path: the script puts its folder there

    dense = script.run("dense", (8, 4), 1, 0, None)
    pruned = script.run("bayesprune", (8, 4), 1, 0, 1.0)
    assert dense["widths"] == [8, 4] and dense["test_error"] < 0.5  # the majority class: 0.63
    assert pruned["temperature"] == 1.0 and pruned["status"] == "finished"
    assert all(w <= s for w, s in zip(pruned["widths"], [8, 4], strict=True))
    table = render_teacher_widths({"runs": [dense, pruned], "seeds": [0], "commit": "test"})
    rows = [line for line in table if line.startswith(("| dense", "| bayesprune"))]
    assert rows[0].startswith("| dense | 8-4 |  | 1 | 8-4 |")
    assert rows[1].startswith("| bayesprune | 8-4 | 1.0 | 1 | ")


def test_evidence_optimism_measures_every_kept_unit():
    """benchmarks/evidence_optimism.py on the teacher: one entry per kept unit, the training
    value is what switching the unit off costs on the training examples, and the table shows
    one row per layer."""
    script = _script("evidence_optimism")
    from common import render_evidence_optimism

    run = script.measure(2_000, 0, 3, dataset="teacher", widths=(16, 8))
    assert [len(run["layers"][n]) for n in ("fc1", "fc2")] == run["widths"]
    units = [u for layer in run["layers"].values() for u in layer]
    assert all(u["price"] > 0 for u in units)  # τ KL_s > 0 for every kept unit
    assert all(u["tic"] > 0 for u in units)  # tr(H⁻¹J) of positive definite matrices
    # effective parameters: between 0 and the unit's weights (fan-in + 1, plus what it feeds)
    feeds = {"fc1": 4 + 1 + 8, "fc2": 16 + 1 + 3}  # 4 inputs, 3 classes
    for name, layer in run["layers"].items():
        assert all(0 < u["dof"] * 2_000 < feeds[name] for u in layer)
        assert all(u["dof"] <= u["dof_tempered"] for u in layer)  # a weaker prior fits more
    assert run["removals"]["none"]["removed"] == [0, 0]
    assert any(u["value_train"] > 0 for u in units)  # the network uses its units
    run["digest"] = script.digest(run)
    assert run["digest"]["fc1"]["units"] == run["widths"][0]
    assert run["digest"]["fc2"]["dof_kept"] <= run["widths"][1]
    table = render_evidence_optimism({"commit": "test", "runs": [run]})
    assert sum(line.startswith("| 2000 | 0 |") for line in table) == 2


def test_kept_widths_trains_dense_networks_of_the_kept_widths(tmp_path):
    """benchmarks/kept_widths.py: for a matrix cell it trains the full dense network (the
    result has none) and one of the kept widths with the epochs bayesprune ran, and the table
    splits the gap into width and pruning parts that add up to it."""
    script = _script("kept_widths")
    from common import render_kept_widths

    source = tmp_path / "matrix.json"
    cell = {"epochs": 1, "widths": [8, 4], "test_error": 0.25}
    source.write_text(json.dumps({"commit": "x", "cells": [
        {"case": "teacher-n1k", "seed": 0, "bayesprune": cell},
        {"case": "lenet5-n10k", "seed": 0, "bayesprune": cell},  # not an MLP: skipped
    ]}))  # fmt: skip
    result = script.main(["--from", str(source), "--results-dir", str(tmp_path), "--jobs", "1"])
    (row,) = result["kept_widths"]
    assert (row["case"], row["epochs"], row["widths"]) == ("teacher-n1k", 1, [8, 4])
    assert 0 < row["dense"] < 1 and 0 < row["dense_kept"] < 1
    assert row["dense"] != row["dense_kept"]  # two different networks were trained
    table = render_kept_widths("kept", result)
    cells = table[-2].split("|")
    gap, width, pruning = (float(c) for c in cells[8:11])
    assert abs(gap - (width + pruning)) < 0.011


def test_the_dense_runs_follow_a_runs_overrides_of_the_subset_and_the_recipe(tmp_path):
    """A helper's review: with ``--set train_subset=N`` the matrix trained bayesprune on N
    examples and dense on the cell's own subset (a gap between runs on different data), and
    kept_widths trained its dense networks with the cell's learning rate where the run had
    ``--set lr=…`` (a width part for a network kept whole). Both now follow the overrides."""
    matrix = _matrix_script()
    script = _script("kept_widths")
    matrix.main(["--cells", "teacher-n1k", "--seeds", "0", "--jobs", "1", "--set", "epochs=1",
                 "--set", "train_subset=400", "--results-dir", str(tmp_path)])  # fmt: skip
    cell = json.loads((tmp_path / "robustness_matrix.json").read_text())["cells"][0]
    data = matrix.cell_data("teacher-n1k")
    on_400 = matrix.dense_summary("teacher-n1k", 0, data, 1, 100, 1e-3, train_subset=400)
    on_1000 = matrix.dense_summary("teacher-n1k", 0, data, 1, 100, 1e-3)  # the cell's own
    assert cell["dense"]["test_error"] == on_400["test_error"] != on_1000["test_error"]
    # a network kept whole (its starting widths): dense at the kept widths is dense, when the
    # recipe is the run's (lr 3e-4 here)
    source = tmp_path / "matrix.json"
    kept = {"epochs": 1, "widths": [300, 100], "test_error": 0.25}
    source.write_text(json.dumps({"commit": "x", "cells": [
        {"case": "teacher-n1k", "seed": 0, "overrides": {"epochs": 1, "lr": 3e-4},
         "bayesprune": kept}]}))  # fmt: skip
    result = script.main(["--from", str(source), "--results-dir", str(tmp_path), "--jobs", "1"])
    (row,) = result["kept_widths"]
    assert row["dense_kept"] == row["dense"]
    at_1e3 = matrix.dense_summary("teacher-n1k", 0, data, 1, 100, 1e-3)["test_error"]
    assert row["dense"] != at_1e3  # trained at the run's 3e-4, not the cell's 1e-3


def test_kept_widths_refit_reruns_the_recorded_run_and_trains_it_on(tmp_path):
    """--refit re-runs a recorded bayesprune run (refusing one it does not reproduce) and
    trains its final network on for one evidence window: a network of the same widths with
    another error."""
    script = _script("kept_widths")
    matrix = _matrix_script()
    matrix.main(["--cells", "teacher-n1k", "--seeds", "0", "--jobs", "1", "--no-dense",
                 "--set", "epochs=2", "--results-dir", str(tmp_path)])  # fmt: skip
    source = tmp_path / "robustness_matrix.json"
    recorded = json.loads(source.read_text())["cells"][0]["bayesprune"]
    result = script.main(["--from", str(source), "--results-dir", str(tmp_path), "--jobs", "1",
                          "--refit"])  # fmt: skip
    (row,) = result["kept_widths"]
    assert row["widths"] == recorded["widths"] and row["bayesprune"] == recorded["test_error"]
    assert 0 < row["refit"] < 1 and row["refit"] != row["bayesprune"]
    tampered = json.loads(source.read_text())
    tampered["cells"][0]["bayesprune"]["test_error"] += 0.01
    source.write_text(json.dumps(tampered))
    with pytest.raises(SystemExit, match="not the recorded run"):
        script.main(["--from", str(source), "--results-dir", str(tmp_path), "--jobs", "1",
                     "--refit"])  # fmt: skip


def test_rgb32_cells_are_cifar_shaped_and_the_same_in_every_run():
    """The CIFAR-shaped cells (3×32×32 inputs from Fashion-MNIST, a colour per image and pixel
    noise) draw the same images every time, standardised, with the labels untouched."""
    from bayesprune.data import Dataset

    matrix = _matrix_script()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (40,), generator=gen)
    data = Dataset("tiny", x[:30], y[:30], x[30:], y[30:], 10)
    a, b = matrix.rgb32(data, 0.5), matrix.rgb32(data, 0.5)
    assert a.x_train.shape == (30, 3, 32, 32) and a.x_test.shape == (10, 3, 32, 32)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, data.y_train)
    assert abs(float(a.x_train.mean())) < 1e-5 and abs(float(a.x_train.std()) - 1) < 1e-4
    border = matrix.rgb32(data, 0.0).x_train[:, :, :2]  # without noise the frame is one value
    assert torch.equal(border, torch.full_like(border, float(border.flatten()[0])))
    assert not torch.equal(a.x_train[:, :, :2], torch.full_like(border, float(border[0, 0, 0, 0])))


def test_teacher_cells_build_the_teacher_they_name():
    """A cell's ``"teacher": (inputs, widths)`` makes the embedded data's construction with
    that teacher (its widths recorded as the known answer), not the embedded 4-input 10-5 one;
    the cells without it keep the embedded data."""
    from bayesprune.data import make_teacher

    matrix = _matrix_script()
    data = matrix.cell_data("out-teacher-in16-t40-20")
    assert data.x_train.shape == (20000, 16) and data.meta["teacher_widths"] == [40, 20]
    assert torch.equal(data.y_train, make_teacher(in_features=16, widths=(40, 20)).y_train)
    small = matrix.cell_data("out-teacher-t5-3")
    assert small.x_train.shape[1] == 4 and small.meta["teacher_widths"] == [5, 3]
    embedded = matrix.cell_data("teacher-300-100")
    assert embedded.meta["teacher_widths"] == [10, 5]
    assert torch.equal(small.y_train, make_teacher(widths=(5, 3)).y_train)
    assert not torch.equal(small.y_train, embedded.y_train)


def _tradeoff_script():
    return _script("tradeoff")


@pytest.mark.parametrize("arch", ["mlp", "lenet5"])
def test_magnitude_baseline_keeps_the_largest_groups(arch):
    """The train-prune-fine-tune baseline of benchmarks/tradeoff.py cuts each layer to the units
    whose group (incoming weights and bias, outgoing weights) has the largest L2 norm. Units
    silenced beforehand are the ones cut, so the cut network computes what the full one did."""
    from bayesprune.models.network import build_network

    script = _tradeoff_script()
    torch.manual_seed(0)
    if arch == "mlp":
        net, shape = build_network("mlp", (1, 6, 6), 3, (12, 8)), (1, 6, 6)
    else:
        net, shape = build_network("lenet5", (1, 28, 28), 3, width_mult=0.2), (1, 28, 28)
    with torch.no_grad():
        net.layers["out"].weight.normal_()  # the classifier starts at 0: make outputs differ
    x = torch.randn(5, *shape)
    dead = {}
    for name in net.gated:
        width = net.width(name)
        dead[name] = list(range(1, width, 3))
        for unit in dead[name]:
            net.silence_(name, unit)
            nxt = net.layers[net.next_layer(name)]
            with torch.no_grad():
                if nxt.weight.dim() > 2:
                    nxt.weight[:, unit] = 0
                else:
                    nxt.weight[:, net.input_columns(net.next_layer(name), [unit])] = 0
    before = net.eval()(x)
    widths = [net.width(n) - len(dead[n]) for n in net.gated]
    norms = {n: script.group_norms(net, n) for n in net.gated}
    for name in net.gated:
        assert bool((norms[name][dead[name]] == 0).all())
    script.magnitude_pruned(net, widths)
    assert net.widths == widths
    torch.testing.assert_close(net(x), before)


def test_tradeoff_script_sweeps_the_price_and_trains_both_baselines(tmp_path):
    """benchmarks/tradeoff.py: one bayesprune run per price, and per run a fresh dense network
    and a magnitude-pruned one of exactly the widths it kept; the table and plot are written."""
    script = _tradeoff_script()
    from common import render_tradeoff

    result = script.main(["--case", "teacher-n1k", "--scales", "1", "4", "--seeds", "0",
                          "--jobs", "1", "--results-dir", str(tmp_path)])  # fmt: skip
    assert [row["scale"] for row in result["rows"]] == [1.0, 4.0]
    first, second = result["rows"]
    assert second["temperature"] == pytest.approx(4 * first["temperature"])
    (baseline,) = result["baselines"]
    for row, kept in zip(result["rows"], baseline["kept"], strict=True):
        assert kept["widths"] == row["widths"]
        assert kept["dense_kept"]["widths"] == kept["magnitude"]["widths"] == row["widths"]
        assert 0 < row["dense_kept_error"] < 1 and 0 < row["magnitude_error"] < 1
    assert baseline["dense"]["widths"] == [300, 100]
    assert (tmp_path / "tradeoff_teacher-n1k.png").stat().st_size > 0
    table = render_tradeoff("t", result)
    assert sum(line.startswith("| 4 |") for line in table) == 2  # a run row and a means row


def test_profile_value_finds_a_duplicate_below_its_price_and_leaves_the_network_alone():
    """benchmarks/profile_value.py measures every unit's merge move without taking it: an exact
    copy of another unit (the read-out split between them) costs nothing once the other takes
    over, so it is below its price; the network is the same afterwards."""
    script = _script("profile_value")
    from bayesprune.config import TrainConfig
    from bayesprune.data import make_teacher
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models import GatedMLP

    torch.manual_seed(0)
    data = make_teacher(num_train=2000, num_test=100)
    trainer = Trainer(GatedMLP(4, (16, 8), 3), data, TrainConfig(epochs=1))
    trainer.fit(progress=False)
    net = trainer.net
    with torch.no_grad():  # fc2 unit 1 := unit 0, the read-out split between them
        fc2, out = net.layers["fc2"], net.layers["out"]
        fc2.weight[1], fc2.bias[1] = fc2.weight[0], fc2.bias[0]
        out.weight[:, 0] = out.weight[:, 1] = (out.weight[:, 0] + out.weight[:, 1]) / 2
    before = {k: v.clone() for k, v in net.state_dict().items()}
    order = torch.randperm(2000, generator=torch.Generator().manual_seed(0))
    net.eval()
    with torch.no_grad():
        values = script.layer_values(trainer, "fc2", order[:1000], order[1000:])
    assert values["units"] == net.width("fc2") == 8
    assert values["price_median"] > 0
    copy = next(u for u in values["per_unit"] if u["unit"] == 1)
    # the others rebuild the copy exactly: no example's loss changes, and it saves its price
    assert abs(copy["cost"]) < 1e-6 and copy["sd"] < 1e-5 and copy["price"] > 0
    assert 1 <= values["accepted_30000"] <= values["lower_F"]
    assert values["accepted_2048"] <= values["lower_F"]
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_joint_value_switches_off_the_units_it_names_and_only_those():
    """benchmarks/joint_value.py: a unit that feeds nothing costs nothing alone; switching off
    one unit "together" is its own cost; nothing switched off costs nothing; the network and the
    gates it was given are left as they were; a unit's live weights follow (4c)."""
    from bayesprune.models.network import build_network

    script = _script("joint_value")
    torch.manual_seed(0)
    net = build_network("mlp", (4,), 3, (5, 4))
    with torch.no_grad():
        net.layers["out"].weight.normal_()  # the classifier starts at zero (docs §2)
        net.layers["fc2"].weight[:, 2] = 0.0  # fc1's unit 2 feeds nothing
    x, y = torch.randn(300, 4), torch.randint(0, 3, (300,))
    gates = {n: torch.ones(net.width(n)) for n in net.gated}
    before = [p.detach().clone() for p in net.parameters()]
    full, own, joint = script.off_costs(net, gates, "fc1", [1], x, y, chunk=64)
    assert own[2] == 0.0 and min(abs(c) for i, c in enumerate(own) if i != 2) > 0.0
    assert joint == pytest.approx(own[1], abs=1e-6)
    assert script.off_costs(net, gates, "fc1", [], x, y)[2] == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        expected = float(torch.nn.functional.cross_entropy(net(x), y))
    assert full == pytest.approx(expected, rel=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    assert all(bool((g == 1.0).all()) for g in gates.values())
    assert script.unit_weights(net, "fc1", live=3) == 4 + 1 + 3


def test_a_width_sweep_prices_each_run_and_records_its_settings(monkeypatch):
    """run_sweep (both width sweeps): objective = data term + price × gated weights, per run."""
    sweep = _script("second_layer_widths")
    written = {}
    monkeypatch.setattr(sweep, "write", lambda name, result: written.update({name: result}))

    def fake(width, seed):
        return {"widths": [width], "seed": seed, "train_data_term": 0.5, "gated_weights": width}

    result = sweep.run_sweep("probe", fake, [(10, 0), (30, 1)], 1, 0.01, epochs=3)
    assert [r["objective"] for r in result["runs"]] == pytest.approx([0.6, 0.8])
    assert written["probe"] is result and result["epochs"] == 3 and result["price"] == 0.01


def _fake_images(monkeypatch, seed: int) -> None:
    """``load_dataset`` returns 200 random 28×28 training images (50 test) of 10 classes."""
    import bayesprune.data
    from bayesprune.data import Dataset

    gen = torch.Generator().manual_seed(seed)
    images = Dataset("fake", torch.randn(200, 1, 28, 28, generator=gen),
                     torch.randint(0, 10, (200,), generator=gen),
                     torch.randn(50, 1, 28, 28, generator=gen),
                     torch.randint(0, 10, (50,), generator=gen), 10)  # fmt: skip
    monkeypatch.setattr(bayesprune.data, "load_dataset", lambda name: images)


def test_width_sweeps_count_the_live_weights_a_width_pays_for(monkeypatch):
    """benchmarks/second_layer_widths.py and lenet5_widths.py price a dense network at the
    weights of its gated layers (every weight and bias but the output layer's, Eq. (4c)); the
    data term is the mean cross-entropy over the training set."""
    sweep = _script("second_layer_widths")
    run = sweep.measure(8, 4, 0, 1, None, 1e-3, "teacher")  # 4 inputs, 3 classes
    assert run["gated_weights"] == 8 * (4 + 1) + 4 * (8 + 1)
    assert 0.0 < run["train_data_term"] < 2.0 and run["test_error"] < 0.5  # majority: 0.63

    _fake_images(monkeypatch, seed=0)
    run = _script("lenet5_widths").measure((3, 4, 6), 0, 1, None)
    # conv1 3 × (25 + 1), conv2 4 × (3·25 + 1), fc1 6 × (4·4·4 + 1): the output layer is free
    assert run["gated_weights"] == 3 * 26 + 4 * 76 + 6 * 65
    assert run["widths"] == [3, 4, 6] and run["train_data_term"] > 0.0


def test_a_width_curve_measures_the_network_after_each_named_step_and_leaves_training_alone(
    monkeypatch,
):
    """lenet5_widths.py --at: the data term after the last step is the final one, and measuring
    on the way changes nothing of the training (baseline.train_dense's monitor)."""
    _fake_images(monkeypatch, seed=1)
    script = _script("lenet5_widths")
    plain = script.measure((3, 4, 6), 0, 2, None)  # 2 epochs of 2 steps
    curve = script.measure((3, 4, 6), 0, 2, None, (1, 4))
    assert [c["step"] for c in curve["curve"]] == [1, 4]
    assert curve["curve"][1]["train_data_term"] == pytest.approx(plain["train_data_term"])
    assert curve["curve"][0]["train_data_term"] != pytest.approx(plain["train_data_term"])
    assert curve["test_error"] == plain["test_error"] and "curve" not in plain


def test_survivors_unit_values_silence_one_unit_at_a_time():
    # benchmarks/survivors.py shifts the logits by −h_u·W[:, u] instead of rerunning the
    # read-out: the same as setting the unit's output to 0
    import torch.nn.functional as F

    script = _script("survivors")
    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU())
    tail = torch.nn.Linear(6, 3)
    x, y = torch.randn(50, 4), torch.randint(0, 3, (50,))
    values = script.unit_values(head, tail, x, y)
    with torch.no_grad():
        base = F.cross_entropy(tail(head(x)), y)
        for u in range(6):
            h = head(x)
            h[:, u] = 0
            silenced = F.cross_entropy(tail(h), y) - base
            assert values[u].item() == pytest.approx(silenced.item(), abs=1e-6)


def test_survivors_run_reports_every_live_unit():
    script = _script("survivors")
    run = script.measure("mlp", (32, 16), None, 0, {"epochs": 2}, dataset="teacher")
    assert [row["live"] for row in run["layers"].values()] == run["widths"]
    last = run["last_hidden"]
    assert last["layer"] == "fc2" and last["units"] == run["widths"][-1]
    assert all(p > 0 for p in last["price"])
    # every layer's price, the last one's the same as the last hidden layer's table; the first
    # layer's units (5 inputs each, feeding 16) cost less than the second's (33 inputs)
    assert run["layers"]["fc2"]["price"] == last["price"]
    assert 0 < run["layers"]["fc1"]["price"][2] < run["layers"]["fc2"]["price"][0]
    # every price is positive, so a unit worth less than nothing is below its price
    assert last["negative_test"] <= last["below_price_test"]
    from common import render_survivors  # benchmarks/ is on the path once a script is loaded

    table = render_survivors("smoke", {"survivors": [run], "commit": "x", "cpu": "y"})
    assert sum(line.startswith("| mlp seed 0") for line in table) == 2


def test_survivors_first_layer_values_silence_a_hidden_unit_read_by_another_layer():
    import torch.nn.functional as F

    script = _script("survivors")
    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU())
    tail = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    with torch.no_grad():
        tail[0].weight[:, 2] = 0  # unit 2 feeds nothing: worth exactly nothing
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    values = script.layer_values(head, tail, x, y)
    assert values[2].item() == 0.0 and len(values) == 6
    with torch.no_grad():
        h = head(x)
        base = F.cross_entropy(tail(h), y)
        h[:, 4] = 0
        assert values[4].item() == pytest.approx((F.cross_entropy(tail(h), y) - base).item())


def test_survivors_first_layer_beside_the_last_hidden_one():
    script = _script("survivors")
    run = script.measure("mlp", (32, 16), None, 0, {"epochs": 2}, dataset="teacher", first=True)
    first = run["first_layer"]
    assert first["layer"] == "fc1" and first["units"] == run["widths"][0]
    assert run["last_hidden"]["layer"] == "fc2"  # the first layer's reading leaves it alone
    assert first["price"] == run["layers"]["fc1"]["price"]
    assert first["kept_below_price_train"] <= first["below_price_train"]
    assert -1 <= first["evidence_train_corr"] <= 1
    from common import render_survivors

    table = render_survivors("smoke", {"survivors": [run], "commit": "x", "cpu": "y"})
    assert sum(line.startswith("| mlp seed 0") for line in table) == 3


def _matrix_file(path, cells, commit="abc"):
    path.write_text(json.dumps({"commit": commit, "cells": cells}))
    return path


def _cell(case, seed, error, widths, dense=None, overrides=None, kept=0.25, status="finished"):
    cell = {
        "case": case,
        "seed": seed,
        "overrides": overrides or {},
        "bayesprune": {"test_error": error, "widths": widths, "status": status,
                       "weights_kept_fraction": kept},
    }  # fmt: skip
    if dense is not None:
        cell["dense"] = {"test_error": dense}
    return cell


def test_matrix_summary_pools_seeds_and_takes_dense_runs_from_other_files(tmp_path):
    script = _script("matrix_summary")
    first = _matrix_file(tmp_path / "a.json", [
        _cell("mlp-n3k", 0, 0.20, [30, 70], dense=0.18),
        _cell("mlp-n10k", 0, 0.15, [60, 90], dense=0.146),
    ])  # fmt: skip
    more = _matrix_file(tmp_path / "b.json", [
        _cell("mlp-n3k", 0, 0.20, [30, 70]),  # the same run again: taken once
        _cell("mlp-n3k", 1, 0.19, [34, 76]),  # no dense run of its own
    ])  # fmt: skip
    dense = _matrix_file(tmp_path / "c.json", [
        _cell("mlp-n3k", 1, 0.5, [1, 1], dense=0.18),
        _cell("mlp-n3k", 0, 0.5, [1, 1], dense=0.99),  # a run's own dense run comes first
    ])  # fmt: skip
    result = script.main(["--from", str(first), str(more), "--dense-from", str(dense),
                          "--name", "s", "--results-dir", str(tmp_path)])  # fmt: skip
    row = result["matrix_summary"]["mlp-n3k"]
    assert row["seeds"] == [0, 1] and row["gap_seeds"] == [0, 1]
    assert row["gaps"] == pytest.approx([2.0, 1.0])
    assert row["gap_mean"] == pytest.approx(1.5) and row["gap_se"] == pytest.approx(0.5)
    assert row["gap_target"] == 1.0 and row["gap_met"] is False
    assert row["widths_mean"] == [32, 73] and row["widths_min"] == [30, 70]
    ten = result["matrix_summary"]["mlp-n10k"]
    assert ten["gap_target"] == 0.5 and ten["gap_met"] is True and ten["gap_se"] is None
    assert [s.get("dense_only", False) for s in result["sources"]] == [False, False, True]
    common = _script("common")
    saved = json.loads((tmp_path / "s.json").read_text())
    table = "\n".join(common.render_matrix_summary("s", saved))
    assert "| mlp-n3k | 2 (0-1) | +1.50 ± 0.50 (2) | 1.0 (missed) |" in table


def test_matrix_summary_pairs_dense_runs_across_overrides_the_dense_recipe_ignores(tmp_path):
    # --set evidence=held-out leaves the dense run as it is; --set epochs=20 does not, nor an
    # optimiser other than the dense run's (at the same lr)
    script = _script("matrix_summary")
    dense = _matrix_file(tmp_path / "d.json", [_cell("mlp-n3k", 0, 0.5, [1, 1], dense=0.18)])
    for overrides, gaps in (({"evidence": "held-out"}, [2.0]), ({"epochs": 20}, []),
                            ({"optimizer": "sgd", "lr": 1e-3}, []), ({"momentum": 0.5}, [])):
        runs = _matrix_file(
            tmp_path / "r.json", [_cell("mlp-n3k", 0, 0.20, [30, 70], overrides=overrides)]
        )
        result = script.main(["--from", str(runs), "--dense-from", str(dense),
                              "--name", "s", "--results-dir", str(tmp_path)])  # fmt: skip
        assert result["matrix_summary"]["mlp-n3k"].get("gaps", []) == pytest.approx(gaps), overrides


def test_matrix_summary_refuses_to_pool_different_runs_of_one_cell(tmp_path):
    script = _script("matrix_summary")
    first = _matrix_file(tmp_path / "a.json", [_cell("mlp-n3k", 0, 0.20, [30, 70], dense=0.18)])
    other = _matrix_file(tmp_path / "b.json", [_cell("mlp-n3k", 0, 0.21, [30, 70])])
    with pytest.raises(SystemExit, match="twice with different results"):
        script.pool([first, other])
    setting = _matrix_file(tmp_path / "c.json",
                           [_cell("mlp-n3k", 1, 0.2, [30, 70], overrides={"epochs": 20})])
    with pytest.raises(SystemExit, match="overrides"):
        script.pool([first, setting])
    # a file written since group moves became the default (auto) against one from before (off)
    since = tmp_path / "d.json"
    since.write_text(json.dumps({"commit": "new", "merge_groups_default": "auto",
                                 "cells": [_cell("mlp-n3k", 1, 0.2, [30, 70])]}))  # fmt: skip
    with pytest.raises(SystemExit, match="overrides"):
        script.pool([first, since])
    asked = _matrix_file(tmp_path / "e.json",  # the same rule, asked for before it was default
                         [_cell("mlp-n3k", 2, 0.2, [30, 70], overrides={"merge_groups": "auto"})])
    assert len(script.pool([since, asked])[0]) == 2
    # a file written since Eq. (14x) capped auto's groups against one from before (half)
    capped = tmp_path / "f.json"
    capped.write_text(json.dumps({"commit": "newer", "merge_groups_default": "auto",
                                  "group_cap_default": "excess",
                                  "cells": [_cell("mlp-n3k", 3, 0.2, [30, 70])]}))  # fmt: skip
    with pytest.raises(SystemExit, match="overrides"):
        script.pool([since, capped])
    half = tmp_path / "g.json"  # the rule before, asked for since
    half.write_text(json.dumps({"commit": "newer", "merge_groups_default": "auto",
                                "group_cap_default": "excess",
                                "cells": [_cell("mlp-n3k", 4, 0.2, [30, 70],
                                                overrides={"group_cap": "half"})]}))  # fmt: skip
    assert len(script.pool([since, half, asked])[0]) == 3


def test_group_takeover_measures_the_test_of_each_group_on_the_network_as_it_is():
    """benchmarks/group_takeover.py: a first layer of four units and a copy of each; the group
    of four that backward elimination picks holds one of each pair, so its take-over is exact
    (no data cost) and saves four units' price; each bound is the sum of its parts, and the
    network is left as it was."""
    from bayesprune.data import make_teacher
    from bayesprune.guides import GateGuide
    from bayesprune.inference import update_slab_variances
    from bayesprune.models import GatedMLP, HyperPrior

    script = _script("group_takeover")
    data = make_teacher(num_train=2000, num_test=100)
    torch.manual_seed(0)
    net = GatedMLP(4, (8, 4), 3)
    fc1, fc2 = net.layers["fc1"], net.layers["fc2"]
    with torch.no_grad():
        torch.nn.init.normal_(net.layers["out"].weight, std=0.5)  # not the zero read-out
        torch.nn.init.uniform_(fc1.bias, 0.1, 0.5)
        for unit in range(4):  # unit + 4 copies unit; the consumer reads half of each
            fc1.weight[unit + 4], fc1.bias[unit + 4] = fc1.weight[unit], fc1.bias[unit]
            fc2.weight[:, unit + 4] = fc2.weight[:, unit] = fc2.weight[:, unit] / 2
    hyper = HyperPrior(temperature=0.02)
    guide = GateGuide(net, hyper)
    update_slab_variances(guide, hyper)
    state = [p.detach().clone() for p in net.parameters()]
    rows = script.takeover(guide, hyper, data, "fc1", held_out=1000, seed=0)
    assert [r["k"] for r in rows] == [1, 2, 4]
    group = rows[-1]
    assert abs(group["data_nats"]) < 0.05 and group["delta_prior"] < 0, group
    for r in rows:
        assert r["bound"] == pytest.approx(r["data_nats"] + r["noise_nats"] + r["delta_prior"])
    assert all(torch.equal(p, s) for p, s in zip(net.parameters(), state, strict=True))


def test_laplace_price_ignores_how_the_inputs_are_written_down():
    """benchmarks/laplace_price.py: the same network on its inputs copied twice (each copy
    scaled by 1/√2, the weights likewise, so the function is unchanged) plus constant-zero
    inputs has a larger shipped size term ½ n C (n = 49 against 17) and the same Laplace term."""
    import math

    from bayesprune.models.gated_model import HyperPrior
    from bayesprune.models.network import build_network

    script = _script("laplace_price")

    class Guide:
        def slab_var(self, name):
            return torch.tensor(0.01)

    torch.manual_seed(0)
    small = build_network("mlp", (16,), 3, (8, 4))
    with torch.no_grad():  # a read-out that reads the units (it starts at zero: δ = 0)
        small.layers["out"].weight.normal_()
    wide = build_network("mlp", (48,), 3, (8, 4))
    wide.load_state_dict(
        {k: v for k, v in small.state_dict().items() if "fc1.weight" not in k}, strict=False
    )
    w = small.layers["fc1"].weight.detach()
    with torch.no_grad():
        wide.layers["fc1"].weight.copy_(torch.cat([w, w, torch.zeros_like(w)], 1) / math.sqrt(2))
    x = torch.randn(300, 16)
    x_wide = torch.cat([x, x, torch.zeros_like(x)], 1) / math.sqrt(2)
    assert torch.allclose(small(x), wide(x_wide), atol=1e-5)
    hyper = HyperPrior(temperature=1e-4)  # N σ₁² E[δ²] λ / τ well above 1: the log regime
    a = script.unit_prices(small.eval(), Guide(), hyper, x, chunk=128)
    b = script.unit_prices(wide.eval(), Guide(), hyper, x_wide, chunk=128)
    assert b["shipped_size_term"] == pytest.approx(49 / 17 * a["shipped_size_term"])
    assert b["laplace_term"] == pytest.approx(a["laplace_term"], rel=1e-3)
    assert a["units"] == b["units"] == 8 and min(a["laplace_term"]) > 1


def test_laplace_price_of_a_convolution_ignores_a_copied_input_channel():
    """benchmarks/laplace_price.py on a convolution (curvature Kronecker-factored over
    positions): the same network on its input channel copied (each copy and its filters'
    slices scaled by 1/√2) plus a constant-zero channel has three times the shipped size term
    of the first layer's filters and the same Laplace term; with the posterior mode's gates a
    later layer counts only the live units' columns."""
    import math

    from bayesprune.models.gated_model import HyperPrior
    from bayesprune.models.network import GatedNet

    script = _script("laplace_price")

    class Guide:
        def slab_var(self, name):
            return torch.tensor(0.01)

    plan = [("conv", 4, 3, 1), ("pool",), ("conv", 5, 3, 0), ("fc", 6)]
    torch.manual_seed(0)
    small = GatedNet((1, 8, 8), plan, 3)
    with torch.no_grad():
        small.layers["out"].weight.normal_()
    wide = GatedNet((3, 8, 8), plan, 3)
    wide.load_state_dict(
        {k: v for k, v in small.state_dict().items() if k != "layers.conv1.weight"}, strict=False
    )
    w = small.layers["conv1"].weight.detach()
    with torch.no_grad():
        wide.layers["conv1"].weight.copy_(torch.cat([w, w, torch.zeros_like(w)], 1) / math.sqrt(2))
    x = torch.randn(200, 1, 8, 8)
    x_wide = torch.cat([x, x, torch.zeros_like(x)], 1) / math.sqrt(2)
    assert torch.allclose(small(x), wide(x_wide), atol=1e-5)
    hyper = HyperPrior(temperature=1e-4)
    a = script.unit_prices(small.eval(), Guide(), hyper, x, chunk=64, layer="conv1")
    b = script.unit_prices(wide.eval(), Guide(), hyper, x_wide, chunk=64, layer="conv1")
    assert b["shipped_size_term"] == pytest.approx(28 / 10 * a["shipped_size_term"])
    assert b["laplace_term"] == pytest.approx(a["laplace_term"], rel=1e-3)
    assert min(a["laplace_term"]) > 1
    gates = {name: torch.ones(small.width(name)) for name in small.gated}
    gates["conv1"][1] = 0.0  # conv2's filters read 3 live channels: 27 weights and a bias
    c = script.unit_prices(small, Guide(), hyper, x, chunk=64, layer="conv2", gates=gates)
    assert c["fan_in"] == 27 and c["units"] == 5
    assert c["shipped_size_term"] == pytest.approx(28 / 10 * a["shipped_size_term"])


def test_refit_value_prices_a_duplicate_unit_at_zero_once_its_consumer_rewires():
    """benchmarks/refit_value.py: a unit with an exact copy in its layer costs something when
    switched off with the consumer fixed, nothing when the consumer reads its reconstruction
    from the others (the copy); a unit without a copy is not free either way."""
    from bayesprune.models.network import build_network

    script = _script("refit_value")
    torch.manual_seed(0)
    net = build_network("mlp", (8,), 3, (6, 4)).eval()
    with torch.no_grad():
        net.layers["out"].weight.normal_(0, 3)
        for name in ("fc1", "fc2"):  # ReLUs mostly on; unit 1 a copy of unit 0, weight split
            net.layers[name].bias.fill_(0.5)
            layer, consumer = net.layers[name], net.layers[net.next_layer(name)]
            layer.weight[1], layer.bias[1] = layer.weight[0], layer.bias[0]
            consumer.weight[:, 0] *= 0.5
            consumer.weight[:, 1] = consumer.weight[:, 0]
    x = torch.randn(3000, 8)
    y = torch.multinomial(torch.softmax(net(x), -1), 1, generator=torch.Generator().manual_seed(1))
    y = y.squeeze(-1)
    gates = {name: torch.ones(net.width(name)) for name in net.gated}
    for name in net.gated:
        _, _, rows = script.layer_values(net, gates, name, x, y, x[:500], y[:500])
        assert min(rows["fixed"][:2]) > 3e-4  # either copy alone carries half the function
        assert max(abs(v) for v in rows["linear"][:2]) < 1e-6
        assert min(rows["linear"][2:]) > 3e-4


def test_every_benchmark_script_parses_its_command_line_before_it_runs():
    # `benchmarks/X.py --help` must print usage, not start a run that overwrites X's results
    # (pooling.py and training_cost.py did); a script parses arguments itself or through
    # common.fashion_mnist_main or cli_fuzz.fuzz_parser
    scripts = sorted(p for p in BENCHMARKS.glob("*.py") if p.name != "common.py")
    assert len(scripts) > 20
    helpers = ("ArgumentParser", "fashion_mnist_main(", "fuzz_parser(")
    silent = [p.name for p in scripts if not any(h in p.read_text() for h in helpers)]
    assert silent == []


def test_the_benchmarks_readme_is_what_the_results_files_make():
    """Every results file has a renderer (a file without one stops the whole README), and the
    committed tables are the ones its results make (nobody edited a number by hand or left a
    results file out)."""
    common = _script("common")
    assert common.readme_text() == (BENCHMARKS / "README.md").read_text()


def test_merge_power_logs_every_single_proposal_with_the_terms_of_its_test():
    """benchmarks/merge_power.py: on a teacher run that merges, the proposals it logs as
    accepted are the run's merge moves, with the price changes the trainer recorded, and the
    summary counts every logged proposal."""
    from bayesprune.config import TrainConfig
    from bayesprune.data import make_teacher
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models import GatedMLP

    script = _script("merge_power")
    torch.manual_seed(0)
    data = make_teacher(num_test=200)  # the demo's 20,000 training examples
    trainer = Trainer(GatedMLP(4, (64, 32), 3), data, TrainConfig(epochs=4, seed=0))
    log = script.record_proposals(trainer.merges)
    trainer.fit(progress=False)
    merges = [e for e in trainer.prune_events if e.get("merged")]
    accepted = [r for r in log if r["accepted"]]
    assert len(merges) > 0 and len(log) > len(accepted)  # moves were tested and some refused
    assert sum(e["removed"] for e in merges) == len(accepted)
    saved = -sum(r["saving"] for r in accepted)
    assert sum(e["delta_prior"] for e in merges) == pytest.approx(saved, rel=1e-6)
    summary = script.summarise(log)
    assert sum(s["proposals"] for s in summary.values()) == len(log)
    assert sum(s["accepted"] for s in summary.values()) == len(accepted)


def _summary_cell(widths, gap, seeds=2):
    return {"seeds": list(range(seeds)), "widths_mean": widths, "widths_min": widths,
            "widths_max": widths, "gap_mean": gap, "gap_se": 0.1}  # fmt: skip


def test_benchmark_scripts_refuse_bad_options_and_read_cells_without_dense_runs(
    tmp_path, capsys
):
    """A helper's review of the benchmark scripts: a matrix summary with a cell that has no
    dense run (a --no-dense file) put matrix_axes to a KeyError; --jobs 0, --set epochs=two,
    step_cost's unknown network and wide_starts' size 0 ended in tracebacks (the last inside
    a worker, after other runs); wide_starts recorded a size beyond the data as trained on; a
    run's table said "temperature None" for the τ(N) it used."""
    axes = _script("matrix_axes")
    import common  # (on the path the scripts put benchmarks/ on)

    cells = {"mlp-n60k": _summary_cell([100.0, 90.0], 0.2),
             "mlp-n10k": _summary_cell([60.0, 80.0], 0.7)}  # fmt: skip
    for key in ("gap_mean", "gap_se"):
        del cells["mlp-n60k"][key]  # as matrix_summary writes a cell with no dense run
    (tmp_path / "s.json").write_text(json.dumps({"matrix_summary": cells}))
    result = axes.main(["--from", str(tmp_path / "s.json"), "--results-dir", str(tmp_path)])
    assert [p["gap_met"] for p in result["matrix_axes"]["mlp"]["N"]["points"]] == [False, None]
    for script, argv, said in (
        ("robustness_matrix", ["--jobs", "0"], "--jobs: must be positive"),
        ("robustness_matrix", ["--set", "epochs=two"], "TrainConfig.epochs = 'two'"),
        ("step_cost", ["--networks", "lenet"], "unknown lenet"),
        ("wide_starts", ["--sizes", "1000", "0"], "--sizes: must be positive"),
        ("profile_step", ["--blocks", "0"], "--blocks: must be positive"),
        ("wide_starts", ["--dataset", "bogus"], "unknown dataset 'bogus'"),
        ("lenet5_widths", ["--epochs", "1", "--train-subset", "300", "--at", "2", "100"],
         "--at: steps from 1 to the runs' 3"),  # (a step never reached: the table's KeyError)
    ):  # fmt: skip
        with pytest.raises(SystemExit) as stop:
            _script(script).main(argv)
        assert stop.value.code == 2 and said in capsys.readouterr().err, script
    run = _script("wide_starts").run(10**6, 1, 0, False, "teacher", 1)
    assert run["size"] == 20_000  # what it trained on: all of the teacher's examples
    words = common.temperature_words({"temperature": None}, 0.0173)
    assert words == "temperature τ(N) of Eq. (13) = 0.0173"
    assert common.temperature_words({"temperature": 0.3}) == "temperature 0.3"


def test_matrix_axes_puts_each_cell_on_the_one_axis_it_changes(tmp_path):
    """benchmarks/matrix_axes.py: a cell that changes one of N, batch size or learning rate
    from the full-data recipe is a point of that axis, the recipe itself of all three, a cell
    that changes anything else of none; the cell with more seeds wins; the checks are the
    matrix's (CV over the axis, non-decreasing in N within 10%)."""
    script = _script("matrix_axes")
    first = {"matrix_summary": {
        "mlp-n60k": _summary_cell([100.0, 90.0], 0.2, seeds=16),
        "mlp-n10k": _summary_cell([60.0, 80.0], 0.7),
        "mlp-b256": _summary_cell([110.0, 90.0], 0.6),
        "out-mlp-n30k-b200-lr2e-3": _summary_cell([75.0, 85.0], 0.1),  # two settings: no axis
        "out-mlp-400-150": _summary_cell([100.0, 137.0], 0.3),  # another start: no axis
    }}  # fmt: skip
    second = {"matrix_summary": {
        "mlp-n10k": _summary_cell([50.0, 70.0], 0.4, seeds=4),  # more seeds: this one counts
        "out-mlp-n20k": _summary_cell([95.0, 80.0], 0.5),  # fc1 above 30k's: still in N order
        "mlp-n30k": _summary_cell([80.0, 88.0], 0.3),
        "mlp-lr3e-4": _summary_cell([120.0, 88.0], 0.6),
    }}  # fmt: skip
    paths = []
    for i, summary in enumerate((first, second)):
        paths.append(tmp_path / f"s{i}.json")
        paths[-1].write_text(json.dumps(summary))
    result = script.main(["--from", *map(str, paths), "--results-dir", str(tmp_path)])
    assert set(result["matrix_axes"]) == {"mlp"}  # no LeNet-5 cell here: no LeNet-5 panels
    axes = result["matrix_axes"]["mlp"]
    assert [p["case"] for p in axes["N"]["points"]] == [
        "mlp-n10k", "out-mlp-n20k", "mlp-n30k", "mlp-n60k"
    ]  # fmt: skip
    assert [p["case"] for p in axes["batch"]["points"]] == ["mlp-n60k", "mlp-b256"]
    assert [p["case"] for p in axes["lr"]["points"]] == ["mlp-lr3e-4", "mlp-n60k"]
    assert result["left_out"] == ["out-mlp-400-150", "out-mlp-n30k-b200-lr2e-3"]
    n10k = axes["N"]["points"][0]
    assert n10k["seeds"] == 4 and n10k["widths_mean"] == [50.0, 70.0] and n10k["gap_met"]
    assert axes["batch"]["width_cv"] == pytest.approx([5 / 105, 0.0])
    # 95 → 80 at 20k → 30k is a fall of more than 10%
    assert axes["N"]["non_decreasing"] is False
    assert (tmp_path / "matrix_axes.png").stat().st_size > 0
    assert (tmp_path / "matrix_axes.json").exists()
    # LeNet-5's cells go on LeNet-5's axes, against its own recipe, never on the MLP's
    second["matrix_summary"].update({
        "lenet5-n60k": _summary_cell([20.0, 35.0, 110.0], 0.3),
        "lenet5-n10k": _summary_cell([20.0, 44.0, 55.0], -0.4),
        "out-lenet5-b256": _summary_cell([20.0, 40.0, 120.0], 0.7),
        "out-lenet5-fc1-100": _summary_cell([20.0, 40.0, 60.0], 0.2),  # another start
    })  # fmt: skip
    paths[1].write_text(json.dumps(second))
    result = script.main(["--from", *map(str, paths), "--results-dir", str(tmp_path)])
    lenet5, mlp = result["matrix_axes"]["lenet5"], result["matrix_axes"]["mlp"]
    assert [p["case"] for p in lenet5["N"]["points"]] == ["lenet5-n10k", "lenet5-n60k"]
    assert [p["case"] for p in lenet5["batch"]["points"]] == ["lenet5-n60k", "out-lenet5-b256"]
    assert [p["case"] for p in lenet5["lr"]["points"]] == ["lenet5-n60k"]
    assert not lenet5["batch"]["points"][1]["gap_met"]
    assert [p["case"] for p in mlp["batch"]["points"]] == ["mlp-n60k", "mlp-b256"]
    assert "out-lenet5-fc1-100" in result["left_out"]


def test_cli_fuzz_calls_a_traceback_or_an_unknown_exit_a_defect(tmp_path):
    """benchmarks/cli_fuzz.py: exit 0, 2 and 3 are the program's answers; a traceback (even
    with exit 3), another exit code or a run past its time is a defect; the same seed draws
    the same command lines, which the CLI parses."""
    import random

    from bayesprune.cli import build_parser

    script = _script("cli_fuzz")
    assert script.verdict(0, "bayesprune: note: ...") == "finished"
    assert script.verdict(2, "bayesprune: error: --lr must be in (0, 1]") == "refused"
    assert script.verdict(3, "bayesprune: run collapsed: ...") == "collapsed"
    assert script.verdict(3, "Traceback (most recent call last):\n  ...") == "defect"
    assert script.verdict(1, "") == "defect"
    assert script.verdict("timeout", "") == "defect"
    draws = [[script.command(random.Random(7), tmp_path / "r") for _ in range(1)] for _ in "ab"]
    assert draws[0] == draws[1]
    rng = random.Random(3)
    for _ in range(30):  # every option the generator writes is one the CLI knows
        build_parser().parse_args(script.command(rng, tmp_path / "r"))
        then = script.after(rng, tmp_path / "r")
        assert [c[0] for c in then] == ["export", "inspect", "bench", "baseline"]
        for c in then:
            assert build_parser().parse_args(c).run_dir == str(tmp_path / "r")


def test_cli_fuzz_reads_what_baseline_says_of_a_collapsed_runs_twin():
    """benchmarks/cli_fuzz.py --twins: the line ``bayesprune baseline`` prints for a collapsed
    run (bayesprune.baseline.verdict's two wordings) is read as the twin learning or not, and
    an answer without that line as unknown."""
    from bayesprune.baseline import verdict

    script = _script("cli_fuzz")
    for learns in (True, False):
        dense = {"test_error": 0.2, "train_errors": [0.5, 0.1], "status": "finished"}
        if not learns:
            dense.update(status="collapsed", status_reason="training error 0.9 at epoch 2 ...")
        run = {"status": "collapsed", "architecture": "4-2-2", "initial_architecture": "4-8-4"}
        line = verdict({"run": run, "dense": dense})
        stderr = f"bayesprune: training the dense twin of R\nbayesprune: {line}\nbayesprune: done"
        read = script.twin(stderr, 0)
        assert read["learns"] is learns and read["line"] == f"bayesprune: {line}"
    failed = script.twin("bayesprune: error: run R did not train on these data: ...", 2)
    assert failed["learns"] is None and "did not train" in failed["line"]


def test_resume_fuzz_draws_stoppable_runs_and_compares_models_to_the_bit(tmp_path):
    """benchmarks/resume_fuzz.py: every drawn command line has an epoch checkpoint before its
    end (two epochs or more) and parses; two model files differing in one weight by one ulp,
    or in their layer lists, are told apart, and a file is the same as its copy."""
    import random

    from bayesprune.cli import build_parser

    script = _script("resume_fuzz")
    rng = random.Random(4)
    for _ in range(30):
        args = script.stoppable(rng, tmp_path / "r")
        assert int(args[args.index("--epochs") + 1]) >= 2
        build_parser().parse_args(args)
    model = {"layers": [{"type": "Linear", "in": 3, "out": 2}],
             "state_dict": {"0.weight": torch.randn(2, 3), "0.bias": torch.zeros(2)}}  # fmt: skip
    torch.save(model, tmp_path / "a.pt")
    torch.save(model, tmp_path / "b.pt")
    assert script.same_model(tmp_path / "a.pt", tmp_path / "b.pt") == (True, "")
    model["state_dict"]["0.bias"][1] = torch.nextafter(torch.tensor(0.0), torch.tensor(1.0))
    torch.save(model, tmp_path / "b.pt")
    assert script.same_model(tmp_path / "a.pt", tmp_path / "b.pt") == (False, "weight 0.bias")
    model["state_dict"]["0.bias"][1] = 0.0
    model["state_dict"]["1.bias"] = torch.zeros(1)  # a weight only the second file has
    torch.save(model, tmp_path / "b.pt")
    assert script.same_model(tmp_path / "a.pt", tmp_path / "b.pt") == (False, "weights ['1.bias']")
    model["layers"][0]["out"] = 3
    torch.save(model, tmp_path / "b.pt")
    assert not script.same_model(tmp_path / "a.pt", tmp_path / "b.pt")[0]


FAKE_TRAIN = """
import json, os, signal, sys, time
from pathlib import Path
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a program that does not stop when told
out = Path(sys.argv[sys.argv.index("--out") + 1])
(out / "checkpoints").mkdir(parents=True)
(out / "checkpoints" / "epoch_001.pt").write_bytes(b"")
late = os.environ["FAKE_LATE"] == "1"
time.sleep(1.5 if late else 0.0)  # late: the last epoch's checkpoint comes after the signal
(out / "checkpoints" / "epoch_002.pt").write_bytes(b"")
(out / "model.pt").write_bytes(b"")
(out / "summary.json").write_text(json.dumps({"status": "finished", "train_wall_seconds": 0.1}))
time.sleep(0.0 if late else 1.5)  # (early: it has ended its training when the signal comes)
"""


@pytest.mark.parametrize("late", [True, False])
def test_resume_fuzz_calls_a_run_that_trains_on_after_the_signal_a_defect(
    tmp_path, monkeypatch, late
):
    """benchmarks/resume_fuzz.py: a run that ignores SIGTERM and writes its last epoch's
    checkpoint after it is a defect ("ignored the signal"); one whose last checkpoint is older
    than the signal had ended its training ("ended before the signal"), whatever its exit."""
    import sys

    script = _script("resume_fuzz")
    fake = tmp_path / "fake-bayesprune"
    fake.write_text(f"#!{sys.executable}\n{FAKE_TRAIN}")
    fake.chmod(0o755)
    monkeypatch.setattr(script, "BAYESPRUNE", fake)
    monkeypatch.setenv("FAKE_LATE", "1" if late else "0")
    record = script.check(["train", "--epochs", "2", "--out", str(tmp_path / "run")], 0.0, 60)
    expected = "ignored the signal" if late else "ended before the signal"
    assert (record["verdict"], record["defect"]) == (expected, late)


def test_input_pixels_removal_evidence_is_the_loss_with_the_input_at_its_mean():
    """benchmarks/input_pixels.py: the shortcut through the first layer's pre-activations gives
    the loss increase of the network run on inputs with one value replaced by its mean, and the
    kept inputs are the best-scored ones, the same columns in the training and the test set."""
    import torch.nn.functional as F

    from bayesprune.data import Dataset
    from bayesprune.models.network import build_network

    script = _script("input_pixels")
    torch.manual_seed(0)
    net = build_network("mlp", (2, 3), 4, (5, 4))
    with torch.no_grad():  # a read-out that reads the units (it starts at zero)
        net.layers["out"].weight.normal_()
    model = net.to_sequential().eval()
    x, y = torch.randn(30, 6) + torch.arange(6.0), torch.randint(0, 4, (30,))
    got = script.removal_evidence(model, x, y, x.mean(0))
    with torch.no_grad():
        base = F.cross_entropy(model(x.reshape(30, 2, 3)), y)
        for i in range(6):
            removed = x.clone()
            removed[:, i] = x[:, i].mean()
            want = F.cross_entropy(model(removed.reshape(30, 2, 3)), y) - base
            assert torch.allclose(got[i], want, atol=1e-5), (i, got[i], want)
    data = Dataset("toy", x.reshape(30, 2, 3), y, x[:7].reshape(7, 2, 3) + 1, y[:7], 4)
    reduced, index = script.kept_inputs(data, 0.5, None, 0, score=got)
    assert index.tolist() == sorted(got.topk(3).indices.tolist())
    assert torch.equal(reduced.x_train, x[:, index])
    assert torch.equal(reduced.x_test, x[:7, index] + 1)


def test_results_files_reach_their_own_renderer_before_the_generic_ones():
    """benchmarks/common.py's RENDERERS: a probe's or the input-value probe's JSON also holds
    the keys of a matrix or robustness run ("cells", "runs"), so their entries must come first;
    a file no entry names is a run summary."""
    import sys

    sys.path.insert(0, str(BENCHMARKS))
    import common

    assert common.renderer("x", {"cells": [], "probe_paired": {}})("x", {
        "cells": [], "commit": "c", "cpu": "cpu",
        "probe_paired": {"name": "n", "env": "E=1", "description": "d.", "command": "c",
                         "paired": {}},
    })[2].startswith("Probe (not shipped): n (`E=1`)")  # fmt: skip
    assert common.renderer("x", {"runs": [], "input_pixels": True})("x", {
        "runs": [], "input_pixels": True, "cells": [], "keep": [], "seeds": [0], "commit": "c",
        "cpu": "cpu",
    })[2].startswith("`benchmarks/input_pixels.py`")  # fmt: skip
    assert "render_gpu" in common.renderer("gpu_abc", {"cells": []}).__code__.co_names
    assert common.renderer("fmnist_x", {"config": {}}) is common.render_run


def test_unit_redundancy_r2_is_one_for_a_rebuildable_unit_and_small_for_a_new_one():
    """benchmarks/unit_redundancy.py: of three units where one is the sum of the other two plus
    a constant, each is rebuilt by the other two (R² = 1); a fresh unit has R² near 0;
    positions count as examples, and a dead unit (not live) is left out of the regression."""
    script = _script("unit_redundancy")
    torch.manual_seed(0)
    a, b, c, dead = torch.randn(4, 400, 3)  # 400 examples, 3 positions each
    maps = torch.stack([a, b, a + b + 2.0, c, dead], 1)  # (N, width 5, positions 3)
    live = torch.tensor([True, True, True, True, False])
    r2 = script.layer_r2(maps, 5, live)
    assert r2.shape == (4,)
    assert (r2[:3] > 0.999).all()  # each of a, b, a + b + 2 from the other two
    assert r2[3] < 0.05  # c: nothing rebuilds it
    flat = maps.reshape(400, 15)  # a flattened block of 5 channels of 3 values
    assert torch.allclose(script.layer_r2(flat, 5, live), r2)


def _common():
    import sys

    sys.path.insert(0, str(BENCHMARKS))
    import common

    return common


def test_a_results_file_of_any_name_gets_its_scripts_table_and_a_stray_one_breaks_none(
    tmp_path, monkeypatch
):
    """A --name not starting with the script's name fell through to the robustness renderer
    (KeyError: 'config' after the whole run), and the file left in results/ broke every later
    README refresh; the scripts' tables are now found by the script the file records, and a file
    no renderer can read gets a line, not a traceback."""
    common = _common()
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(common, "HERE", tmp_path)  # (the README it refreshes: not the real one)
    monkeypatch.setattr(common.sys, "argv", ["benchmarks/second_layer_widths.py"])
    assert common.renderer("h5_slw", {"script": "second_layer_widths", "runs": []}) is (
        common._by_script("second_layer_widths")
    )
    assert common.renderer("x", {"script": "survivors", "survivors": []}) is common.renderer(
        "survivors_mlp", {"survivors": []}
    )  # a script named by the keys its files hold keeps that renderer
    committed = json.loads((BENCHMARKS / "results" / "second_layer_widths.json").read_text())
    committed.pop("script", None)
    common.write("h5_slw", committed, tmp_path / "results")  # what failed: a custom name
    assert json.loads((tmp_path / "results" / "h5_slw.json").read_text())["script"] == (
        "second_layer_widths"
    )
    (tmp_path / "results" / "stray.json").write_text(json.dumps({"runs": [{"no": "config"}]}))
    common.render_readme()
    text = (tmp_path / "README.md").read_text()
    assert "## stray" in text and "No table: `results/stray.json` is not in the form" in text
    assert "## h5_slw" in text and "No table: `results/h5_slw.json`" not in text


def test_the_matrix_tables_rerun_line_is_the_files_own_command():
    """Every robustness-matrix table said `robustness_matrix.py` (the whole matrix, replacing
    robustness_matrix.json) whatever cells, seeds and overrides its file holds."""
    common = _common()
    result = {
        "overrides": {"price_scale": 2, "warmup_tolerance": None},
        "cells": [{"case": "lenet5-n60k", "seed": 2, "dense": None},
                  {"case": "mlp-n10k", "seed": 3, "dense": None}],  # fmt: skip
        "dense_from": {"file": "benchmarks/results/robustness_matrix.json"},
    }
    assert common.matrix_command("probe", result) == (  # written before groups were auto
        ".venv/bin/python benchmarks/robustness_matrix.py --cells lenet5-n60k mlp-n10k --seeds "
        "2 3 --set price_scale=2 warmup_tolerance=none merge_groups=off --dense-from "
        "benchmarks/results/robustness_matrix.json --name probe"
    )
    result["merge_groups_default"] = "auto"  # written under auto before Eq. (14x): half
    assert "merge_groups=auto group_cap=half" in common.matrix_command("probe", result)
    result["group_cap_default"] = "excess"  # written since: the defaults are today's
    command = common.matrix_command("probe", result)
    assert "group_cap" not in command and "merge_groups" not in command
    header = common.render_matrix("probe", {**result, "cells": [], "commit": "c",
                                            "checks": {"gap_points": {}, "collapsed": []}})[2]
    assert "group merge moves auto, down to inputs per unit + 1)" in header
    del result["merge_groups_default"], result["group_cap_default"]
    result["dense_from"] = {"file": "the two files merged"}  # recorded in words: the cells alone
    assert common.matrix_command("probe", result).endswith("--no-dense --name probe")
    del result["dense_from"]
    assert common.matrix_command("probe", result).endswith("--no-dense --name probe")
    script = _matrix_script()
    parsed = script.arg_parser().parse_args(
        common.matrix_command("probe", result).split()[2:]
    )  # the command parses as the script's own
    assert parsed.cells == ["lenet5-n60k", "mlp-n10k"] and parsed.seeds == [2, 3]
    assert script.parse_overrides(parsed.set) == {**result["overrides"], "merge_groups": "off"}
    assert parsed.no_dense


def test_benchmark_arguments_are_one_line_errors_and_trial_runs_leave_results_alone(
    tmp_path, monkeypatch, capsys
):
    common = _common()
    script = _matrix_script()
    for argv, message in (
        (["--seeds", "-1"], "must lie in 0 .. 2^32 - 1"),
        (["--dense-from", str(tmp_path / "missing.json")], "no such file"),
    ):
        with pytest.raises(SystemExit) as stop:
            script.main(argv)
        assert stop.value.code == 2 and message in capsys.readouterr().err
    assert common.description("One sentence that wraps\nonto a second line.\n\nMore.") == (
        "One sentence that wraps onto a second line."
    )
    monkeypatch.setenv(common.OUTPUT_VARIABLE, str(tmp_path / "trial"))
    readme = (BENCHMARKS / "README.md").read_bytes()
    common.write("h5_trial", {"cells": []})
    assert (tmp_path / "trial" / "h5_trial.json").exists()
    assert not (BENCHMARKS / "results" / "h5_trial.json").exists()
    assert (BENCHMARKS / "README.md").read_bytes() == readme
    assert common.figure_dir() == tmp_path / "trial"


def test_l0_gates_follow_the_hard_concrete_distribution_and_count_each_weight_once():
    """benchmarks/l0_baseline.py: P(gate ≠ 0) is the fraction of drawn gates above 0, a
    test-time gate is 0 exactly below log α = log(1/11), and the gates' costs add up to the
    network's weights less the classifier's biases (each weight counted once: a unit's
    incoming weights and bias, the last hidden layer's weights into the classifier too)."""
    from bayesprune.export import count_weights
    from bayesprune.models.network import build_network

    script = _script("l0_baseline")
    log_alpha = torch.tensor([-4.0, -2.0, 0.0, 1.5, 3.0])
    gates = script.sample_gates(log_alpha, 200_000, torch.Generator().manual_seed(0))
    assert ((gates >= 0) & (gates <= 1)).all()
    torch.testing.assert_close(
        (gates > 0).float().mean(0), script.prob_nonzero(log_alpha), atol=4e-3, rtol=0
    )
    assert (gates == 1).any() and (gates == 0).any()  # the stretch reaches both ends
    edge = torch.tensor(-math.log(11.0))
    assert script.deployed_gates(edge - 1e-3) == 0 and script.deployed_gates(edge + 1e-3) > 0
    for arch, shape, widths in (("mlp", (1, 28, 28), (30, 10)), ("lenet5", (1, 28, 28), None)):
        net = build_network(arch, shape, 10, widths, 0.2 if arch == "lenet5" else 1.0)
        costs = script.unit_costs(net)
        total = sum(costs[name] * net.width(name) for name in net.gated)
        assert total == count_weights(net.to_sequential()) - net.num_classes


def test_l0_baseline_pairs_its_batches_with_the_dense_run_and_marks_a_closed_layer(monkeypatch):
    """With λ = 0 and gates that stay open the L0 run sees the dense run's initialisation and
    batches (its gate noise has its own generator); with a λ that dwarfs the data term every
    gate of a layer closes and the run says `collapsed` with no weights kept, not a network."""
    from robustness_matrix import cell_data, cell_network, training_data

    script = _script("l0_baseline")
    from bayesprune.loop import batches

    data = cell_data("teacher-n1k")
    seen: list = []
    real = batches

    def spy(*args, **kwargs):
        for x, y, idx in real(*args, **kwargs):
            seen.append(idx.clone())
            yield x, y, idx

    monkeypatch.setattr("bayesprune.loop.batches", spy)
    train = training_data("teacher-n1k", 0, data)
    net = cell_network("teacher-n1k", 0, data, (8, 4))
    open_run = script.train_l0(net, train, 2, 100, 1e-3, 0.0, 1e-3, 0)
    l0_batches, seen[:] = list(seen), []
    torch.manual_seed(0)
    plain = [idx for _ in range(2) for _, _, idx in real(train, 100, torch.device("cpu"))]
    assert len(l0_batches) == len(plain) == 20
    assert all(torch.equal(a, b) for a, b in zip(l0_batches, plain, strict=True))
    assert open_run["widths"] == [8, 4] and open_run["status"] == "finished"
    assert open_run["gate_reach"] == pytest.approx(1e-3 * 20)
    net = cell_network("teacher-n1k", 0, data, (8, 4))
    closed = script.train_l0(net, train, 20, 100, 1e-3, 1e4, 0.1, 0)
    assert closed["status"] == "collapsed" and 0 in closed["widths"]
    assert closed["weights_kept"] == 0 and closed["weights_kept_fraction"] == 0


def test_l0_at_bayesprune_size_interpolates_between_the_bracketing_lambdas():
    """The comparison at equal size: L0's mean gap per λ (runs of one gate learning rate, each
    run once however many files hold it), read at bayesprune's mean weights kept linearly in
    log(weights kept); a λ with a collapsed run is no point of the curve, and a size no two λ
    bracket gives none."""
    script = _script("l0_baseline")

    def run(case, lam, kept, error, gate_lr=0.01, seed=0):
        return {"case": case, "seed": seed, "lambda": lam, "gate_lr": gate_lr,
                "test_error": error, "weights_kept_fraction": kept, "dense_error": 0.10,
                "status": "finished" if kept else "collapsed"}  # fmt: skip

    def bp(case, kept):
        return {"case": case, "seed": 0, "weights_kept_fraction": kept, "test_error": 0.105,
                "dense_error": None}  # fmt: skip

    first = {"rows": [run("mlp-n3k", 0.1, 0.10, 0.13), run("mlp-n3k", 0.01, 0.40, 0.11),
                      run("mlp-n3k", 0.03, 0.20, 0.50, gate_lr=1e-3),  # another gate lr
                      run("mlp-n10k", 0.1, 0.10, 0.13), run("mlp-n10k", 1.0, 0.0, 0.9)],
             "bayesprune": [bp("mlp-n3k", 0.20), bp("mlp-n10k", 0.05)]}  # fmt: skip
    again = {"rows": [run("mlp-n3k", 0.1, 0.10, 0.13)], "bayesprune": []}  # the same run twice
    cells = {c["case"]: c for c in script.summarise([first, again], [0], 0.01)}
    n3k = cells["mlp-n3k"]
    assert [p["lambda"] for p in n3k["curve"]] == [0.01, 0.1]
    assert n3k["bayesprune"]["kept"] == pytest.approx(20) and n3k["bayesprune"]["gap"] == (
        pytest.approx(0.5)
    )
    assert n3k["l0_at_size"] == pytest.approx(2.0)  # 20% is halfway from 10% to 40% in log size
    assert n3k["bracket"] == [0.1, 0.01]
    n10k = cells["mlp-n10k"]
    assert n10k["curve"][1]["collapsed"] == 1 and n10k["l0_at_size"] is None


def test_l0_baseline_reads_bayesprunes_default_runs_first_file_first(tmp_path):
    """bayesprune's runs for the comparison: the first file holding a (cell, seed) wins, and a
    probe's runs (overrides per cell or for the whole file) are not the default's."""
    script = _script("l0_baseline")

    def cell(case, seed, error, overrides=None):
        return {"case": case, "seed": seed, "overrides": overrides or {},
                "bayesprune": {"widths": [5], "test_error": error, "status": "finished",
                               "weights_kept_fraction": 0.3}}  # fmt: skip

    files = {
        "probe.json": {"overrides": {"price_scale": 0.5}, "cells": [cell("mlp-n3k", 0, 0.9)]},
        "newer.json": {"cells": [cell("mlp-n3k", 0, 0.2), cell("mlp-n3k", 1, 0.8, {"lr": 1})]},
        "older.json": {"cells": [cell("mlp-n3k", 0, 0.3), cell("mlp-n3k", 1, 0.4)]},
    }
    paths = []
    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))
        paths.append(tmp_path / name)
    runs = script.bayesprune_runs(paths, ["mlp-n3k"], [0, 1])
    assert [(r["seed"], r["test_error"], r["source"]) for r in runs] == [
        (0, 0.2, "newer.json"),
        (1, 0.4, "older.json"),
    ]


def test_l0_paired_difference_reads_each_seed_from_its_own_runs():
    """Seed by seed, bayesprune's gap minus L0's read at bayesprune's mean size between that
    seed's two bracketing runs (linear in log size), with the standard error over seeds."""
    script = _script("l0_baseline")

    def run(lam, seed, kept, error):
        return {"case": "c", "lambda": lam, "seed": seed, "weights_kept_fraction": kept,
                "test_error": error, "dense_error": 0.10}  # fmt: skip

    l0 = [run(0.1, 0, 0.10, 0.13), run(0.01, 0, 0.40, 0.11),  # seed 0: +3 at 10%, +1 at 40%
          run(0.1, 1, 0.10, 0.15), run(0.01, 1, 0.40, 0.11),  # seed 1: +5 at 10%, +1 at 40%
          run(0.1, 2, 0.10, 0.10), run(0.01, 2, 0.40, 0.10)]  # seed 2: 0 at both  # fmt: skip
    bp = [{"seed": 0, "test_error": 0.105, "dense_error": 0.10},
          {"seed": 1, "test_error": 0.115, "dense_error": 0.10},
          {"seed": 2, "test_error": 0.100, "dense_error": 0.10}]  # +0.5, +1.5, 0  # fmt: skip
    out = script.paired_difference(l0, bp, "c", (0.1, 0.01), 16.0)
    t = math.log(1.6) / math.log(4)  # 16% between 10% and 40%, in log size
    diffs = [0.5 - (3 - 2 * t), 1.5 - (5 - 4 * t), 0.0]
    mean = sum(diffs) / 3
    assert out["mean"] == pytest.approx(mean) and out["seeds"] == 3
    assert out["se"] == pytest.approx((sum((d - mean) ** 2 for d in diffs) / 2 / 3) ** 0.5)
    assert script.paired_difference(l0, bp[:1], "c", (0.1, 0.01), 16.0) is None


def test_wide_starts_times_the_merge_rounds_and_tabulates_each_start():
    """benchmarks/wide_starts.py on the teacher: the merge rounds' seconds are measured (a
    round runs within four epochs at 2,000 examples from 300-100) and are part of the training
    wall time, the dense start is trained on the same examples, and the table has a row per
    start."""
    script = _script("wide_starts")
    from common import render_wide_starts

    runs = [script.run(2_000, mult, 0, True, "teacher", 4) for mult in (1, 2)]
    assert [r["start"] for r in runs] == [[300, 100], [600, 200]]
    assert runs[0]["merge_seconds"] > 1e-3, runs[0]  # a round ran (none yet from 600-200)
    assert all(0 < r["merge_seconds"] < r["train_wall_seconds"] for r in runs), runs
    assert all(r["dense"]["test_error"] < 0.3 for r in runs)  # the majority class: 0.63
    result = {"wide_starts": runs, "commit": "test", "cpu": "cpu", "threads": 1}
    rows = [line for line in render_wide_starts("wide_starts", result) if line.startswith("| 2,")]
    assert len(rows) == 2 and rows[1].startswith("| 2,000 | 600-200 | 0 | ")


def test_compare_times_the_merge_rounds_per_layer_and_the_run_table_says_so():
    """The dense-against-bayesprune benchmarks (``common.compare``: fmnist_lenet300.py,
    fmnist_lenet5.py) record each layer's merge rounds (count, seconds, units removed) inside
    bayesprune's wall time, and the run's table gives them beside the settle's seconds."""
    _script("training_cost")  # (puts benchmarks/ on the path)
    from common import compare, render_run

    from bayesprune.config import TrainConfig
    from bayesprune.data import make_teacher
    from bayesprune.models import GatedMLP

    data = make_teacher()  # 2,000 of its examples, as the wide-starts test: rounds in 4 epochs
    config = TrainConfig(epochs=4, train_subset=2000)
    result = compare(data, lambda: GatedMLP(4, (300, 100), 3), config, measure_step_cost=False)
    b = result["bayesprune"]
    rounds = b["merge_rounds"]
    assert set(rounds) <= {"fc1", "fc2"} and rounds, rounds  # a round ran within four epochs
    assert all(r["rounds"] >= 1 and r["seconds"] > 0 for r in rounds.values()), rounds
    assert sum(r["seconds"] for r in rounds.values()) < b["train_wall_seconds"]
    merged = sum(e["removed"] for e in b["prune_events"] if e.get("merged"))
    assert sum(r["removed"] for r in rounds.values()) == merged, (rounds, merged)
    result["environment"].setdefault("commit", "test")
    line = next(x for x in render_run("run", result) if x.startswith("Of bayesprune's wall time"))
    name, r = next(iter(rounds.items()))
    assert f"{name} {r['seconds']:.1f} s in {r['rounds']} rounds" in line, line


def test_training_cost_writes_its_numbers_and_a_table_per_network(tmp_path, monkeypatch):
    """benchmarks/training_cost.py drew only the figure; issue 12 asks for the training cost
    over time in benchmarks/README.md too: the per-epoch times, their sums and the ratio."""
    monkeypatch.setenv("BAYESPRUNE_RESULTS_DIR", str(tmp_path))  # a trial: results/ untouched
    script = _script("training_cost")
    from common import render_training_cost

    script.main()
    result = json.loads((tmp_path / "training_cost.json").read_text())
    assert set(result["training_cost"]) == {"LeNet-300-100", "LeNet-5"}
    lines = render_training_cost("training_cost", result)
    mlp = result["training_cost"]["LeNet-300-100"]
    dense, pruned = mlp["dense"]["epoch_train_seconds"], mlp["bayesprune"]["epoch_train_seconds"]
    last = f"| {len(dense)} | {dense[-1]:.1f} | {pruned[-1]:.1f} | {sum(dense):.1f} |"
    assert sum(line.startswith(last) for line in lines) == 1, last
    ratio = mlp["bayesprune"]["train_wall_seconds"] / mlp["dense"]["train_wall_seconds"]
    assert any(f"({ratio:.2f}×)" in line for line in lines)


def test_inference_times_and_sizes_the_exported_files(tmp_path):
    """benchmarks/inference.py measured model.pt and the in-process networks; issue 12 asks for
    the exported networks: both are written as pt2 files, loaded back and timed, their sizes
    recorded."""
    from bayesprune.cli import main

    script = _script("inference")
    out = tmp_path / "run"
    argv = ["train", "--epochs", "2", "--widths", "12,8", "--no-progress", "--no-report"]
    assert main([*argv, "--out", str(out)]) == 0
    row = script.exported(out, batch=8, blocks=2)
    assert row["format"] == "pt2" and row["dense_ms"] > 0 and row["pruned_ms"] > 0
    assert row["pruned_bytes"] == (out / "model.pt2").stat().st_size
    assert row["dense_bytes"] > row["pruned_bytes"] * 0.5  # (the dense file is not kept)
    assert not (out / "dense").exists()
    x = torch.randn(5, 4)
    loaded = torch.export.load(out / "model.pt2").module()
    from bayesprune.export import load_model

    torch.testing.assert_close(loaded(x), load_model(out / "model.pt")(x))


JOBS_SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py") if '"--jobs"' in p.read_text())


@pytest.mark.parametrize("name", JOBS_SCRIPTS)
def test_every_script_refuses_a_job_count_below_one(name, monkeypatch, capsys, tmp_path):
    # --jobs 0 ran everything in one process without a word in some scripts and gave
    # ProcessPoolExecutor's traceback in others
    monkeypatch.setenv("BAYESPRUNE_RESULTS_DIR", str(tmp_path))  # a script that runs writes there
    script = _script(name)
    monkeypatch.setattr("sys.argv", [f"{name}.py", "--jobs", "0"])
    takes_argv = "argv" in script.main.__code__.co_varnames
    with pytest.raises(SystemExit) as stop:
        script.main(["--jobs", "0"]) if takes_argv else script.main()
    assert stop.value.code == 2
    assert "argument --jobs: must be positive" in capsys.readouterr().err


def test_the_job_count_check_covers_every_script_that_runs_processes():
    # the parametrised test above passes vacuously if the glob finds nothing
    assert len(JOBS_SCRIPTS) >= 21 and {"robustness_matrix", "tradeoff"} <= set(JOBS_SCRIPTS)


def test_decision_time_ends_the_warm_up_where_its_arm_says_and_counts_every_removal():
    """benchmarks/decision_time.py: ``at50`` lets θ move at step 50 (the rule's own warm-up
    would not end within these two epochs), ``never`` releases no layer and counts, every 300
    steps, the units θ's evidence favours keeping; the removals by kind add up to the widths."""
    script = _script("decision_time")
    runs = {arm: script.measure("normal", 0, arm, (32, 16), None, {"epochs": 2}, "teacher")
            for arm in ("at50", "never")}  # fmt: skip
    forced, never = runs["at50"], runs["never"]
    assert forced["warmup_step"] == 50 and min(forced["release_steps"].values()) == 50
    assert never["warmup_step"] is None and never["release_steps"] == {}
    assert [t["step"] for t in never["keep_trace"]] == [300]
    assert 0 < never["keep_trace"][0]["fc1"] <= 32 and 0 < never["keep_trace"][0]["fc2"] <= 16
    for run in runs.values():
        for i, (layer, start) in enumerate((("fc1", 32), ("fc2", 16))):
            gone = sum(run["removed"].get(layer, {}).values())
            assert start - gone == run["widths"][i]
        assert 1 <= run["first_layer_directions"]["weights"] <= run["widths"][0]
    assert sum(r["merged"] + r["gates"] for r in never["removed"].values()) == 0  # settle only
    assert 0 < forced["weights_kept_fraction"] < 1 and 0 <= forced["pruned_early_fraction"] <= 1
    from common import render_decision_time

    table = render_decision_time("smoke", {"decision_time": [forced, never], "commit": "x",
                                           "cpu": "y"})  # fmt: skip
    assert sum(line.startswith("| normal | 0 |") for line in table) == 2
    assert any(line.startswith("- normal, seed 0: 300: ") for line in table)
    command = ("decision_time.py --inits normal --seeds 0 --arms at50 never --widths 32,16 "
               "--dataset teacher --set epochs=2 --name smoke`")  # fmt: skip
    assert command in table[2]  # the command that makes the file
    unset = {**forced, "overrides": {"epochs": 2, "warmup_tolerance": None}}
    table = render_decision_time("smoke", {"decision_time": [unset], "commit": "x", "cpu": "y"})
    assert "--set epochs=2 warmup_tolerance=none --name smoke`" in table[2]  # as --set reads it


def test_decision_time_fresh_arm_decides_on_evidence_measured_from_its_step_on():
    """``fresh<STEP>`` ends the warm-up at STEP, as ``at<STEP>`` does, and empties θ's evidence
    averages before that step's evidence enters: right after step STEP the average m is that
    one step's contribution, a·ĝ, where ``at<STEP>``'s still holds the steps before it."""
    from bayesprune.config import TrainConfig
    from bayesprune.data import load_dataset
    from bayesprune.models.network import build_network

    script = _script("decision_time")
    data = load_dataset("teacher")
    after = {}
    for arm in ("at20", "fresh20"):

        class Spy(script.trainer_class(arm)):
            def warmed_up(self, d, examples, arm=arm):
                done = super().warmed_up(d, examples)
                if self.step + 1 == 21:  # the step after: its evidence has not entered yet
                    state = self.optim.gates.state
                    thetas = self.guide.theta_parameters()
                    after[arm] = [state[p]["evidence"].clone() for p in thetas]
                    grads = [p.grad / len(self.data.x_train) for p in thetas]
                    rate = min(1.0, examples / self.optim.gates.param_groups[0]["window"])
                    after[arm + " one step"] = [g * rate for g in grads]
                return done

        torch.manual_seed(0)
        net = build_network("mlp", data.in_shape, data.num_classes, (32, 16), 1.0, "kaiming")
        trainer = Spy(net, data, TrainConfig(seed=0, epochs=2, train_subset=2_000))
        trainer.trace = []
        trainer.fit(progress=False)
        assert trainer.warm_step == 20
    held, fresh = after["at20"], after["fresh20"]
    assert all(float(m.abs().max()) > 0 for m in held + fresh)
    # at20's average holds twenty steps of evidence, fresh20's only step 20's (whose gradient is
    # gone by now: the step-21 gradient is in .grad), so fresh20's is one step's size
    for m_held, m_fresh, one in zip(held, fresh, after["fresh20 one step"], strict=True):
        assert float(m_fresh.abs().mean()) < 0.5 * float(m_held.abs().mean())
        assert float(m_fresh.abs().mean()) < 5 * float(one.abs().mean())


def test_decision_time_counts_the_directions_that_hold_nine_tenths_and_reads_its_arms():
    import argparse

    script = _script("decision_time")
    assert script.directions(torch.diag(torch.tensor([3.0, 2.0, 1.0]))) == 2  # 9/14, 13/14
    assert script.directions(torch.eye(4)) == 4
    assert script.arm_type("at1200") == "at1200" and script.arm_type("never") == "never"
    assert script.arm_type("fresh601") == "fresh601"
    for bad in ("at0", "at", "late", "at-3", "fresh0", "fresh"):
        with pytest.raises(argparse.ArgumentTypeError):
            script.arm_type(bad)
