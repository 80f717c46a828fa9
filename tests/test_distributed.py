"""Data-parallel training on PyTorch Lightning (issue 13): lock-step pruning, 2 × 50 = 1 × 100."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

pytest.importorskip("lightning", reason="the distributed extra (lightning) is not installed")

# the functions the spawned processes run: in a module without Lightning, which each process
# would otherwise import with this one (about 3 s a process, two at a time on two cores)
from tests._ddp_workers import (  # noqa: E402
    _running_stats,
    _sharded_merges,
    _sharded_settle,
    _small_trainer,
    _steps,
)

ARGS = [
    "--dataset", "teacher", "--epochs", "6", "--widths", "40,20", "--temperature", "0.3",
    "--check-every", "20", "--warmup-tolerance", "none", "--no-progress", "--threads", "1",
    "--no-report",  # the end-of-run figures: tested in test_inspect.py, ~10 s a run here
    "--train-subset", "8000",  # 80 steps an epoch, 480 in all (units removed from step 120 on)
]  # fmt: skip
DDP = ["--strategy", "ddp", "--devices", "2", "--accelerator", "cpu"]


def _cli(*args, **kwargs):
    cmd = [sys.executable, "-m", "bayesprune.cli", *args]
    return subprocess.Popen(
        cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, **kwargs
    )


def _run(*args, timeout=300):
    proc = _cli(*args)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out, err


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def _epochs(out):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["epoch"] for line in lines]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same seed and global batch on 2 processes (DDP, gloo) and on one (the one-process
    run in this process: main, as the command runs it)."""
    from bayesprune.cli import main

    root = tmp_path_factory.mktemp("runs")
    _run("train", *ARGS, *DDP, "--out", str(root / "ddp"))
    assert main(["train", *ARGS, "--out", str(root / "single")]) == 0
    return root / "ddp", root / "single"


def test_ddp_run_prunes_in_lockstep_and_process_0_alone_writes(runs):
    ddp, _ = runs
    summary = _summary(ddp)
    assert summary["status"] == "finished"
    strategy = summary["strategy"]
    assert strategy["name"] == "ddp" and strategy["devices"] == 2
    # at every pruning check (every 20 steps) both processes compared a hash of their
    # architecture and parameter bytes (LockstepError otherwise), also after every removal
    # (the last check's collapsed units are removed after the loop, at the same step)
    assert strategy["lockstep_checks"] == summary["total_steps"] // 20
    event_steps = {e["step"] for e in summary["prune_events"]}
    assert len(event_steps) >= 3
    assert len(event_steps) - 1 <= strategy["lockstep_checks_after_removals"] <= len(event_steps)
    assert strategy["gradient_reductions"] == summary["total_steps"]
    assert any(e.get("merged") for e in summary["prune_events"])  # merge moves ran too
    # the final settle ran, as in one process (its units, if any, leave at the last step)
    assert summary["settled"] is not None and set(summary["settled"]) == {"fc1", "fc2"}
    settled = [e for e in summary["prune_events"] if e.get("settled")]
    assert sum(e["removed"] for e in settled) == sum(summary["settled"].values())
    assert _epochs(ddp) == list(range(1, 7))  # one writer: no record twice
    assert (ddp / "model.pt").exists() and (ddp / "checkpoints" / "epoch_006.pt").exists()


