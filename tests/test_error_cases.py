"""Every mistake in issue 11's list: one line on stderr, exit 2, nothing already written lost."""

import json
import re
import shutil

import numpy as np
import pytest
import torch

from bayesprune.cli import main
from tests.conftest import one_error_line
from tests.test_data import _fake_mnist, _replace

QUICK = ["--epochs", "1", "--widths", "4,3", "--no-progress"]


def _file(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("x")
    return path


TRAIN_CASES = {
    "out-in-proc": (lambda t: ["--out", "/proc/x/run"], "cannot write"),
    "out-in-sys": (lambda t: ["--out", "/sys/x/run"], "cannot write"),
    "out-under-a-file": (lambda t: ["--out", str(_file(t) / "sub")], "cannot write"),
    "lr-1e30": (lambda t: ["--lr", "1e30"], "--lr"),
    "lr-inf": (lambda t: ["--lr", "inf"], "--lr"),
    "temperature-inf": (lambda t: ["--temperature", "inf"], "--temperature"),
    "price-scale-with-temperature": (
        lambda t: ["--temperature", "0.03", "--price-scale", "2"], "--price-scale"
    ),
    "price-scale-zero": (lambda t: ["--price-scale", "0"], "--price-scale"),
    "momentum-one": (lambda t: ["--optimizer", "sgd", "--momentum", "1"], "--momentum"),
    "momentum-with-adam": (lambda t: ["--momentum", "0.5"], "is --optimizer sgd's"),
    "share-without-held-out": (lambda t: ["--evidence-share", "0.3"], "is --evidence held-out's"),
    "optimizer-misspelt": (lambda t: ["--optimizer", "sdg"], "--optimizer"),
    "seed-negative": (lambda t: ["--seed", "-1"], "--seed"),
    "seed-20-digits": (lambda t: ["--seed", "12345678901234567890"], "--seed"),
    "device-meta": (lambda t: ["--device", "meta"], "--device"),
    "data-dir-missing": (
        lambda t: ["--dataset", "fashion-mnist", "--data-dir", str(t / "typo")],
        "not a directory",
    ),
    "data-dir-empty": (
        lambda t: ["--dataset", "fashion-mnist", "--data-dir", str((t / "e").mkdir() or t / "e")],
        "not found",
    ),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_mistakes(tmp_path, capsys, case):
    make, message = TRAIN_CASES[case]
    args = make(tmp_path)
    out = [] if "--out" in args else ["--out", str(tmp_path / "run")]
    assert main(["train", *QUICK, *out, *args]) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "run" / "config.json").exists()  # nothing half-written


@pytest.mark.parametrize(
    "name,array",
    [
        ("train-labels-idx1-ubyte", np.full(30, 255)),
        ("t10k-labels-idx1-ubyte", np.full(10, 77)),
        ("t10k-images-idx3-ubyte", np.zeros((10, 14, 14))),
        ("train-images-idx3-ubyte", np.zeros(30)),
    ],
    ids=["labels-255", "test-labels-77", "test-images-14x14", "rank-1-images"],
)
def test_idx_files_with_wrong_content(tmp_path, capsys, name, array):
    raw = _fake_mnist(tmp_path)
    _replace(raw, name, array)
    args = ["train", *QUICK, "--dataset", "mnist", "--data-dir", str(tmp_path)]
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    assert str(raw) in one_error_line(capsys)


def test_all_zero_images_train_without_nan(tmp_path, capsys):
    raw = _fake_mnist(tmp_path)
    _replace(raw, "train-images-idx3-ubyte", np.zeros((30, 28, 28)))
    out = tmp_path / "run"
    args = ["train", *QUICK, "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(out)]
    assert main(args) in (0, 3)  # constant inputs: it may not learn, but no NaN and no traceback
    assert json.loads((out / "summary.json").read_text())["status"] != "failed"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert (
        main(["train", "--epochs", "2", "--widths", "6,4", "--no-progress", "--out", str(out),
              "--threads", "1"])  # its own count: a module fixture runs before the autouse one
        == 0
    )
    return out


def _garbage_summary(run):
    (run / "summary.json").write_text("{not json")


def _list_summary(run):
    (run / "summary.json").write_text("[]")


def _only_checkpoints(run, content):
    for ckpt in (run / "checkpoints").glob("*.pt"):
        ckpt.unlink()
    (run / "checkpoints" / "epoch_001.pt").write_bytes(content)


def _zero_byte_checkpoint(run):
    _only_checkpoints(run, b"")


def _list_checkpoint(run):
    import io

    buffer = io.BytesIO()
    torch.save([1, 2, 3], buffer)
    _only_checkpoints(run, buffer.getvalue())


def _bad_rho(run):
    config = json.loads((run / "config.json").read_text())
    config["rho"] = "abc"
    (run / "config.json").write_text(json.dumps(config))


def _inspect_is_a_file(run):
    shutil.rmtree(run / "inspect")
    (run / "inspect").write_text("mine")


def _stopped_in_first_epoch(status):
    def damage(run):  # a run stopped before its first epoch's record: no record, its status
        (run / "metrics.jsonl").write_text("")
        summary = json.loads((run / "summary.json").read_text())
        (run / "summary.json").write_text(json.dumps({**summary, "status": status}))

    return damage


INSPECT_CASES = {
    # (it asked "did training start?" of a run that had started)
    "interrupted-in-first-epoch": (
        _stopped_in_first_epoch("interrupted"),
        "stopped (interrupted) before its first epoch ended: nothing to inspect yet; "
        "bayesprune train --resume",
    ),
    "running-in-first-epoch": (
        _stopped_in_first_epoch("running"), "has not finished its first epoch"
    ),
    "failed-in-first-epoch": (_stopped_in_first_epoch("failed"), "failed in its first epoch"),
    "garbage-summary": (_garbage_summary, "summary.json"),
    "summary-is-a-list": (_list_summary, "summary.json"),
    "zero-byte-checkpoint": (_zero_byte_checkpoint, "checkpoint"),
    "checkpoint-is-a-list": (_list_checkpoint, "not a bayesprune checkpoint"),
    "rho-abc": (_bad_rho, "rho"),
    "inspect-is-a-file": (_inspect_is_a_file, "inspect"),
}


@pytest.mark.parametrize("case", list(INSPECT_CASES))
def test_inspect_mistakes(tmp_path, capsys, finished, case):
    damage, message = INSPECT_CASES[case]
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    damage(run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["inspect", str(run)]) == 2
    assert message in one_error_line(capsys)
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before  # nothing the user had is lost or changed


def test_a_non_finite_objective_stops_the_run_with_one_line(tmp_path, capsys, monkeypatch):
    import bayesprune.models.network as network

    build = network.build_network  # (the command line's own binding is patched below)

    def poisoned(*args, **kwargs):
        net = build(*args, **kwargs)
        with torch.no_grad():
            net.layers["fc1"].weight[0, 0] = float("nan")
        return net

    import bayesprune.cli as cli

    monkeypatch.setattr(cli, "build_network", poisoned)
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--out", str(out)]) == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert "not finite at step 1" in lines[-1] and "Traceback" not in "\n".join(lines)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "step 1" in summary["status_reason"]
    assert not (out / "model.pt").exists()


def test_a_failed_write_mid_run_is_one_line_and_leaves_no_partial_file(
    tmp_path, capsys, monkeypatch
):
    # the disk fills up while a checkpoint is written: one line, exit 2, no truncated file
    import bayesprune.runs as runs

    real = runs.atomic_torch_save

    def full_disk(obj, path):
        if "epoch_002" in str(path):
            raise OSError(28, "No space left on device", str(path))
        real(obj, path)

    monkeypatch.setattr(runs, "atomic_torch_save", full_disk)
    out = tmp_path / "run"
    assert (
        main(["train", "--epochs", "3", "--widths", "4,3", "--no-progress", "--out", str(out)]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()  # the "training ..." line, then one
    assert err[-1].startswith("bayesprune: error:") and "Traceback" not in "\n".join(err)
    assert "No space left on device" in err[-1] and "--resume" in err[-1]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_001.pt"]


@pytest.mark.parametrize(
    "setting", [{"window_cap": None}, {"window_cap": "nonne"}, {"estimator": "exakt"},
                {"release": "all"}, {"posterior": None}],  # fmt: skip
)
def test_a_python_config_with_a_value_outside_its_choices_is_refused(setting):
    from bayesprune.config import TrainConfig

    ((name, value),) = setting.items()
    with pytest.raises(ValueError, match=f"TrainConfig.{name} = {value!r}: choose one of"):
        TrainConfig(**setting)
    TrainConfig(window_cap="none", estimator="exact", release="together")  # valid values pass


@pytest.mark.parametrize(
    "setting, message",
    [({"epochs": 0}, "positive"), ({"batch_size": -1}, "positive"), ({"lr": 5}, "(0, 1]"),
     ({"epochs": "2"}, "not a number"), ({"theta_transit": 1.5}, "theta_transit")],
)  # fmt: skip
def test_a_python_config_out_of_range_is_refused_where_it_is_made(setting, message):
    # TrainConfig(epochs=0) used to fail deep inside fit with a ZeroDivisionError
    from bayesprune.config import TrainConfig
    from bayesprune.models.network import GatedMLP

    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(**setting)
    TrainConfig(epochs=1, batch_size=7, lr=1.0, temperature=None)  # edges inside pass
    with pytest.raises(ValueError, match="positive integers"):
        GatedMLP(784, (10.5,), 10)  # not silently 10 units
    assert GatedMLP(784, (10.0,), 10).widths == [10]


def test_a_config_changed_after_it_was_made_is_checked_by_the_trainer_and_a_device_object_kept():
    """A field set on a TrainConfig after it was made skipped its checks: optimizer "sgdd"
    trained with Adam without a word, epochs 0 divided by zero deep in fit. The Trainer checks
    a copy of it again. And torch.device("cpu"), torch's idiom, is kept as its name: a run with
    an out directory failed at writing config.json, leaving a folder that could not be used."""
    from bayesprune.config import TrainConfig
    from bayesprune.data import make_teacher
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models.network import GatedMLP

    data = make_teacher(num_train=200, num_test=50)
    changes = (("optimizer", "sgdd", "choose one of"), ("epochs", 0, "positive"),
               ("epochs", 2.5, "an integer"))  # fmt: skip
    for name, value, message in changes:
        config = TrainConfig(epochs=1)
        setattr(config, name, value)
        with pytest.raises(ValueError, match=f"TrainConfig.{name} = .*{message}"):
            Trainer(GatedMLP(4, (6,), 3), data, config)
    config = TrainConfig(epochs=1, device=torch.device("cpu"))
    assert config.device == "cpu"


def test_a_process_with_float64_by_default_trains_as_a_float32_one():
    """torch.set_default_dtype(torch.float64), as Pyro's GP work sets it: a Trainer failed with
    a dtype error (θ, σ₁² and the prior's sums made float64 beside float32 weights). It now
    trains as in a float32 process, to the bit, and gives the caller's default back."""
    from bayesprune.config import TrainConfig
    from bayesprune.data import make_teacher
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models.network import GatedMLP

    data = make_teacher(num_train=400, num_test=50)
    nets = []
    for default in (torch.float32, torch.float64):
        torch.manual_seed(0)
        net = GatedMLP(4, (12, 6), 3)  # made in float32 either way
        before = torch.get_default_dtype()
        torch.set_default_dtype(default)
        try:
            Trainer(net, data, TrainConfig(epochs=2, batch_size=50)).fit(progress=False)
            assert torch.get_default_dtype() == default  # the caller's, given back
        finally:
            torch.set_default_dtype(before)
        nets.append(net)
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_network_constructors_name_what_is_wrong_with_their_arguments():
    """GatedMLP(6.7, …) built 6 inputs, GatedMLP(data.in_shape, …) and GatedMLP(784, 100, 10)
    failed with int()'s and iteration's messages; GatedNet took (H, W, C) images as H channels
    (build_network refused them, GatedNet did not)."""
    from bayesprune.models.network import GatedMLP, GatedNet

    for args, message in (((6.7, (8,), 3), "in_features must be an integer"),
                          (((1, 28, 28), (8,), 3), "pass math.prod(shape) = 784"),
                          ((784, 100, 10), "widths is a sequence of hidden widths")):  # fmt: skip
        with pytest.raises(ValueError, match=re.escape(message)):
            GatedMLP(*args)
    assert GatedMLP(784.0, (10,), 10).in_shape == (784,)  # an integral float, as widths' 10.0
    plan = [("conv", 8, 3, 1), ("fc", 16)]
    with pytest.raises(ValueError, match=re.escape("(16, 16, 3): channels last, it seems")):
        GatedNet((16, 16, 3), plan, 3)
    assert GatedNet((3, 16, 16), plan, 3).in_shape == (3, 16, 16)
    assert GatedNet((16, 16, 3), [("fc", 16)], 3).in_shape == (16, 16, 3)  # no convolution


# --- found by a new-user review (session of 2026-12-03, eighth) --------------------------------


def test_the_other_datasets_files_are_refused(tmp_path, capsys):
    # MNIST's and Fashion-MNIST's files share names and shapes: Fashion-MNIST's files given as
    # --dataset mnist would train and be recorded as MNIST
    from bayesprune.data import LABEL_SIGNATURES

    raw = _fake_mnist(tmp_path)
    train, test = LABEL_SIGNATURES["fashion-mnist"]
    _replace(raw, "train-labels-idx1-ubyte", np.array([*train] * 2 + [0] * 6))
    _replace(raw, "t10k-labels-idx1-ubyte", np.array([*test][:10]))
    args = ["train", *QUICK, "--dataset", "mnist", "--data-dir", str(tmp_path)]
    # the training split alone is Fashion-MNIST's (a helper's mixed copy: MNIST's test files
    # beside Fashion-MNIST's training files trained, and tested on the other dataset)
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    assert "the training files in" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()
    _replace(raw, "t10k-images-idx3-ubyte", np.zeros((12, 28, 28)))
    _replace(raw, "t10k-labels-idx1-ubyte", np.array([*test]))
    assert main([*args, "--out", str(tmp_path / "run2")]) == 2
    assert "fashion-mnist's, not mnist's" in one_error_line(capsys)
    assert not (tmp_path / "run2").exists()  # the run directory it made is gone again


def test_a_train_subset_above_the_data_is_refused_before_the_run_starts(tmp_path, capsys):
    out = tmp_path / "made" / "by" / "it"
    assert main(["train", *QUICK, "--train-subset", "30000", "--out", str(out)]) == 2
    assert "between 1 and 20000" in one_error_line(capsys)  # the teacher's 20,000 examples
    assert not (tmp_path / "made").exists()  # every folder the command made, and only those
    assert tmp_path.is_dir()


def test_resume_refuses_other_settings_and_a_damaged_summary(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    # a run recorded before --merge existed trained without merges (config.PREDATING)
    record = {"epochs": 12, "lr": 0.001, "run": {"data_dir": str(tmp_path), "arch": "mlp"}}
    (run / "config.json").write_text(json.dumps(record))
    assert main(["train", "--resume", str(run), "--epochs", "20", "--lr", "0.5"]) == 2
    line = one_error_line(capsys)
    assert "these differ: --epochs 20 (the run's: 12); --lr 0.5 (the run's: 0.001)" in line
    assert main(["train", "--resume", str(run), "--epoch", "3"]) == 2  # an abbreviation too
    assert "--epochs 3 (the run's: 12)" in one_error_line(capsys)
    # the run's own settings repeated are what the run does: not refused (this run directory
    # fails later, for want of the data it used)
    same = ["--epochs", "12", "--lr", "1e-3", "--data-dir", f"{tmp_path}/./", "--merge", "off"]
    same += ["--widths", "300,100", "--device", "cpu"]  # the mlp's own widths; where to run
    assert main(["train", "--resume", str(run), *same]) == 2
    assert "does not say which data" in one_error_line(capsys)
    assert main(["train", "--resume", str(run), "--merge", "on", "--widths", "5,3"]) == 2
    line = one_error_line(capsys)
    assert "--merge on (the run's: off)" in line and "--widths 5,3 (the run's: 300,100)" in line
    (run / "summary.json").write_text("{not json")
    assert main(["train", "--resume", str(run), "--threads", "1", "--no-progress"]) == 2
    assert "damaged" in one_error_line(capsys)
    assert (run / "summary.json").read_text() == "{not json"


def test_baseline_refuses_a_data_dir_for_data_made_in_memory(finished, capsys):
    """The teacher's data are made in memory: ``baseline --data-dir`` for such a run is refused
    in one line (it was ignored, and the twin trained)."""
    before = sorted(p.name for p in finished.iterdir())
    assert main(["baseline", str(finished), "--data-dir", "/nowhere/at/all"]) == 2
    assert "trained on teacher data, which are not read from a folder" in one_error_line(capsys)
    assert sorted(p.name for p in finished.iterdir()) == before  # no baseline.json


def test_export_never_overwrites_a_file_it_did_not_write(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for out, message in (
        (run / "model.pt", "writes .onnx files"),
        (run / "summary.onnx", "exists"),
        (tmp_path / "missing" / "x.onnx", "does not exist"),
        (run, "writes .onnx files"),
    ):
        if out.name == "summary.onnx":
            out.write_bytes(b"mine")
            before[out] = b"mine"
        assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 2, out
        assert message in one_error_line(capsys)
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before
    if __import__("importlib").util.find_spec("onnx") is not None:  # the default is replaced
        assert main(["export", str(run), "--format", "onnx"]) == 0
        assert main(["export", str(run), "--format", "onnx"]) == 0


def test_a_checkpoint_of_another_run_is_refused_and_nothing_changes(finished, tmp_path, capsys):
    # a user copies a checkpoint between run directories: --resume and inspect must not train
    # or draw the other run's network under this run's name
    run, other = tmp_path / "run", tmp_path / "other"
    shutil.copytree(finished, run)
    assert main(["train", *QUICK, "--no-report", "--out", str(other)]) == 0
    capsys.readouterr()
    (run / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    shutil.copy(other / "checkpoints" / "epoch_001.pt", run / "checkpoints" / "last.pt")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["train", "--resume", str(run), "--no-progress", "--threads", "1"]) == 2
    assert "belongs to another run" in one_error_line(capsys)
    (run / "checkpoints" / "last.pt").unlink()
    del before[run / "checkpoints" / "last.pt"]
    shutil.copy(other / "checkpoints" / "epoch_001.pt", run / "checkpoints" / "epoch_002.pt")
    foreign = run / "checkpoints" / "epoch_002.pt"
    before[foreign] = foreign.read_bytes()
    assert main(["inspect", str(run), "--draws", "20"]) == 2
    assert "belongs to another run" in one_error_line(capsys)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_trainer_never_writes_into_another_runs_directory(finished, tmp_path):
    # the Python API's Trainer(out=...) refuses a non-empty directory, as the CLI does
    from bayesprune.config import TrainConfig
    from bayesprune.data import load_dataset
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models.network import GatedMLP
    from bayesprune.runs import RunError

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    data = load_dataset("teacher")
    net = GatedMLP(data.in_features, (4, 3), data.num_classes)
    trainer = Trainer(net, data, TrainConfig(epochs=1, train_subset=500), out=run)
    with pytest.raises(RunError, match="not an empty directory"):
        trainer.fit(progress=False)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def _learnable_mnist(root, n=400):
    """MNIST-format files a network learns in a few steps (two classes, dark and bright
    images), for tests that need a run to finish: on random labels whether a one-epoch run ends
    "finished" or "collapsed" (never learnt) depends on the CPU's rounding."""
    from tests.test_data import _write_idx

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("t10k", n // 4)):
        y = rng.integers(0, 2, count)
        x = np.clip(rng.normal(60 + 120 * y[:, None, None], 30, (count, 28, 28)), 0, 255)
        _write_idx(raw / f"{split}-images-idx3-ubyte", x)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", y)


def test_bench_rebuilds_the_starting_network_of_any_run(tmp_path, capsys):
    # a LeNet-5 with its own --widths, and a network built in Python: both recorded in
    # config.json's initial_spec, so bench compares against the network each run started from
    from bayesprune.config import TrainConfig
    from bayesprune.data import load_dataset
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models.network import GatedNet

    _learnable_mnist(tmp_path)  # (on _fake_mnist's random labels it collapsed on an Intel Xeon)
    lenet = tmp_path / "lenet"
    args = ["train", "--arch", "lenet5", "--widths", "3,4,8", "--epochs", "1", "--no-progress"]
    args += ["--no-report", "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(lenet)]
    assert main(args) == 0
    data = load_dataset("teacher")
    plan = [("fc", 7), ("fc", 5), ("fc", 3)]
    api = tmp_path / "api"
    net = GatedNet(data.in_shape, plan, data.num_classes)
    Trainer(net, data, TrainConfig(epochs=1, train_subset=500), out=api).fit(progress=False)
    capsys.readouterr()
    for run, widths in ((lenet, [3, 4, 8]), (api, [7, 5, 3])):
        assert main(["bench", str(run), "--batch", "1", "--threads", "1"]) == 0, capsys.readouterr()
        bench = json.loads((run / "bench.json").read_text())
        config = json.loads((run / "config.json").read_text())
        plan = config["initial_spec"]["plan"]
        assert [step[1] for step in plan if step[0] in ("conv", "fc")] == widths
        summary = json.loads((run / "summary.json").read_text())
        assert bench["dense"]["params"] == summary["weights_total"]


def test_export_replaces_only_its_own_earlier_file(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "model.safetensors").write_bytes(b"my notes")
    assert main(["export", str(run), "--format", "safetensors"]) == 2
    assert "is not recorded as an export of this run" in one_error_line(capsys)
    assert (run / "model.safetensors").read_bytes() == b"my notes"
    (run / "model.safetensors").unlink()
    assert main(["export", str(run), "--format", "safetensors"]) == 0  # a fresh export
    assert main(["export", str(run), "--format", "safetensors"]) == 0  # replaces its own
    capsys.readouterr()
    (run / "model.safetensors").write_bytes(b"edited since")
    assert main(["export", str(run), "--format", "safetensors"]) == 2
    assert "was changed since" in one_error_line(capsys)
    assert (run / "model.safetensors").read_bytes() == b"edited since"


def test_bench_of_a_model_pt_that_is_not_ours_is_one_line(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "model.pt").write_text("garbage")
    assert main(["bench", str(run), "--batch", "1"]) == 2
    assert "not a model.pt written by bayesprune" in one_error_line(capsys)
    assert main(["bench", str(run / "summary.json")]) == 2
    assert "is a file, not a run directory" in one_error_line(capsys)


def test_inspect_of_an_earlier_epoch_leaves_the_final_files(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    final = {p: p.read_bytes() for p in [run / "training.png", *(run / "inspect").glob("*")]}
    assert main(["inspect", str(run), "--epoch", "1", "--draws", "20"]) == 0
    assert {p: p.read_bytes() for p in final} == final
    assert (run / "inspect" / "epoch_001" / "posterior.nc").stat().st_size > 0
    assert (run / "inspect" / "epoch_001" / "training.png").stat().st_size > 0


def test_inspect_past_a_damaged_last_checkpoint_says_so_and_keeps_the_final_files(
    finished, tmp_path, capsys
):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "checkpoints" / "epoch_002.pt").write_bytes(b"torn")
    final = {p: p.read_bytes() for p in [run / "training.png", *(run / "inspect").glob("*")]}
    assert main(["inspect", str(run), "--draws", "20"]) == 0
    err = capsys.readouterr().err
    assert "note: the checkpoint of epoch 2 is missing or cannot be read; inspecting epoch 1" in err
    assert {p: p.read_bytes() for p in final} == final
    assert (run / "inspect" / "epoch_001" / "posterior.nc").stat().st_size > 0


def test_a_run_records_how_its_inputs_were_normalised(tmp_path, capsys):
    # an exported network is only usable with the same input transform: config.json says it
    # and export prints it
    _fake_mnist(tmp_path)
    out = tmp_path / "run"
    args = ["train", *QUICK, "--no-report", "--dataset", "mnist", "--data-dir", str(tmp_path)]
    assert main([*args, "--out", str(out)]) in (0, 3)
    norm = json.loads((out / "config.json").read_text())["data"]["normalisation"]
    from bayesprune.data import load_dataset

    data = load_dataset("mnist", tmp_path)
    raw = np.frombuffer((tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").read_bytes()[16:],
                        dtype=np.uint8).reshape(-1, 1, 28, 28)  # fmt: skip
    rebuilt = (torch.from_numpy(raw.astype(np.float32)) * norm["pixel_scale"] - norm["mean"][0])
    torch.testing.assert_close(rebuilt / norm["std"][0], data.x_train)
    from bayesprune.export import input_note

    # what export prints beside the file (this run on random images collapses, and export
    # refuses a collapsed network: the note is read directly)
    note = input_note(out)
    assert "data.normalisation" in note and f"mean {norm['mean']}" in note
    status = json.loads((out / "summary.json").read_text())["status"]
    assert status == "collapsed"  # seeded random images: nothing to learn, and the run says so
    capsys.readouterr()
    assert main(["export", str(out), "--format", "safetensors"]) == 2  # refused, one line
    assert "collapsed" in capsys.readouterr().err


def test_units_removed_after_the_last_epochs_line_are_counted_and_named(
    tmp_path, capsys, monkeypatch
):
    # units found collapsed at the last check leave after the last epoch's record: summary.json
    # says how many, so its widths and metrics.jsonl's last line add up, and the CLI says so
    from bayesprune.inference.trainer import Trainer

    end_epoch = Trainer.end_epoch

    def collapse_one_at_the_end(self, *args, **kwargs):
        end_epoch(self, *args, **kwargs)
        if self.epoch == self.config.epochs:  # as if the last check had found fc1's unit 0
            gone = torch.zeros(self.net.width("fc1"), dtype=torch.bool)
            gone[0] = True
            self.collapsed, self.collapsed_step = {"fc1": gone}, self.step

    monkeypatch.setattr(Trainer, "end_epoch", collapse_one_at_the_end)
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--no-report", "--threads", "1", "--out", str(out)]) == 0
    assert "removed after the last epoch's line (1 in fc1)" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert summary["removed_at_end"] == {"fc1": 1}
    assert [w + k for w, k in zip(summary["widths"], (1, 0), strict=True)] == last["widths"]

    # a unit at θ = 0 not yet removed at the end (its patience not spent) is in the network
    # but not in the deployed one: named too (it was counted nowhere on the command line)
    def off_at_the_end(self, *args, **kwargs):
        if self.epoch + 1 == self.config.epochs:  # before the last epoch's record
            theta = self.guide.gate_probs("fc2").detach().clone()
            theta[0] = 0.0
            self.guide.set_gate_probs("fc2", theta)
        end_epoch(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "end_epoch", off_at_the_end)
    out = tmp_path / "off"
    assert main(["train", *QUICK, "--no-report", "--threads", "1", "--out", str(out)]) == 0
    assert "left out of the deployed network and of 4-4-2 (1 in fc2)" in capsys.readouterr().err


def test_an_epochs_line_names_the_posterior_modes_widths_when_they_differ(
    tmp_path, capsys, monkeypatch
):
    # a unit at θ = 0 stays in the network until the next check removes it: the epoch's errors
    # are those of the mode without it, and the record and the line say which widths those are
    from bayesprune.inference.trainer import Trainer

    epoch_record = Trainer.epoch_record

    def one_gate_at_zero_at_the_end(self, epoch, *args):
        if epoch == self.config.epochs:
            with torch.no_grad():
                self.guide._storage("theta", "fc1")[0] = 0.0
        return epoch_record(self, epoch, *args)

    monkeypatch.setattr(Trainer, "epoch_record", one_gate_at_zero_at_the_end)
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--no-report", "--threads", "1", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["widths"] == [4, 3] and last["mode_widths"] == [3, 3] == summary["widths"]
    assert "widths [4, 3] (mode [3, 3])" in capsys.readouterr().out


def test_gates_started_at_one_half_that_never_moved_deploy_every_unit(tmp_path, monkeypatch):
    # --init-theta 0.5 and a run that ends before the warm-up (10w) lets θ move: every θ is
    # exactly ½. The mode used to be θ > ½, which deployed one unit per layer and reported the
    # run as collapsed ("never learnt") although its network had learnt (cli_fuzz --seed 16)
    from bayesprune.inference.trainer import Trainer

    monkeypatch.setattr(Trainer, "warmed_up", lambda self, *args: False)  # θ never moves
    out = tmp_path / "run"
    argv = ["train", "--epochs", "3", "--widths", "8,6", "--no-progress", "--no-report",
            "--threads", "1", "--init-theta", "0.5", "--settle", "off",  # (the mode alone)
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["widths"] == [8, 6]
    assert summary["test_error"] < 0.3  # the teacher's 3 classes: chance is about 0.6
    assert "never let θ move" in summary["note"]


def test_option_combinations_that_would_be_ignored_are_refused_or_named(tmp_path, capsys):
    _fake_mnist(tmp_path)
    for args, message in (
        ([*QUICK, "--merge-groups", "on", "--merge", "off"],
         "merge_groups 'on' (--merge-groups on) needs merge 'on' (--merge on)"),
        ([*QUICK, "--merge", "off", "--merge-groups", "auto"],  # the default, asked for
         "merge_groups 'auto' (--merge-groups auto) needs merge 'on' (--merge on)"),
        ([*QUICK, "--accelerator", "gpu"], "--accelerator needs --strategy ddp"),
        (["--arch", "vgg16", "--dataset", "mnist", "--data-dir", str(tmp_path)], "32×32"),
    ):
        out = tmp_path / "refused"
        assert main(["train", "--epochs", "1", "--out", str(out), *args]) == 2, args
        assert message in one_error_line(capsys)
        assert not out.exists()
    out = tmp_path / "gaussian"
    assert main(["train", *QUICK, "--no-report", "--weights", "gaussian", "--out", str(out)]) == 0
    assert "no merge moves in this run" in capsys.readouterr().err
    out = tmp_path / "no-merges"  # --merge off alone: the default groups have nothing to act on
    assert main(["train", *QUICK, "--no-report", "--merge", "off", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["merge"] == "off"


def _as_before_run_ids(run):
    """``run`` as bayesprune wrote it before run ids and initial_spec (and --merge-groups with
    --merge off, which was accepted then and did nothing)."""
    config = json.loads((run / "config.json").read_text())
    for key in ("run_id", "initial_spec"):
        del config[key]
    config.update(merge="off", merge_groups="on")
    (run / "config.json").write_text(json.dumps(config))
    for ckpt in (run / "checkpoints").glob("*.pt"):
        state = torch.load(ckpt, weights_only=True)
        del state["run_id"]
        del state["trainer"]["initial_spec"]
        torch.save(state, ckpt)
    (run / "summary.json").write_text(json.dumps({"status": "interrupted"}))


def test_a_run_from_before_run_ids_resumes_and_is_inspected(finished, tmp_path, capsys):
    import numpy as np

    from bayesprune.config import TrainConfig

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    _as_before_run_ids(run)
    recorded = json.loads((run / "config.json").read_text())
    assert TrainConfig.from_record(recorded).merge_groups == "off"
    ckpt = run / "checkpoints" / "epoch_002.pt"
    pristine = ckpt.read_bytes()
    state = torch.load(ckpt, weights_only=True)
    state["run_id"] = "0" * 32  # a checkpoint of a run that records ids: not this one's
    torch.save(state, ckpt)
    assert main(["train", "--resume", str(run), "--no-progress", "--threads", "1"]) == 2
    assert "belongs to another run" in one_error_line(capsys)
    del state["run_id"]
    state["net_spec"]["arch"] = "lenet5"  # older runs: the architecture is compared
    torch.save(state, ckpt)
    assert main(["inspect", str(run), "--draws", "20"]) == 2
    assert "holds a lenet5 network but the run trains a mlp" in one_error_line(capsys)
    ckpt.write_bytes(pristine)
    assert main(["train", "--resume", str(run), "--no-progress", "--threads", "1"]) == 0
    assert main(["inspect", str(run), "--draws", "20"]) == 0
    capsys.readouterr()
    # numbers from numpy (a sweep over np.arange) are numbers
    TrainConfig(epochs=np.int64(3), batch_size=np.int32(64), lr=np.float32(1e-3))


def test_inspect_and_bench_values_beyond_their_range_are_one_line(finished, tmp_path, capsys):
    """A seed numpy cannot take, a batch no memory holds, a GPU index that does not exist: one
    line and exit 2, nothing written (they were tracebacks)."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for seed in ("-1", "99999999999999999999"):
        assert main(["inspect", str(run), "--seed", seed]) == 2
        assert "--seed" in one_error_line(capsys)
    for batch in (2**62, 10**20):  # torch's sizes would overflow: refused as they are read
        assert main(["bench", str(run), "--batch", str(batch)]) == 2
        assert "batch sizes must be at most" in one_error_line(capsys)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_bench_batch_no_memory_holds_is_one_line(finished, tmp_path, capsys, monkeypatch):
    """The allocator's refusal (the CPU's, or a GPU's OutOfMemoryError) is one line and exit 2;
    another error that mentions memory is not relabelled as one."""
    import torch

    import bayesprune.bench as bench

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for err in (
        RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate "
                     "memory: you tried to allocate 16000000000000 bytes"),
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB"),
    ):  # fmt: skip

        def refuses(*args, err=err, **kwargs):
            raise err

        monkeypatch.setattr(bench.torch, "randn", refuses)
        assert main(["bench", str(run), "--batch", "1000000"]) == 2
        assert "--batch 1000000: not enough memory on cpu" in one_error_line(capsys)
    other = RuntimeError("CUDA error: an illegal memory access was encountered")
    monkeypatch.setattr(bench.torch, "randn", lambda *a, **k: (_ for _ in ()).throw(other))
    with pytest.raises(RuntimeError, match="illegal memory access"):
        main(["bench", str(run), "--batch", "8"])
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_bench_on_a_gpu_index_torch_does_not_see_is_refused(monkeypatch):
    import torch

    from bayesprune.cli import UsageError, _device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert str(_device("cuda:1", "to bench on")) == "cuda:1"
    with pytest.raises(UsageError, match=r"--device cuda:7: torch sees 2 CUDA device\(s\)"):
        _device("cuda:7", "to bench on")


def test_a_failed_write_names_the_file_asked_for_and_no_resume(monkeypatch, tmp_path, capsys):
    """An export (or bench, inspect) whose write fails names the file the user asked for, not
    the hidden temporary beside it, and does not speak of --resume, which is train's."""
    import bayesprune.cli as cli

    def fails(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".out.onnx.tmp-4242"))

    monkeypatch.setattr(cli, "export", fails)
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 2
    line = one_error_line(capsys)
    assert f"Permission denied ({tmp_path / 'out.onnx'})" in line and "--resume" not in line


def test_an_onnx_file_that_fails_its_check_is_not_left_behind(
    finished, tmp_path, monkeypatch, capsys
):
    """onnxruntime checks the bytes before they are written: a mismatch leaves no file (one at
    the default name would block the next export, being unrecorded in exports.json)."""
    pytest.importorskip("onnxruntime")
    import numpy as np

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    monkeypatch.setattr(np, "allclose", lambda *a, **k: False)  # the check fails
    assert main(["export", str(run), "--format", "onnx"]) == 2
    assert "onnxruntime's predictions differ" in one_error_line(capsys)
    assert not (run / "model.onnx").exists()
    monkeypatch.undo()
    assert main(["export", str(run), "--format", "onnx"]) == 0


def test_export_out_empty_is_refused_and_a_lone_model_pt_gets_an_honest_note(
    finished, tmp_path, capsys
):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    assert main(["export", str(run), "--format", "safetensors", "--out", ""]) == 2
    assert "--out is empty" in one_error_line(capsys)
    assert not (run / "model.safetensors").exists()
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(run / "model.pt", alone / "model.pt")
    assert main(["export", str(alone), "--format", "safetensors"]) == 0
    note = capsys.readouterr().err
    assert "this folder has no config.json" in note and "predates" not in note


def test_train_config_and_trainer_refuse_what_they_cannot_use_by_name():
    from bayesprune.config import TrainConfig
    from bayesprune.data import make_teacher
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models import GatedMLP

    with pytest.raises(ValueError, match="TrainConfig.device = 'gpu'"):  # was torch's error
        TrainConfig(device="gpu")  # at Trainer(), after the data checks
    data, net = make_teacher(num_train=200, num_test=50), GatedMLP(4, (8, 4), 3)
    for args, kind in (
        ((net, data, {"epochs": 1}), "TrainConfig"),  # were AttributeErrors
        ((net, (data.x_train, data.y_train), TrainConfig()), "Dataset"),
        ((torch.nn.Sequential(torch.nn.Linear(4, 3)), data, TrainConfig()), "GatedNet"),
    ):
        with pytest.raises(TypeError, match=f"Trainer takes a {kind}"):
            Trainer(*args)


def test_a_network_the_run_could_train_but_not_save_is_refused():
    """A GatedNet subclass with its own forward (a skip connection) trained through it, and
    model.pt and the exports left the skip out without a word (its logits differed from the
    trained network's by up to 2.9); a float64 network met float32 inputs in a torch error."""
    from bayesprune.config import TrainConfig
    from bayesprune.data import make_teacher
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models import GatedMLP, GatedNet

    class Skip(GatedNet):
        def __init__(self):
            super().__init__((4,), [("fc", 8)], 3)
            self.skip = torch.nn.Linear(4, 3)

        def forward(self, x, gates=None, params=None):
            return super().forward(x, gates, params) + self.skip(x)

    class Extra(GatedMLP):  # parameters of its own, the plan's forward
        def __init__(self):
            super().__init__(4, (8,), 3)
            self.extra = torch.nn.Linear(4, 3)

    class Mapped(GatedMLP):  # the plan's modules, its own arithmetic
        def map(self, name, h, weight=None, bias=None):
            return 2 * super().map(name, h, weight, bias)

    def patched():
        net = GatedMLP(4, (8,), 3)
        forward = net.forward
        net.forward = lambda x, gates=None, params=None: 2 * forward(x, gates, params)
        return net

    def with_parameter():
        net = GatedMLP(4, (8,), 3)
        net.scale = torch.nn.Parameter(torch.ones(()))
        return net

    def float64_buffer():  # (refused before the data are looked at)
        net = GatedNet((1, 8, 8), [("conv", 4, 3, 1), ("fc", 5)], 3, batch_norm=True)
        net.norms["conv1"].running_mean = net.norms["conv1"].running_mean.double()
        return net

    data = make_teacher(num_train=200, num_test=50)
    for net, message in (
        (Skip(), "Skip overrides forward; adds skip: a run trains, saves and exports"),
        (Extra(), "Extra adds extra: "),
        (Mapped(4, (8,), 3), "Mapped overrides map: "),
        (GatedMLP(4, (8,), 3).double(), r"parameters and buffers are float64; .* net.float\(\)"),
        (patched(), "GatedMLP overrides forward: "),  # on the instance
        (with_parameter(), "GatedMLP adds scale: "),  # an nn.Parameter attribute
        (float64_buffer(), "parameters and buffers are float32, float64"),  # BatchNorm's
    ):
        with pytest.raises(TypeError, match=message):
            Trainer(net, data, TrainConfig(epochs=1))
    Trainer(GatedMLP(4, (8,), 3), data, TrainConfig(epochs=1))  # the library's own subclass


def test_a_fitted_network_is_left_as_model_pt_holds_it(tmp_path):
    """fit() left the network in training mode: a user's net(x) afterwards normalised by the
    batch (BatchNorm) and moved the running statistics, and differed from model.pt."""
    from bayesprune.config import TrainConfig
    from bayesprune.data import Dataset
    from bayesprune.export import load_model
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models import GatedNet

    gen = torch.Generator().manual_seed(0)
    x, xt = torch.randn(64, 1, 8, 8, generator=gen), torch.randn(16, 1, 8, 8, generator=gen)
    label = lambda t: (t.mean((1, 2, 3)) > 0).long()  # noqa: E731
    data = Dataset("tiny", x, label(x), xt, label(xt), 2)
    net = GatedNet((1, 8, 8), [("conv", 4, 3, 1), ("pool",), ("fc", 5)], 2, batch_norm=True)
    out = tmp_path / "run"
    summary = Trainer(net, data, TrainConfig(epochs=1, batch_size=16), out=out).fit(progress=False)
    assert summary["widths"] == net.widths  # the network is model.pt's (settled units gone)
    assert not net.training
    stats = net.norms["conv1"].running_mean.clone()
    with torch.no_grad():
        torch.testing.assert_close(net(xt), load_model(out / "model.pt")(xt))
    torch.testing.assert_close(net.norms["conv1"].running_mean, stats, rtol=0, atol=0)
    # however fit ends: here an error in the first step
    net = GatedNet((1, 8, 8), [("conv", 4, 3, 1), ("pool",), ("fc", 5)], 2, batch_norm=True)
    trainer = Trainer(net, data, TrainConfig(epochs=1, batch_size=16))
    trainer.train_step = lambda *args: 1 / 0
    with pytest.raises(ZeroDivisionError):
        trainer.fit(progress=False)
    assert not net.training


def test_a_trainer_runs_once_and_a_run_stopped_by_an_error_says_so_and_resumes(
    tmp_path, monkeypatch
):
    """A second fit() trained nothing and reported a negative wall time; an exception inside
    fit() left summary.json at "running" (now "error": and, the checkpoints being good, the
    run resumes, as after an out-of-memory error it should); the directory's hold ends with
    fit (before, with the process: a notebook's sweep kept a descriptor per run)."""
    from bayesprune.config import TrainConfig
    from bayesprune.data import make_teacher
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models import GatedMLP
    from bayesprune.runs import _HELD

    data = make_teacher(num_train=200, num_test=50)
    trainer = Trainer(GatedMLP(4, (8, 4), 3), data, TrainConfig(epochs=1, batch_size=50))
    summary = trainer.fit(progress=False)
    assert summary["train_wall_seconds"] > 0
    with pytest.raises(RuntimeError, match="already run its 1 epochs .* build a new Trainer"):
        trainer.fit(progress=False)

    out = tmp_path / "r"
    step = Trainer.train_step

    def broken(self, *args, **kwargs):
        if self.epoch == 1:
            raise torch.cuda.OutOfMemoryError("a bug")
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", broken)
    args = ["train", "--epochs", "2", "--widths", "8,4", "--train-subset", "200", "--no-progress",
            "--no-report", "--out", str(out)]  # fmt: skip
    with pytest.raises(torch.cuda.OutOfMemoryError):
        main(args)
    record = json.loads((out / "summary.json").read_text())
    assert record["status"] == "error"
    assert record["status_reason"] == "OutOfMemoryError at step 2: a bug"
    monkeypatch.undo()
    assert main(["train", "--resume", str(out), "--no-progress", "--no-report"]) == 0
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"
    assert not _HELD  # each command's hold ends with it (in-process runs kept a descriptor each)
    trainer = Trainer(GatedMLP(4, (8, 4), 3), data, TrainConfig(epochs=1), out=tmp_path / "p")
    trainer.fit(progress=False)
    assert str((tmp_path / "p").resolve()) not in _HELD  # released with fit


def test_batch_norm_that_a_batch_of_one_example_would_meet_is_refused_before_the_run():
    """A 1×1 map after a BatchNorm'd convolution and a last batch of one example: torch's
    'Expected more than 1 value per channel' came mid-epoch, the run left at "running"."""
    from bayesprune.config import TrainConfig
    from bayesprune.data import Dataset
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models import GatedNet

    def data(n):
        x = torch.randn(n, 1, 3, 3)
        return Dataset("d", x, torch.arange(n) % 3, x[:20], torch.arange(20) % 3, 3)

    def net(size=3):
        return GatedNet((1, size, size), [("conv", 4, 3, 0), ("fc", 4)], 3, batch_norm=True)

    for n, batch in ((101, 50), (100, 1)):
        with pytest.raises(ValueError, match="BatchNorm after conv1 sees a 1×1 map"):
            Trainer(net(), data(n), TrainConfig(epochs=1, batch_size=batch))
    Trainer(net(), data(102), TrainConfig(epochs=1, batch_size=50)).fit(progress=False)
    x = torch.randn(101, 1, 4, 4)  # a 2×2 map: a batch of one still has 4 values per channel
    four = Dataset("d", x, torch.arange(101) % 3, x[:20], torch.arange(20) % 3, 3)
    Trainer(net(4), four, TrainConfig(epochs=1, batch_size=50)).fit(progress=False)


def test_export_from_python_refuses_what_the_command_line_refuses(tmp_path):
    """export_model overwrote the run's own model.pt, wrote ONNX into a .pt2 file, and named
    an internal temporary file for a missing folder."""
    from bayesprune.export import deterministic_network, export_model
    from bayesprune.guides import GateGuide
    from bayesprune.models import GatedMLP, HyperPrior
    from bayesprune.runs import RunWriter

    net = GatedMLP(4, (5,), 3)
    RunWriter(tmp_path).model(deterministic_network(GateGuide(net, HyperPrior())), net.in_shape)
    model = tmp_path / "model.pt"
    before = model.read_bytes()
    for fmt, out, message in (
        ("safetensors", tmp_path / "model.pt", "writes .safetensors files"),
        ("onnx", tmp_path / "x.pt2", "the onnx format writes .onnx files"),
        ("pt2", tmp_path / "nowhere" / "x.pt2", "the folder .*nowhere does not exist"),
        ("pt2", tmp_path, "writes .pt2 files"),
    ):
        with pytest.raises(ValueError, match=message):
            export_model(model, fmt, out)
    (tmp_path / "model.pt2").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        export_model(model, "pt2", tmp_path / "model.pt2")
    assert model.read_bytes() == before
    (tmp_path / "m.pt2").write_bytes(before)  # a model.pt under another name
    with pytest.raises(ValueError, match="is the model.pt to export"):
        export_model(tmp_path / "m.pt2", "pt2", tmp_path / "m.pt2")
    assert (tmp_path / "m.pt2").read_bytes() == before
    assert export_model(model, "safetensors", tmp_path / "m.safetensors").stat().st_size > 0


_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails as a full disk does
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from bayesprune.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_file_that_cannot_be_written_whole_is_one_line_for_the_pt2_export_too(finished, tmp_path):
    """torch.export.save met a failing write with a C++ abort (exit 134, a 28-frame stack):
    files are now made in memory and written by Python, whose OSError the CLI reports."""
    import subprocess
    import sys

    out = tmp_path / "m.pt2"
    for args in (
        ["export", str(finished), "--format", "pt2", "--out", str(out)],
        ["train", "--epochs", "2", "--widths", "8,4", "--train-subset", "500", "--no-progress",
         "--no-report", "--out", str(tmp_path / "run")],  # fmt: skip (a checkpoint that cannot
        # be written: epoch 1's, about 28 kB, after 5 steps on 500 examples, not 200 on 20,000)
    ):
        done = subprocess.run(
            [sys.executable, "-c", _LIMITED, "8000", *args], capture_output=True, text=True
        )
        assert done.returncode == 2, done.stderr[-2000:]
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("bayesprune: error: File too large"), done.stderr[-2000:]
    assert not out.exists()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "running"
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]  # no debris either


def test_a_full_disk_before_the_posterior_is_one_line_not_a_segfault(finished, tmp_path, capsys,
                                                                     monkeypatch):  # fmt: skip
    """HDF5 met a full disk while writing inspect/posterior.nc with a segmentation fault."""
    import collections

    from bayesprune import arviz_io

    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(arviz_io.shutil, "disk_usage", lambda path: usage(10**9, 10**9, 4096))
    assert main(["inspect", str(copy), "--draws", "5"]) == 2
    line = one_error_line(capsys)
    assert "No space left on device: posterior.nc needs about" in line, line
    assert not (copy / "inspect" / "posterior.nc.partial").exists()


def test_a_run_directory_another_process_writes_is_refused_and_then_free(finished, tmp_path,
                                                                         capsys):  # fmt: skip
    """A --resume while the run was still going (or two at once) wrote both processes'
    records into one metrics.jsonl; the directory is now held by the process writing it."""
    import subprocess
    import sys

    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from bayesprune.runs import "
         "hold_run_directory as h; h(sys.argv[1]); print('held', flush=True); time.sleep(60)",
         str(copy)],  # fmt: skip
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = (copy / "metrics.jsonl").read_bytes()
        assert main(["train", "--resume", str(copy), "--no-progress"]) == 2
        assert "is being written by another bayesprune process" in one_error_line(capsys)
        assert (copy / "metrics.jsonl").read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
    assert main(["train", "--resume", str(copy), "--no-progress"]) == 2  # free: on to the next
    assert "already ended (finished)" in one_error_line(capsys)  # check, which this run meets


def test_atomic_writes_clean_up_after_killed_writers_and_allow_long_names(tmp_path):
    """kill -9 while a checkpoint was written left its hidden temporary for good; a legal name
    of 245-255 characters failed because its temporary's name was too long."""
    from bayesprune.runs import atomic_write_text

    dead = tmp_path / ".epoch_003.pt.tmp-4194303"  # above any pid this machine hands out
    dead.write_text("half")
    other = tmp_path / ".epoch_004.pt.tmp-4194303"  # another file's: not this write's business
    other.write_text("half")
    atomic_write_text(tmp_path / "epoch_003.pt", "whole")
    assert not dead.exists() and other.exists()
    assert (tmp_path / "epoch_003.pt").read_text() == "whole"
    long = tmp_path / ("m" * 238 + ".safetensors")  # 250 characters
    atomic_write_text(long, "x")
    assert long.read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [other.name, "epoch_003.pt", long.name]
    )


def test_a_run_killed_before_its_first_checkpoint_says_how_to_start_again(finished, tmp_path,
                                                                          capsys):  # fmt: skip
    """After kill -9 in the first epoch the folder holds config.json and no checkpoint: the
    refusal said only that, and the folder (no longer empty) refused the same --out."""
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    shutil.rmtree(copy / "checkpoints")
    (copy / "summary.json").write_text(json.dumps({"status": "running"}))
    assert main(["train", "--resume", str(copy), "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert "has no checkpoint to resume from (it was stopped before its first epoch" in line
    assert "start it again with a new --out, or remove this folder" in line


def test_data_the_trainer_refuses_leave_no_run_directory_and_one_line(tmp_path, capsys,
                                                                      monkeypatch):  # fmt: skip
    """A training set of one class (found when the Trainer checks the data) left an empty run
    directory behind each time, under the 'training … ->' line; a folder one may not read was
    reported as a failed write."""
    raw = _fake_mnist(tmp_path / "one")
    _replace(raw, "train-labels-idx1-ubyte", np.full(30, 3))
    out = tmp_path / "run"
    args = ["train", *QUICK, "--dataset", "mnist", "--data-dir", str(tmp_path / "one")]
    assert main([*args, "--out", str(out)]) == 2
    assert "class" in one_error_line(capsys)
    assert not out.exists()
    from bayesprune import data as data_module

    def refused(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(data_module.Path, "is_file", refused)
    assert main([*args, "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert "cannot read" in line and "Permission denied" in line, line
    assert "files written so far" not in line


def test_a_file_system_without_flock_runs_unlocked_as_before(tmp_path, monkeypatch, capsys):
    """Every flock failure read as 'another process holds it': on NFS without a lock daemon
    (ENOLCK) or Lustre without -o flock (ENOSYS) every run was refused, leaving its files."""
    import errno
    import fcntl

    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--no-report", "--out", str(out)]) in (0, 3)
    assert json.loads((out / "summary.json").read_text())["status"] in ("finished", "collapsed")
    assert "being written by another" not in capsys.readouterr().err


def test_a_seed_numpy_cannot_take_is_refused_as_one_line_before_anything_is_written(
    tmp_path, capsys
):
    """Seeds are 0 .. 2^32 - 1 (numpy's). 2^32 passing the check would fail deep inside the
    run (np.random.seed), a traceback after the run directory was made."""
    from bayesprune.config import TrainConfig

    with pytest.raises(ValueError, match="seed"):
        TrainConfig(seed=2**32)
    assert TrainConfig(seed=2**32 - 1).seed == 2**32 - 1  # the largest is taken
    out = tmp_path / "run"
    args = ["train", "--epochs", "1", "--widths", "4,3", "--no-progress", "--no-report"]
    assert main([*args, "--seed", str(2**32), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bayesprune: error:") and "seed" in err[0], err
    assert not out.exists()


def test_numpy_numbers_in_a_config_become_pythons_and_the_run_records_them(tmp_path):
    """A sweep over np.arange gives numpy numbers: TrainConfig makes them Python's, which
    config.json (json) and random.seed take."""
    from bayesprune.config import TrainConfig
    from bayesprune.data import make_teacher
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models import GatedMLP

    config = TrainConfig(epochs=np.int64(1), seed=np.int64(3), lr=np.float64(1e-3))
    assert type(config.epochs) is int and type(config.seed) is int and type(config.lr) is float
    data = make_teacher(num_train=200, num_test=50)
    torch.manual_seed(3)
    net = GatedMLP(data.in_features, (4, 3), data.num_classes)
    Trainer(net, data, config, out=tmp_path / "run").fit(progress=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == 3
