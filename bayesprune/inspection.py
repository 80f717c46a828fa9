"""What the gates learned: a run as an ArviZ ``InferenceData``, its summary and its figures.

Groups of the ``InferenceData`` (``RUN_DIR/inspect/posterior.nc``), with one dimension
``{layer}_unit`` per layer whose coordinates are the units' original indices (stable across
removals):

- ``posterior`` (one chain, ``draw``): draws from ``pyro.infer.Predictive`` over the guide at the
  loaded checkpoint, for the units still present: ``{l}_gate`` (ξ_s), ``{l}_theta`` (the draw of
  π_s, which is θ_s since q(π) = δ(θ)), ``{l}_weight_norm`` (‖w_s‖ of the drawn augmented row
  ``[W | b]``; the drawn matrices themselves are not stored: for point masses every draw is the
  same matrix, and at LeNet-300-100 size they would be ~1 MB per draw), ``{l}_slab_scale`` σ₁ and
  ``{l}_spike_scale`` σ₀ = √ρ σ₁ (every layer; ``out_unit`` are the classes);
- ``trajectories`` (``epoch``, every unit ever present): ``{l}_theta`` and ``{l}_weight_norm``
  after each epoch (NaN once the unit is removed), ``{l}_removed_at_step``, ``{l}_merged``
  (removed by a merge move, Eq. (14), rather than by its gate), ``{l}_settled`` (by the final
  settle, Eq. (15)), and per epoch
  ``{l}_width`` (units still in the network), ``{l}_mode_width`` (units with θ ≥ ½: the
  posterior mode, whose errors are recorded and which ``model.pt`` holds at the end),
  ``{l}_slab_scale``, ``{l}_spike_scale``, ``data_term``, ``prior_term``, ``test_error``,
  ``gates_binary_fraction``;
- ``traces`` (``step``; only for runs trained with ``--trace-every``): ``{l}_theta``,
  ``{l}_weight_norm`` and ``{l}_theta_grad`` (∂F/∂θ_s / N, the θ-drift) every few steps;
- ``constant_data``: ``rho``, ``temperature``, ``{l}_initial_width``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyro
import torch
import xarray as xr
from pyro.infer import Predictive

from bayesprune import arviz_io
from bayesprune.config import INSPECT_DRAWS as DRAWS
from bayesprune.guides.gate_guide import GateGuide
from bayesprune.runs import Run


@torch.no_grad()
def posterior_draws(guide: GateGuide, num_samples: int, rho: float):
    """Draws of the gates, θ, weight norms and prior scales from ``Predictive`` over the guide.

    :returns: ``(draws, dims, coords)`` as :func:`bayesprune.arviz_io.to_arviz` takes them.
    """
    net = guide.net
    sites = [f"{n}.{k}" for n in net.gated for k in ("gate", "prob")]
    sites += [f"{n}.{k}" for n in net.layers for k in ("weight", "slab_var")]
    x = torch.zeros(1, 1)  # the guide reads only the batch size from x: one gate draw per unit
    # weight draws are reduced to row norms chunk by chunk: VGG16's 15M weights × 200 draws
    # would not fit in memory at once (each chunk holds at most ~5e7 values)
    per_draw = sum(net.width(n) * (net.fan_in(n) + 1) for n in net.layers)
    chunk = max(1, min(num_samples, int(5e7 // per_draw)))
    parts = []
    with pyro.validation_enabled(False):
        for start in range(0, num_samples, chunk):
            count = min(chunk, num_samples - start)
            part = Predictive(guide, num_samples=count, return_sites=sites)(x)
            for name in net.layers:
                weight = part.pop(f"{name}.weight").reshape(count, net.width(name), -1)
                part[f"{name}.weight_norm"] = torch.linalg.vector_norm(weight, dim=-1)
            parts.append(part)
    samples = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    draws, dims, coords = {}, {}, {}
    for name in net.layers:
        dim = f"{name}_unit"
        width = net.width(name)
        coords[dim] = guide.unit_ids(name).numpy() if name in net.gated else np.arange(width)
        draws[f"{name}_weight_norm"] = samples[f"{name}.weight_norm"].numpy()
        dims[f"{name}_weight_norm"] = [dim]
        slab_scale = samples[f"{name}.slab_var"].reshape(num_samples).sqrt().numpy()
        draws[f"{name}_slab_scale"] = slab_scale
        draws[f"{name}_spike_scale"] = np.sqrt(rho) * slab_scale  # σ₀² = ρ σ₁², Eq. (2)
        if name in net.gated:
            for var, site in (("gate", "gate"), ("theta", "prob")):
                draws[f"{name}_{var}"] = samples[f"{name}.{site}"].reshape(num_samples, width)
                dims[f"{name}_{var}"] = [dim]
    return {k: np.asarray(v, dtype=np.float64) for k, v in draws.items()}, dims, coords


def unit_series(records: list[dict], key: str, layer: str, ids: np.ndarray) -> np.ndarray:
    """``records[t][key][layer]`` placed by unit id: shape ``(len(records), len(ids))``, NaN
    where a unit is absent (removed)."""
    column = {int(u): i for i, u in enumerate(ids)}
    out = np.full((len(records), len(ids)), np.nan)
    for t, record in enumerate(records):
        values = record[key][layer]
        if values is None:
            continue
        cols = [column[u] for u in record["unit_ids"][layer]]
        out[t, cols] = values
    return out


def unit_coords(run: Run) -> dict[str, np.ndarray]:
    """Per gated layer, every unit id the run ever had (0 .. starting width − 1)."""
    layers = run.guide.net.gated
    if run.initial_widths is not None:
        return {n: np.arange(w) for n, w in zip(layers, run.initial_widths, strict=True)}
    seen = {n: {u for r in run.metrics + run.traces for u in r["unit_ids"][n]} for n in layers}
    return {n: np.arange(max(ids) + 1) for n, ids in seen.items()}


def trajectories(run: Run, ids: dict[str, np.ndarray]) -> xr.Dataset:
    """The ``trajectories`` group: per-epoch records of ``metrics.jsonl`` by unit id."""
    records = run.metrics
    data: dict[str, tuple] = {}
    removed_at = {n: np.full(len(u), np.nan) for n, u in ids.items()}
    merged = {n: np.zeros(len(u), bool) for n, u in ids.items()}
    settled = {n: np.zeros(len(u), bool) for n, u in ids.items()}
    for event in run.prune_events:
        if event["step"] > records[-1]["step"]:
            continue  # after the inspected epoch (load_run stops the records there)
        removed_at[event["layer"]][event["unit_ids"]] = event["step"]
        merged[event["layer"]][event["unit_ids"]] = bool(event.get("merged"))
        settled[event["layer"]][event["unit_ids"]] = bool(event.get("settled"))
    for i, name in enumerate(ids):
        dims = ("epoch", f"{name}_unit")
        data[f"{name}_theta"] = (dims, unit_series(records, "theta", name, ids[name]))
        data[f"{name}_weight_norm"] = (dims, unit_series(records, "weight_norm", name, ids[name]))
        data[f"{name}_removed_at_step"] = (dims[1:], removed_at[name])
        data[f"{name}_merged"] = (dims[1:], merged[name])
        data[f"{name}_settled"] = (dims[1:], settled[name])
        data[f"{name}_width"] = ("epoch", [r["widths"][i] for r in records])
        data[f"{name}_mode_width"] = (  # the network the errors are of (records before: width)
            "epoch",
            [r.get("mode_widths", r["widths"])[i] for r in records],
        )
    for name in records[0]["slab_var"]:
        slab = np.sqrt([r["slab_var"][name] for r in records])
        data[f"{name}_slab_scale"] = ("epoch", slab)
        data[f"{name}_spike_scale"] = ("epoch", np.sqrt(run.config.rho) * slab)
    for key in ("step", "data_term", "prior_term", "test_error", "gates_binary_fraction"):
        data[key] = ("epoch", [r[key] for r in records])
    coords = {"epoch": [r["epoch"] for r in records], **{f"{n}_unit": u for n, u in ids.items()}}
    return xr.Dataset(data, coords=coords)


def traces(run: Run, ids: dict[str, np.ndarray]) -> xr.Dataset:
    """The ``traces`` group: the per-step records of ``traces.jsonl`` by unit id."""
    data = {}
    for name in ids:
        dims = ("step", f"{name}_unit")
        for key in ("theta", "weight_norm", "theta_grad"):
            data[f"{name}_{key}"] = (dims, unit_series(run.traces, key, name, ids[name]))
    coords = {"step": [r["step"] for r in run.traces], **{f"{n}_unit": u for n, u in ids.items()}}
    return xr.Dataset(data, coords=coords)


# what each variable is, by the name after its layer's ``{l}_`` (the netCDF's ``description``)
DESCRIPTIONS = {
    "gate": "ξ_s, the unit's gate drawn from q(ξ_s) = Bernoulli(θ_s)",
    "theta": "θ_s = q(ξ_s = 1), the probability the unit is on (a variational parameter: "
    "the same in every draw of the posterior group)",
    "weight_norm": "‖[w_s, b_s]‖, the norm of the unit's incoming weights and bias (the same in "
    "every draw for point-mass weights)",
    "slab_scale": "σ₁, the slab standard deviation of the layer's weight prior (a point "
    "estimate, Eq. (11s): the same in every draw)",
    "spike_scale": "σ₀ = √ρ σ₁, the spike standard deviation of the layer's weight prior",
    "removed_at_step": "the step the unit was removed at (NaN: still present)",
    "merged": "removed by a merge move (Eq. (14)) rather than by its gate",
    "settled": "removed by the final settle (Eq. (15)), after the last epoch, rather than by "
    "its gate",
    "width": "units still in the network after the epoch (θ = 0 ones awaiting removal included)",
    "mode_width": "units with θ ≥ ½ after the epoch: the posterior mode, whose errors are "
    "recorded and which model.pt holds at the end",
    "theta_grad": "∂F/∂θ_s / N, the θ-drift per example (traced steps)",
    "initial_width": "the layer's starting width",
    "data_term": "the data term of F per example, averaged over the epoch's steps (nats)",
    "prior_term": "the prior term of F per example, averaged over the epoch's steps (nats)",
    "test_error": "test error of the posterior mode after the epoch",
    "gates_binary_fraction": "share of the gates with θ exactly 0 or 1",
    "step": "training steps done by the end of the epoch",
    "rho": "ρ = σ₀² / σ₁², the spike-to-slab variance ratio",
    "temperature": "τ, the prior's temperature (Eq. (13))",
}


def describe(idata) -> None:
    """Give every variable of ``idata`` its ``description`` attribute (:data:`DESCRIPTIONS`)."""
    for name in idata.groups():
        dataset = idata[name]
        for var in dataset.data_vars:
            key = var if var in DESCRIPTIONS else var.split("_", 1)[-1]
            if key in DESCRIPTIONS:
                dataset[var].attrs["description"] = DESCRIPTIONS[key]


def run_to_arviz(run: Run, draws: int = DRAWS) -> arviz_io.az.InferenceData:
    """The ``InferenceData`` of a run (groups in the module docstring; every variable has a
    ``description`` attribute)."""
    posterior, dims, coords = posterior_draws(run.guide, draws, run.config.rho)
    ids = unit_coords(run)
    constants = {"rho": run.config.rho, "temperature": run.config.temperature}
    constants.update({f"{n}_initial_width": len(u) for n, u in ids.items()})
    groups = {"constant_data": xr.Dataset(constants), "trajectories": trajectories(run, ids)}
    if run.traces:
        groups["traces"] = traces(run, ids)
    idata = arviz_io.to_arviz(posterior, dims, coords, groups)
    describe(idata)
    return idata


def survivors(idata, layer: str) -> np.ndarray:
    """Ids of the units of the posterior mode (θ_s ≥ ½, as ``GateGuide.mode_mask``) of one
    layer."""
    theta = arviz_io.group(idata, "posterior")[f"{layer}_theta"].mean(("chain", "draw"))
    return theta[f"{layer}_unit"].values[theta.values >= 0.5]


def gated_layers(idata) -> list[str]:
    """The gated layers of an ``InferenceData`` written by :func:`run_to_arviz`."""
    posterior = arviz_io.group(idata, "posterior")
    return [name[: -len("_gate")] for name in posterior.data_vars if name.endswith("_gate")]


def survivor_summary(idata):
    """ArviZ summary (mean, sd, HDI) of the gates, θ and weight norms of the surviving units."""
    tables = [
        arviz_io.summary(
            idata,
            [f"{n}_{v}" for v in ("gate", "theta", "weight_norm")],
            {f"{n}_unit": survivors(idata, n)},
        )
        for n in gated_layers(idata)
        if survivors(idata, n).size
    ]
    return pd.concat(tables) if tables else pd.DataFrame()
