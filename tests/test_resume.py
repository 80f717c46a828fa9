"""Exact resume after SIGKILL or SIGTERM, from the command line (issue 11)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

ARGS = [
    "--epochs", "6", "--widths", "40,20", "--temperature", "0.3", "--check-every", "20",
    "--warmup-tolerance", "none", "--no-progress", "--threads", "1",
    "--no-report",  # the end-of-run figures: tested in test_inspect.py, ~10 s a run here
]  # fmt: skip
# ARGS for three epochs (600 steps, not 1,200): the runs compared bitwise with an uninterrupted
# one. Its first 600 steps remove the same units as six epochs' do (by a gate at step 140, by
# merge moves at 200); stopped after epoch 1 (step 200), a run resumes with units already
# removed, has units removed after the resume (a gate at 220, merge rounds at 300 and 500), and
# leaves two epochs (400 steps, about 2 s here) for the signal to land in
SHORT = ["--epochs", "3", *ARGS[2:]]
assert ARGS[:2] == ["--epochs", "6"]


def _cli(*args, **kwargs):
    cmd = [sys.executable, "-m", "bayesprune.cli", *args]
    return subprocess.Popen(
        cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, **kwargs
    )


def _stop_after_first_epoch(out, sig, args=SHORT):
    proc = _cli("train", *args, "--out", str(out))
    deadline = time.time() + 120
    while not (out / "checkpoints" / "epoch_001.pt").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.02)
    # at once: the checkpoint is written whole (os.replace), and a small run's last five epochs
    # can take under a fifth of a second, after which the signal would find it finished (a
    # wait of 0.2 s here let one CI run end before the signal: exit -15, not 143)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def _whole_and_resumed(tmp_path, args, copy_to=None):
    """An uninterrupted run and one stopped by SIGTERM after its first epoch and resumed, both
    ending with exit 0: their folders and the resumed process's stderr. ``copy_to``: where a
    copy of the stopped run is left, not resumed."""
    whole = tmp_path / "whole"
    proc = _cli("train", *args, "--out", str(whole))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    out = tmp_path / "run"
    code, err = _stop_after_first_epoch(out, signal.SIGTERM, args)
    assert code == 128 + signal.SIGTERM, err
    if copy_to is not None:
        shutil.copytree(out, copy_to)
    resumed = _cli("train", "--resume", str(out), "--no-progress", "--no-report")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    return whole, out, err


def _model(out):
    return torch.load(out / "model.pt", weights_only=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted SHORT run's folder."""
    out = tmp_path_factory.mktemp("runs") / "reference"
    proc = _cli("train", *SHORT, "--out", str(out))
    proc.communicate(timeout=300)
    assert proc.returncode == 0
    return out


