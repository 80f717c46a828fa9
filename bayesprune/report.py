"""``bayesprune inspect``: a run's ``InferenceData`` written to netCDF, its summary and figures."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyro
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bayesprune import arviz_io
from bayesprune.inspection import (
    DRAWS,
    gated_layers,
    run_to_arviz,
    survivor_summary,
    survivors,
)
from bayesprune.loop import keeps_global_rng
from bayesprune.runs import RunError, atomic_write, load_run

FOREST_UNITS = 30  # at most this many units per layer in the forest plot (the least certain)


def plot_theta_trajectories(idata, axes) -> None:
    """θ_s of every unit against training time, one axis per gated layer.

    Uses the per-step ``traces`` group when the run has one, else the per-epoch trajectories; a
    line ends where its unit was removed. A merge move removes units whatever their θ (most at
    θ = 1, where no line falls), so each is marked × where it went, and the title counts the
    removals of both kinds.
    """
    fine = arviz_io.has_group(idata, "traces")
    ds = arviz_io.group(idata, "traces" if fine else "trajectories")
    traj = arviz_io.group(idata, "trajectories")
    time = "step" if fine else "epoch"
    for ax, name in zip(axes, gated_layers(idata), strict=True):
        theta = ds[f"{name}_theta"]
        ax.plot(ds[time].values, theta.values, lw=0.8, alpha=0.6)
        removed_at = traj[f"{name}_removed_at_step"].values
        merged = traj[f"{name}_merged"].values & np.isfinite(removed_at)
        settled = np.zeros_like(merged)  # (a posterior.nc written before the settle has none)
        if f"{name}_settled" in traj:
            settled = traj[f"{name}_settled"].values & np.isfinite(removed_at)
        by_gates = int(np.isfinite(removed_at).sum() - merged.sum() - settled.sum())
        final = traj[f"{name}_theta"].values[-1]  # NaN for units removed by then
        waiting = int(((final == 0) & ~np.isfinite(removed_at)).sum())
        for moved, marker, color, size, label in (
            (merged, "x", "C3", 5, "merged (at its last recorded θ)"),
            (settled, "+", "C2", 7, "removed by the final settle"),
        ):
            if not moved.any():
                continue
            # where each unit went (the settle's: after the last step), at its last recorded θ
            steps = removed_at[moved]
            when = steps if fine else np.interp(steps, traj["step"].values, traj["epoch"].values)
            last = theta.values[:, moved]
            seen = np.isfinite(last)
            level = np.array(
                [col[ok][-1] if ok.any() else 1.0 for col, ok in zip(last.T, seen.T, strict=True)]
            )
            ax.plot(when, level, marker, color=color, ms=size, label=label)
            ax.legend(loc="best")
        pending = f",\n{waiting} at θ = 0 awaiting removal" if waiting else ""
        pending += f", {int(settled.sum())} by the final settle" if settled.any() else ""
        ax.set(
            xlabel=time,
            ylabel="θ",
            ylim=(-0.05, 1.05),
            title=f"{name}: θ of every unit\n({by_gates} removed by their gates, "
            f"{int(merged.sum())} merged{pending})",
        )
        ax.title.set_fontsize(10)
        if not fine:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_widths(idata, ax) -> None:
    """Hidden widths of the posterior mode (units with θ ≥ ½: the network the errors are of, and
    ``model.pt`` at the end) against epoch, epoch 0 the starting widths; dashed where the network
    still holds more units (θ at 0, awaiting the pruning check that removes them)."""
    ds, const = arviz_io.group(idata, "trajectories"), arviz_io.group(idata, "constant_data")
    epochs = [0, *ds["epoch"].values.tolist()]
    for i, name in enumerate(gated_layers(idata)):
        start = int(const[f"{name}_initial_width"])
        physical = [start, *ds[f"{name}_width"].values.tolist()]
        key = f"{name}_mode_width"
        mode = [start, *ds[key].values.tolist()] if key in ds else physical
        ax.plot(epochs, mode, marker="o", color=f"C{i}", label=name)
        if mode != physical:
            ax.plot(epochs, physical, ls="--", lw=0.8, color=f"C{i}", label=f"{name}, in place")
    ax.set(
        xlabel="epoch", ylabel="width", title="layer widths, θ ≥ ½ (epoch 0: start)", ylim=(0, None)
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()


def plot_objective(idata, ax) -> None:
    """The data term and the prior term of F (Eq. (8)) per example, averaged over each epoch."""
    ds = arviz_io.group(idata, "trajectories")
    ax.plot(ds["epoch"], ds["data_term"], marker="o", label="data term / N")
    ax.plot(ds["epoch"], ds["prior_term"], marker="o", label="prior term / N")
    ax.set(xlabel="epoch", ylabel="nats per example", title="objective terms")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()


def plot_accuracy(idata, ax) -> None:
    """Test accuracy of the posterior mode after each epoch."""
    ds = arviz_io.group(idata, "trajectories")
    ax.plot(ds["epoch"], 100 * (1 - ds["test_error"]), marker="o")
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy of the posterior mode")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def final_thetas(idata) -> tuple[np.ndarray, int]:
    """θ of the units present at the end, and the number of units removed (θ = 0 at removal)."""
    posterior, const = arviz_io.group(idata, "posterior"), arviz_io.group(idata, "constant_data")
    present, removed = [], 0
    for name in gated_layers(idata):
        theta = posterior[f"{name}_theta"].mean(("chain", "draw")).values
        present.append(theta)
        removed += int(const[f"{name}_initial_width"]) - theta.size
    return np.concatenate(present), removed


def plot_theta_histogram(idata, ax) -> None:
    """Histogram of θ over every starting unit: removed units count at θ = 0, where they left."""
    present, removed = final_thetas(idata)
    epoch = int(arviz_io.group(idata, "trajectories")["epoch"].values[-1])
    ax.hist(
        [present, np.zeros(removed)],
        bins=20,
        range=(0, 1),
        stacked=True,
        label=[f"present after epoch {epoch}", "removed (θ = 0, or merged), counted at 0"],
    )
    ax.set(xlabel="θ", ylabel="units", title=f"gate probabilities after epoch {epoch}")
    ax.legend()


def plot_gate_forest(idata, name: str, ax) -> None:
    """Forest plot of θ_s = q(ξ_s = 1) of one layer's surviving units, least certain first.

    θ, not the gate draws ξ_s: ArviZ marks a variable's median, which for 0/1 draws is 1 for
    every survivor (θ ≥ ½), and their HDI is [0, 1] for any θ < 1."""
    theta = arviz_io.group(idata, "posterior")[f"{name}_theta"].mean(("chain", "draw"))
    ids = survivors(idata, name)
    if not ids.size:
        ax.set_title(f"{name}: no surviving units")
        ax.set_axis_off()
        return
    theta_ids = theta.sel({f"{name}_unit": ids}).values
    order = np.argsort(theta_ids, kind="stable")
    arviz_io.plot_forest(idata, f"{name}_theta", {f"{name}_unit": ids[order][:FOREST_UNITS]}, ax)
    shown = min(len(ids), FOREST_UNITS)
    which = "least certain first" if np.any(theta_ids < 1) else "all at θ = 1: the first ids"
    ax.set_title(f"{name}: gates of {shown} of {len(ids)} survivors\n({which})", fontsize=10)
    ax.set_xlim(-0.05, 1.05)
    ax.set_xlabel("θ = q(ξ = 1), the probability the unit is on")


def _subplots(*args, figsize, **kwargs):
    """``plt.subplots`` without pyplot: a ``Figure`` of its own (rendered by Agg when saved), so
    that importing this module leaves the process's matplotlib backend alone (a notebook's
    inline plots) and no figure stays registered with pyplot."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def _save(fig, path: Path) -> Path:
    """Render to memory, then write the PNG atomically (never a 0-byte or half file)."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100, format="png")
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return path


def save_figures(idata, out_dir: Path, overview: Path | None = None) -> dict[str, Path]:
    """Save every figure of a run as a PNG in ``out_dir``; with ``overview``, also a 2×2 summary
    (widths, accuracy, objective terms, θ histogram) there.

    :returns: the written files, by name.
    """
    out_dir = Path(out_dir)
    layers = gated_layers(idata)
    files = {}
    fig, axes = _subplots(1, len(layers), figsize=(5 * len(layers), 3.5), squeeze=False)
    plot_theta_trajectories(idata, axes[0])
    files["theta_trajectories"] = _save(fig, out_dir / "theta_trajectories.png")
    for key, plot in (
        ("widths", plot_widths),
        ("objective", plot_objective),
        ("accuracy", plot_accuracy),
        ("theta_histogram", plot_theta_histogram),
    ):
        fig, ax = _subplots(figsize=(5, 3.5))
        plot(idata, ax)
        files[key] = _save(fig, out_dir / f"{key}.png")
    rows = max(min(len(survivors(idata, n)), FOREST_UNITS) for n in layers) + 1
    fig, axes = _subplots(
        1, len(layers), figsize=(4 * len(layers), 1.5 + 0.22 * rows), squeeze=False
    )
    for name, ax in zip(layers, axes[0], strict=True):
        plot_gate_forest(idata, name, ax)
    files["forest"] = _save(fig, out_dir / "forest.png")
    if overview is not None:
        fig, axes = _subplots(2, 2, figsize=(10, 7))
        plot_widths(idata, axes[0, 0])
        plot_accuracy(idata, axes[0, 1])
        plot_objective(idata, axes[1, 0])
        plot_theta_histogram(idata, axes[1, 1])
        files["overview"] = _save(fig, overview)
    return files


@keeps_global_rng
def inspect_run(
    run_dir: str | Path,
    epoch: int | None = None,
    draws: int = DRAWS,
    seed: int = 0,
    show_summary: bool = True,
    summary: dict | None = None,
    show_all: bool = False,
) -> dict[str, Path]:
    """Write ``RUN_DIR/inspect/posterior.nc`` and the figures; print the survivors' summary.

    Writes the files of :func:`save_figures` in ``RUN_DIR/inspect/`` and the overview
    ``RUN_DIR/training.png``, overwriting only its own earlier files; deletes nothing. With
    ``epoch``, all of them (the overview too) go to ``RUN_DIR/inspect/epoch_NNN/``, so that the
    final epoch's files that ``train`` wrote stay as they are.

    :param run_dir: a run directory.
    :param epoch: the checkpoint to inspect (default: the last).
    :param draws: number of posterior draws.
    :param seed: seed of the draws.
    :param show_summary: print a summary of the surviving units per layer and the rows of
        those whose θ is not yet 1. Every survivor's rows (ArviZ: mean, sd, HDI) are written to
        ``survivors.csv`` either way (``train``'s call did not write it, though the README said
        that train writes what inspect does).
    :param show_all: print every survivor's rows instead.
    :param summary: the run's final summary, where ``summary.json`` is not yet written (``train``
        writes it after these files).
    :returns: the written files, by name.
    """
    run = load_run(run_dir, epoch, summary=summary)
    last = run.last_recorded_epoch
    if epoch is None and isinstance(last, int) and run.epoch < last:
        # the last epoch's checkpoint is damaged or missing: its files are not replaced
        print(
            f"bayesprune: note: the checkpoint of epoch {last} is missing or cannot be read; "
            f"inspecting epoch "
            f"{run.epoch} into {Path(run_dir) / 'inspect' / f'epoch_{run.epoch:03d}'}",
            file=sys.stderr,
        )
        epoch = run.epoch
    pyro.set_rng_seed(seed)
    idata = run_to_arviz(run, draws)
    out = Path(run_dir) / "inspect"
    overview = Path(run_dir) / "training.png"
    if epoch is not None:  # an earlier checkpoint never replaces the run's final files
        out = out / f"epoch_{epoch:03d}"
        overview = out / "training.png"
    table = survivor_summary(idata)  # (written by train's call too, as the README says)
    try:
        out.mkdir(parents=True, exist_ok=True)
        files = {"posterior": arviz_io.save(idata, out / "posterior.nc")}
        files.update(save_figures(idata, out, overview=overview))
        files["survivors"] = out / "survivors.csv"  # every survivor's row, which the printed
        table.to_csv(files["survivors"])  # digest leaves out
    except OSError as err:
        raise RunError(f"cannot write {out}: {err.strerror or err}") from None
    if show_summary:
        from bayesprune.export import mode_widths

        widths = "-".join(str(w) for w in run.guide.net.widths)
        mode = "-".join(str(w) for w in mode_widths(run.guide))
        if mode != widths:  # units still in the checkpoint that the posterior mode leaves out
            widths = f"{widths} in the checkpoint, {mode} with θ ≥ ½ (the deployed network)"
        status = "" if run.status is None else f", status {run.status}"
        print(f"{run_dir}, epoch {run.epoch}: hidden widths {widths}{status}; survivors:")
        with pd.option_context("display.width", 120, "display.max_rows", None):
            print(table if show_all else survivors_digest(table, files["survivors"]))
    return files


UNDECIDED_SHOWN = 20  # rows of units with θ < 1 that a digest prints


def survivors_digest(table: pd.DataFrame, csv: Path) -> str:
    """Per layer: the survivors, how many have θ = 1, and their weight norms' spread; then the
    rows of the units whose θ is below 1 (at most :data:`UNDECIDED_SHOWN`), where the posterior
    is still uncertain. A converged run's survivors are all at θ = 1, and a row per unit says
    1.000 a thousand times: the whole table is in ``csv``."""
    lines, undecided = [], []
    layers = dict.fromkeys(name.split("_", 1)[0] for name in table.index)  # (in order)
    for layer in layers:
        theta = table["mean"][table.index.str.startswith(f"{layer}_theta[")]
        norms = table["mean"][table.index.str.startswith(f"{layer}_weight_norm[")]
        below = theta[theta < 1 - 1e-3]
        undecided += [f"{layer}_{kind}[{name[name.index('[') + 1:]}"
                      for name in below.index for kind in ("theta", "gate")]  # fmt: skip
        spread = (
            f"; weight norms median {norms.median():.3g} (10-90%: "
            f"{norms.quantile(0.1):.3g}-{norms.quantile(0.9):.3g})"
            if len(norms) else ""
        )
        lines.append(
            f"  {layer}: {len(theta)} survivors, {len(theta) - len(below)} at θ = 1, "
            f"{len(below)} below{spread}"
        )
    if undecided:
        shown = table.loc[[n for n in undecided if n in table.index][: 2 * UNDECIDED_SHOWN]]
        more = len(undecided) // 2 - len(shown) // 2
        lines.append("units with θ below 1 (gate and θ):")
        lines.append(str(shown))
        if more > 0:
            lines.append(f"  … and {more} more")
    lines.append(f"every survivor's mean, sd and 94% HDI: {csv} (inspect --all prints them)")
    return "\n".join(lines)