def test_ddp_final_architecture_matches_one_process_within_the_seed_spread(runs):
    """Not bitwise: each process draws its own examples' gates and the order of examples is
    seeded differently, so the two runs are two draws of one process. Across seeds 0-2 one
    process ends at 20-7, 22-5, 19-6 and two at 21-7, 24-7, 18-7 (on the 8,000 examples of
    ARGS; on all 20,000, 29-10, 28-8, 24-13 and 28-11, 27-10, 24-12, and with group moves off,
    before they were the default: 25-9, 26-10, 23-10 and 25-10, 29-9, 19-11): a layer may
    differ by up to 30% (+1 unit)."""
    ddp, single = runs
    a = _summary(ddp)["widths"]
    b = _summary(single)["widths"]
    assert len(a) == len(b)
    for wa, wb in zip(a, b, strict=True):
        assert abs(wa - wb) <= 0.3 * wb + 1, (a, b)
    assert a != [40, 20]  # both pruned


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_with_half_batches_take_the_one_process_step(tmp_path):
    """θ₀ = 1: every gate is 1, so the step depends on the batches only; the all-reduced
    gradient (each share weighted by its examples, 99 = 50 + 49) and the all-reduced data term
    must reproduce the single-process steps up to the order of floating-point sums."""
    import torch.multiprocessing as mp

    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    _steps(0, 1, 0, str(one))
    mp.spawn(_steps, args=(2, _free_port(), str(two)), nprocs=2, join=True)
    a, b = torch.load(one, weights_only=True), torch.load(two, weights_only=True)
    assert a["params"].keys() == b["params"].keys()
    for name, value in a["params"].items():
        torch.testing.assert_close(b["params"][name], value, rtol=1e-4, atol=1e-6, msg=name)
    # the steps moved every weight of the network (equal because both stepped, not because
    # neither did: the readout starts at zero, and an unstepped run compares its start values)
    weights = [n for n in a["params"] if n.endswith(("weight", "bias"))]
    assert weights and all(not torch.equal(a["params"][n], a["before"][n]) for n in weights)
    assert b["data"] == pytest.approx(a["data"], rel=1e-5)


