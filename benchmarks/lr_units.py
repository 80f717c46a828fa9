"""How many units does a *dense* network use at each learning rate? (issue 9: the width CV across
learning rates.)

Usage: ``.venv/bin/python benchmarks/lr_units.py [--lrs 3e-4 1e-3 3e-3] [--seeds 0 1] [--jobs 2]
[--batch 100] [--optimizer adam] [--name lr_units]``.

bayesprune's widths across Adam learning rates 3e-4 / 1e-3 / 3e-3 vary by 22% / 28% (CV; the
target is 20%). This script asks whether the spread is the rule's or the network's: it trains
the dense LeNet-300-100 (the matrix's recipe: full Fashion-MNIST, batch 100, 10 epochs, plain
Adam, no gates, no prior) and at steps 400 (where the shipped rule releases the first θ, one
block after its warm-up), 1,200 and 6,000 (the end) measures, for every hidden unit, its
*value*: the mean cross-entropy increase on 10,000 training examples when its output is set to 0,
all other weights fixed (what the gate evidence −Δ_s estimates). It counts the units whose value
exceeds the price a bayesprune unit of that layer pays at 60,000 examples (the median kept
unit's τ KL_s / N of ``results/evidence_optimism.json``, 60k, seed 0), the units active on fewer
than 1% of the examples, and, for the second layer, how many units the secant estimate of Eq.
(9s) (with the exact Gauss-Newton expectation over the sampled label) puts above the price
against the exact removal. The CV of the counts across the rates is what a rule that keeps every
unit worth its price would show. Writes ``results/lr_units.json`` and its table in README.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, commit, cpu_model, description, seed_type, write  # noqa: E402

from bayesprune.config import positive  # noqa: E402

CHECKS = (400, 1200, 6000)  # steps at batch 100; at another batch the same examples seen
CHECK_EXAMPLES = tuple(100 * c for c in CHECKS)
SAMPLE = 10_000
TAU_60K = 0.03  # τ(N) at N = 60,000 (docs/method.md Eq. (13))


def prices() -> dict[str, float]:
    """The median kept unit's price per example at 60,000 examples, per layer (seed 0)."""
    result = json.loads((RESULTS / "evidence_optimism.json").read_text())
    run = next(r for r in result["runs"] if r["size"] == 60_000 and r["seed"] == 0)
    return {name: d["median_price"] for name, d in run["digest"].items()}