@pytest.fixture(scope="module")
def stopped_by_sigterm(tmp_path_factory):
    """A SHORT run stopped by SIGTERM once its first epoch's checkpoint is written: its folder,
    exit code and stderr. Three tests needed this same stop; each resumes its own copy."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    code, err = _stop_after_first_epoch(out, signal.SIGTERM)
    return out, code, err


def _copy_of_stopped(stopped, tmp_path):
    folder, code, err = stopped
    out = tmp_path / "run"
    shutil.copytree(folder, out)
    return out, code, err


def _assert_same(model, reference):
    assert model["layers"] == reference["layers"]
    for key, value in reference["state_dict"].items():
        assert torch.equal(model["state_dict"][key], value), key


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_a_stopped_run_resumes_to_the_same_network_bitwise(tmp_path, reference, sig, request):
    if sig == signal.SIGTERM:  # the module's shared stop, a copy of it
        out, code, err = _copy_of_stopped(request.getfixturevalue("stopped_by_sigterm"), tmp_path)
    else:
        out = tmp_path / "run"
        code, err = _stop_after_first_epoch(out, sig)
    summary = json.loads((out / "summary.json").read_text())
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL and summary["status"] == "running"
    else:  # the current step finishes, a checkpoint is written, one line, 128 + signal
        assert code == 128 + sig, err
        lines = [line for line in err.splitlines() if line.startswith("bayesprune:")]
        assert "interrupted" in lines[-1] and "--resume" in lines[-1]
        assert "Traceback" not in err
        assert summary["status"] == "interrupted"
        assert (out / "checkpoints" / "last.pt").exists()
        done = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["position"]
    assert not (out / "model.pt").exists()
    resumed = _cli("train", "--resume", str(out), "--no-progress", "--no-report")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"
    _assert_same(_model(out), _model(reference))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 4))  # no epoch logged twice
    if sig != signal.SIGKILL and done:  # the resumed epoch's speed: of the steps run after it
        first, second = records[0]["step"], records[1]["step"] - records[0]["step"]
        timed = records[1]["steps_per_second"] * records[1]["train_seconds"]
        assert first == second and second - done - 1 <= timed <= second - done, (timed, done)


def test_a_run_with_held_out_evidence_resumes_to_the_same_network_bitwise(tmp_path):
    # Eq. (9h): the split is drawn from the seed again and the evidence batches from the
    # checkpointed torch generator, so a resumed run sees the same held-out examples
    args = [*SHORT, "--evidence", "held-out"]
    whole = tmp_path / "whole"
    proc = _cli("train", *args, "--out", str(whole))
    proc.communicate(timeout=300)
    assert proc.returncode == 0
    out = tmp_path / "run"
    code, err = _stop_after_first_epoch(out, signal.SIGTERM, args)
    assert code == 128 + signal.SIGTERM, err
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    resumed = _cli("train", "--resume", str(out), "--no-progress", "--no-report")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evidence_examples"] == json.loads(
        (whole / "summary.json").read_text()
    )["evidence_examples"] > 0
    _assert_same(_model(out), _model(whole))


def test_a_run_with_sgd_on_the_weights_resumes_to_the_same_network_bitwise(tmp_path):
    # the momentum buffers are in the checkpoint and the optimiser in config.json: a resumed
    # run steps with SGD at the recorded rate and momentum, not with Adam
    args = [*SHORT, "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.8"]
    whole, out, _ = _whole_and_resumed(tmp_path, args)
    config = json.loads((out / "config.json").read_text())
    assert (config["optimizer"], config["momentum"], config["lr"]) == ("sgd", 0.8, 0.05)
    _assert_same(_model(out), _model(whole))


def test_resume_of_a_finished_run_is_refused(tmp_path, capsys):
    from bayesprune.cli import main

    out = tmp_path / "done"
    assert (
        main(["train", "--epochs", "1", "--widths", "4,3", "--out", str(out), "--no-progress",
              "--no-report"])
        == 0
    )
    assert main(["train", "--resume", str(out)]) == 2
    assert "already ended (finished); nothing to resume" in capsys.readouterr().err


def test_a_signal_outside_the_training_loop_is_one_line(tmp_path, monkeypatch, capsys):
    # SIGTERM after training, while the run is being inspected (figures, posterior.nc): one
    # line, 143, and summary.json (written last) does not claim a finished run. The signal is
    # sent from inside the inspection, so it always lands there (timed from outside, a fast
    # machine finished the run first and the test skipped itself). In this process, as main
    # runs in the command's (its return value is the exit code; the signal, main's handler)
    import bayesprune.report as report
    from bayesprune.cli import main

    inspect_run = report.inspect_run

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return inspect_run(*args, **kwargs)

    monkeypatch.setattr(report, "inspect_run", signalled)
    out = tmp_path / "run"
    args = ["train", "--epochs", "1", "--widths", "4,3", "--no-progress", "--out", str(out)]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("bayesprune: stopped by SIGTERM")
    assert (out / "model.pt").exists()  # what was written stays
    assert json.loads((out / "summary.json").read_text())["status"] == "running"


def test_a_run_recorded_before_a_setting_existed_resumes_with_the_rule_it_trained_with(
    tmp_path, capsys, reference, stopped_by_sigterm
):
    """config.json of a run from before merge moves has no "merge": the resumed run must go on
    without them (TrainConfig.from_record), not switch to today's default mid-run."""
    from bayesprune.config import TrainConfig

    assert TrainConfig.from_record({"epochs": 3}).merge == "off"
    assert TrainConfig.from_record({"merge": "on"}).merge == "on"
    assert TrainConfig.from_dict({"epochs": 3}).merge == "on"  # a new run: today's default
    assert TrainConfig.from_record({"merge": "on"}).merge_tests == "fixed"  # before Eq. (14a)
    assert TrainConfig.from_dict({}).merge_tests == "spend"
    assert TrainConfig.from_record({"merge": "on"}).merge_price == "current"  # before (14e)
    assert TrainConfig.from_dict({}).merge_price == "expected"
    assert TrainConfig.from_record({"merge": "on"}).producer_price == "current"  # before (10e)
    assert TrainConfig.from_dict({}).producer_price == "expected"
    assert TrainConfig.from_record({"merge": "on"}).merge_budget == "none"  # before (14t)
    assert TrainConfig.from_dict({}).merge_budget == "transit"
    assert TrainConfig.from_record({"merge": "on"}).merge_schedule == "settled"  # before (14w)
    assert TrainConfig.from_dict({}).merge_schedule == "window"
    from bayesprune.cli import main

    out, code, err = _copy_of_stopped(stopped_by_sigterm, tmp_path)
    assert code == 128 + signal.SIGTERM, err
    config = json.loads((out / "config.json").read_text())
    assert config.pop("merge") == "on"
    (out / "config.json").write_text(json.dumps(config))
    code = main(["train", "--resume", str(out), "--no-progress", "--no-report"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    after = [e for e in summary["prune_events"] if e["step"] > summary["resumed_at_step"]]
    assert not any(e.get("merged") for e in after)
    # ... where the same run with its recorded rule merges (at steps 300 and 500)
    merged = json.loads((reference / "summary.json").read_text())["prune_events"]
    assert any(e.get("merged") for e in merged if e["step"] > summary["resumed_at_step"])


@pytest.mark.parametrize("user", [None, "AVX2"])
def test_importing_bayesprune_asks_mkl_for_alignment_independent_results(user):
    """MKL's default GEMM paths depend on how buffers happen to be aligned, which made a resumed
    run part from the uninterrupted one in the last bit (docs/method.md §6v): bayesprune sets
    ``MKL_CBWR=AUTO,STRICT`` on import, and leaves a user's own setting alone."""
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    if user is not None:
        env["MKL_CBWR"] = user
    code = "import os, bayesprune; print(os.environ['MKL_CBWR'])"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == (user or "AUTO,STRICT")


def test_a_run_on_a_users_npz_file_resumes_with_its_standardisation(tmp_path, capsys):
    """--dataset npz: the resumed run reads the same file with the run's own --standardise (here
    the non-default "feature") and ends on the uninterrupted run's network to the bit; a file
    changed since the run started is refused. (The commands after the bitwise comparison and
    the stop run in this process, main's exit code and stderr as the command's.)"""
    import numpy as np

    from bayesprune.cli import main
    from bayesprune.data import make_teacher

    def command(*args):
        capsys.readouterr()
        code = main(list(args))
        return code, capsys.readouterr().err

    teacher = make_teacher()
    scales = torch.tensor([1.0, 10.0, 100.0, 1000.0])  # features of different scales
    path = tmp_path / "own.npz"
    np.savez(path, x_train=(teacher.x_train[:2000] * scales).numpy(),
             y_train=teacher.y_train[:2000].numpy(), x_test=(teacher.x_test * scales).numpy(),
             y_test=teacher.y_test.numpy())  # fmt: skip
    args = [*ARGS, "--dataset", "npz", "--data-dir", str(path), "--standardise", "feature"]
    whole, out, _ = _whole_and_resumed(tmp_path, args)
    _assert_same(_model(out), _model(whole))

    stopped = tmp_path / "stopped"  # as given: an interrupted run's summary keeps the note
    code, err = _stop_after_first_epoch(stopped, signal.SIGTERM, [*args[:-1], "none"])
    assert code == 128 + signal.SIGTERM, err
    assert "not standardised" in json.loads((stopped / "summary.json").read_text())["note"]
    np.savez(path, x_train=(teacher.x_train[:2000] * scales).numpy() + 1,
             y_train=teacher.y_train[:2000].numpy(), x_test=(teacher.x_test * scales).numpy(),
             y_test=teacher.y_test.numpy())  # fmt: skip
    returncode, err = command("train", "--resume", str(stopped), "--no-progress", "--no-report")
    assert returncode == 2 and "changed since the run started" in err
    assert f"{path.resolve()} (" in err and "is not what the run read" in err  # which file
    changed = tmp_path / "changed.npz"
    path.rename(changed)  # the recorded file gone, no new place given: one line naming the flag
    returncode, err = command("train", "--resume", str(stopped), "--no-progress", "--no-report")
    assert returncode == 2 and f"read its data from {path.resolve()}, which is not" in err
    assert "--data-dir" in err and "Traceback" not in err
    # the run's own file, moved and renamed: --data-dir names its new place, the SHA-256 says
    # it is the same (it was refused as a differing setting, then on its file's name)
    moved = tmp_path / "elsewhere" / "renamed.npz"
    moved.parent.mkdir()
    np.savez(moved, x_train=(teacher.x_train[:2000] * scales).numpy(),
             y_train=teacher.y_train[:2000].numpy(), x_test=(teacher.x_test * scales).numpy(),
             y_test=teacher.y_test.numpy())  # fmt: skip
    for given, code in ((changed, 2), (moved, 0)):  # the changed file is still refused
        returncode, err = command("train", "--resume", str(stopped), "--data-dir", str(given),
                                  "--no-progress", "--no-report")  # fmt: skip
        assert returncode == code, err
    # the note says where the data were read before (it said the new place twice)
    assert (f"the run's data files are now read from {moved.resolve()} (the same files by "
            f"SHA-256; config.json said {path.resolve()} and") in err  # fmt: skip
    record = json.loads((stopped / "config.json").read_text())
    assert record["run"]["data_dir"] == str(moved.resolve())  # for baseline, for a later resume
    assert record["data"]["source"] == str(moved.resolve())  # the loader's record, as read now
    assert [f["path"] for f in record["data"]["files"]] == [str(moved.resolve())]
    assert json.loads((stopped / "summary.json").read_text())["status"] == "finished"
    # moved again: the dense twin is refused in one line, and trains from the new place given
    third = tmp_path / "third.npz"
    moved.rename(third)
    for extra, code in (([], 2), (["--data-dir", str(third)], 0)):
        returncode, err = command("baseline", str(stopped), "--no-progress", *extra)
        assert returncode == code, err
    assert "Traceback" not in err and "bayesprune: wrote" in err


def test_a_resumed_run_computes_with_the_thread_count_it_started_with(tmp_path, capsys):
    """Resumed without --threads, a run computes with the thread count it started with (in
    config.json): with torch's default instead, a merge round's products split across threads
    rounded differently and the run parted from the uninterrupted one in the last bits (on 2,000
    examples, where a merge round falls after the resume). Another --threads is honoured with a
    note."""
    args = [*ARGS, "--train-subset", "2000"]  # ARGS run with --threads 1
    other = tmp_path / "other"  # the same stop, kept for the second part
    whole, out, err = _whole_and_resumed(tmp_path, args, copy_to=other)
    assert json.loads((whole / "config.json").read_text())["run"]["threads"] == 1
    assert any(e.get("merged") for e in json.loads((whole / "summary.json").read_text())[
        "prune_events"] if e["step"] > 40)  # fmt: skip
    assert "threads" not in err
    _assert_same(_model(out), _model(whole))

    from bayesprune.cli import main  # (the note is main's: in this process)

    capsys.readouterr()
    code = main(["train", "--resume", str(other), "--threads", "2", "--no-progress",
                 "--no-report"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert "resuming with --threads 2 where the run started with 1" in err


def stop_as_the_last_epoch_is_saved(monkeypatch) -> None:
    """SIGTERM to this process once the last epoch is evaluated and checkpointed (patched into
    ``Trainer.end_epoch`` until ``monkeypatch.undo()``)."""
    from bayesprune.inference.trainer import Trainer

    end_epoch = Trainer.end_epoch

    def signalled(self, steps, bar=None):
        end_epoch(self, steps, bar)
        if self.epoch == self.config.epochs:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Trainer, "end_epoch", signalled)


def test_a_signal_while_the_last_epoch_is_saved_interrupts_the_run(tmp_path, monkeypatch):
    """SIGTERM while the last epoch was evaluated and checkpointed was recorded and never
    looked at: the run went on through its report, printed a finished summary and exited 0.
    Now it is interrupted there (143), and resuming ends on the uninterrupted network."""
    from bayesprune.cli import main

    args = ["train", "--epochs", "2", "--widths", "6,4", "--no-progress", "--no-report",
            "--threads", "1"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    stop_as_the_last_epoch_is_saved(monkeypatch)
    out = tmp_path / "run"
    assert main([*args, "--out", str(out)]) == 128 + signal.SIGTERM
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    assert not (out / "model.pt").exists()
    monkeypatch.undo()
    assert main(["train", "--resume", str(out), "--no-progress", "--no-report"]) == 0
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"
    _assert_same(_model(out), _model(tmp_path / "whole"))


SETTLED = ["train", "--epochs", "2", "--widths", "6,4", "--settle", "on", "--no-progress",
           "--no-report", "--threads", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def settled_whole(tmp_path_factory):
    """The uninterrupted SETTLED run's folder (its settle removes a unit of fc2)."""
    from bayesprune.cli import main

    out = tmp_path_factory.mktemp("settled") / "whole"
    assert main([*SETTLED, "--out", str(out)]) == 0
    return out


def signal_in_the_settle(monkeypatch, calls: list | None = None) -> None:
    """SIGTERM to this process as the final settle measures a unit (patched into
    ``MergeMoves._moments`` until ``monkeypatch.undo()``): at every unit, or, with ``calls``
    (a list each measurement appends to), at the first only."""
    from bayesprune.inference.merge import MergeMoves

    moments = MergeMoves._moments

    def signalled(self, diff):
        if calls is not None:
            calls.append(1)
        if calls is None or len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return moments(self, diff)

    monkeypatch.setattr(MergeMoves, "_moments", signalled)


def test_a_signal_during_the_final_settle_stops_it_at_once_and_the_resume_settles_again(
    tmp_path, monkeypatch, settled_whole
):
    """SIGTERM while the final settle (Eq. (15)) measured its first unit: the settle used to go
    on through every pass (minutes for a wide layer under --settle on) before the run stopped.
    Now no further unit is measured; the run is interrupted with the last epoch's checkpoint
    (the network the settle started from, nothing of the partly settled one written), and
    resuming settles again and ends on the uninterrupted network."""
    from bayesprune.cli import main

    calls = []
    signal_in_the_settle(monkeypatch, calls)
    out = tmp_path / "run"
    assert main([*SETTLED, "--out", str(out)]) == 128 + signal.SIGTERM
    assert len(calls) == 1  # the unit being measured when the signal came, and no other
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "final settle" in summary["status_reason"]
    assert summary["checkpoint"].endswith("epoch_002.pt")
    assert not (out / "model.pt").exists() and not (out / "checkpoints" / "last.pt").exists()
    monkeypatch.undo()
    assert main(["train", "--resume", str(out), "--no-progress", "--no-report"]) == 0
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"
    _assert_same(_model(out), _model(settled_whole))


def test_a_settle_stopped_after_a_resume_at_the_last_step_names_the_checkpoint_resume_takes(
    tmp_path, monkeypatch, settled_whole
):
    """Stopped as its last epoch was saved, a run holds last.pt and epoch_002.pt at the same
    step, and a resume takes last.pt (latest_state prefers it at a tie). Stopped again in the
    settle of that resume, the summary must name last.pt, not the epoch's file; and the run
    still ends on the uninterrupted network."""
    from bayesprune.cli import main

    stop_as_the_last_epoch_is_saved(monkeypatch)
    out = tmp_path / "run"
    assert main([*SETTLED, "--out", str(out)]) == 128 + signal.SIGTERM
    assert (out / "checkpoints" / "last.pt").exists()
    monkeypatch.undo()
    signal_in_the_settle(monkeypatch)
    resume = ["train", "--resume", str(out), "--no-progress", "--no-report"]
    assert main(resume) == 128 + signal.SIGTERM
    summary = json.loads((out / "summary.json").read_text())
    assert "final settle" in summary["status_reason"]
    assert summary["checkpoint"].endswith("last.pt")
    monkeypatch.undo()
    assert main(resume) == 0
    _assert_same(_model(out), _model(settled_whole))


def test_the_progress_bar_stays_off_a_log_file(tmp_path):
    """With stdout and stderr in one log file the bar's \\r fragments glued every epoch line
    to the bar (grep '^epoch' found none of them)."""
    out = tmp_path / "run"
    with open(tmp_path / "log", "w") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "bayesprune.cli", "train", "--epochs", "2", "--widths",
             "6,4", "--no-report", "--threads", "1", "--out", str(out)],  # fmt: skip
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    assert proc.returncode == 0
    text = (tmp_path / "log").read_bytes().decode()  # (read_text would turn \r into \n)
    assert "\r" not in text and "step/s" not in text
    assert [line.split()[1] for line in text.splitlines() if line.startswith("epoch")] == [
        "1",
        "2",
    ]


def test_a_signal_the_loop_did_not_see_is_passed_on_not_dropped():
    """A signal recorded while training stops (after the loop's last look) went nowhere."""
    from bayesprune.inference.trainer import StopSignals

    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with StopSignals():
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen == []  # held while training
        assert seen == [signal.SIGTERM]  # then given to the handler before it
        with pytest.raises(ZeroDivisionError), StopSignals():
            os.kill(os.getpid(), signal.SIGTERM)
            raise ZeroDivisionError  # (TrainingInterrupted: the stop was acted on)
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_ctrl_c_while_the_command_starts_is_one_line(tmp_path):
    """While torch and Pyro were being imported (about 1.5 s), Ctrl-C was a 30-line
    KeyboardInterrupt traceback and exit −2."""
    proc = _cli_module("train", "--out", str(tmp_path / "run"))
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("bayesprune: stopped by SIGINT"), err


def _cli_module(*args):
    """``python -m bayesprune``, as the ``bayesprune`` script starts (the entry point)."""
    return subprocess.Popen(
        [sys.executable, "-m", "bayesprune", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_checkpoint_that_counted_the_starting_flops_under_their_old_name_resumes(tmp_path):
    """The starting network's multiply-accumulates were kept as initial["flops"]; renamed
    "macs", a checkpoint written before must still resume and report its FLOPs kept."""
    from bayesprune.config import TrainConfig
    from bayesprune.data import make_teacher
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models import GatedMLP

    data, out = make_teacher(num_train=400, num_test=50), tmp_path / "run"
    trainer = Trainer(GatedMLP(4, (8, 4), 3), data, TrainConfig(epochs=2), out=out)
    step = trainer.train_step
    trainer.train_step = lambda *a: step(*a) if trainer.epoch == 0 else 1 / 0
    with pytest.raises(ZeroDivisionError):
        trainer.fit(progress=False)
    (path,) = sorted((out / "checkpoints").glob("epoch_*.pt"))
    state = torch.load(path, weights_only=False)
    initial = state["trainer"]["initial"]
    initial["flops"] = initial.pop("macs")
    torch.save(state, path)
    summary = Trainer.resume(out, data).fit(progress=False)
    assert summary["status"] == "finished" and 0 < summary["flops_kept_fraction"] <= 1


def test_a_baseline_made_while_the_run_was_stopped_is_noted_when_it_ends(
    tmp_path, capsys, stopped_by_sigterm
):
    """``bayesprune baseline`` of an interrupted run compares its twin with no run; resumed to
    its end, the run says that baseline.json was made while it was interrupted (the file kept
    that status without a word, a helper's walkthrough found). Baseline and resume run in this
    process (main's exit code and stderr)."""
    from bayesprune.cli import main

    out, code, err = _copy_of_stopped(stopped_by_sigterm, tmp_path)
    assert code == 128 + signal.SIGTERM, err
    capsys.readouterr()
    assert main(["baseline", str(out), "--no-progress"]) == 0, capsys.readouterr().err
    assert json.loads((out / "baseline.json").read_text())["run_status"] == "interrupted"
    capsys.readouterr()
    code = main(["train", "--resume", str(out), "--no-progress", "--no-report"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "baseline.json was made while the run was interrupted" in err
    assert json.loads((out / "baseline.json").read_text())["run_status"] == "interrupted"  # kept


@pytest.mark.parametrize("status", ["finished", "collapsed", "failed"])
def test_every_ended_status_is_refused_for_resume_and_a_stopped_one_is_not(tmp_path, status):
    from bayesprune.runs import RunError, check_resumable

    (tmp_path / "summary.json").write_text(json.dumps({"status": status}))
    with pytest.raises(RunError, match=f"already ended \\({status}\\)"):
        check_resumable(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    check_resumable(tmp_path)


def test_a_write_that_fails_before_its_rename_leaves_the_old_file_whole(tmp_path, monkeypatch):
    # atomic_write fills a temporary and renames it over the file: a disk that fills at the
    # sync leaves the previous summary as it was, and no temporary behind
    import errno

    from bayesprune.runs import atomic_write_text

    path = tmp_path / "summary.json"
    path.write_text('{"status": "running"}')

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        atomic_write_text(path, '{"status": "finished"}')
    assert path.read_text() == '{"status": "running"}'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]



def test_resume_takes_the_newest_checkpoint_whichever_file_holds_it(tmp_path):
    # a last.pt left by an earlier interruption can be older than the epoch checkpoints written
    # after a resume: the newest by step is taken, not the first file found
    import shutil

    from bayesprune.cli import main
    from bayesprune.runs import latest_state

    out = tmp_path / "run"
    assert main(["train", "--epochs", "2", "--widths", "6,4", "--no-progress", "--no-report",
                 "--out", str(out), "--threads", "1"]) == 0  # fmt: skip
    folder = out / "checkpoints"
    shutil.copy(folder / "epoch_001.pt", folder / "last.pt")
    state, path = latest_state(out)
    assert path.name == "epoch_002.pt"
    assert state["step"] == torch.load(folder / "epoch_002.pt", weights_only=False)["step"]


def test_the_summary_says_at_which_step_a_run_was_resumed(tmp_path):
    from bayesprune.config import TrainConfig
    from bayesprune.data import make_teacher
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models import GatedMLP

    torch.set_num_threads(1)
    data = make_teacher(num_train=400, num_test=50)
    fresh = Trainer(GatedMLP(4, (8, 4), 3), data, TrainConfig(epochs=2)).fit(progress=False)
    assert fresh["resumed_at_step"] is None
    out = tmp_path / "run"
    trainer = Trainer(GatedMLP(4, (8, 4), 3), data, TrainConfig(epochs=2), out=out)
    step = trainer.train_step
    trainer.train_step = lambda *a: step(*a) if trainer.epoch == 0 else 1 / 0
    with pytest.raises(ZeroDivisionError):  # stopped in epoch 2: resumes from epoch 1's end
        trainer.fit(progress=False)
    summary = Trainer.resume(out, data).fit(progress=False)
    assert summary["status"] == "finished"
    assert summary["resumed_at_step"] == summary["total_steps"] // 2 > 0


def test_a_resumed_run_writes_each_record_once(tmp_path):
    """Stopped in epoch 2 after traces were written past epoch 1's checkpoint, the resumed run
    drops them before it writes them again: one record per step and epoch."""
    import json

    from bayesprune.config import TrainConfig
    from bayesprune.data import make_teacher
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models import GatedMLP

    torch.set_num_threads(1)
    data, out = make_teacher(num_train=400, num_test=50), tmp_path / "run"
    config = TrainConfig(epochs=2, trace_every=1)
    trainer = Trainer(GatedMLP(4, (8, 4), 3), data, config, out=out)
    step = trainer.train_step
    trainer.train_step = lambda *a: step(*a) if trainer.step < 6 else 1 / 0  # 4 steps an epoch
    with pytest.raises(ZeroDivisionError):
        trainer.fit(progress=False)
    Trainer.resume(out, data).fit(progress=False)
    steps = [json.loads(r)["step"] for r in (out / "traces.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and len(steps) >= 8
    epochs = [json.loads(r)["epoch"] for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_a_record_without_the_newer_settings_reads_as_the_run_trained():
    from bayesprune.config import TrainConfig

    cfg = TrainConfig.from_record({"epochs": 3})
    # the values those runs trained with (literal: a change here changes how old runs resume)
    assert cfg.merge == "off" and cfg.merge_groups == "off"
    # recorded with merge moves, before group moves: none (today's default is auto)
    assert TrainConfig.from_record({"epochs": 3, "merge": "on"}).merge_groups == "off"
    # recorded under auto before Eq. (14x): its groups went up to half the layer
    before_cap = TrainConfig.from_record({"epochs": 3, "merge": "on", "merge_groups": "auto"})
    assert (before_cap.merge_groups, before_cap.group_cap) == ("auto", "half")
    assert TrainConfig.from_dict({}).group_cap == "excess"
    assert cfg.theta_transit == 1.0 and cfg.theta_confidence == 0.0
    assert (cfg.merge_tests, cfg.window_cap, cfg.merge_price) == ("fixed", "none", "current")
    assert (cfg.producer_price, cfg.merge_budget, cfg.merge_schedule) == (
        "current", "none", "settled"
    )
    assert (cfg.evidence, cfg.optimizer, cfg.momentum) == ("train", "adam", 0.9)
    assert cfg.memory_format == "contiguous"
