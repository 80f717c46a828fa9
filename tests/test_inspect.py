"""``bayesprune inspect``: the InferenceData of a tiny teacher run, its figures and bad input."""

import json

import arviz as az
import numpy as np
import pytest
import torch

from bayesprune.cli import main
from bayesprune.export import deterministic_network, load_model
from bayesprune.inspection import run_to_arviz, survivor_summary, survivors
from bayesprune.report import save_figures
from bayesprune.runs import load_run
from tests.conftest import one_error_line

FIGURES = ("theta_trajectories", "widths", "objective", "accuracy", "theta_histogram", "forest")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("inspect") / "run"
    # wide and long enough that both layers lose units, by a gate and by a merge move
    args = ["train", "--widths", "64,32", "--epochs", "4", "--trace-every", "10", "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    # train writes what inspect writes (the README says so; survivors.csv was missing)
    assert (out / "inspect" / "survivors.csv").stat().st_size > 0
    # what `train` itself wrote, before `inspect` (below) replaces it
    (out / "inspect" / "posterior.nc").rename(out / "train_posterior.nc")
    return out


@pytest.fixture(scope="module")
def inspected(run):
    assert main(["inspect", str(run), "--draws", "40"]) == 0
    return az.from_netcdf(run / "inspect" / "posterior.nc")


def test_train_and_inspect_write_the_figures(run, inspected):
    for name in FIGURES:
        assert (run / "inspect" / f"{name}.png").stat().st_size > 1000, name
    assert (run / "training.png").stat().st_size > 1000


def test_posterior_matches_the_last_checkpoint(run, inspected):
    ckpt = torch.load(run / "checkpoints" / "epoch_004.pt", weights_only=True)
    post = inspected.posterior
    assert post.sizes["chain"] == 1 and post.sizes["draw"] == 40
    for layer in ("fc1", "fc2"):
        theta = ckpt["guide"][f"theta.{layer}_unconstrained"].numpy()
        ids = ckpt["guide"][f"unit_ids_{layer}"].numpy()
        assert post[f"{layer}_theta"].dims == ("chain", "draw", f"{layer}_unit")
        np.testing.assert_array_equal(post[f"{layer}_unit"].values, ids)
        np.testing.assert_allclose(post[f"{layer}_theta"].values[0, 0], theta, rtol=1e-6)
        # gates are draws from Bernoulli(θ): binary, and exactly θ where θ is 0 or 1
        gates = post[f"{layer}_gate"].values
        assert set(np.unique(gates)) <= {0.0, 1.0}
        binary = (theta == 0) | (theta == 1)
        assert np.all(gates[0][:, binary] == theta[binary])
        w = ckpt["guide"][f"net.layers.{layer}.weight"]
        b = ckpt["guide"][f"net.layers.{layer}.bias"]
        norms = torch.cat([w, b[:, None]], 1).norm(dim=1).numpy()
        np.testing.assert_allclose(post[f"{layer}_weight_norm"].values[0, 0], norms, rtol=1e-5)
        slab = float(ckpt["guide"][f"slab_var_{layer}"]) ** 0.5
        np.testing.assert_allclose(post[f"{layer}_slab_scale"].values, slab, rtol=1e-6)
        np.testing.assert_allclose(post[f"{layer}_spike_scale"].values, slab * 0.1**0.5, rtol=1e-6)
    assert post["out_weight_norm"].dims == ("chain", "draw", "out_unit")


def test_trajectories_follow_units_by_id_until_removal(run, inspected):
    summary = json.loads((run / "summary.json").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    traj, traces = inspected.trajectories, inspected.traces
    # both kinds of removal happen in this run, in both layers: the checks below are not empty
    assert {e["layer"] for e in summary["prune_events"]} == {"fc1", "fc2"}
    assert {bool(e.get("merged")) for e in summary["prune_events"]} == {True, False}
    np.testing.assert_array_equal(traj["epoch"].values, [1, 2, 3, 4])
    assert np.all(traces["step"].values % 10 == 0)
    for i, layer in enumerate(("fc1", "fc2")):
        start = summary["initial_widths"][i]
        assert traj.sizes[f"{layer}_unit"] == start
        assert int(inspected.constant_data[f"{layer}_initial_width"]) == start
        removed = [u for e in summary["prune_events"] if e["layer"] == layer for u in e["unit_ids"]]
        final = metrics[-1]["unit_ids"][layer]
        assert sorted(removed + final) == list(range(start))  # every unit: removed or kept
        theta = traj[f"{layer}_theta"].sel(epoch=4)
        np.testing.assert_allclose(theta.sel({f"{layer}_unit": final}), metrics[-1]["theta"][layer])
        assert np.all(np.isnan(theta.sel({f"{layer}_unit": removed})))
        for event in (e for e in summary["prune_events"] if e["layer"] == layer):
            at = traj[f"{layer}_removed_at_step"].sel({f"{layer}_unit": event["unit_ids"]})
            assert np.all(at == event["step"])
            merged = traj[f"{layer}_merged"].sel({f"{layer}_unit": event["unit_ids"]})
            assert np.all(merged == bool(event.get("merged")))
            settled = traj[f"{layer}_settled"].sel({f"{layer}_unit": event["unit_ids"]})
            assert np.all(settled == bool(event.get("settled")))
            # traced just before the check that removed them: θ exactly 0 (a gate's removal;
            # a merge move or the final settle takes units at any θ), then gone
            units = {f"{layer}_unit": event["unit_ids"]}
            before = traces[f"{layer}_theta"].sel(step=event["step"], **units)
            assert event.get("merged") or event.get("settled") or np.all(before == 0)
            after = traces[f"{layer}_theta"].sel(**units).where(traces.step > event["step"])
            assert np.all(np.isnan(after.dropna("step", how="all")))


def test_the_posterior_train_writes_records_the_removals(run, inspected):
    """``train`` inspects the run before it writes summary.json (the last file): its
    posterior.nc must still hold the removals, as a later ``inspect`` writes them."""
    written = az.from_netcdf(run / "train_posterior.nc").trajectories
    for layer in ("fc1", "fc2"):
        for key in (f"{layer}_removed_at_step", f"{layer}_merged"):
            np.testing.assert_array_equal(written[key].values, inspected.trajectories[key].values)
        assert np.isfinite(written[f"{layer}_removed_at_step"].values).any()


def test_an_unfinished_run_is_inspected_with_its_status_and_removals(run, tmp_path, capsys):
    """An interrupted (or still running) run: summary.json holds only its status; the header
    says it, and the removals come from the loaded checkpoint."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    capsys.readouterr()
    assert main(["inspect", str(copy), "--draws", "5"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "epoch 4: hidden widths" in header and header.endswith("status interrupted; survivors:")
    idata = az.from_netcdf(copy / "inspect" / "posterior.nc")
    ckpt = torch.load(copy / "checkpoints" / "epoch_004.pt", weights_only=True)
    events = ckpt["trainer"]["prune_events"]
    assert events
    for layer in ("fc1", "fc2"):
        at = idata.trajectories[f"{layer}_removed_at_step"]
        assert idata.trajectories.sizes[f"{layer}_unit"] == ckpt["trainer"]["initial_widths"][
            ("fc1", "fc2").index(layer)
        ]
        removed = [u for e in events if e["layer"] == layer for u in e["unit_ids"]]
        assert int(np.isfinite(at.values).sum()) == len(removed)


def test_load_run_rebuilds_the_trained_network(run):
    loaded = load_run(run)
    assert loaded.epoch == 4 and loaded.config.epochs == 4
    saved = load_model(run / "model.pt")
    x = torch.randn(50, 4)
    torch.testing.assert_close(deterministic_network(loaded.guide)(x), saved(x))
    assert load_run(run, epoch=1).epoch == 1


def test_summary_lists_the_survivors(run, capsys):
    """A digest per layer on the screen (a row per unit said 1.000 a thousand times on a
    converged run), every survivor's rows in inspect/survivors.csv, and on screen with --all."""
    import pandas as pd

    from bayesprune.report import survivors_digest

    assert main(["inspect", str(run), "--draws", "10"]) == 0
    out = capsys.readouterr().out
    kept = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["unit_ids"]["fc1"]
    events = json.loads((run / "summary.json").read_text())["prune_events"]
    settled = {u for e in events if e.get("settled") and e["layer"] == "fc1" for u in e["unit_ids"]}
    kept = [u for u in kept if u not in settled]  # (the final settle's came after the last epoch)
    assert f"  fc1: {len(kept)} survivors, " in out and "hdi_97%" not in out
    table = pd.read_csv(run / "inspect" / "survivors.csv", index_col=0)
    assert f"fc1_theta[{kept[0]}]" in table.index and "hdi_97%" in table.columns
    assert main(["inspect", str(run), "--draws", "10", "--all"]) == 0
    out = capsys.readouterr().out
    assert f"fc1_theta[{kept[0]}]" in out and "hdi_97%" in out
    # units below θ = 1 are the digest's rows: gate and θ, at most UNDECIDED_SHOWN of them
    names = [f"fc1_{v}[{i}]" for v in ("gate", "theta", "weight_norm") for i in range(30)]
    means = [1.0 if i < 5 else 0.6 for _ in range(3) for i in range(30)]
    digest = survivors_digest(pd.DataFrame({"mean": means, "sd": 0.0}, index=names), "x.csv")
    assert "  fc1: 30 survivors, 5 at θ = 1, 25 below; weight norms" in digest
    assert "fc1_theta[5]" in digest and "fc1_gate[5]" in digest and "fc1_theta[4]" not in digest
    assert "fc1_theta[24]" in digest and "fc1_theta[25]" not in digest and "and 5 more" in digest


def test_bad_run_directories_are_one_line_errors_and_untouched(tmp_path, run, capsys):
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "does not exist" in one_error_line(capsys)
    (tmp_path / "notes.txt").write_text("precious")
    assert main(["inspect", str(tmp_path)]) == 2
    assert "not a readable run directory" in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert main(["inspect", str(run), "--epoch", "7"]) == 2  # it names the epochs there are
    have = sorted(int(p.stem[6:]) for p in (run / "checkpoints").glob("epoch_*.pt"))
    assert have and 7 not in have
    listed = ", ".join(map(str, have))
    assert f"has no checkpoint of epoch 7 (it has epochs {listed})" in one_error_line(capsys)
    assert main(["inspect", str(run), "--draws", "0"]) == 2
    assert "--draws" in one_error_line(capsys)
    broken = tmp_path / "broken"
    (broken / "checkpoints").mkdir(parents=True)
    for name in ("config.json", "metrics.jsonl"):
        (broken / name).write_text((run / name).read_text())
    (broken / "checkpoints" / "epoch_001.pt").write_text("not a checkpoint")
    assert main(["inspect", str(broken)]) == 2
    assert "cannot load checkpoint" in one_error_line(capsys)
    assert (broken / "checkpoints" / "epoch_001.pt").read_text() == "not a checkpoint"


def test_a_layer_without_survivors_still_gets_its_figures(run, tmp_path):
    idata = run_to_arviz(load_run(run), draws=5)
    idata.posterior["fc2_theta"][:] = 0.0  # every fc2 gate off: the posterior mode has no fc2 unit
    assert survivors(idata, "fc2").size == 0
    files = save_figures(idata, tmp_path)
    assert all(path.stat().st_size > 1000 for path in files.values())
    table = survivor_summary(idata)
    assert len(table) and all(name.startswith("fc1_") for name in table.index)


@pytest.mark.parametrize("target", ["model.pt", "checkpoints/epoch_004.pt"])
def test_a_crafted_pickle_in_a_run_is_refused_and_nothing_runs(run, tmp_path, target):
    import pickle
    import shutil

    from bayesprune.runs import RunError
    from tests.test_data import _Payload

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    marker = tmp_path / "pwned"
    (copy / target).write_bytes(pickle.dumps(_Payload(marker)))
    if target == "model.pt":
        with pytest.raises(ValueError, match="cannot load"):
            load_model(copy / target)
    else:  # the damaged newest checkpoint is refused; the one before it is read instead
        assert load_run(copy).epoch == 3
        with pytest.raises(RunError, match="cannot load checkpoint") as refused:
            load_run(copy, epoch=4)
        # torch's advice to load it with weights_only=False is not passed on
        assert "weights_only" not in str(refused.value)
        assert "refused, nothing in it was run" in str(refused.value)
    assert not marker.exists()


def test_inspect_at_an_earlier_epoch_stops_every_record_there(run, tmp_path):
    """``inspect --epoch 1`` is epoch 1's posterior with epoch 1's curves, traces and removals:
    not the whole run's curves beside an earlier network (the figures read "after epoch 1")."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert main(["inspect", str(copy), "--epoch", "1", "--draws", "5"]) == 0
    idata = az.from_netcdf(copy / "inspect" / "epoch_001" / "posterior.nc")
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    np.testing.assert_array_equal(idata.trajectories["epoch"].values, [1])
    assert idata.traces["step"].values.max() <= first["step"]
    for layer in ("fc1", "fc2"):
        at = idata.trajectories[f"{layer}_removed_at_step"].values
        assert np.all(np.isnan(at) | (at <= first["step"]))
        assert idata.trajectories[f"{layer}_width"].values.tolist() == [
            first["widths"][("fc1", "fc2").index(layer)]
        ]


def test_the_theta_figure_counts_and_marks_both_kinds_of_removal(run, inspected):
    """Merge moves and the final settle take units at θ = 1, where no line falls: the figure's
    titles count the removals of each kind and every merged or settled unit gets its marker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bayesprune.report import plot_theta_trajectories

    summary = json.loads((run / "summary.json").read_text())
    fig, axes = plt.subplots(1, 2)
    plot_theta_trajectories(inspected, axes)
    for ax, layer in zip(axes, ("fc1", "fc2"), strict=True):
        events = [e for e in summary["prune_events"] if e["layer"] == layer]
        merged = sum(len(e["unit_ids"]) for e in events if e.get("merged"))
        settled = sum(len(e["unit_ids"]) for e in events if e.get("settled"))
        gated = sum(len(e["unit_ids"]) for e in events) - merged - settled
        last = f", {settled} by the final settle" if settled else ""
        assert f"({gated} removed by their gates, {merged} merged{last})" in ax.get_title()
        marks = [line for line in ax.get_lines() if line.get_marker() == "x"]
        assert sum(len(line.get_xdata()) for line in marks) == merged
        marks = [line for line in ax.get_lines() if line.get_marker() == "+"]
        assert sum(len(line.get_xdata()) for line in marks) == settled
    plt.close(fig)


def test_the_header_names_the_deployed_widths_where_the_checkpoint_has_more(run, tmp_path, capsys):
    """Units with θ < ½ are still in a checkpoint's network but not in model.pt: the header
    printed the checkpoint's widths alone, which the survivors' table below did not add up to."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    path = copy / "checkpoints" / "epoch_004.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["guide"]["theta.fc1_unconstrained"][0] = 0.2  # one unit on its way out
    torch.save(ckpt, path)
    widths = ckpt["widths"]
    capsys.readouterr()
    assert main(["inspect", str(copy), "--draws", "5"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    checkpoint, mode = "-".join(map(str, widths)), "-".join(map(str, [widths[0] - 1, *widths[1:]]))
    assert f"hidden widths {checkpoint} in the checkpoint, {mode} with θ ≥ ½" in header, header
    shutil.copytree(run, tmp_path / "as-run")  # the run itself: one set of widths
    assert main(["inspect", str(tmp_path / "as-run"), "--draws", "5"]) == 0
    assert f"hidden widths {checkpoint}, status finished" in capsys.readouterr().out


def test_the_widths_figure_and_trajectories_follow_the_deployed_network(run, inspected, tmp_path):
    """A run can end with units at θ = 0 still in place (removed at the next pruning check):
    widths.png and the trajectories followed the network's physical widths while summary.json,
    model.pt and the accuracy panel are of the posterior mode's. The mode's widths are the solid
    lines and ``{l}_mode_width``; the physical ones dashed where they differ. The forest shows θ
    (ArviZ's marker for 0/1 gate draws is their median, 1 for every survivor), and every
    variable of posterior.nc says what it is."""
    import shutil

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bayesprune.inspection import run_to_arviz
    from bayesprune.report import plot_gate_forest, plot_widths
    from bayesprune.runs import load_run

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    lines = (copy / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    last["mode_widths"] = [w - 3 for w in last["widths"]]  # three per layer awaiting removal
    (copy / "metrics.jsonl").write_text("\n".join([*lines[:-1], json.dumps(last)]) + "\n")
    path = copy / "checkpoints" / "epoch_004.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["guide"]["theta.fc1_unconstrained"][:2] = torch.tensor([0.6, 0.7])  # undecided units
    torch.save(ckpt, path)
    idata = run_to_arviz(load_run(copy), draws=40)
    fig, ax = plt.subplots()
    plot_widths(idata, ax)
    solid = {line.get_label(): line.get_ydata()[-1] for line in ax.get_lines()}
    for i, layer in enumerate(("fc1", "fc2")):
        assert idata.trajectories[f"{layer}_mode_width"].values[-1] == last["mode_widths"][i]
        assert solid[layer] == last["mode_widths"][i]
        assert solid[f"{layer}, in place"] == last["widths"][i]
    plt.close(fig)

    fig, ax = plt.subplots()
    plot_gate_forest(idata, "fc1", ax)
    marks = [line for line in ax.get_lines() if line.get_marker() not in ("None", "", None)]
    shown = np.concatenate([line.get_xdata() for line in marks])
    assert {0.6, 0.7} <= set(np.round(shown, 6)) <= {0.6, 0.7, 1.0}  # θ, least certain first
    assert "θ" in ax.get_xlabel()
    plt.close(fig)

    for group in inspected.groups():
        for var in inspected[group].data_vars:
            assert inspected[group][var].attrs.get("description"), (group, var)


def test_the_other_panels_plot_the_run_s_own_numbers(run, inspected):
    """The accuracy, objective and θ-histogram panels were only checked to be non-empty PNGs:
    their data are the trajectories' (accuracy = 100 (1 − test error), the two terms of F per
    example) and every starting unit (removed ones at θ = 0)."""
    from matplotlib.figure import Figure

    from bayesprune.report import plot_accuracy, plot_objective, plot_theta_histogram

    traj = inspected.trajectories
    ax = Figure().subplots()
    plot_accuracy(inspected, ax)
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_ydata(), 100 * (1 - traj["test_error"].values))
    ax = Figure().subplots()
    plot_objective(inspected, ax)
    data, prior = ax.get_lines()
    np.testing.assert_allclose(data.get_ydata(), traj["data_term"].values)
    np.testing.assert_allclose(prior.get_ydata(), traj["prior_term"].values)
    ax = Figure().subplots()
    plot_theta_histogram(inspected, ax)
    counts = sum(patch.get_height() for patch in ax.patches)
    starting = sum(int(inspected.constant_data[f"{n}_initial_width"]) for n in ("fc1", "fc2"))
    assert counts == starting


def test_gates_at_one_half_are_survivors_in_inspect_as_in_the_deployed_network(
    tmp_path, monkeypatch
):
    """inspect's survivors are the deployed network's units (θ ≥ ½, as GateGuide.mode_mask and
    model.pt), θ exactly ½ included: with θ never moved from --init-theta 0.5, model.pt keeps
    every unit and survivors.csv lists every one."""
    import pandas as pd

    from bayesprune.inference.trainer import Trainer

    monkeypatch.setattr(Trainer, "warmed_up", lambda self, *args: False)  # θ never moves: ½
    out = tmp_path / "run"
    argv = ["train", "--epochs", "1", "--widths", "5,3", "--no-progress", "--threads", "1",
            "--init-theta", "0.5", "--out", str(out)]  # fmt: skip  (with the report: inspect)
    assert main(argv) == 0
    assert json.loads((out / "summary.json").read_text())["widths"] == [5, 3]
    table = pd.read_csv(out / "inspect" / "survivors.csv", index_col=0)
    for layer, width in (("fc1", 5), ("fc2", 3)):
        assert table.index.str.startswith(f"{layer}_theta[").sum() == width, list(table.index)