def test_a_run_resumes_on_another_number_of_processes(tmp_path):
    """Started on 1 process, resumed on 2; started on 2, resumed on 1. Each run is stopped once
    its second epoch's checkpoint is written (units removed by then), which leaves four epochs,
    320 steps, over a second here, for the signal to land in."""
    out = tmp_path / "one-then-two"
    proc = _cli("train", *ARGS, "--out", str(out))
    _wait_for_checkpoint(out, proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert _summary(out)["status"] == "interrupted"
    _run("train", "--resume", str(out), *DDP, "--no-progress", "--no-report")
    summary = _summary(out)
    assert summary["status"] == "finished" and summary["strategy"]["devices"] == 2
    assert summary["resumed_at_step"] > 0
    assert _epochs(out) == list(range(1, 7))

    out = tmp_path / "two-then-one"
    proc = _cli("train", *ARGS, *DDP, "--out", str(out), start_new_session=True)
    _wait_for_checkpoint(out, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the process it started
    proc.communicate(timeout=120)
    assert _summary(out)["status"] == "running"  # cut short: never claims to have finished
    from bayesprune.cli import main  # resumed on one process: in this one (main's exit code)

    assert main(["train", "--resume", str(out), "--no-progress", "--no-report"]) == 0
    summary = _summary(out)
    assert summary["status"] == "finished" and "strategy" not in summary
    assert summary["resumed_at_step"] > 0
    assert _epochs(out) == list(range(1, 7))

    # stopped by a signal, a data-parallel run says so in its summary (it read "running", so
    # inspect and baseline called it a run still going) and resumes from its last epoch
    out = tmp_path / "two-stopped"
    proc = _cli("train", *ARGS, *DDP, "--out", str(out))
    _wait_for_checkpoint(out, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    summary = _summary(out)
    assert summary["status"] == "interrupted" and "data-parallel" in summary["status_reason"]
    _run("train", "--resume", str(out), *DDP, "--no-progress", "--no-report")
    assert _summary(out)["status"] == "finished" and _epochs(out) == list(range(1, 7))


def test_a_run_resumed_on_two_processes_with_no_epoch_left_settles_as_one_process(
    tmp_path, monkeypatch
):
    """Stopped as its last epoch was saved, a run resumes with nothing left but the settle:
    Lightning then skips its loop and its hooks, where the settle's sample is shared out
    (each process measured all of it, with Lightning's thread count) and the training's clock
    stops (the settle's time was counted twice). Settled on two processes, it must remove the
    units the uninterrupted one-process run removed: the same model.pt to the bit (the settle
    changes no weight, only which units stay)."""
    from bayesprune.cli import main
    from tests.test_resume import _assert_same, _model, stop_as_the_last_epoch_is_saved

    args = ["train", "--dataset", "teacher", "--epochs", "2", "--widths", "6,4", "--settle",
            "on", "--no-progress", "--no-report", "--threads", "1"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    whole = _summary(tmp_path / "whole")
    assert sum(whole["settled"].values()) >= 1  # (the setting does what the test needs)
    stop_as_the_last_epoch_is_saved(monkeypatch)
    out = tmp_path / "run"
    assert main([*args, "--out", str(out)]) == 128 + signal.SIGTERM
    monkeypatch.undo()
    kept = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["trainer"]
    _run("train", "--resume", str(out), *DDP, "--no-progress", "--no-report")
    summary = _summary(out)
    assert summary["status"] == "finished" and summary["strategy"]["devices"] == 2
    assert summary["settled"] == whole["settled"]
    # the training's time is the checkpoint's; this process adds the settle's, once
    trained = kept["wall"] - kept["bookkeeping"]
    assert summary["train_wall_seconds"] == pytest.approx(
        trained + summary["settle_seconds"], abs=0.05
    )
    _assert_same(_model(out), _model(tmp_path / "whole"))


def _wait_for_checkpoint(out, proc):
    deadline = time.time() + 180
    while not (out / "checkpoints" / "epoch_002.pt").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.1)


def test_ddp_needs_its_flags_right(tmp_path):
    from bayesprune.cli import main

    assert main(["train", "--devices", "2", "--out", str(tmp_path / "a")]) == 2
    assert main(["train", "--strategy", "ddp", "--accelerator", "tpu"]) == 2
    flags = ["train", "--strategy", "ddp", "--devices", "4", "--batch-size", "3"]
    assert main([*flags, "--out", str(tmp_path / "b")]) == 2  # a process without examples
    assert not (tmp_path / "b").exists()
    assert not (tmp_path / "a").exists()


def test_ddp_refuses_what_it_ignored_or_dropped(tmp_path, capsys):
    """A helper's data-parallel session (session 21): --device was replaced by --accelerator's
    without a word, a last batch smaller than the processes was skipped every epoch (with the
    step count and a cosine schedule counting it), and resuming a held-out-evidence run under
    ddp was a traceback from the launched processes."""
    import shutil

    from bayesprune.cli import main

    def line():
        err = [e for e in capsys.readouterr().err.strip().splitlines() if e.strip()]
        assert len(err) == 1 and err[0].startswith("bayesprune: error:"), err
        return err[0]

    ddp = ["train", "--strategy", "ddp", "--devices", "2", "--threads", "1", "--no-progress"]
    assert main([*ddp, "--device", "cuda:3", "--out", str(tmp_path / "a")]) == 2
    assert "--device cuda:3 does not apply with --strategy ddp" in line()
    args = [*ddp, "--train-subset", "991", "--batch-size", "99", "--out", str(tmp_path / "b")]
    assert main(args) == 2
    assert "leave a last batch of 1, fewer than --devices 2" in line()
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    run = tmp_path / "held-out"
    single = ["train", "--epochs", "1", "--widths", "6,4", "--evidence", "held-out",
              "--no-progress", "--no-report", "--threads", "1", "--out", str(run)]  # fmt: skip
    assert main(single) in (0, 3)
    (run / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["train", "--resume", str(run), "--strategy", "ddp", "--devices", "2"]) == 2
    assert "measures its evidence on held-out examples" in line()
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    shutil.rmtree(run)


def test_the_lockstep_digest_sees_one_changed_bit_of_one_parameter():
    from bayesprune.distributed import state_digest

    trainer = _small_trainer()
    before = state_digest(trainer)
    assert state_digest(trainer) == before
    p = next(trainer.guide.parameters())
    with torch.no_grad():
        p.view(-1)[0] = torch.nextafter(p.view(-1)[0], torch.tensor(float("inf")))
    assert state_digest(trainer) != before


def test_the_single_process_path_does_not_import_lightning(tmp_path):
    # on 1,000 examples (10 steps, not 200): the same 3,527 modules end up imported as on all
    # 20,000 (the run, its report included, takes the same path)
    code = (
        "import sys; from bayesprune.cli import main; "
        f"main(['train', '--epochs', '1', '--widths', '4,3', '--train-subset', '1000', "
        f"'--no-progress', '--out', r'{tmp_path / 'run'}']); print('lightning' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"


def test_batchnorm_statistics_agree_across_processes(tmp_path):
    import torch.multiprocessing as mp

    path = str(tmp_path / "stats")
    mp.spawn(_running_stats, args=(2, _free_port(), path), nprocs=2, join=True)
    saved = [torch.load(f"{path}.{r}", weights_only=True) for r in (0, 1)]
    a, b = (s["reduced"] for s in saved)
    assert a.keys() == b.keys() and len(a) >= 26  # 13 BatchNorms: running mean and variance
    for key in a:
        assert torch.equal(a[key], b[key]), key
        mean = (saved[0]["own"][key] + saved[1]["own"][key]) / 2  # not their sum, not one's
        assert not torch.equal(saved[0]["own"][key], saved[1]["own"][key]), key
        torch.testing.assert_close(a[key], mean, msg=key)


def test_merge_rounds_sharded_over_processes_decide_as_one_process(tmp_path):
    """Each process fits the reconstruction on its share of the fitting half and measures the
    proposals on its share of the held-out half; the summed statistics must lead to the moves
    one process takes on the whole sample (here: a duplicated unit, MLP and convolution). Which
    of two exact copies goes is a tie that rounding breaks, so the test compares how many
    units go, that one of the pair does, and the prices saved; and the same for a group move
    (Eq. (14j)), whose order and test read the same summed statistics."""
    import torch.multiprocessing as mp

    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    _sharded_merges(0, 1, 0, str(one))
    mp.spawn(_sharded_merges, args=(2, _free_port(), str(two)), nprocs=2, join=True)
    a, b = torch.load(one, weights_only=True), torch.load(two, weights_only=True)
    d = torch.randn(257, generator=torch.Generator().manual_seed(5))
    assert b["moments"][2] == 257  # the statistics of every share together
    assert b["moments"][:2] == pytest.approx((float(d.mean()), float(d.std())), rel=1e-6)
    for kind in ("mlp", "conv"):
        (n_a, pair_a, prices_a), (n_b, pair_b, prices_b) = a[kind], b[kind]
        assert (n_a, pair_a) == (n_b, pair_b) and pair_a == 1, (kind, a[kind], b[kind])
        assert prices_b == pytest.approx(prices_a, rel=1e-3), kind
    # the group move: one of each pair and the constant, in one process and in two
    (n_a, pairs_a, prices_a, tests_a), (n_b, pairs_b, prices_b, tests_b) = a["group"], b["group"]
    assert (n_a, pairs_a) == (n_b, pairs_b) == (6, 5), (a["group"], b["group"])
    # the prices saved, and the data term's change on the whole held-out half (about 2e-4
    # nats over the training set: the copies' reconstruction is exact up to rounding)
    assert [p for p, _ in prices_b] == pytest.approx([p for p, _ in prices_a], rel=1e-3)
    assert [d for _, d in prices_b] == pytest.approx([d for _, d in prices_a], rel=1e-3, abs=1e-7)
    # every test of the round (the refused single moves', the group's) read the whole half
    assert [t[2] for t in tests_b] == [t[2] for t in tests_a] and len(tests_a) >= 2
    for (mean_a, sd_a, _), (mean_b, sd_b, _) in zip(tests_a, tests_b, strict=True):
        assert (mean_b, sd_b) == pytest.approx((mean_a, sd_a), rel=1e-3, abs=1e-9)


def test_the_final_settle_sharded_over_processes_takes_one_processs_units(tmp_path):
    """The settle (Eq. (15)) measures each unit's loss changes on this process's share of the
    sample and sums the statistics over the processes (MergeMoves.shard, reduce): at τ = 30,
    where the fitted networks lose several units of a layer one pass each, two processes must
    take the units one process takes, in its order, with its ΔF terms."""
    import torch.multiprocessing as mp

    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    _sharded_settle(0, 1, 0, str(one))
    mp.spawn(_sharded_settle, args=(2, _free_port(), str(two)), nprocs=2, join=True)
    a, b = torch.load(one, weights_only=True), torch.load(two, weights_only=True)
    several = 0
    for kind in ("mlp", "conv"):
        for name, (removed, terms) in a[kind].items():
            assert b[kind][name][0] == removed, (kind, name)
            flat = [v for pair in terms for v in pair]
            shared = [v for pair in b[kind][name][1] for v in pair]
            assert shared == pytest.approx(flat, rel=1e-3, abs=1e-3), (kind, name)
            several += len(removed) >= 2
    assert several  # (the setting does what the test needs: a layer settled over passes)


def test_sigterm_stops_the_processes_without_a_collective_in_the_handler(monkeypatch):
    """Lightning's SIGTERM handler broadcast the signal over the process group from inside the
    handler; with the processes in another collective, both waited for ever (a helper saw 2 of
    7 SIGTERMs hang a two-process run). The handler now only passes the signal on."""
    import lightning.pytorch as pl
    import torch.distributed as dist

    from bayesprune.distributed import _sigterm_without_a_collective

    lt = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    killed = []

    class Launcher:
        def kill(self, signum):
            killed.append(signum)

    monkeypatch.setattr(type(lt.strategy), "launcher", property(lambda self: Launcher()))
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "broadcast", lambda *a, **k: pytest.fail("a collective"))
    monkeypatch.setattr(type(lt), "world_size", property(lambda self: 2))
    _sigterm_without_a_collective(lt)
    handler = lt._signal_connector._sigterm_notifier_fn
    handler(signal.SIGTERM, None)
    handler(signal.SIGTERM, None)  # a second signal: the processes were told once
    assert killed == [signal.SIGTERM] and lt._signal_connector.received_sigterm


def test_a_lost_process_is_told_apart_from_a_processs_own_error():
    """A worker killed mid-run left process 0 with gloo's 78-line traceback: gloo's words for
    a lost peer now end every process in one line (its own errors keep their trace)."""
    from bayesprune.distributed import peer_lost

    for text in (
        "[../gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:19341: Connection reset by "
        "peer. This is typically caused by a remote worker hanging",
        "[../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:5555",
    ):
        assert peer_lost(RuntimeError(text))
    assert not peer_lost(RuntimeError("mat1 and mat2 shapes cannot be multiplied (1x8 and 3x3)"))
    assert not peer_lost(ValueError("the lock-step digests differ at step 200"))


def test_a_data_parallel_fit_leaves_the_network_in_evaluation_mode():
    """As Trainer.fit does (a review of the session that made fit do it found that
    fit_distributed did not)."""
    pytest.importorskip("lightning")
    from bayesprune.config import TrainConfig
    from bayesprune.data import make_teacher
    from bayesprune.distributed import fit_distributed
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models import GatedMLP

    trainer = Trainer(GatedMLP(4, (8,), 3), make_teacher(num_train=400, num_test=50),
                      TrainConfig(epochs=1))  # fmt: skip
    summary = fit_distributed(trainer, devices=1, progress=False)
    assert summary["status"] == "finished" and not trainer.net.training
