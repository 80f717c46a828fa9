"""A run directory: written during training (:class:`RunWriter`) and read back (:func:`load_run`).

Layout: ``config.json`` (the settings as resolved), ``metrics.jsonl`` (one record per epoch),
``traces.jsonl`` (per-step unit states, with ``--trace-every``), ``checkpoints/epoch_NNN.pt``,
``summary.json`` and ``model.pt`` (the deployable network) at the end.
"""

from __future__ import annotations

import glob
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bayesprune.config import TrainConfig
from bayesprune.guides.gate_guide import GateGuide
from bayesprune.models.network import GatedNet


def new_or_empty(path: Path) -> bool:
    """Whether ``path`` can take a new run: absent, or an empty directory."""
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type's name if it has none."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def versions() -> dict:
    """Versions of the software a run used (recorded in config.json)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in ("bayesprune", "torch", "pyro-ppl", "numpy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


TEMPORARY = ".tmp-"  # atomic_write's temporary beside NAME: ".NAME.tmp-PID"


def written_name(filename) -> str:
    """The file a failed write was for: :func:`atomic_write` writes a hidden ``.NAME.tmp-PID``
    beside it first, which is not a name the user gave or will find (other names unchanged)."""
    path = Path(str(filename))
    stem, sep, pid = path.name.rpartition(TEMPORARY)
    if sep and stem.startswith(".") and len(stem) > 1 and pid.isdigit():
        return str(path.with_name(stem[1:]))
    return str(filename)


def _temporary_name(name: str) -> str:
    """The hidden temporary name beside ``name``, within the 255 bytes a file name may have
    (a name near that length would otherwise fail only because of the temporary one)."""
    suffix = f"{TEMPORARY}{os.getpid()}"
    room = 255 - len(suffix.encode()) - 1
    stem = name.encode()[:room].decode(errors="ignore")
    return f".{stem}{suffix}"


def atomic_write(path: str | Path, write) -> None:
    """Write a file completely or not at all: ``write(f)`` fills a temporary file in the same
    folder, which is flushed, synced and renamed over ``path`` (readers never see half a file)."""
    path = Path(path)
    # written to memory first: torch's and torch.export's writers turn a full disk into a
    # RuntimeError or a C++ abort, while Python's own write raises the OSError it is
    buffer = io.BytesIO()
    write(buffer)
    tmp = path.with_name(_temporary_name(path.name))
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _remove_stale_temporaries(path)


def _remove_stale_temporaries(path: Path) -> None:
    """Remove the temporaries of ``path`` that a killed process left (``kill -9`` while it was
    writing): their process no longer exists, and the file they were for is now written."""
    prefix = _temporary_name(path.name)[: -len(str(os.getpid()))]
    for stale in path.parent.glob(f"{glob.escape(prefix)}*"):
        pid = stale.name[len(prefix):]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            stale.unlink(missing_ok=True)
        except OSError:  # another user's live process: not ours to touch
            pass


_HELD: dict[str, int] = {}  # run directories this process holds, and their descriptors


def hold_run_directory(path: str | Path) -> bool:
    """Hold ``path`` for this process (an advisory lock on the directory, released by
    :func:`release_run_directory` or when the process ends, however it ends), or a
    :class:`RunError` if another process holds it: two processes writing one run (a
    ``--resume`` while the run is still going, or two at once) would interleave their records
    and checkpoints. Returns whether this call took it (``False``: already held here, or a
    file system without ``flock``, where runs go unlocked as before)."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system: no lock
        return False
    key = str(Path(path).resolve())
    if key in _HELD:
        return False
    fd = os.open(key, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunError(
            f"{path} is being written by another bayesprune process (the run itself or a "
            "--resume of it is still going); wait for it to end or stop it (it checkpoints "
            "when stopped), then resume"
        ) from None
    except OSError:  # no flock here (ENOLCK, ENOSYS: NFS without locking, Lustre): unlocked
        os.close(fd)
        return False
    _HELD[key] = fd
    return True


def release_run_directory(path: str | Path) -> None:
    """Give up the hold :func:`hold_run_directory` took (a no-op if this process holds none)."""
    fd = _HELD.pop(str(Path(path).resolve()), None)
    if fd is not None:
        os.close(fd)


def holds_run_directory(path: str | Path) -> bool:
    """Whether this process holds ``path``."""
    return str(Path(path).resolve()) in _HELD


def held_run_directories() -> set[str]:
    """The run directories this process holds."""
    return set(_HELD)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_torch_save(obj, path: str | Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


class RunWriter:
    """Writes the files of one run directory (created if missing), each atomically.

    ``summary.json`` is written first with ``"status": "running"`` and last with the final
    status; the JSON-lines files are appended a whole line at a time (a reader skips a torn last
    line, :func:`read_jsonl`).

    :param path: the run directory.
    :param traces: whether ``traces.jsonl`` is written.
    """

    def __init__(self, path: str | Path, traces: bool = False):
        self.path = Path(path)
        self.traces = traces

    def start(self, config: dict, hold=None) -> None:
        """Create the directory, write ``config.json``, empty record files and a ``running``
        ``summary.json``.

        :param hold: called with the directory once it exists, before anything is written in
            it (the trainer's hold on it, :func:`hold_run_directory`).
        :raises RunError: the directory exists and is not empty (another run's files would be
            mixed with this one's, or replaced); nothing is written.
        """
        if not new_or_empty(self.path):
            raise RunError(
                f"{self.path} exists and is not an empty directory: a new run needs a new or "
                "empty one (nothing was written)"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        if hold is not None:
            hold(self.path)
        atomic_write_text(self.path / "config.json", json.dumps(config, indent=2) + "\n")
        atomic_write_text(self.path / "metrics.jsonl", "")
        if self.traces:
            atomic_write_text(self.path / "traces.jsonl", "")
        self.summary({"status": "running"})

    def _append(self, name: str, record: dict) -> None:
        with open(self.path / name, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def epoch(self, record: dict) -> None:
        """Append one epoch's record to ``metrics.jsonl``."""
        self._append("metrics.jsonl", record)

    def trace(self, record: dict) -> None:
        """Append one step's unit state to ``traces.jsonl``."""
        self._append("traces.jsonl", record)

    def checkpoint(self, name: str, state: dict) -> Path:
        """Save ``checkpoints/<name>.pt`` (plain tensors and containers: it loads with
        ``weights_only=True``)."""
        folder = self.path / "checkpoints"
        folder.mkdir(exist_ok=True)
        path = folder / f"{name}.pt"
        atomic_torch_save(state, path)
        return path

    def truncate(self, epoch: int, step: int) -> None:
        """Drop the records written after a checkpoint (epoch ``epoch``, step ``step``) that a
        resumed run will write again."""
        for name, key, last in (("metrics.jsonl", "epoch", epoch), ("traces.jsonl", "step", step)):
            path = self.path / name
            if path.exists():
                kept = [r for r in read_jsonl(path) if r.get(key, 0) <= last]
                atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))

    def summary(self, summary: dict) -> None:
        atomic_write_text(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")

    def model(self, model: torch.nn.Module, in_shape) -> None:
        """Write ``model.pt``: the deployable network as plain data (:func:`load_model`)."""
        from bayesprune.export import model_record

        atomic_torch_save(model_record(model, in_shape), self.path / "model.pt")


class RunError(Exception):
    """A directory is not a readable run directory; the message says what is wrong."""


@dataclass
class Run:
    """What ``bayesprune train`` left in a run directory, with the guide rebuilt at one epoch.

    :param path: the run directory.
    :param config: the training settings (``config.json``).
    :param epoch: the epoch of the loaded checkpoint.
    :param guide: the guide (network, θ, σ̂₁², unit ids) as saved at that epoch.
    :param metrics: the per-epoch records (``metrics.jsonl``).
    :param traces: the per-step records (``traces.jsonl``, written with ``--trace-every``; else
        empty).
    :param summary: ``summary.json``, or ``None`` if training has not ended (the file then holds
        only ``"status"``: running or interrupted).
    :param last_recorded_epoch: the newest epoch in ``metrics.jsonl``; above ``epoch`` when an
        earlier checkpoint was loaded (``metrics`` and ``traces`` then stop at ``epoch``).
    :param status: ``summary.json``'s status, also where training has not ended (``running``,
        ``interrupted``); ``None`` without a summary.
    :param prune_events: the removals, the summary's or, where training has not ended, those
        recorded in the loaded checkpoint.
    :param initial_widths: the starting widths (summary or checkpoint; ``None`` if neither
        records them).
    """

    path: Path
    config: TrainConfig
    epoch: int
    guide: GateGuide
    metrics: list[dict]
    traces: list[dict]
    summary: dict | None
    last_recorded_epoch: int | None = None
    status: str | None = None
    prune_events: list = field(default_factory=list)
    initial_widths: list | None = None


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file (one object per non-empty line); a torn last line (the
    process was killed while appending) is skipped."""
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except ValueError:
            if i < len(lines) - 1:
                raise
    return records


def load_run(run_dir: str | Path, epoch: int | None = None, summary: dict | None = None) -> Run:
    """Read a run directory and rebuild its guide from a checkpoint.

    :param run_dir: a directory written by ``bayesprune train`` (or :class:`Trainer` with ``out``).
    :param epoch: the checkpoint to load; ``None``: the newest readable one (an interrupted or
        killed run may have left a damaged last file: the one before it is used).
    :param summary: the run's final summary where ``summary.json`` does not hold it yet (``train``
        inspects a run before it writes the summary, which stays the last file written).
    :raises RunError: the directory, ``config.json``, ``metrics.jsonl``, ``summary.json`` or the
        checkpoint is missing, unreadable or not what bayesprune writes (one line says which).
    """
    path = Path(run_dir)
    raw = read_config(path)
    try:
        config = TrainConfig.from_record(raw)
        metrics = read_jsonl(path / "metrics.jsonl")
        traces_path = path / "traces.jsonl"
        traces = read_jsonl(traces_path) if traces_path.exists() else []
    except (OSError, ValueError) as err:
        raise RunError(f"{path} is not a readable run directory ({err})") from None
    if not metrics or not all(isinstance(m, dict) for m in metrics):
        try:  # a run that started and stopped in its first epoch says so in its summary
            stopped = read_summary(path) if not metrics else None
        except RunError:  # (damaged: that is for the commands that resume or read it)
            stopped = None
        status = stopped.get("status") if isinstance(stopped, dict) else None
        if status in ("interrupted", "error"):
            raise RunError(
                f"{path} stopped ({status}) before its first epoch ended: nothing to inspect "
                f"yet; bayesprune train --resume {path} continues it"
            )
        if status == "failed":
            raise RunError(
                f"{path} failed in its first epoch ({stopped.get('status_reason')}): nothing to "
                "inspect"
            )
        if status == "running":
            raise RunError(
                f"{path} has not finished its first epoch: nothing to inspect yet (if its "
                f"process was killed, bayesprune train --resume {path} continues it)"
            )
        raise RunError(f"{path} has no epoch records: did training start?")
    if "unit_ids" not in metrics[0]:
        raise RunError(f"{path} was written by a bayesprune without unit ids; train it again")
    folder = path / "checkpoints"
    if epoch is not None:
        candidates = [folder / f"epoch_{epoch:03d}.pt"]
        if not candidates[0].exists():  # name the epochs there are, not a file path's errno
            have = sorted(int(p.stem[6:]) for p in folder.glob("epoch_*.pt")
                          if p.stem[6:].isdigit())  # fmt: skip
            there = f"epochs {', '.join(map(str, have))}" if have else "none"
            raise RunError(f"{path} has no checkpoint of epoch {epoch} (it has {there})")
    else:
        candidates = sorted(folder.glob("epoch_*.pt"), reverse=True)
    if not candidates:
        raise RunError(f"{path} has no checkpoints: did training finish an epoch?")
    errors = []
    for ckpt in candidates:
        try:
            saved, guide = _load_guide(ckpt, config, raw)
            break
        except ForeignCheckpoint:
            raise
        except RunError as err:
            errors.append(str(err))
    else:
        raise RunError(errors[0] if len(errors) == 1 else f"no readable checkpoint: {errors[0]}")
    if summary is None:
        summary_path = path / "summary.json"
        summary = _read_json(summary_path, dict) if summary_path.exists() else None
    status = None if summary is None else summary.get("status")
    if summary is not None and "initial_widths" not in summary:
        summary = None  # a run still going (or stopped): its summary holds only the status
    # the removals and starting widths: the summary's, else the checkpoint's own record
    record = summary if summary is not None else saved.get("trainer")
    record = record if isinstance(record, dict) else {}
    events = record.get("prune_events") or []
    initial_widths = record.get("initial_widths")
    loaded = int(saved["epoch"])
    last = metrics[-1].get("epoch")
    if loaded == config.epochs:  # the final settle (Eq. (15)) came after the last checkpoint
        _settle_as_recorded(guide, events)
    if any(m.get("epoch", 0) > loaded for m in metrics):
        # an earlier checkpoint: the records stop where it was saved, so that curves, events and
        # posterior are of one epoch (those written after it are not of this network)
        metrics = [m for m in metrics if m.get("epoch", 0) <= loaded]
        last_step = metrics[-1].get("step", 0)
        traces = [t for t in traces if t.get("step", 0) <= last_step]
    return Run(
        path, config, loaded, guide, metrics, traces, summary, last, status, events, initial_widths
    )


def _settle_as_recorded(guide: GateGuide, events: list[dict]) -> None:
    """Remove from the last epoch's guide the units the final settle removed after it was
    saved (prune events marked ``settled``), so that the network is ``model.pt``'s."""
    for event in events:
        if not (isinstance(event, dict) and event.get("settled")):
            continue
        name, gone = event.get("layer"), set(event.get("unit_ids") or ())
        if name not in guide.net.gated:
            raise RunError(f"a settled prune event names no gated layer ({name!r})")
        ids = guide.unit_ids(name).tolist()
        keep = [i for i, unit in enumerate(ids) if unit not in gone]
        if len(keep) == len(ids) or not keep:
            continue  # (already gone: a checkpoint written after it; or a record that cannot be)
        guide.remove_units(name, torch.tensor(keep, device=guide.unit_ids(name).device))


def run_directory(run_dir) -> Path:
    """``run_dir`` as a path, if it is a directory (else :class:`RunError`: missing, or a file)."""
    path = Path(run_dir)
    if not path.exists():
        raise RunError(f"run directory {run_dir} does not exist")
    if not path.is_dir():
        raise RunError(f"{run_dir} is a file, not a run directory")
    return path


def run_data_dir(out: Path, run: dict, given: str | None = None) -> str | None:
    """Where run ``out``'s data are read from now: ``given`` (a new location; the caller checks
    its files against the run's record), else the location its config.json records, refused in
    one line when it is no longer there (a moved folder or npz file), naming ``--data-dir``."""
    recorded = run.get("data_dir")
    if given is not None and recorded is None:
        raise RunError(
            f"--data-dir: run {out} trained on {run.get('dataset')} data, which are not read "
            "from a folder or file"
        )
    if given is not None:
        return str(Path(given).resolve())
    if recorded is not None and not Path(recorded).exists():
        raise RunError(
            f"run {out} read its data from {recorded}, which is not there any more: give their "
            "new location with --data-dir (the files must be the run's: their SHA-256 is checked)"
        )
    return recorded


def read_config(run_dir: Path) -> dict:
    """``config.json`` of a run directory (a JSON object, else :class:`RunError`)."""
    run_directory(run_dir)
    if not (Path(run_dir) / "config.json").is_file():
        raise RunError(f"{run_dir} is not a readable run directory (no config.json)")
    return _read_json(Path(run_dir) / "config.json", dict)


class ForeignCheckpoint(RunError):
    """A readable checkpoint of another run (never skipped like a damaged one)."""


def check_checkpoint(state: dict, config: dict, ckpt: Path) -> None:
    """Refuse (:class:`ForeignCheckpoint`) a checkpoint that another run wrote.

    Runs record a ``run_id`` in ``config.json`` and in every checkpoint; for runs made before
    it, the architecture recorded under ``run`` must be the checkpoint's.
    """
    run_id = config.get("run_id")
    if run_id is not None:
        if state.get("run_id") != run_id:
            raise ForeignCheckpoint(
                f"{ckpt} belongs to another run (its run id is not the one in config.json); "
                "nothing was changed"
            )
        return
    if state.get("run_id") is not None:  # a run that records ids wrote it; this one records none
        raise ForeignCheckpoint(
            f"{ckpt} belongs to another run (it has a run id, this run's config.json none); "
            "nothing was changed"
        )
    arch = (config.get("run") or {}).get("arch")
    spec = state.get("net_spec")
    found = spec.get("arch") if isinstance(spec, dict) else None
    if arch is not None and found is not None and found != arch:
        raise ForeignCheckpoint(
            f"{ckpt} holds a {found} network but the run trains a {arch}; nothing was changed"
        )


def latest_state(run_dir: Path, config: dict | None = None) -> tuple[dict, Path]:
    """The newest readable full checkpoint (``last.pt`` or ``epoch_NNN.pt``, by step).

    :param config: the run's ``config.json`` (read here if not given).
    :raises ForeignCheckpoint: one of them belongs to another run.
    """
    config = read_config(Path(run_dir)) if config is None else config
    folder = Path(run_dir) / "checkpoints"
    best, errors = None, []
    for ckpt in [folder / "last.pt", *sorted(folder.glob("epoch_*.pt"))]:
        if not ckpt.exists():
            continue
        try:
            state = load_checkpoint(ckpt, config)
        except ForeignCheckpoint:
            raise
        except RunError as err:
            errors.append(str(err))
            continue
        if "rng" in state and (best is None or state["step"] > best[0]["step"]):
            best = (state, ckpt)
    if best is None:
        reason = (
            f" ({errors[-1]})"
            if errors
            else " (it was stopped before its first epoch ended: nothing to resume; start it "
            "again with a new --out, or remove this folder and reuse its name)"
        )
        raise RunError(f"{run_dir} has no checkpoint to resume from{reason}")
    return best


def check_resumable(out: Path) -> None:
    """Refuse a run that already ended (a :class:`RunError`) or whose summary is damaged."""
    status = recorded_status(out)
    if status in ("finished", "collapsed", "failed"):
        raise RunError(f"run {out} already ended ({status}); nothing to resume")


def recorded_status(out: Path) -> str | None:
    """``summary.json``'s status (None: no summary yet); a damaged summary is refused."""
    path = out / "summary.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text()).get("status")
    except (ValueError, AttributeError, OSError):
        raise RunError(
            f"{path} is damaged (not the JSON object bayesprune writes); refusing to resume "
            "over it: restore the file, or start a new run with --out"
        ) from None


def read_summary(out: Path) -> dict | None:
    """``summary.json`` of a run directory (None: none yet; a damaged one is a
    :class:`RunError`)."""
    path = Path(out) / "summary.json"
    return _read_json(path, dict) if path.exists() else None


def _read_json(path: Path, kind: type):
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunError(f"cannot read {path}: {first_line(err)}") from None
    if not isinstance(value, kind):
        raise RunError(f"{path} is not a bayesprune {path.name} (expected a JSON object)")
    return value


def load_checkpoint(ckpt: Path, config: dict | None = None) -> dict:
    """A checkpoint's state (``weights_only=True``: a crafted pickle is refused, never run).

    :param config: the run's ``config.json``: a checkpoint of another run is refused
        (:func:`check_checkpoint`).
    """
    try:
        saved = torch.load(ckpt, weights_only=True, map_location="cpu")
    except Exception as err:  # every unpickling failure is a damaged or foreign file
        why = first_line(err)
        if "weights_only" in str(err):  # torch's advice to load it with weights_only=False is
            # not the way for a file bayesprune did not write as plain data: name the error only
            why = (
                f"it is damaged, or holds objects other than tensors and plain data "
                f"({type(err).__name__}; refused, nothing in it was run)"
            )
        raise RunError(f"cannot load checkpoint {ckpt}: {why}") from None
    if not isinstance(saved, dict) or not {"epoch", "net_spec", "guide"} <= set(saved):
        raise RunError(f"{ckpt} is not a bayesprune checkpoint")
    if config is not None:
        check_checkpoint(saved, config, ckpt)
    return saved


def _load_guide(ckpt: Path, config: TrainConfig, raw: dict) -> tuple[dict, GateGuide]:
    saved = load_checkpoint(ckpt, raw)
    try:
        net = GatedNet.from_spec(saved["net_spec"])
        guide = GateGuide(net, config.hyper(), weights=config.weights, posterior=config.posterior)
        guide.load_state_dict(saved["guide"])
    except (RuntimeError, KeyError, ValueError, TypeError) as err:
        raise RunError(f"cannot load checkpoint {ckpt}: {first_line(err)}") from None
    return saved, guide
