"""What a first-layer unit's price would be if it were the description length of its weights at
the precision the data fixes them (the Laplace price of docs/method.md §6zc), against the shipped
price, on the same information written down in 784 and in 3,072 input values.

For each cell (default: Fashion-MNIST at 10,000 examples and the CIFAR-shaped cells of
``robustness_matrix.py``) it trains bayesprune with the defaults, then for each live unit s of
the first layer, over the cell's training examples:

- the shipped price's size term, ½ n C (n = fan-in + 1, C = ln(1/ρ) + ρ − 1; Eq. (4s));
- the Laplace term ½ Σ_k ln(1 + N σ₁² E[δ_s²] λ_k / τ): λ_k the eigenvalues of the layer's input
  second moments E[x xᵀ] (x with the bias's 1 appended), δ_s = ∂ℓ/∂z_s the loss's derivative in
  the unit's pre-activation at labels drawn from the model (the Fisher), the unit's curvature
  taken as E[δ_s²] E[x xᵀ] (Kronecker-factored), σ₁² the layer's slab variance, τ the run's
  temperature, N the training examples. It is what minimising N h v / 2 + τ KL(N(μ, v) ‖
  N(0, σ₁²)) over a weight's posterior variance v leaves, summed over the curvature's
  eigen-directions (the ‖μ‖² term is the same in both and left out);

and the inputs' participation ratio (Σλ)² / Σλ², a count of the directions that carry their
variance; and the term both prices share, ‖μ_s‖²/(2σ₁²), whose σ₁² the hyper-prior (5) refers to
1/fan-in. Nats before tempering; medians and 10% / 90% quantiles over the live units.

Usage: ``.venv/bin/python benchmarks/laplace_price.py [--cells ...] [--seed 0] [--jobs 2]``;
writes ``results/laplace_price.json`` and its table in ``README.md``. One thread per run.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import commit, cpu_model, write  # noqa: E402
from robustness_matrix import (  # noqa: E402
    CASES,
    cell_config,
    cell_data,
    cell_network,
    training_data,
)

CELLS = ["mlp-n10k", "out-mlp-rgb32-n10k", "out-mlp-rgb32-noise-n10k"]
LAYER = "fc1"


def quantiles(values) -> list[float]:
    import torch

    v = torch.as_tensor(values, dtype=torch.float64)
    return [float(torch.quantile(v, q)) for q in (0.1, 0.5, 0.9)]


def unit_prices(net, guide, hyper, x, chunk: int = 1000) -> dict:
    """Per live unit of the first layer: the shipped size term and the Laplace term (nats)."""
    import torch
    import torch.nn.functional as F

    from bayesprune.models.distributions import point_mass_structured_kl

    start = net.op_index(LAYER)
    n_examples = len(x)
    moments, fisher = 0.0, 0.0
    gen = torch.Generator().manual_seed(0)
    for i in range(0, n_examples, chunk):
        with torch.no_grad():
            h = net.run_ops(x[i : i + chunk].reshape(-1, *net.in_shape), stop=start).flatten(1)
            h1 = torch.cat([h, torch.ones(len(h), 1)], 1).double()
            moments = moments + h1.T @ h1
        z = net.map(LAYER, h).detach().requires_grad_(True)
        logits = net.run_ops(net.activate(LAYER, z, None, pool=False), start=start + 1)
        drawn = torch.multinomial(torch.softmax(logits.detach(), -1), 1, generator=gen)
        loss = F.cross_entropy(logits, drawn.squeeze(-1), reduction="sum")
        (delta,) = torch.autograd.grad(loss, z)
        fisher = fisher + delta.double().pow(2).sum(0)
    moments, fisher = moments / n_examples, fisher / n_examples
    lam = torch.linalg.eigvalsh(moments).clamp(min=0)
    slab_var = float(guide.slab_var(LAYER))
    tau, rho = hyper.temperature, hyper.rho
    zero = torch.zeros((), dtype=torch.float64)  # ½ n C: Eq. (4s)'s KL at μ = 0
    size = float(point_mass_structured_kl(zero, slab_var, rho, moments.shape[0]))
    scale = n_examples * slab_var / tau
    laplace = 0.5 * torch.log1p(scale * fisher.unsqueeze(-1) * lam.unsqueeze(0)).sum(-1)
    layer = net.layers[LAYER]
    with torch.no_grad():
        sq = layer.weight.double().flatten(1).pow(2).sum(1) + layer.bias.double().pow(2)
    return {
        "units": int(fisher.numel()),
        "fan_in": int(moments.shape[0] - 1),
        "participation_ratio": float(lam.sum() ** 2 / lam.pow(2).sum()),
        "shipped_size_term": size,
        "laplace_term": quantiles(laplace),
        "ratio": quantiles(laplace / size),
        "weight_term": quantiles(sq / (2 * slab_var)),
        "slab_var": slab_var,
        "temperature": tau,
    }


def run(case: str, seed: int) -> dict:
    import torch

    from bayesprune.inference.trainer import Trainer

    torch.set_num_threads(1)
    data = cell_data(case)
    trainer = Trainer(cell_network(case, seed, data), data, cell_config(case, seed))
    summary = trainer.fit(progress=False)
    train = training_data(case, seed, data)
    trainer.net.eval()
    prices = unit_prices(trainer.net, trainer.guide, trainer.hyper, train.x_train)
    out = {"case": case, "seed": seed, "widths": summary["widths"],
           "test_error": summary["test_error"], **prices}  # fmt: skip
    print(out, flush=True)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", nargs="+", default=CELLS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="processes at a time (1 thread each)")
    parser.add_argument("--name", default="laplace_price")
    parser.add_argument("--results-dir", default=None, help="write the JSON there instead")
    args = parser.parse_args(argv)
    label = commit()
    unknown = [c for c in args.cells if c not in CASES or CASES[c]["arch"] != "mlp"]
    if unknown:
        parser.error(f"not MLP cells of robustness_matrix.py: {unknown}")
    if args.jobs == 1:
        rows = [run(case, args.seed) for case in args.cells]
    else:
        with ProcessPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(run, args.cells, [args.seed] * len(args.cells)))
    result = {"commit": label, "cpu": cpu_model(), "threads": 1, "layer": LAYER, "rows": rows}
    write(args.name, result, None if args.results_dir is None else Path(args.results_dir))
    return result


if __name__ == "__main__":
    main()
