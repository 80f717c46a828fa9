import json

import pytest
import torch

from bayesprune.cli import main
from bayesprune.export import load_model
from tests.conftest import one_error_line

KEYS = {
    "arch",
    "dataset",
    "seed",
    "epochs",
    "initial_widths",
    "widths",
    "test_error",
    "weights_total",
    "weights_kept",
    "weights_kept_fraction",
    "flops_kept_fraction",
    "last_prune_epoch",
    "gates_binary_fraction",
    "train_wall_seconds",
    "step_seconds_full_width",
    "teacher_widths",
}


def test_train_writes_a_complete_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--widths", "16,8", "--epochs", "2", "--out", str(out), "--no-progress"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert KEYS <= set(summary)
    assert summary["initial_widths"] == [16, 8] and summary["teacher_widths"] == [10, 5]
    assert 0 <= summary["test_error"] < 0.5  # it learnt: a constant predictor's error is 0.63
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "epoch_001.pt",
        "epoch_002.pt",
    ]
    assert (out / "training.png").stat().st_size > 0
    assert json.loads((out / "config.json").read_text())["epochs"] == 2
    net = load_model(out / "model.pt")
    assert isinstance(net, torch.nn.Sequential)
    assert net(torch.zeros(3, 4)).shape == (3, 3)