def measure(
    lr: float,
    seed: int,
    price: dict[str, float],
    batch_size: int = 100,
    widths=(300, 100),
    prior_l2: bool = False,
    optimizer: str = "adam",
) -> dict:
    import torch
    import torch.nn.functional as F

    from bayesprune.baseline import plain_optimizer
    from bayesprune.data import load_dataset
    from bayesprune.models.network import build_network

    torch.set_num_threads(1)
    data = load_dataset("fashion-mnist")
    torch.manual_seed(seed)
    net = build_network("mlp", data.in_shape, data.num_classes, tuple(widths))
    fc1, fc2, out = (net.layers[n] for n in ("fc1", "fc2", "out"))
    opt = plain_optimizer(net.parameters(), lr, optimizer)  # Adam, or SGD with momentum 0.9
    x, y = data.x_train.flatten(1), data.y_train
    xe, ye = x[:SAMPLE], y[:SAMPLE]

    @torch.no_grad()
    def units() -> dict:
        h1 = F.relu(fc1(xe))
        z2 = fc2(h1)
        h2 = F.relu(z2)
        logits = out(h2)
        base = F.cross_entropy(logits, ye)
        # fc1 unit s off: fc2's input loses h1_s · W2[:, s]
        v1 = torch.stack([
            F.cross_entropy(out(F.relu(z2 - h1[:, s : s + 1] * fc2.weight[:, s])), ye)
            for s in range(h1.shape[1])
        ]) - base  # fmt: skip
        w = out.weight
        v2 = torch.stack([
            F.cross_entropy(logits - h2[:, s : s + 1] * w[:, s], ye) for s in range(h2.shape[1])
        ]) - base  # fmt: skip
        # the secant's Δ for an on unit: g − ½ E_ŷ[ĝ²], ĝ² = h² (wᵀ(diag p − ppᵀ) w)
        p = logits.softmax(-1)
        g = h2 * ((p - F.one_hot(ye, w.shape[0]).to(p.dtype)) @ w)
        curvature = h2.square() * (p @ w.square() - (p @ w).square())
        secant = -(g - 0.5 * curvature).mean(0)
        return {
            "train_loss": float(base),
            "fc1_above_price": int((v1 > price["fc1"]).sum()),
            "fc2_above_price": int((v2 > price["fc2"]).sum()),
            "fc2_above_price_secant": int((secant > price["fc2"]).sum()),
            "fc1_rare": int(((h1 > 0).float().mean(0) < 0.01).sum()),
            "fc2_rare": int(((h2 > 0).float().mean(0) < 0.01).sum()),
            "fc1_median_value": float(v1.median()),
            "fc2_median_value": float(v2.median()),
        }

    gen = torch.Generator().manual_seed(seed)
    step, records = 0, {}
    checks = {examples // batch_size: examples // 100 for examples in CHECK_EXAMPLES}
    # with --prior-l2, the prior's pull τ/(N σ²) per layer, σ² = 1/fan_in: fixed for the run
    pulls = [(layer, TAU_60K * layer.weight.shape[1] / len(x)) for layer in (fc1, fc2, out)]
    for _ in range(10):
        for batch in torch.randperm(len(x), generator=gen).split(batch_size):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x[batch]), y[batch]).backward()
            if prior_l2:  # the prior's pull on the weights, inside Adam's gradient as in bayesprune
                with torch.no_grad():
                    for layer, coef in pulls:
                        layer.weight.grad.add_(layer.weight, alpha=coef)
                        layer.bias.grad.add_(layer.bias, alpha=coef)
            opt.step()
            step += 1
            if step in checks:  # keyed by the batch-100 step of the same examples seen
                records[str(checks[step])] = units()
    with torch.no_grad():
        error = float((net(data.x_test).argmax(-1) != data.y_test).float().mean())
    return {
        "lr": lr,
        "batch_size": batch_size,
        "widths": list(widths),
        "prior_l2": prior_l2,
        "optimizer": optimizer,
        "seed": seed,
        "test_error": error,
        "checks": records,
    }


def cv(values: list[float]) -> float:
    return statistics.pstdev(values) / statistics.mean(values)  # as the matrix's checks


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3])
    parser.add_argument("--seeds", type=seed_type, nargs="+", default=[0, 1])
    parser.add_argument("--jobs", type=positive(int), default=2)
    parser.add_argument("--batch", type=int, default=100, help="the dense network's batch size")
    parser.add_argument("--name", default="lr_units", help="results/<name>.json")
    parser.add_argument(
        "--widths", type=int, nargs=2, default=[300, 100], help="the dense network's hidden widths"
    )
    parser.add_argument(
        "--prior-l2",
        action="store_true",
        help="add the prior's pull τ w/(N σ²) (σ² = 1/fan_in, θ = 1) to the gradients the "
        "optimiser sees",
    )
    parser.add_argument(
        "--optimizer", choices=("adam", "sgd"), default="adam",
        help="the dense network's optimiser (sgd: heavy-ball momentum 0.9, as --optimizer sgd)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    price = prices()
    jobs = [(lr, seed) for lr in args.lrs for seed in args.seeds]
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(
            pool.map(
                measure,
                *zip(*jobs, strict=True),
                [price] * len(jobs),
                [args.batch] * len(jobs),
                [args.widths] * len(jobs),
                [args.prior_l2] * len(jobs),
                [args.optimizer] * len(jobs),
            )
        )
    summary = {}
    for step in map(str, CHECKS):
        for key in ("fc1_above_price", "fc2_above_price"):
            means = [
                statistics.mean(r["checks"][step][key] for r in runs if r["lr"] == lr)
                for lr in args.lrs
            ]
            summary[f"{key}_cv_at_{step}"] = cv(means)
    result = {
        "commit": commit(),
        "cpu": cpu_model(),
        "threads": 1,
        "prices": price,
        "runs": runs,
        "summary": summary,
    }
    write(args.name, result)  # and the README's table
    return result


if __name__ == "__main__":
    main()
