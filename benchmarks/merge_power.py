"""How much a single merge move's test can resolve: per proposal, the price it would save against
the noise bound of its held-out sample (docs/method.md §6zg).

A merge move (Eq. (14)) is accepted iff N (mean d + z_k sd(d)/√n) + ΔP < 0: d the held-out
examples' loss changes, n of them (about 2,048), ΔP the change of the prior term (the unit's
price less what the re-wired weights now cost). Even at no data cost (mean d = 0) the move
passes only if its saving −ΔP exceeds the noise bound N z_k sd(d)/√n. For every proposal of
every round of a default run this script records −ΔP, the bound and N·mean d, and per layer
reports how many proposals there were and were accepted, how many had −ΔP above the bound (the
test could pass them at no data cost), how many had ΔP ≥ 0 (the re-wired weights cost more than
the unit saves, so no sample could pass them), and the medians of −ΔP, of the bound and of
their ratio. At a fixed sd(d) and z the bound would grow like N (the data term is N times a mean
over a fixed sample) while a unit's price grows like τ(N) ∝ √N (Eq. (13)), so the ratio falls at
least like N^(−½); measured, about N^(−0.7), sd(d) and the spent z_k rising with N too.

Usage: ``.venv/bin/python benchmarks/merge_power.py [--cells ...] [--seeds 0] [--jobs 2]``;
writes ``results/merge_power.json`` and its table in ``README.md``. One thread per run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import commit, cpu_model, description, seed_type, write  # noqa: E402
from robustness_matrix import CASES, cell_config, cell_data, cell_network  # noqa: E402

from bayesprune.config import positive  # noqa: E402

CELLS = [
    "mlp-n3k", "mlp-n10k", "mlp-n60k", "mlp-b32", "mlp-b256", "mlp-lr3e-4", "mlp-lr3e-3",
    "lenet5-n10k", "teacher-300-100", "teacher-32-16", "out-teacher-1000-500", "out-digits",
]  # fmt: skip


def record_proposals(merges) -> list[dict]:
    """Wrap ``merges`` (a :class:`MergeMoves`) so that each single proposal's terms are logged:
    the prior before and after it (``_prior``), its held-out moments (``_moments``) and its z
    (``z``, called once per single proposal, after the other two)."""
    log: list[dict] = []
    state: dict = {}
    layer, prior, moments, z_of = merges.layer, merges._prior, merges._moments, merges.z

    def logged_layer(name, *args, **kwargs):
        state.update(name=name, base=None, last=None, moments=None)
        return layer(name, *args, **kwargs)

    def logged_prior(gates):
        value = prior(gates)
        if state["base"] is None:
            state["base"] = value  # the round's first evaluation: the prior before any move
        state["last"] = value
        return value

    def logged_moments(diff):
        state["moments"] = moments(diff)
        return state["moments"]

    def logged_z(k):
        z = z_of(k)
        mean, sd, n = state["moments"]
        delta_prior = state["last"] - state["base"]
        bound = merges.num_data * z * sd / n**0.5
        accepted = (mean + z * sd / n**0.5) * merges.num_data + delta_prior < 0  # the code's
        log.append({"layer": state["name"], "saving": -delta_prior, "bound": bound,
                    "data": merges.num_data * mean, "accepted": bool(accepted)})  # fmt: skip
        if accepted:
            state["base"] = state["last"]
        return z

    merges.layer, merges._prior, merges._moments, merges.z = (
        logged_layer, logged_prior, logged_moments, logged_z
    )  # fmt: skip
    return log


def summarise(log: list[dict]) -> dict:
    layers: dict[str, list[dict]] = {}
    for row in log:
        layers.setdefault(row["layer"], []).append(row)
    out = {}
    for name, rows in layers.items():
        out[name] = {
            "proposals": len(rows),
            "accepted": sum(r["accepted"] for r in rows),
            "saving_above_bound": sum(r["saving"] > r["bound"] for r in rows),
            "saving_not_positive": sum(r["saving"] <= 0 for r in rows),
            "median_saving": statistics.median(r["saving"] for r in rows),
            "median_bound": statistics.median(r["bound"] for r in rows),
            "median_ratio": statistics.median(
                r["saving"] / r["bound"] for r in rows if r["bound"] > 0
            ),
        }
    return out


def run(case: str, seed: int) -> dict:
    import torch

    from bayesprune.inference.trainer import Trainer

    torch.set_num_threads(1)
    data = cell_data(case)
    trainer = Trainer(cell_network(case, seed, data), data, cell_config(case, seed))
    log = record_proposals(trainer.merges)
    summary = trainer.fit(progress=False)
    out = {"case": case, "seed": seed, "num_data": trainer.merges.num_data,
           "widths": summary["widths"], "test_error": summary["test_error"],
           "layers": summarise(log)}  # fmt: skip
    print(out, flush=True)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--cells", nargs="+", default=CELLS)
    parser.add_argument("--seeds", nargs="+", type=seed_type, default=[0])
    parser.add_argument(
        "--jobs", type=positive(int), default=2, help="processes at a time (1 thread each)"
    )
    parser.add_argument("--name", default="merge_power")
    parser.add_argument("--results-dir", default=None, help="write the JSON there instead")
    args = parser.parse_args(argv)
    unknown = [c for c in args.cells if c not in CASES]
    if unknown:
        parser.error(f"not cells of robustness_matrix.py: {unknown}")
    label = commit()
    jobs = [(c, s) for c in args.cells for s in args.seeds]
    if args.jobs == 1:
        rows = [run(c, s) for c, s in jobs]
    else:
        with ProcessPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(run, *zip(*jobs, strict=True)))
    result = {"commit": label, "cpu": cpu_model(), "threads": 1, "merge_power": rows}
    write(args.name, result, None if args.results_dir is None else Path(args.results_dir))
    return result


if __name__ == "__main__":
    main()