def test_a_run_too_short_to_decide_says_so_and_exits_0(tmp_path, capsys):
    """One pass over 2,000 examples is one warm-up block: the evidence rule (Eq. (10w)) cannot
    have let θ move, so nothing is pruned. That is not a failure (exit 0, status finished),
    but the run must say which layers were left undecided and why, not look like a verdict."""
    out = tmp_path / "short"
    args = ["train", "--widths", "16,8", "--train-subset", "2000", "--out", str(out)]
    assert main([*args, "--epochs", "1", "--no-progress", "--no-report"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["widths"] == [16, 8]
    assert summary["undecided_layers"] == ["fc1", "fc2"]
    note = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    assert len(note) == 1 and "still falling" in note[0] and "more epochs" in note[0]
    out = tmp_path / "long"  # 20,000 examples for 3 epochs: every layer released
    args = ["train", "--widths", "16,8", "--epochs", "3", "--out", str(out), "--no-progress"]
    assert main([*args, "--no-report"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["undecided_layers"] == []
    assert summary["note"] is None or "no pruning decision" not in summary["note"]
    assert "still falling" not in capsys.readouterr().err


def test_a_layer_that_keeps_nearly_all_its_units_is_reported(tmp_path, capsys):
    """A pruning rule only removes units: a layer started narrower than the price would make
    it keeps about all of them, and its width is then the start's (docs/method.md §6n). The
    run finishes (exit 0), and the summary and one note line name the layers that kept 90%
    or more; a layer that kept less is not named."""
    out = tmp_path / "narrow"  # the teacher's layers keep everything from 16-8 (§6n)
    args = ["train", "--widths", "16,8", "--epochs", "3", "--out", str(out), "--no-progress"]
    assert main([*args, "--no-report"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["widths"] == [16, 8]
    assert summary["near_start_layers"] == ["fc1", "fc2"]
    note = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    assert len(note) == 1 and "fc1 16 of 16, fc2 8 of 8" in note[0] and "wider" in note[0]


def test_the_near_start_report_names_only_layers_that_kept_nine_tenths():
    from bayesprune.config import TrainConfig
    from bayesprune.data import make_teacher
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models import GatedMLP

    trainer = Trainer(GatedMLP(4, (16, 8), 3), make_teacher(num_train=200, num_test=50),
                      TrainConfig(epochs=1))  # fmt: skip
    trainer.release_steps = {"fc1": 1, "fc2": 1}
    assert trainer.near_start_note([16, 8])[0] == ["fc1", "fc2"]
    trainer.initial_widths = [18, 9]  # 16 of 18 is 89%, 8 of 9 is 89%: below nine tenths
    assert trainer.near_start_note([16, 8]) == ([], None)
    trainer.initial_widths = [17, 9]  # 16 of 17 is 94%
    layers, note = trainer.near_start_note([16, 8])
    assert layers == ["fc1"] and "fc1 16 of 17 starting" in note and "fc2" not in note
    assert "--merge-groups" not in note  # the default, auto, tests groups in a 16-unit layer
    trainer.merges.groups = False  # of 4 inputs: the other cause, where the groups are off
    assert "--merge-groups on" in trainer.near_start_note([16, 8])[1]
    trainer.merges.groups = True
    assert "--merge-groups" not in trainer.near_start_note([16, 8])[1]
    del trainer.release_steps["fc1"]  # undecided: the undecided note speaks for it
    assert trainer.near_start_note([16, 8]) == ([], None)
    trainer.release_steps["fc1"], trainer.status = 1, "collapsed"
    assert trainer.near_start_note([16, 8]) == ([], None)


def test_a_decision_after_few_steps_says_so(tmp_path):
    """At a large batch the examples-counted warm-up ends after a handful of optimiser steps
    (docs/method.md §6i): the run finishes, but its note says the units were decided on a
    barely trained network. Switching the warm-up off is the user's choice: no note."""
    from dataclasses import replace

    from bayesprune.config import TrainConfig
    from bayesprune.data import make_teacher
    from bayesprune.inference.trainer import EARLY_STEPS, Trainer
    from bayesprune.models import GatedMLP

    data = make_teacher(num_train=8000, num_test=200)
    config = TrainConfig(epochs=30, batch_size=4000, lr=1e-2)  # 60 steps
    summary = Trainer(GatedMLP(4, (32, 16), 3), data, config).fit(progress=False)
    assert summary["status"] == "finished" and summary["warmup_step"] < EARLY_STEPS
    assert summary["release_steps"] and "barely trained" in summary["note"]
    assert "after " in summary["note"] and " optimiser steps (batch 4000)" in summary["note"]
    off = replace(config, warmup_tolerance=None)
    summary = Trainer(GatedMLP(4, (32, 16), 3), data, off).fit(progress=False)
    assert summary["note"] is None or "barely trained" not in summary["note"]
    # a batch beyond the training set: each step takes the 2,000 examples, and the note says
    # so (it said "batch 8000")
    beyond = replace(config, batch_size=8000)
    summary = Trainer(GatedMLP(4, (32, 16), 3), data.subset(2000, seed=0), beyond).fit(
        progress=False
    )
    assert "barely trained" in summary["note"] and "(batch 2000)" in summary["note"]


def test_a_batch_beyond_the_training_set_is_noted_when_the_run_starts(tmp_path, capsys):
    """--batch-size above the training examples is full-batch training: said in one line when
    the run starts (it was taken without a word)."""
    args = ["train", "--train-subset", "500", "--epochs", "1", "--widths", "8,4", "--threads",
            "1", "--no-progress", "--no-report"]  # fmt: skip
    assert main([*args, "--batch-size", "1000", "--out", str(tmp_path / "big")]) == 0
    note = "--batch-size 1000 is more than the 500 training examples: every step takes all"
    assert note in capsys.readouterr().err
    assert main([*args, "--batch-size", "500", "--out", str(tmp_path / "equal")]) == 0
    assert "is more than the" not in capsys.readouterr().err


def test_a_width_factor_that_leaves_a_single_unit_is_noted(tmp_path, capsys):
    args = ["train", "--train-subset", "500", "--epochs", "1", "--threads", "1", "--no-progress",
            "--no-report"]  # fmt: skip
    assert main([*args, "--width-mult", "0.001", "--out", str(tmp_path / "one")]) in (0, 3)
    assert "--width-mult 0.001 leaves fc1, fc2 one unit wide" in capsys.readouterr().err
    assert main([*args, "--width-mult", "0.1", "--out", str(tmp_path / "ten")]) == 0
    assert "one unit wide" not in capsys.readouterr().err  # 30-10


def test_bad_flag_is_one_line_and_exit_2(capsys):
    assert main(["train", "--epochs", "zero"]) == 2
    assert "epochs" in one_error_line(capsys)
    assert main(["train", "--arch", "resnet"]) == 2
    assert "resnet" in one_error_line(capsys)
    assert main(["train", "--widths", "300,-1"]) == 2
    one_error_line(capsys)
    assert main(["train", "--rho", "1"]) == 2
    assert "--rho" in one_error_line(capsys)
    assert main(["train", "--theta-momentum", "1.5"]) == 2
    assert "theta-momentum" in one_error_line(capsys)
    assert main(["train", "--trace-every", "-1"]) == 2
    assert "trace-every" in one_error_line(capsys)
    assert main(["train", "--estimator", "exact", "--elbo", "fast"]) == 2
    assert "--elbo traced" in one_error_line(capsys)


def test_missing_data_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(
        ["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")]
    )
    assert code == 2
    assert "MNIST/raw" in one_error_line(capsys)


def test_existing_run_directory_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text("precious")
    assert main(["train", "--out", str(out), "--epochs", "1"]) == 2
    assert "not empty" in one_error_line(capsys)
    assert (out / "summary.json").read_text() == "precious"


def test_traced_elbo_runs_end_to_end(tmp_path):
    """The traced ELBO with the score estimator trains the network and moves θ (the warm-up
    off, so that the score estimator's θ-gradient is what moves it within two short epochs)."""
    from bayesprune.data import make_teacher

    out = tmp_path / "pyro"
    args = ["train", "--widths", "8,4", "--epochs", "2", "--train-subset", "2000",
            "--warmup-tolerance", "none", "--elbo", "traced", "--estimator", "score",
            "--out", str(out), "--no-progress", "--no-report"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    labels = make_teacher().y_test
    chance = 1 - float(torch.bincount(labels).max()) / len(labels)  # a constant predictor's
    assert summary["initial_widths"] == [8, 4] and summary["test_error"] < chance - 0.1
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert any(t < 1 for thetas in last["theta"].values() for t in thetas)  # θ moved


def test_the_exact_estimator_says_what_it_costs_before_it_starts(tmp_path, capsys):
    out = tmp_path / "exact"
    args = ["train", "--widths", "3,2", "--epochs", "1", "--train-subset", "300", "--estimator",
            "exact", "--out", str(out), "--no-progress", "--no-report"]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "--estimator exact runs the network twice per gated unit" in err
    assert "(5 units here: 10 extra forward passes a step)" in err
    assert main(["train", "--widths", "3,2", "--epochs", "1", "--train-subset", "300", "--out",
                 str(tmp_path / "secant"), "--no-progress", "--no-report"]) == 0  # fmt: skip
    assert "--estimator exact" not in capsys.readouterr().err


def _status_matches_exit_code(code: int, out) -> dict:
    """Random-noise smoke data may end at chance level: then the run must say so (exit 3)."""
    summary = json.loads((out / "summary.json").read_text())
    assert (code, summary["status"]) in {(0, "finished"), (3, "collapsed")}
    return summary


def test_lenet5_and_vgg16_train_end_to_end_on_small_data(tmp_path, fake_cifar10):
    from tests.test_data import _fake_mnist

    _fake_mnist(tmp_path, n=60)
    out = tmp_path / "lenet5"
    args = ["train", "--arch", "lenet5", "--dataset", "mnist", "--data-dir", str(tmp_path),
            "--width-mult", "0.2", "--epochs", "1", "--out", str(out), "--no-progress"]  # fmt: skip
    summary = _status_matches_exit_code(main(args), out)
    assert summary["arch"] == "lenet5" and summary["initial_architecture"] == "4-10-160-100"
    assert (out / "training.png").stat().st_size > 0 and (out / "inspect").is_dir()  # the report
    # the VGG16 smoke run of issue 3: --width-mult 0.25 on synthetic CIFAR-10, on the CPU
    out = tmp_path / "vgg"
    args = ["train", "--arch", "vgg16", "--dataset", "cifar10", "--data-dir", str(fake_cifar10),
            "--width-mult", "0.25", "--epochs", "1", "--batch-size", "50", "--out", str(out),
            "--no-progress", "--no-report"]  # fmt: skip
    summary = _status_matches_exit_code(main(args), out)
    assert not (out / "training.png").exists() and not (out / "inspect").exists()  # --no-report
    assert summary["initial_widths"] == [16, 16, 32, 32, 64, 64, 64] + [128] * 6 + [128]
    assert len(summary["widths"]) == 14
    net = load_model(out / "model.pt")
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert sum(p.numel() for p in net.parameters()) == summary["weights_kept"]  # the saved one


def test_architecture_and_device_mistakes_are_one_line(capsys):
    assert main(["train", "--arch", "lenet5", "--dataset", "teacher"]) == 2
    assert "image inputs" in one_error_line(capsys)
    assert main(["train", "--width-mult", "0"]) == 2
    assert "width-mult" in one_error_line(capsys)
    assert main(["train", "--device", "toaster"]) == 2
    assert "toaster" in one_error_line(capsys)
    if not torch.cuda.is_available():
        assert main(["train", "--device", "cuda"]) == 2
        assert "CUDA" in one_error_line(capsys)
        assert main(["train", "--device", "cuda:3"]) == 2  # the device as given
        assert "--device cuda:3: no CUDA device" in one_error_line(capsys)


def test_every_train_config_field_is_a_documented_flag():
    from dataclasses import fields

    from bayesprune.cli import build_parser
    from bayesprune.config import TrainConfig

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = {a.dest: a for a in train._actions}
    for f in fields(TrainConfig):
        assert f.name in flags, f.name
        assert f.metadata["help"] and flags[f.name].help == f.metadata["help"], f.name
        assert flags[f.name].default == f.default, f.name


def test_train_help_puts_every_flag_in_its_section():
    # `bayesprune train --help` in sections (network and data, recipe, the pruning rule, ...):
    # each TrainConfig field's flag in the section its metadata names, and only -h outside them
    from dataclasses import fields

    from bayesprune.cli import build_parser
    from bayesprune.config import OPTION_GROUPS, TrainConfig

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    section = {a.dest: g.title for g in train._action_groups for a in g._group_actions}
    for f in fields(TrainConfig):
        assert section[f.name] == OPTION_GROUPS[f.metadata["group"]][0], f.name
    loose = [a.dest for a in train._actions if section[a.dest] == "options"]
    assert loose == ["help"], loose
    titles = [g.title for g in train._action_groups if g._group_actions]
    assert titles == ["options"] + [title for title, _ in OPTION_GROUPS.values()], titles


def test_every_command_prints_its_help(capsys):
    # argparse %-formats every help text when it prints it: a bare "10%" in one option's help
    # made `bayesprune train --help` raise a TypeError (stop 59's --warmup-tolerance text)
    from bayesprune.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) >= {"train", "inspect", "export", "bench"}
    for name in [None, *commands]:
        with pytest.raises(SystemExit) as stop:
            parser.parse_args(["--help"] if name is None else [name, "--help"])
        assert stop.value.code == 0, name
        printed = capsys.readouterr().out
        assert printed.startswith("usage: bayesprune"), name
        assert "(default: False)" not in printed and "``" not in printed, name  # switches; reST
        if name is not None:
            actions = commands[name]._actions
            assert all(o in printed for a in actions for o in a.option_strings), name


def test_cli_imports_no_arviz_until_a_run_is_inspected():
    # a GPU machine without ArviZ (or a user's `bayesprune --help`) must not pay for it:
    # only `inspect` and the report at the end of a run read ArviZ
    import subprocess
    import sys

    code = "import sys, bayesprune.cli; print(sorted({'arviz', 'xarray'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_run_that_ends_with_gates_in_transit_says_so(tmp_path):
    """Every layer released, but more than 1% of the gates between 0 and 1 at the end (P1 not
    reached): the deployed network is the posterior mode, and the summary must say that some
    of its units were kept by θ ≥ ½ rather than decided."""
    from bayesprune.config import TrainConfig
    from bayesprune.data import make_teacher
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models import GatedMLP

    data = make_teacher(num_train=2000, num_test=200)
    # 20 epochs: the first layer is released at step 239 (of 240 in 12 epochs), so a shorter
    # run ends with a unit on its first step out
    trainer = Trainer(GatedMLP(4, (16, 8), 3), data, TrainConfig(epochs=20), out=tmp_path / "r")
    summary = trainer.fit(progress=False)
    assert summary["undecided_layers"] == []  # decided: no in-transit note
    assert summary["note"] is None or "between 0 and 1" not in summary["note"]
    with torch.no_grad():  # two of the 19 remaining gates half-way
        trainer.guide.theta_parameters()[0][:2] = 0.5
    _, note = trainer.undecided()
    assert note is not None and note.startswith("2 of ") and "more epochs" in note
    with torch.no_grad():  # back at 1: no gate in between, no note
        trainer.guide.theta_parameters()[0][:2] = 1.0
    assert trainer.undecided()[1] is None


def test_settings_adam_does_not_use_are_named_in_a_note(tmp_path, capsys):
    """Under --theta-optimizer adam θ moves freely: the transit limit, the evidence test and
    the evidence-priced merges and producers are ProjectedSGD's, so setting them changed
    nothing, silently (a fifth walkthrough); now a note names them."""
    args = ["train", "--epochs", "1", "--widths", "12,8", "--theta-optimizer", "adam",
            "--no-progress", "--no-report"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert "no effect with --theta-optimizer adam" not in capsys.readouterr().err
    given = ["--theta-transit", "0.1", "--merge-price", "current", "--theta-confidence", "2"]
    assert main([*args, *given, "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err.splitlines()
    note = [line for line in err if "no effect with --theta-optimizer adam" in line]
    assert len(note) == 1 and note[0].startswith("bayesprune: note: --theta-transit, --merge-price")
    assert "--theta-confidence" not in note[0]  # its default: nothing was asked of it
    assert "--merge-price have no effect" in note[0]
    assert main([*args, "--theta-transit", "0.1", "--out", str(tmp_path / "c")]) == 0
    assert "note: --theta-transit has no effect" in capsys.readouterr().err


def test_a_group_cap_that_caps_nothing_is_named_in_a_note(tmp_path, capsys):
    """--group-cap caps auto's group moves (Eq. (14x)); with --merge-groups on or off it
    changes nothing, and the run says so instead of training as if it did."""
    args = ["train", "--epochs", "1", "--widths", "12,8", "--no-progress", "--no-report"]
    assert main([*args, "--group-cap", "half", "--out", str(tmp_path / "a")]) == 0
    assert "--group-cap" not in capsys.readouterr().err  # auto: the cap is used
    for groups in ("on", "off"):
        assert main([*args, "--group-cap", "half", "--merge-groups", groups,
                     "--out", str(tmp_path / groups)]) == 0  # fmt: skip
        err = capsys.readouterr().err
        assert f"note: --group-cap half has no effect with --merge-groups {groups}" in err


def test_data_dir_with_the_teacher_and_a_subset_of_one_class_are_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data-dir", str(tmp_path), "--out", str(out)]) == 2
    assert "teacher data are made in memory" in one_error_line(capsys)
    # a subset of one example is one class: a constant predictor is perfect, nothing to learn
    # (it used to end as "collapsed ... the run never learnt", exit 3)
    assert main(["train", "--train-subset", "1", "--out", str(out)]) == 2
    assert "one class only" in one_error_line(capsys)
    assert not out.exists()


def test_accelerator_gpu_without_cuda_names_the_accelerator(capsys):
    pytest.importorskip("lightning")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["train", "--strategy", "ddp", "--devices", "1", "--accelerator", "gpu"]) == 2
    assert one_error_line(capsys).startswith("bayesprune: error: --accelerator gpu:")


def test_units_still_leaving_at_the_end_are_counted_and_named_in_a_note():
    """At the rule's fixed point every deployed unit's evidence favours keeping it (d ≤ 0); a
    run that ends with deployed units whose d > 0 (θ falling, or held at 1 by the transit
    limit) was still shrinking, and says so once more than 1% of the deployed units are."""
    from bayesprune.config import TrainConfig
    from bayesprune.data import make_teacher
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models import GatedMLP

    torch.manual_seed(0)
    trainer = Trainer(GatedMLP(4, (16, 8), 3), make_teacher(num_test=50), TrainConfig(epochs=3))
    summary = trainer.fit(progress=False)
    assert summary["status"] == "finished" and set(trainer.release_steps) == {"fc1", "fc2"}
    assert summary["leaving_units"] == trainer.leaving() == {}  # decided: every kept d ≤ 0
    assert trainer.leaving_note({}, summary["widths"]) is None
    fc1 = trainer.guide.theta_parameters()[0]
    decision = trainer.optim.gates.state[fc1]["decision"]
    decision[:2] = 1e-3  # two deployed fc1 units whose evidence says leave
    assert trainer.leaving() == {"fc1": 2}
    note = trainer.leaving_note(trainer.leaving(), summary["widths"])
    assert "fc1 2 of 16" in note and "that layer was still shrinking" in note
    with torch.no_grad():
        fc1[:2] = 0.0  # θ = clip of the stored value: below ½, not deployed
    assert trainer.leaving() == {}
    assert trainer.leaving_note({"fc1": 1}, [60, 40]) is None  # 1 of 100: not above 1%
    trainer.status = "failed"  # its evidence may be NaN, and NaN > 0 is False: not measured
    assert trainer.leaving() is None and trainer.leaving_note({"fc1": 5}, [16, 8]) is None
    adam = Trainer(GatedMLP(4, (16, 8), 3), make_teacher(num_test=50),
                   TrainConfig(epochs=3, theta_optimizer="adam"))  # fmt: skip
    summary = adam.fit(progress=False)  # θ by Adam keeps no evidence: not measured, not "none"
    assert summary["status"] == "finished" and adam.release_steps
    assert summary["leaving_units"] is None


def test_units_removed_in_the_last_window_are_counted_by_kind_and_named_in_a_note():
    """A run whose last merge rounds removed 14, 5, 9 and 1 fc1 units in its last 30 steps
    ended "finished" with no note (leaving_units counts gates only); a single unit of each kind
    in the last window is the tail a settled layer still shows (the default runs), and gets
    none. A first version of the note counted merge moves only: a 3,000-example run whose fc1
    lost 5 units by their gates and 2 by merges in its last window was told "fc1 2 of 35"."""
    from bayesprune.config import TrainConfig, checks_per_window
    from bayesprune.data import make_teacher
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models import GatedMLP

    torch.manual_seed(0)
    trainer = Trainer(GatedMLP(4, (16, 8), 3), make_teacher(num_test=50), TrainConfig(epochs=3))
    summary = trainer.fit(progress=False)
    assert summary["status"] == "finished" and summary["merged_at_end"] == {}
    assert summary["removed_in_last_window"] == trainer.removed_in_last_window()
    window = checks_per_window(trainer.config, 20_000, trainer.window) * trainer.check_every
    last, events = trainer.step, list(trainer.prune_events)
    trainer.prune_events = events + [
        {"layer": "fc1", "step": last - window, "removed": 4, "merged": True},  # a window ago
        {"layer": "fc1", "step": last - window + 1, "removed": 2, "merged": True},
        {"layer": "fc2", "step": last, "removed": 1, "merged": True},
        {"layer": "fc2", "step": last, "removed": 1},  # one of each kind: the settled tail
    ]
    assert trainer.merged_at_end() == {"fc1": 2, "fc2": 1}
    removed = trainer.removed_in_last_window()
    assert removed == {"fc1": {"gates": 0, "merges": 2}, "fc2": {"gates": 1, "merges": 1}}
    note = trainer.shrinking_note(removed, [14, 8])
    # fc2's single units are the settled tail: only fc1 is named (a first version named both)
    assert "last evidence window (fc1: 2 removed, 2 by merge moves, beside 14 deployed)" in note
    assert "that layer was still shrinking; train for more epochs" in note
    trainer.prune_events.append({"layer": "fc1", "step": last, "removed": 5})  # by its gates
    note = trainer.shrinking_note(trainer.removed_in_last_window(), [14, 8])
    assert "(fc1: 7 removed, 5 by their gates and 2 by merge moves, beside 14 deployed)" in note
    gates = {"fc1": {"gates": 3, "merges": 0}, "fc2": {"gates": 2, "merges": 0}}  # gates alone
    assert ("(fc1: 3 removed, 3 by their gates, beside 14 deployed; fc2: 2 removed, 2 by their "
            "gates, beside 8 deployed), so those layers") in trainer.shrinking_note(gates, [14, 8])
    tail = {"fc1": {"gates": 1, "merges": 1}, "fc2": {"gates": 1, "merges": 0}}
    assert trainer.shrinking_note(tail, [14, 8]) is None  # one of each: the tail
    assert trainer.shrinking_note({"fc1": {"gates": 2, "merges": 0}}, [150, 100]) is None  # ≤ 1%
    trainer.history[-1]["train_error"] = 0.004  # a training set learnt by heart: more epochs
    note = trainer.shrinking_note(gates, [14, 8])  # keep removing units (§6zm), not settle them
    assert "learnt by heart by then (training error 0.4%)" in note and "more epochs" in note
    assert "train for more epochs for the final width" not in note
    trainer.status = "failed"
    assert trainer.merged_at_end() is None and trainer.shrinking_note(gates, [14, 8]) is None
    off = Trainer(GatedMLP(4, (16, 8), 3), make_teacher(num_test=50),
                  TrainConfig(epochs=1, merge="off"))  # fmt: skip
    assert off.fit(progress=False)["merged_at_end"] is None


def test_python_dash_m_runs_the_command_line():
    # `python -m bayesprune` had no __main__ module: "is a package and cannot be directly executed"
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "bayesprune", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.startswith("bayesprune "), done.stderr
    done = subprocess.run([sys.executable, "-m", "bayesprune"], capture_output=True, text=True)
    assert done.returncode == 2 and "no command" in done.stderr  # the CLI's own refusal


def test_a_reader_that_goes_away_does_not_stop_the_command(tmp_path):
    """``bayesprune train … | head -1``: once the pipe's reader has gone, what the command prints
    goes nowhere and the run trains to its end (exit 0, "finished"); it used to stop at its next
    epoch line with exit 2 and a summary left "running". ``inspect … | head -1`` exits 0 too;
    so does a command whose reader goes before anything reached it (block-buffered stdout: the
    first write to the pipe is the flush at the end), or whose stderr's reader goes."""
    import os
    import subprocess
    import sys

    def reader_goes(*args, after_first_line=True, unbuffered=True, stream="stdout"):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        if unbuffered:  # (set here, not inherited: the test must not depend on the caller)
            env["PYTHONUNBUFFERED"] = "1"
        proc = subprocess.Popen(
            [sys.executable, "-m", "bayesprune", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        gone, kept = (proc.stdout, proc.stderr)
        if stream == "stderr":
            gone, kept = kept, gone
        first = gone.readline() if after_first_line else ""
        gone.close()  # the reader goes: the next write meets a broken pipe
        other = kept.read()
        return proc.wait(timeout=300), first, other

    out = tmp_path / "run"
    train = ("train", "--epochs", "4", "--train-subset", "1000", "--widths", "30,10",
             "--threads", "1", "--no-progress", "--no-report", "--out")  # fmt: skip
    code, first, err = reader_goes(*train, str(out))
    assert first.startswith("epoch   1"), (first, err)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and len(summary["epoch_train_seconds"]) == 4
    assert "Broken pipe" not in err and "bayesprune: error" not in err
    code, first, err = reader_goes("inspect", str(out))
    assert code == 0 and first and (out / "inspect" / "survivors.csv").exists(), err
    # block-buffered, the reader gone before the first byte: the flush at the end is guarded
    code, _, err = reader_goes("inspect", str(out), after_first_line=False, unbuffered=False)
    assert code == 0 and "Exception ignored" not in err and "BrokenPipeError" not in err, err
    # stderr's reader gone (2>&1 | head -1 loses both): the run trains to its end all the same
    code, first, _ = reader_goes(*train, str(tmp_path / "quiet"), stream="stderr")
    assert code == 0 and first.startswith("bayesprune: training"), first
    assert json.loads((tmp_path / "quiet" / "summary.json").read_text())["status"] == "finished"


def test_a_command_with_its_stdout_closed_runs(tmp_path):
    """``bayesprune train … >&-`` (a closed descriptor: Python's sys.stdout is None) trains as
    before; the guard round the streams must leave a missing one missing."""
    import subprocess
    import sys

    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-c", "import sys, os; os.close(1); from bayesprune.cli import main; "
         "sys.stdout = None; sys.exit(main())", "train", "--epochs", "1", "--train-subset",
         "500", "--widths", "8,4", "--threads", "1", "--no-progress", "--no-report", "--out",
         str(out)],
        stderr=subprocess.PIPE, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"


def test_a_users_own_arrays_train_from_an_npz_file(tmp_path, capsys, monkeypatch):
    """``--dataset npz --data-dir FILE`` trains on x_train, y_train, x_test, y_test of one
    ``numpy.savez`` file: standardised over all values by default (no note; the two numbers are
    recorded for the deployed network), as given with ``--standardise none`` (a note when the run
    starts and in the summary), and refused in one line, exit 2, when the file is missing or not
    an npz, lacks an array or holds float labels; ``--standardise`` with another dataset too."""
    import numpy as np

    from bayesprune.data import make_teacher

    teacher = make_teacher()

    def raw(x):  # the teacher's inputs at a raw scale: mean 100, standard deviation 40
        return (x * 40 + 100).numpy()

    arrays = {
        "x_train": raw(teacher.x_train[:600]),
        "y_train": teacher.y_train[:600].numpy(),
        "x_test": raw(teacher.x_test[:200]),
        "y_test": teacher.y_test[:200].numpy(),
    }
    path = tmp_path / "own.npz"
    np.savez(path, **arrays)
    args = ["train", "--dataset", "npz", "--data-dir", str(path), "--widths", "16,8",
            "--epochs", "2", "--no-progress", "--no-report"]  # fmt: skip
    out = tmp_path / "std"
    assert main([*args, "--out", str(out)]) == 0
    assert "not standardised" not in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "own" and "not standardised" not in (summary["note"] or "")
    record = json.loads((out / "config.json").read_text())
    norm = record["data"]["normalisation"]
    assert record["run"]["standardise"] == "all" and norm["pixel_scale"] == 1.0
    assert abs(norm["mean"][0] - arrays["x_train"].mean()) < 1e-3 * 100
    assert abs(norm["std"][0] - arrays["x_train"].std()) < 1e-3 * 40

    out = tmp_path / "none"
    assert main([*args, "--standardise", "none", "--out", str(out)]) == 0
    err = capsys.readouterr().err  # said when the run starts, the command line's way
    assert "bayesprune: note: the training inputs have mean 9" in err and "Warning" not in err
    assert "not standardised" in json.loads((out / "summary.json").read_text())["note"]
    from bayesprune.export import input_note

    assert "x as stored in the training data" in input_note(out)  # what export prints

    np.savez(tmp_path / "big.npz", **{**arrays, "x_train": arrays["x_train"].astype(">f8")})
    big = [*args[:4], str(tmp_path / "big.npz"), *args[5:], "--out", str(tmp_path / "big")]
    assert main(big) == 0  # another byte order is converted, not refused
    capsys.readouterr()

    np.savez(tmp_path / "column.npz", **{**arrays, "y_train": arrays["y_train"][:, None]})
    column = [*args[:4], "column.npz", *args[5:], "--out", "column"]  # relative paths
    monkeypatch.chdir(tmp_path)
    assert main(column) == 0  # a column of labels is read as labels
    recorded = json.loads((tmp_path / "column" / "config.json").read_text())["run"]["data_dir"]
    assert recorded == str(tmp_path.resolve() / "column.npz")  # --resume may run elsewhere
    capsys.readouterr()

    (tmp_path / "text.npz").write_text("not an archive")
    np.savez(tmp_path / "one_based.npz", **{**arrays, "y_train": arrays["y_train"] + 1,
                                             "y_test": arrays["y_test"] + 1})  # fmt: skip
    huge = arrays["x_train"].astype(float) * 1e300  # finite, but not as float32
    np.savez(tmp_path / "huge.npz", **{**arrays, "x_train": huge})
    np.savez(tmp_path / "short.npz", **{k: v for k, v in arrays.items() if k != "y_test"})
    np.savez(tmp_path / "float.npz", **{**arrays, "y_train": arrays["y_train"].astype(float)})
    np.savez(tmp_path / "onehot.npz", **{**arrays, "y_train": np.eye(3)[arrays["y_train"]]
                                         .astype(np.int64)})  # fmt: skip
    np.save(tmp_path / "one.npy", arrays["x_train"])
    # labels from -1 (numpy's int8 of a "no label" marker): named, not read as num_classes - 1
    np.savez(tmp_path / "negative.npz", **{**arrays, "y_train": arrays["y_train"] - 1})
    np.savez(tmp_path / "zeros.npz", **{**arrays, "y_train": 0 * arrays["y_train"],
                                         "y_test": 0 * arrays["y_test"]})  # fmt: skip
    np.savez(tmp_path / "k1.npz", **arrays, num_classes=np.array(1))
    np.savez(tmp_path / "empty.npz", **{**arrays, "x_train": arrays["x_train"][:0],
                                         "y_train": arrays["y_train"][:0]})  # fmt: skip
    nan = arrays["x_test"].astype(float)
    nan[0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", **{**arrays, "x_test": nan})
    # a "missing" marker among the labels: 999 built 1,000 classes and trained them silently,
    # 10**8 failed to allocate the read-out with a traceback
    for name, marker in (("sentinel", 999), ("marker", 10**8)):
        marked = arrays["y_train"].copy()
        marked[:3] = marker
        np.savez(tmp_path / f"{name}.npz", **{**arrays, "y_train": marked})
    for given, message in (
        ([str(tmp_path / "negative.npz")], "y_train holds negative labels (the smallest is -1)"),
        ([str(tmp_path / "zeros.npz")], "zeros.npz: every label is 0 (one class): there is "),
        ([str(tmp_path / "empty.npz")], "empty.npz: the train set is empty (x_train has no rows)"),
        ([str(tmp_path / "k1.npz")], "k1.npz: num_classes is 1: a classifier needs at least 2"),
        ([str(tmp_path / "nan.npz")], "nan.npz: x_test holds 1 NaN or infinite value(s)"),
        ([str(tmp_path / "absent.npz")], "no such file"),
        ([str(tmp_path)], "a folder (--dataset npz reads one .npz file"),
        ([str(tmp_path / "one.npy")], "one array, not an .npz archive"),
        ([str(tmp_path / "text.npz")], "not a readable .npz file (no numpy array or archive)"),
        ([str(tmp_path / "one_based.npz")], "with no class 0: labels are 0..num_classes − 1"),
        ([str(tmp_path / "huge.npz")], "x_train holds values beyond float32's range"),
        ([str(tmp_path / "short.npz")], "no array y_test (it holds x_test, x_train, y_train)"),
        ([str(tmp_path / "float.npz")], "y_train must hold integer class labels, got dtype f"),
        ([str(tmp_path / "onehot.npz")], "y_train has shape (600, 3): labels are one class"),
        ([str(tmp_path / "sentinel.npz")], "labels take 4 values (0, 1, 2, 999) but run up to 999"),
        ([str(tmp_path / "marker.npz")], "so 100000001 classes would be built, most never seen"),
        ([str(tmp_path / "own.npz"), "--width-mult", "1e9"], "not enough memory for a network"),
    ):
        new = [*args[:4], *given, *args[5:], "--out", str(tmp_path / "refused")]
        assert main(new) == 2
        assert message in one_error_line(capsys)
    assert main(["train", "--dataset", "npz", "--out", str(tmp_path / "refused")]) == 2
    assert "give it with --data-dir FILE.npz" in one_error_line(capsys)
    assert main(["train", "--standardise", "all", "--out", str(tmp_path / "refused")]) == 2
    assert "--standardise is for --dataset npz" in one_error_line(capsys)
    assert not (tmp_path / "refused").exists()
    teacher_run = tmp_path / "teacher"  # an interrupted run on a loader's data (no summary)
    assert main(["train", "--widths", "8,4", "--epochs", "1", "--no-progress", "--no-report",
                 "--out", str(teacher_run)]) == 0  # fmt: skip
    (teacher_run / "summary.json").unlink()
    capsys.readouterr()
    assert main(["train", "--resume", str(teacher_run), "--standardise", "none"]) == 2
    assert "--standardise is for --dataset npz: run" in one_error_line(capsys)
