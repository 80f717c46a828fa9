"""``bayesprune baseline RUN_DIR``: the dense twin of a run (its network before any gate, its
recipe), trained and compared with the run."""

import json

import numpy as np
import pytest
import torch

from bayesprune.cli import main

# a recipe with no default left where the twin must copy it
RUN = ["--dataset", "teacher", "--widths", "16,8", "--width-mult", "0.5", "--train-subset", "600",
       "--epochs", "2", "--batch-size", "50", "--lr", "0.05", "--optimizer", "sgd", "--momentum",
       "0.5", "--lr-schedule", "cosine", "--init", "xavier", "--seed", "3", "--threads", "1",
       "--no-progress", "--no-report"]  # fmt: skip


def _last_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline") / "run"
    assert main(["train", *RUN, "--out", str(out)]) == 0
    return out


def test_the_twin_is_the_runs_network_before_any_gate_trained_with_the_runs_recipe(
    run_dir, tmp_path, monkeypatch, capsys
):
    import bayesprune.baseline as baseline
    from bayesprune.cli import _data_and_network, build_parser

    seen = {}
    train_dense = baseline.train_dense

    def spy(net, data, epochs, batch_size, lr, seed, **kwargs):
        seen["state"] = {k: v.clone() for k, v in net.state_dict().items()}
        seen["recipe"] = (len(data.x_train), epochs, batch_size, lr, seed, kwargs["optimizer"],
                          kwargs["schedule"], kwargs["momentum"])  # fmt: skip
        seen["data"] = data
        return train_dense(net, data, epochs, batch_size, lr, seed, **kwargs)

    monkeypatch.setattr(baseline, "train_dense", spy)
    assert main(["baseline", str(run_dir), "--no-progress"]) == 0
    # the network the command line built for the run: the same weights, layer by layer
    args = build_parser().parse_args(["train", *RUN])
    net = _data_and_network(args)[1]
    assert seen["state"].keys() == net.state_dict().keys()
    for key, value in net.state_dict().items():
        assert torch.equal(seen["state"][key], value), key
    assert seen["recipe"] == (600, 2, 50, 0.05, 3, "sgd", "cosine", 0.5)
    from bayesprune.data import make_teacher

    assert torch.equal(seen["data"].x_train, make_teacher().subset(600, seed=3).x_train)
    record = json.loads((run_dir / "baseline.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert record["dense"]["architecture"] == summary["initial_architecture"] == "4-8-4"
    assert record["run"]["architecture"] == summary["architecture"]
    assert record["gap_points"] == pytest.approx(
        100 * (summary["test_error"] - record["dense"]["test_error"])
    )
    # the teacher learns (a constant predictor's error is 0.62), read by the run's own rule
    dense = record["dense"]
    assert dense["status"] == "finished" and dense["status_reason"] is None
    assert len(dense["train_errors"]) == 2
    assert dense["train_errors"][-1] < record["constant_train_error"] - 0.05
    assert record["threads"] == record["run_threads"] == 1  # the run's, unless told
    printed = capsys.readouterr()
    assert f"gap {record['gap_points']:+.2f} points" in printed.out
    assert "the wall times do not compare" not in printed.out
    assert printed.err.strip().splitlines()[-1].endswith("baseline.json")
    assert (record["run_device"], record["run_processes"], record["run_status"]) == (
        "cpu", 1, "finished"
    )


def test_a_thread_count_other_than_the_runs_is_said_beside_the_wall_times(run_dir, capsys):
    assert main(["baseline", str(run_dir), "--no-progress", "--threads", "2"]) == 0
    assert "(the run: 1 thread(s); the wall times do not compare)" in capsys.readouterr().out
    from bayesprune.baseline import wall_note

    same = {"threads": 1, "run_threads": 1, "device": "cpu", "run_device": "cpu"}
    assert wall_note(same) is None
    assert wall_note({**same, "run_device": "cuda:0"}) == (
        "the run: device cuda:0; the wall times do not compare"
    )
    assert "2 processes" in wall_note({**same, "run_processes": 2})


def test_a_collapsed_run_is_read_against_its_twin(run_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    path = run / "summary.json"
    summary = json.loads(path.read_text())
    path.write_text(json.dumps({**summary, "status": "collapsed", "status_reason": "forced",
                                "architecture": "4-9-8"}))  # fmt: skip
    assert main(["baseline", str(run), "--no-progress"]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert "the run collapsed, but its dense twin learns" in lines[-2]
    assert "the gates failed" in lines[-2]  # (units were removed)
    path.write_text(json.dumps({**summary, "status": "collapsed", "status_reason": "forced"}))
    assert main(["baseline", str(run), "--no-progress"]) == 0  # (none was)
    line = capsys.readouterr().err.strip().splitlines()[-2]
    assert "the plain network does not, though it removed no unit" in line


def test_a_recipe_that_does_not_learn_without_gates_is_named(tmp_path, capsys):
    # random labels: the run collapses (nothing to learn) and so does its twin
    rng = np.random.default_rng(0)
    file = tmp_path / "noise.npz"
    np.savez(file, x_train=rng.normal(size=(300, 6)).astype(np.float32),
             y_train=rng.integers(0, 3, 300), x_test=rng.normal(size=(90, 6)).astype(np.float32),
             y_test=rng.integers(0, 3, 90))  # fmt: skip
    out = tmp_path / "run"
    args = ["train", "--dataset", "npz", "--data-dir", str(file), "--widths", "8,4", "--epochs",
            "3", "--no-progress", "--no-report", "--out", str(out)]  # fmt: skip
    assert main(args) == 3
    said = _last_line(capsys)  # the collapse's one line points to the twin
    assert said.startswith("bayesprune: run collapsed: ")
    assert said.endswith(f"bayesprune baseline {out} trains its dense twin)")
    assert main(["baseline", str(out), "--no-progress"]) == 0
    record = json.loads((out / "baseline.json").read_text())
    assert record["run"]["status"] == "collapsed" and record["dense"]["status"] == "collapsed"
    assert "its dense twin collapses too" in capsys.readouterr().err


def test_the_twin_is_read_by_the_rule_the_run_is_read_with():
    # Trainer.check_health's rule on a list of training errors: at chance at the last epoch,
    # or at an earlier one after an epoch clearly (5 points) below chance
    from bayesprune.baseline import collapse

    assert collapse([0.8, 0.6, 0.4], chance=0.9) is None
    assert "epoch 3" in collapse([0.95, 0.92, 0.895], chance=0.9)  # never learnt
    assert "never learnt" in collapse([0.95, 0.92, 0.895], chance=0.9)
    assert collapse([0.95, 0.92, 0.5], chance=0.9) is None  # a slow start is not a collapse
    # passed through chance after learning (a fuzzed LeNet-5 at Adam 3e-2 did, and its twin)
    assert collapse([0.3, 0.49], chance=0.5) is not None  # within AT_CHANCE, 0.01, exactly
    reason = collapse([0.9, 0.88, 0.82, 0.873, 0.833, 0.427], chance=0.873)
    assert reason.startswith("training error 0.873 at epoch 4") and "never" not in reason
    assert collapse([0.9, 0.88, 0.83, 0.873], chance=0.873) is not None  # at chance at the end
    assert collapse([0.9, 0.85, 0.86], chance=0.873) is None  # 0.85 is not clearly better


def test_a_collapse_the_network_learnt_again_after_says_so(tmp_path):
    """A run that passed through chance at epoch 3 (3 hidden units on 1,400 digits: 0.835,
    0.875, 0.884 against 0.894) and learnt to 0.366 read "run collapsed: training error 0.884
    at epoch 3 ..." and nothing more, its twin the same; the status stays collapsed (issue 9),
    and the reason now says where the network ended."""
    from bayesprune.baseline import collapse
    from bayesprune.config import TrainConfig
    from bayesprune.data import make_teacher
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models import GatedMLP

    errors = [0.835, 0.875, 0.884, 0.6, 0.366]
    reason = collapse(errors, chance=0.894)
    assert reason.startswith("training error 0.884 at epoch 3 is no better")
    assert reason.endswith("; it learnt again after that: training error 0.366 at epoch 5, the last")  # noqa: E501
    assert "learnt again" not in collapse([0.835, 0.875, 0.884, 0.88, 0.87], chance=0.894)
    assert "learnt again" not in collapse([0.8, 0.6, 0.89], chance=0.894)  # at chance at the end
    # the trainer's summary reads the same from its epochs' records
    trainer = Trainer(GatedMLP(4, (8,), 3), make_teacher(num_train=300, num_test=50),
                      TrainConfig(epochs=1))  # fmt: skip
    trainer.fit(progress=False)
    trainer.chance_error = 0.894
    trainer.history = [{**trainer.history[0], "epoch": e, "train_error": x}
                       for e, x in enumerate(errors, 1)]  # fmt: skip
    trainer.status, trainer.status_reason = "collapsed", "training error 0.884 at epoch 3 ..."
    summary = trainer.finish(1.0, 0.01)
    assert summary["status_reason"].endswith("training error 0.366 at epoch 5, the last")
    assert trainer.finish(1.0, 0.01)["status_reason"].count("learnt again") == 1  # said once


def test_a_held_out_share_is_trained_on_by_the_twin_and_said(tmp_path, capsys, monkeypatch):
    import bayesprune.baseline as baseline

    sizes, train_dense = [], baseline.train_dense

    def spy(net, data, *args, **kwargs):
        sizes.append(len(data.x_train))
        return train_dense(net, data, *args, **kwargs)

    monkeypatch.setattr(baseline, "train_dense", spy)
    out = tmp_path / "run"
    args = ["train", "--dataset", "teacher", "--widths", "8,4", "--epochs", "1", "--train-subset",
            "400", "--evidence", "held-out", "--evidence-share", "0.25", "--no-progress",
            "--no-report", "--out", str(out)]  # fmt: skip
    assert main(args) in (0, 3)
    capsys.readouterr()
    assert main(["baseline", str(out), "--no-progress"]) == 0
    record = json.loads((out / "baseline.json").read_text())
    assert (record["train_examples"], record["held_out_by_the_run"]) == (400, 100)
    assert sizes == [400]  # what the twin trained on: all of the run's subset
    assert "held out 100 of its 400 training examples" in capsys.readouterr().err


def test_a_finished_run_whose_twin_collapses_and_a_run_not_ended_are_said(run_dir, tmp_path,
                                                                          capsys):  # fmt: skip
    import shutil

    from bayesprune.baseline import verdict

    dense = {"status": "collapsed", "status_reason": "training error 0.9 at epoch 2 ..."}
    line = verdict({"run": {"status": "finished"}, "dense": dense})
    assert line.startswith("the run finished, but its dense twin collapsed (training error 0.9")
    assert verdict({"run": {"status": "finished"}, "dense": {"status": "finished"}}) is None
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "summary.json").write_text(json.dumps({"status": "running"}))
    assert main(["baseline", str(run), "--no-progress"]) == 0
    printed = capsys.readouterr()
    assert "bayesprune" not in printed.out.splitlines()[1]  # the dense column alone
    assert "the run has not ended (its status: running)" in printed.err


def test_what_baseline_refuses_is_one_line_and_writes_nothing(tmp_path, capsys, run_dir):
    import shutil

    from tests.conftest import one_error_line  # (nothing said before it: no "training ...")

    # settings a hand edit broke: refused before any training, not a traceback or a twin of
    # another network (widths 0,5 built a 4-1-5 twin of a 4-300-100 run)
    for key, value in (("widths", [0, 5]), ("arch", "resnet"), ("init", "zeros"),
                       ("width_mult", "x")):  # fmt: skip
        edited = tmp_path / f"edited-{key}"
        shutil.copytree(run_dir, edited)
        (edited / "baseline.json").unlink(missing_ok=True)  # (the fixture's, from other tests)
        config = json.loads((edited / "config.json").read_text())
        config["run"][key] = value
        (edited / "config.json").write_text(json.dumps(config))
        assert main(["baseline", str(edited), "--no-progress"]) == 2, key
        line = one_error_line(capsys)
        assert line.startswith(f"bayesprune: error: {edited}/config.json: "), line
        assert not (edited / "baseline.json").exists()
    damaged = tmp_path / "damaged"
    shutil.copytree(run_dir, damaged)
    (damaged / "summary.json").write_text("{bad")
    assert main(["baseline", str(damaged), "--no-progress"]) == 2  # before, not after, training
    assert "summary.json" in one_error_line(capsys)
    assert main(["baseline", str(tmp_path / "missing")]) == 2
    missing = tmp_path / "missing"
    assert one_error_line(capsys) == f"bayesprune: error: run directory {missing} does not exist"
    # a run started from Python records no data source: say how to get its twin instead
    from bayesprune.config import TrainConfig
    from bayesprune.data import make_teacher
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models import GatedMLP

    python_run = tmp_path / "python"
    data = make_teacher(num_train=200, num_test=50)
    Trainer(GatedMLP(4, (4, 3), 3), data, TrainConfig(epochs=1), out=python_run).fit(progress=False)
    capsys.readouterr()  # (the run's own lines)
    assert main(["baseline", str(python_run), "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert "a run started from Python" in line and "train_dense" in line
    assert not (python_run / "baseline.json").exists()
    # a run that trained on a device this machine lacks: say so, and how to choose another
    config = json.loads((python_run / "config.json").read_text())
    (python_run / "config.json").write_text(json.dumps({**config, "device": "cuda:7"}))
    if torch.cuda.device_count() < 8:
        assert main(["baseline", str(python_run), "--no-progress"]) == 2
        line = one_error_line(capsys)
        assert line.startswith("bayesprune: error: the run trained on cuda:7, ")
        assert line.endswith("give --device (e.g. --device cpu)")
    # data that changed since the run: refused, as --resume refuses them
    rng = np.random.default_rng(1)
    file = tmp_path / "d.npz"

    def save(n):
        np.savez(file, x_train=rng.normal(size=(n, 5)).astype(np.float32),
                 y_train=np.arange(n) % 2, x_test=rng.normal(size=(40, 5)).astype(np.float32),
                 y_test=np.arange(40) % 2)  # fmt: skip

    save(200)
    out = tmp_path / "run"
    args = ["train", "--dataset", "npz", "--data-dir", str(file), "--widths", "4", "--epochs", "1",
            "--no-progress", "--no-report", "--out", str(out)]  # fmt: skip
    assert main(args) in (0, 3)
    save(200)  # other values, the same shape
    capsys.readouterr()
    assert main(["baseline", str(out), "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("bayesprune: error: run ") and "did not train on these data" in line
    assert not (out / "baseline.json").exists()


def test_ctrl_c_while_the_twin_trains_is_one_line_and_writes_nothing(run_dir, tmp_path):
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "baseline.json").unlink(missing_ok=True)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "epochs": 100_000}))  # long enough
    proc = subprocess.Popen([sys.executable, "-m", "bayesprune", "baseline", str(run),
                             "--no-progress"], stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 120
    line = ""
    while "training the dense twin" not in line:  # the checks passed, the training began
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        line = proc.stderr.readline()
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in err
    assert err.strip().splitlines() == [
        "bayesprune: stopped by SIGINT; nothing was written (the twin trains again from its start)"
    ]
    assert not (run / "baseline.json").exists()


def test_long_architectures_keep_their_columns_apart():
    """A deep network's architecture is longer than a column was (16): the two ran together
    ("784-95-149-100-146784-200-200-200-200")."""
    from bayesprune.baseline import format_comparison

    side = {"status": "finished", "test_error": 0.1292, "train_wall_seconds": 30.0}
    result = {
        "device": "cpu", "threads": 1, "gap_points": -0.84, "wall_ratio": 1.9,
        "run": {**side, "architecture": "784-95-149-100-146", "weights_kept": 100_000,
                "weights_kept_fraction": 0.3},
        "dense": {**side, "architecture": "784-200-200-200-200", "weights_total": 300_000},
    }  # fmt: skip
    row = next(r for r in format_comparison(result).splitlines() if r.startswith("architecture"))
    assert row.split() == ["architecture", "784-95-149-100-146", "784-200-200-200-200"]


def test_the_python_baseline_checks_its_arguments_and_leaves_the_callers_state(run_dir):
    """train_dense and dense_twin from Python: arguments checked as TrainConfig and Trainer
    check theirs (a batch of 0 divided by zero, epochs -1 returned an untrained network, a
    network of 2 outputs on 3 classes failed inside cross_entropy), a network a Trainer trained
    is trained on with a warning (it gave a "dense" baseline from pruned weights without a
    word), and the caller's random streams and thread count are as they were (train_dense
    reseeded torch's generator, dense_twin set the run's thread count, and left them so)."""
    from bayesprune.baseline import dense_twin, train_dense
    from bayesprune.config import TrainConfig
    from bayesprune.data import DataError, make_teacher
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models import GatedMLP

    data = make_teacher(num_train=300, num_test=100)
    for kwargs, named in (({"batch_size": 0}, "train_dense: batch_size"),
                          ({"epochs": -1}, "train_dense: epochs"),
                          ({"optimizer": "sgdd"}, "train_dense: optimizer")):  # fmt: skip
        with pytest.raises(ValueError, match=named):
            train_dense(GatedMLP(4, (8,), 3), data, **{"epochs": 1, **kwargs})
    with pytest.raises(DataError):
        train_dense(GatedMLP(4, (8,), 2), data, 1)  # two outputs, three classes
    torch.manual_seed(7)
    expected = torch.rand(3)
    net = GatedMLP(4, (8,), 3)  # (its initialisation draws too: made before the seed)
    torch.manual_seed(7)
    train_dense(net, data, 1)
    assert torch.equal(torch.rand(3), expected)  # the caller's draws go on as they were
    net = GatedMLP(4, (8,), 3)
    Trainer(net, data, TrainConfig(epochs=1)).fit(progress=False)
    with pytest.warns(UserWarning, match="was trained by a Trainer"):
        train_dense(net, data, 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(2 if threads == 1 else 1)  # the run recorded 1 (--threads 1)
    try:
        before = torch.get_num_threads()
        torch.manual_seed(7)
        dense_twin(run_dir)
        assert torch.get_num_threads() == before and torch.equal(torch.rand(3), expected)
    finally:
        torch.set_num_threads(threads)
