"""Why the widths depend on the weights' learning rate: each unit's evidence against its price.

Two measurements on LeNet-300-100, full Fashion-MNIST, batch 100, the default recipe
(docs/method.md §6c, "The learning rate"):

- ``probe``: at the given steps of a run, for every live unit of every gated layer, the exact
  increase of the mean loss when it alone is switched off (posterior mode, a fixed sample of
  10,000 training examples), −Δ_s, against its price per example (the prior term it saves / N).
  Both at the current weights and at their average over the last ``--window`` examples (an
  exponential moving average, weights and biases only, which training does not use). The run
  itself is the shipped one: the probe changes nothing.
- ``average``: a run in which θ's evidence is computed at the averaged weights instead (the
  weights' gradients stay at the current ones): the data term is evaluated twice, once at the
  current weights with the gates as constants, once at the averaged weights through the gates.
  This is the experiment of §6c, not a shipped option, so it patches the fast ELBO's
  ``evaluate``; the final widths and error are reported.

Usage: ``.venv/bin/python benchmarks/evidence_probe.py [--mode probe|average|both]
[--lrs 3e-4,1e-3,3e-3] [--seeds 0] [--steps 300,1000] [--jobs 2]`` → ``results/evidence_probe.json``
and a table in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, commit, output_dir, render_readme  # noqa: E402

from bayesprune.config import positive  # noqa: E402

SAMPLE = 10_000
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


class ProbesDone(Exception):
    """Raised at the last probe step: the rest of the run is not needed."""


class Average:
    """Exponential moving average of a network's augmented weights over ``window`` examples,
    kept aligned with the units as they are removed (by their original ids)."""

    def __init__(self, guide, window: float):
        self.guide, self.window, self.state = guide, window, {}

    def params(self) -> dict:
        net, guide = self.guide.net, self.guide
        out = {}
        for name in net.layers:
            aug = net.augmented(name).detach()
            rows = guide.unit_ids(name).clone() if name in net.gated else None
            previous = net.previous_gated(name)
            cols = guide.unit_ids(previous).clone() if previous is not None else None
            if name not in self.state:
                self.state[name] = (rows, cols, aug.clone())
            old_rows, old_cols, avg = self.state[name]
            if rows is not None and not _same(old_rows, rows):
                avg = avg[_positions(old_rows, rows)]
            if cols is not None and not _same(old_cols, cols):
                avg = avg[:, [*_positions(old_cols, cols), avg.shape[1] - 1]]
            self.state[name] = (rows, cols, avg)
            out[name] = avg
        return out

    def update(self, examples: int) -> None:
        beta = math.exp(-examples / self.window)
        for name, avg in self.params().items():
            avg.mul_(beta).add_(self.guide.net.augmented(name).detach(), alpha=1 - beta)


def _same(a, b) -> bool:
    return len(a) == len(b) and bool((a == b).all())


def _positions(old, new) -> list[int]:
    where = {int(u): i for i, u in enumerate(old.tolist())}
    return [where[int(u)] for u in new.tolist()]


def evidence(trainer, params=None) -> dict:
    """Per gated layer: −Δ_s and the price per example of every live unit, summarised."""
    import torch
    import torch.nn.functional as F

    net, merges = trainer.net, trainer.merges
    n = len(trainer.data.x_train)
    index = torch.randperm(n, generator=torch.Generator().manual_seed(1))[:SAMPLE]
    x, y = trainer.data.x_train[index], trainer.data.y_train[index]
    was_training = net.training
    net.eval()
    gates = merges._mode_gates()
    base = F.cross_entropy(net(x, gates, params), y).item()
    prior = merges._prior(gates)
    out = {"loss": base}
    for name in net.gated:
        value, price = [], []
        for s in torch.nonzero(gates[name]).flatten().tolist():
            gates[name][s] = 0.0
            value.append(F.cross_entropy(net(x, gates, params), y).item() - base)
            price.append((prior - merges._prior(gates)) / n)
            gates[name][s] = 1.0
        value, price = torch.tensor(value), torch.tensor(price)
        ratio = value / price
        out[name] = {
            "units": len(value),
            "below_price": int((value < price).sum()),
            "negative": int((value < 0).sum()),
            "ratio_quantiles": [round(q, 3) for q in torch.quantile(
                ratio, torch.tensor(QUANTILES)).tolist()],  # fmt: skip
            "median_value": float(value.median()),
            "median_price": float(price.median()),
        }
    net.train(was_training)
    return out


STATE: dict = {}  # this process's run: "average" (an Average), "at_average" (bool)


def patch_evidence_at_average() -> None:
    """θ's evidence at the averaged weights (when ``STATE["at_average"]``): the fast ELBO's data
    term evaluated twice. Patches once per process; the run in progress is read from STATE."""
    import torch
    import torch.nn.functional as F

    import bayesprune.inference.elbo as elbo
    import bayesprune.inference.elbo_fast as fast

    if getattr(fast.evaluate, "patched", False):
        return
    original = fast.evaluate

    def evaluate(guide, hyper, x, y, num_data, estimator, pruning=None):
        ev = original(guide, hyper, x, y, num_data, estimator, pruning)
        if not (ev.gates and torch.is_grad_enabled() and STATE.get("at_average")):
            return ev
        net = guide.net
        constants = {name: xi.detach() for name, xi in ev.gates.items()}
        weights_term = ev.scale * F.cross_entropy(net(x, constants), y, reduction="sum")
        logits = net(x, gates=ev.gates, params=STATE["average"].params())
        gates_term = ev.scale * F.cross_entropy(logits, y, reduction="sum")
        ev.data = weights_term + (gates_term - gates_term.detach())
        ev.logits = logits  # the secant's curvature pass goes through the averaged network
        return ev

    evaluate.patched = True
    fast.evaluate = evaluate
    elbo.evaluate = evaluate


def run(mode: str, lr: float, seed: int, steps: list[int], window: float) -> dict:
    import torch

    from bayesprune.config import TrainConfig
    from bayesprune.data import load_dataset
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models.network import build_network

    torch.set_num_threads(1)
    data = load_dataset("fashion-mnist")
    config = TrainConfig(epochs=10, batch_size=100, lr=lr, seed=seed)
    STATE.clear()
    STATE["at_average"] = mode == "average"
    probes: dict = {}
    patch_evidence_at_average()

    class Probed(Trainer):
        def train_step(self, x, y, index):
            if "average" not in STATE:
                STATE["average"] = Average(self.guide, window)
            terms = super().train_step(x, y, index)
            with torch.no_grad():
                STATE["average"].update(x.shape[0])
            return terms

        def prune(self):
            if mode == "probe" and self.step in steps:
                with torch.no_grad():
                    probes[self.step] = {
                        "current": evidence(self),
                        "average": evidence(self, STATE["average"].params()),
                    }
                if self.step == max(steps):
                    raise ProbesDone
            return super().prune()

    torch.manual_seed(seed)
    net = build_network("mlp", data.in_shape, data.num_classes, None)
    out = {"mode": mode, "lr": lr, "seed": seed}
    try:
        summary = Probed(net, data, config).fit(progress=False)
    except ProbesDone:
        out["probes"] = {str(k): v for k, v in probes.items()}
        print(f"probe lr {lr} seed {seed}: steps {sorted(probes)}", flush=True)
        return out
    out.update({k: summary[k] for k in ("widths", "test_error", "status", "weights_kept_fraction")})
    print(f"average lr {lr} seed {seed}: {summary['widths']} {summary['test_error']}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("probe", "average", "both"), default="both")
    parser.add_argument("--lrs", default="3e-4,1e-3,3e-3")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--steps", default="300,1000", help="probe steps (pruning checks)")
    parser.add_argument("--window", type=float, default=10_000, help="examples averaged")
    parser.add_argument("--jobs", type=positive(int), default=2)
    args = parser.parse_args()
    modes = ("probe", "average") if args.mode == "both" else (args.mode,)
    lrs = [float(v) for v in args.lrs.split(",")]
    seeds = [int(v) for v in args.seeds.split(",")]
    steps = [int(v) for v in args.steps.split(",")]
    tasks = [(m, lr, s, steps, args.window) for m in modes for lr in lrs for s in seeds]
    started_at = commit()  # the code the runs import, whatever is committed while they run
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(run, *zip(*tasks, strict=True)))
    result = {"commit": started_at, "threads": 1, "window": args.window, "runs": runs}
    folder = output_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "evidence_probe.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    if folder.resolve() == RESULTS.resolve():
        render_readme()
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
