"""The dense baseline: the same network, optimiser, epochs and batch size, in plain PyTorch."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bayesprune.config import TrainConfig, weights_optimizer
from bayesprune.data import Dataset
from bayesprune.export import architecture, count_weights
from bayesprune.inference.projected_sgd import multi_tensor
from bayesprune.loop import (
    batches,
    evaluate,
    keeps_global_rng,
    lr_schedule,
    steps_per_epoch,
    synchronize,
)
from bayesprune.models.network import GatedNet, use_memory_format


def plain_optimizer(
    params, lr: float, optimizer: str = "adam", momentum: float = 0.9
) -> torch.optim.Optimizer:
    """The weights' optimiser of a run without gates, on a per-example (mean) objective: Adam, or
    SGD with heavy-ball ``momentum`` (:func:`~bayesprune.config.weights_optimizer`, the settings
    checked as :class:`~bayesprune.config.TrainConfig` checks them), with the gated run's
    kernels (:func:`~bayesprune.inference.projected_sgd.multi_tensor`)."""
    config = TrainConfig(lr=lr, optimizer=optimizer, momentum=momentum)
    constructor, kwargs = weights_optimizer(config)
    return multi_tensor(constructor, params, kwargs)


@keeps_global_rng  # (it seeds torch's generator: the caller's draws go on as they were)
def train_dense(
    net: GatedNet,
    data: Dataset,
    epochs: int,
    batch_size: int = 100,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
    device: str = "cpu",
    schedule: str = "constant",
    monitor: Callable[[int, GatedNet], None] | None = None,
    optimizer: str = "adam",
    momentum: float = 0.9,
    epoch_end: Callable[[int, GatedNet], None] | None = None,
    memory_format: str = "auto",
) -> dict:
    """Train ``net`` without gates or priors (Adam on the cross-entropy, or SGD with heavy-ball
    ``momentum`` for ``optimizer="sgd"``, as :class:`~bayesprune.config.TrainConfig`); return its
    summary.

    Uses the dataset's augmentation, if any, like the gated run. ``monitor(step, net)``, if
    given, is called after every step (``step`` counts from 1; ``net`` is in training mode and
    must be left so; its time counts in the wall time, not in the step time).
    ``epoch_end(epoch, net)``, if given, is called after every epoch (``epoch`` from 1; ``net``
    in training mode, to be left so); its time counts in neither, as the gated run's per-epoch
    evaluation is left out of its wall time.

    The arguments are checked as :class:`~bayesprune.config.TrainConfig` and
    :class:`~bayesprune.inference.trainer.Trainer` check theirs (a ``ValueError`` naming the
    argument, or the data's :class:`~bayesprune.data.DataError`), and a network a ``Trainer``
    has already trained is trained on with a ``UserWarning`` (its pruned, trained weights are
    not a dense baseline). The caller's random streams are left as they were.
    """
    try:  # the recipe's values, checked as a gated run's are
        TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=str(device),
                    lr_schedule=schedule, optimizer=optimizer, momentum=momentum,
                    memory_format=memory_format)  # fmt: skip
    except ValueError as err:
        raise ValueError(str(err).replace("TrainConfig.", "train_dense: ", 1)) from None
    data.check()  # a user's own tensors: one clear error before anything runs
    data.check_fits(net.in_shape, net.num_classes, flattens=net.flattens)
    trained = getattr(net, "trained_by_a_trainer", None)
    if trained is not None:
        warnings.warn(
            f"this network was trained by a Trainer (starting widths {trained}, now "
            f"{list(net.widths)}): train_dense trains on from its trained, pruned weights, which "
            "is not a dense baseline; build a new network of the starting widths for one",
            UserWarning,
            stacklevel=3,  # (through keeps_global_rng)
        )
    torch.manual_seed(seed)
    device = torch.device(device)
    net, data = net.to(device), data.to(device)
    use_memory_format(net, memory_format, device)  # the gated run's layout (TrainConfig's)
    opt = plain_optimizer(net.parameters(), lr, optimizer, momentum)  # as the gated run
    scheduler = lr_schedule(opt, schedule, steps_per_epoch(data, batch_size) * epochs)
    step_times: list[float] = []
    epoch_seconds: list[float] = []
    start = time.perf_counter()
    step = 0
    for _ in tqdm(range(epochs), disable=None if progress else True, desc="dense"):
        net.train()
        epoch_start = time.perf_counter()
        for x, y, _ in batches(data, batch_size, device):
            timed = len(step_times) < 60
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            opt.step()
            if scheduler is not None:
                scheduler.step()
            if timed:
                synchronize(device)
                step_times.append(time.perf_counter() - t0)
            step += 1
            if monitor is not None:
                monitor(step, net)
        synchronize(device)
        epoch_seconds.append(time.perf_counter() - epoch_start)
        if epoch_end is not None:
            aside = time.perf_counter()
            epoch_end(len(epoch_seconds), net)
            start += time.perf_counter() - aside  # left out of the wall time
    wall = time.perf_counter() - start
    weights = count_weights(net)
    plain = net.to_sequential().eval()
    return {
        "arch": net.arch,
        "dataset": data.name,
        "seed": seed,
        "epochs": epochs,
        "initial_widths": list(net.widths),
        "widths": list(net.widths),
        "initial_architecture": architecture(plain),
        "architecture": architecture(plain),
        "test_error": evaluate(plain, data.x_test, data.y_test),
        "weights_total": weights,
        "weights_kept": weights,
        "weights_kept_fraction": 1.0,
        "flops_kept_fraction": 1.0,
        "last_prune_epoch": 0.0,
        "gates_binary_fraction": None,
        "train_wall_seconds": wall,
        "epoch_train_seconds": epoch_seconds,
        "step_seconds_full_width": sum(step_times[5:]) / max(len(step_times[5:]), 1),
        **(
            {"teacher_widths": data.meta["teacher_widths"]} if "teacher_widths" in data.meta else {}
        ),
    }


BASELINE_FILE = "baseline.json"  # in a run directory: its dense twin's summary and the comparison
NUMBERS = ("test_error", "train_wall_seconds", "weights_kept", "weights_kept_fraction")


def chance_errors(data: Dataset) -> tuple[float, float]:
    """Training and test error of the constant predictor that answers the training set's most
    frequent class: what a network that learnt nothing scores."""
    label, train, _ = data.constant_predictor()
    return train, float((data.y_test.cpu() != label).float().mean())


def collapse(train_errors: list[float], chance: float) -> str | None:
    """Whether a network with these training errors, one per epoch, collapsed by the rule the
    trainer reads a gated run with (:func:`~bayesprune.inference.trainer.chance_collapse`): at
    chance at the last epoch, or at an earlier one after an epoch clearly below it. Its reason,
    or None."""
    from bayesprune.inference.trainer import first_chance_collapse, learnt_again

    epoch, verdict = first_chance_collapse(train_errors, chance)
    if epoch is None:
        return None
    return (
        f"training error {train_errors[epoch - 1]:.3f} at epoch {epoch} is no better than a "
        f"constant predictor's ({chance:.3f})"
        + ("; no epoch was clearly better: it never learnt" if verdict == "never learnt" else "")
        + learnt_again(list(enumerate(train_errors, 1))[epoch:], chance)
    )


@dataclass
class Twin:
    """A run's dense twin, checked and built, not yet trained (:func:`prepare_twin`)."""

    folder: Path
    config: TrainConfig
    net: GatedNet
    trained: Dataset  # what the twin trains on: the run's examples, held-out share included
    held_out: int  # examples the run held out for its evidence (trained on by the twin)
    summary: dict | None  # the run's summary.json as it was read
    device: str
    run_device: str
    run_threads: int | None


def prepare_twin(
    run_dir: str | Path,
    device: str | None = None,
    threads: int | None = None,
    data_dir: str | None = None,
) -> Twin:
    """Check a command-line run and build its dense twin: everything that can refuse (the run
    directory, its config.json and summary.json, the data, the network) is checked here, before
    any training. :class:`~bayesprune.runs.RunError` (or :class:`~bayesprune.data.DataError`)
    on what cannot be a twin.

    The twin is the run's network before any gate (the architecture, starting widths and
    initialisation built with the run's seed, so its initial weights are the run's, the
    classifier at zero as in every network here), to be trained by :func:`train_dense` on the
    run's training examples (its ``--train-subset`` drawn with its seed) with the run's
    epochs, batch size, optimiser, learning rate, momentum and schedule: what the issues'
    "dense with the same recipe" means. A run that held examples out for its evidence
    (``--evidence held-out``) trained its weights on the rest; its twin trains on all of them,
    as a user's dense network would. ``threads`` and ``device`` default to the run's, so that
    the wall times compare. ``data_dir``: where the run's data are now, if they moved (its
    files are checked against the run's record all the same)."""
    from bayesprune.data import load_dataset
    from bayesprune.inference.trainer import check_run_data
    from bayesprune.models.network import build_network
    from bayesprune.runs import RunError, read_config, read_summary, run_data_dir

    folder = Path(run_dir)
    raw = read_config(folder)
    run = raw.get("run")
    if not isinstance(run, dict) or "dataset" not in run:
        raise RunError(
            f"{folder}/config.json does not say which data the run used (a run started from "
            "Python): train its dense twin from Python with bayesprune.baseline.train_dense"
        )
    try:
        config = TrainConfig.from_record(raw)
    except ValueError as err:  # a config.json edited by hand
        raise RunError(f"{folder}/config.json: {err}") from None
    summary = read_summary(folder)  # a damaged one is refused now, not after the training
    recorded_threads = run.get("threads")
    if not (isinstance(recorded_threads, int) and recorded_threads >= 1):
        recorded_threads = None
    threads = threads or recorded_threads
    if threads is not None:
        torch.set_num_threads(threads)
    data = load_dataset(run["dataset"], run_data_dir(folder, run, data_dir), run.get("standardise"))
    trained = data
    if config.train_subset is not None:
        trained = data.subset(config.train_subset, seed=config.seed)
    weights_data = trained
    if config.evidence == "held-out":  # what the run's weights saw: checked against its record
        weights_data = trained.hold_out(config.evidence_share, seed=config.seed)[0]
    check_run_data(folder, raw.get("data") or {}, weights_data)
    torch.manual_seed(config.seed)  # as the command line builds the run's network
    try:
        net = build_network(
            run["arch"],
            data.in_shape,
            data.num_classes,
            run.get("widths"),
            run.get("width_mult", 1.0),
            run.get("init", "kaiming"),
        )
    except (ValueError, TypeError, KeyError) as err:
        raise RunError(f"{folder}/config.json: cannot rebuild the run's network ({err})") from None
    recorded_spec = raw.get("initial_spec")  # (runs before it was kept have none)
    if recorded_spec is not None and json.loads(json.dumps(net.spec())) != recorded_spec:
        raise RunError(
            f"{folder}/config.json: its settings build {net.spec()['plan']}, not the network "
            f"the run started from ({recorded_spec.get('plan')}); was it edited by hand?"
        )
    return Twin(
        folder=folder,
        config=config,
        net=net,
        trained=trained,
        held_out=len(trained.x_train) - len(weights_data.x_train),
        summary=summary,
        device=device or config.device,
        run_device=config.device,
        run_threads=recorded_threads,
    )


class TwinInterrupted(BaseException):
    """SIGINT or SIGTERM stopped the twin's training after a step (nothing is written). A
    ``BaseException``, as ``KeyboardInterrupt`` is."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def train_twin(twin: Twin, progress: bool = False) -> dict:
    """Train a :func:`prepare_twin` twin and compare it with its run; the record that
    :func:`write_baseline` writes (the twin's summary under ``"dense"``, with its per-epoch
    training errors and its status by the run's collapse rule; the run's, if it has ended,
    under ``"run"``)."""
    from bayesprune.inference.trainer import TRAIN_ERROR_EXAMPLES, StopSignals
    from bayesprune.runs import versions

    config, trained, device = twin.config, twin.trained, twin.device
    train_errors: list[float] = []
    # the training error as the run records it (Trainer.epoch_record: its first examples)
    x, y = (t[:TRAIN_ERROR_EXAMPLES].to(device) for t in (trained.x_train, trained.y_train))

    def epoch_end(epoch: int, network) -> None:
        network.eval()
        train_errors.append(evaluate(network.to_sequential().eval(), x, y))
        network.train()

    # a signal sets a flag that the loop reads after each step, as the gated run's does: an
    # exception raised by the handler itself could land in a finaliser, which drops it (a
    # fresh-clone CI run once trained on after SIGINT until its time-out, likely so)
    with StopSignals() as stop:

        def monitor(step: int, network) -> None:
            if stop.signal is not None:
                raise TwinInterrupted(stop.signal)

        dense = train_dense(
            twin.net,
            trained,
            config.epochs,
            config.batch_size,
            config.lr,
            config.seed,
            progress=progress,
            device=device,
            schedule=config.lr_schedule,
            optimizer=config.optimizer,
            momentum=config.momentum,
            monitor=monitor,
            epoch_end=epoch_end,
            memory_format=config.memory_format,
        )
    chance_train, chance_test = chance_errors(trained)
    reason = collapse(train_errors, chance_train)
    dense.update(
        train_errors=train_errors,
        status="finished" if reason is None else "collapsed",
        status_reason=reason,
    )
    summary = twin.summary
    result = {
        "run_dir": str(twin.folder),
        "dense": dense,
        "constant_train_error": chance_train,
        "constant_test_error": chance_test,
        "train_examples": len(trained.x_train),
        "held_out_by_the_run": twin.held_out,
        "threads": torch.get_num_threads(),
        "run_threads": twin.run_threads,
        "device": str(device),
        "run_device": twin.run_device,
        "run_processes": ((summary or {}).get("strategy") or {}).get("devices", 1),
        "run_status": None if summary is None else summary.get("status"),
        "versions": versions(),
    }
    ended = summary is not None and summary.get("status") not in (None, "running", "interrupted")
    if ended and all(isinstance(summary.get(k), (int, float)) for k in NUMBERS):
        keys = ("status", "status_reason", "architecture", "initial_architecture",
                "weights_total", *NUMBERS)  # fmt: skip
        result["run"] = {k: summary.get(k) for k in keys}
        result["gap_points"] = 100 * (summary["test_error"] - dense["test_error"])
        result["wall_ratio"] = summary["train_wall_seconds"] / dense["train_wall_seconds"]
    return result


@keeps_global_rng
def dense_twin(
    run_dir: str | Path,
    device: str | None = None,
    threads: int | None = None,
    progress: bool = False,
) -> dict:
    """Train the dense twin of a command-line run and compare (``bayesprune baseline
    RUN_DIR``): :func:`prepare_twin`, then :func:`train_twin`. The thread count (set to the
    run's) and the random streams are the caller's again when it returns."""
    threads_before = torch.get_num_threads()
    try:
        return train_twin(prepare_twin(run_dir, device, threads), progress)
    finally:
        torch.set_num_threads(threads_before)


def write_baseline(run_dir: str | Path, result: dict) -> Path:
    """``RUN_DIR/baseline.json``: a :func:`dense_twin` result (replacing an earlier one)."""
    from bayesprune.runs import atomic_write_text

    path = Path(run_dir) / BASELINE_FILE
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    return path


def wall_note(result: dict) -> str | None:
    """Why the two wall times do not compare, if they do not (another thread count, device
    or number of processes than the run's)."""
    differ = []
    if result.get("run_threads") not in (None, result["threads"]):
        differ.append(f"{result['run_threads']} thread(s)")
    if result.get("run_device") not in (None, result["device"]):
        differ.append(f"device {result['run_device']}")
    if (result.get("run_processes") or 1) > 1:
        differ.append(f"{result['run_processes']} processes")
    if not differ:
        return None
    return f"the run: {', '.join(differ)}; the wall times do not compare"


def format_comparison(result: dict) -> str:
    """The run against its dense twin as a small text table (the dense column alone for a run
    that has not ended); columns as wide as the longest architecture needs."""
    d, r = result["dense"], result.get("run")
    note = wall_note(result)
    lines = [f"device {result['device']}, {result['threads']} thread(s)"
             + (f" ({note})" if note else "")]  # fmt: skip
    w = 2 + max(14, *(len(str(x["architecture"])) for x in (r, d) if x is not None))
    if r is None:
        lines += [
            f"{'':16}{'dense':>{w}}",
            f"{'status':16}{d['status']:>{w}}",
            f"{'architecture':16}{d['architecture']:>{w}}",
            f"{'test error':16}{100 * d['test_error']:>{w - 1}.2f}%",
            f"{'weights':16}{d['weights_total']:>{w},}",
            f"{'training wall':16}{d['train_wall_seconds']:>{w - 1}.1f}s",
        ]
        return "\n".join(lines)
    lines += [
        f"{'':16}{'bayesprune':>{w}}{'dense':>{w}}",
        f"{'status':16}{r['status']:>{w}}{d['status']:>{w}}",
        f"{'architecture':16}{r['architecture']:>{w}}{d['architecture']:>{w}}",
        f"{'test error':16}{100 * r['test_error']:>{w - 1}.2f}%{100 * d['test_error']:>{w - 1}.2f}%"
        f"   gap {result['gap_points']:+.2f} points",
        f"{'weights':16}{r['weights_kept']:>{w},}{d['weights_total']:>{w},}"
        f"   {100 * r['weights_kept_fraction']:.1f}% kept",
        f"{'training wall':16}{r['train_wall_seconds']:>{w - 1}.1f}s"
        f"{d['train_wall_seconds']:>{w - 1}.1f}s   {result['wall_ratio']:.2f}×",
    ]
    return "\n".join(lines)


def verdict(result: dict) -> str | None:
    """One line reading a run against its twin by the rule the run was read with, where they
    differ or the run failed: whether the network learns without gates (the gates' failure, or
    the gated model's where no unit was removed) or collapses too (the recipe's own); or, for a
    run that finished, a twin that collapsed."""
    r, d = result.get("run"), result["dense"]
    if r is None:
        return None
    if r["status"] == "finished":
        if d["status"] == "finished":
            return None
        return (
            f"the run finished, but its dense twin collapsed ({d['status_reason']}): the gated "
            "run learnt where the plain network did not"
        )
    if d["status"] == "finished":
        cause = (
            "the gated model fails where the plain network does not, though it removed no unit "
            "(its prior, gates drawn at θ < 1, or a seed's luck at an unstable recipe: try "
            "other seeds)"
            if r["architecture"] == r["initial_architecture"]
            else "the gates failed where the network does not"
        )
        return (
            f"the run {r['status']}, but its dense twin learns (training error "
            f"{d['train_errors'][-1]:.3f} at the end, never at chance after learning; test error "
            f"{100 * d['test_error']:.2f}%): {cause}"
        )
    return (
        f"the run {r['status']}, and its dense twin collapses too ({d['status_reason']}): the "
        "recipe fails without gates"
    )
