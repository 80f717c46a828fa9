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

from common import commit, cpu_model, description, seed_type, write  # noqa: E402
from robustness_matrix import (  # noqa: E402
    CASES,
    cell_config,
    cell_data,
    cell_network,
    training_data,
)

from bayesprune.config import positive  # noqa: E402

CELLS = ["mlp-n10k", "out-mlp-rgb32-n10k", "out-mlp-rgb32-noise-n10k"]
LAYER = "fc1"


def quantiles(values) -> list[float]:
    import torch

    v = torch.as_tensor(values, dtype=torch.float64)
    return [float(torch.quantile(v, q)) for q in (0.1, 0.5, 0.9)]


def unit_prices(
    net, guide, hyper, x, chunk: int = 1000, layer: str = LAYER, gates=None, n_train=None
) -> dict:
    """Per live unit of ``layer``: the shipped size term and the Laplace term (nats).

    ``gates``: the posterior mode's 0/1 gates (``GateGuide.mode_gates``), applied everywhere;
    ``None`` runs every unit. A convolution's curvature is Kronecker-factored over its
    positions (K-FAC): the input second moments are the mean over examples and positions of a
    patch (with the bias's 1), E[δ_s²] the per-example sum over positions, so a filter's
    per-example curvature along eigen-direction k is E[Σ_p δ_sp²] λ_k, as a unit's is for a
    Linear. The shipped size term counts the live inputs, as the coupled posterior (4c) does at
    its vertices: n = 1 + (columns per input unit) × (live input units). ``n_train``: the N of
    the run (default ``len(x)``), when ``x`` is a sample of its training set."""
    import torch
    import torch.nn.functional as F

    from bayesprune.models.distributions import point_mass_structured_kl

    start, module = net.op_index(layer), net.layers[layer]
    conv = module.weight.dim() == 4
    previous = net.previous_gated(layer)
    if gates is None or previous is None:
        columns = torch.ones(net.fan_in(layer) + 1, dtype=torch.bool)
    else:
        columns = net.column_probs(layer, gates[previous]).bool()
    rows = torch.ones(net.width(layer), dtype=torch.bool) if gates is None else gates[layer].bool()
    n_examples, positions = len(x), 0
    moments, fisher = 0.0, 0.0
    gen = torch.Generator().manual_seed(0)
    for i in range(0, n_examples, chunk):
        with torch.no_grad():
            h = net.run_ops(x[i : i + chunk].reshape(-1, *net.in_shape), gates, stop=start)
            if conv:  # one row per (example, position): the patch the filter reads there
                k = module.kernel_size
                cols = F.unfold(h, k, padding=module.padding).transpose(1, 2)
                cols = cols.reshape(-1, cols.shape[-1])
            else:
                cols = h.flatten(1)
            h1 = torch.cat([cols, torch.ones(len(cols), 1)], 1).double()[:, columns]
            moments = moments + h1.T @ h1
            positions += len(h1)
        z = net.map(layer, h).detach().requires_grad_(True)
        logits = net.run_ops(net.activate(layer, z, gates, pool=False), gates, start=start + 1)
        drawn = torch.multinomial(torch.softmax(logits.detach(), -1), 1, generator=gen)
        loss = F.cross_entropy(logits, drawn.squeeze(-1), reduction="sum")
        (delta,) = torch.autograd.grad(loss, z)
        fisher = fisher + delta.double().pow(2).reshape(*delta.shape[:2], -1).sum((0, 2))
    moments, fisher = moments / positions, (fisher / n_examples)[rows]
    lam = torch.linalg.eigvalsh(moments).clamp(min=0)
    slab_var = float(guide.slab_var(layer))
    tau, rho = hyper.temperature, hyper.rho
    zero = torch.zeros((), dtype=torch.float64)  # ½ n C: Eq. (4s)'s KL at μ = 0
    size = float(point_mass_structured_kl(zero, slab_var, rho, int(columns.sum())))
    scale = (n_examples if n_train is None else n_train) * slab_var / tau
    laplace = 0.5 * torch.log1p(scale * fisher.unsqueeze(-1) * lam.unsqueeze(0)).sum(-1)
    with torch.no_grad():
        aug = torch.cat([module.weight.flatten(1), module.bias.unsqueeze(-1)], 1).double()
        sq = aug[rows][:, columns].pow(2).sum(1)
    weight_term = sq / (2 * slab_var)
    return {
        "layer": layer,
        "units": int(fisher.numel()),
        "fan_in": int(columns.sum() - 1),
        "participation_ratio": float(lam.sum() ** 2 / lam.pow(2).sum()),
        "shipped_size_term": size,
        "laplace_term": quantiles(laplace),
        "ratio": quantiles(laplace / size),
        "weight_term": quantiles(weight_term),
        # the layer's weights as a whole: Σ Laplace / Σ ½ n C, and with the shared ‖μ‖² term
        "layer_ratio": float(laplace.sum() / (size * len(laplace))),
        "layer_ratio_with_weights": float(
            (laplace.sum() + weight_term.sum()) / (size * len(laplace) + weight_term.sum())
        ),
        "slab_var": slab_var,
        "temperature": tau,
    }


def run(case: str, seed: int, layers: list[str] | None = None, examples: int | None = None):
    """Train the cell's default run; price ``layers`` (None: the first layer, every unit run as
    the recorded first-layer table did; otherwise with the posterior mode's gates, "all" for
    every gated layer) on the first ``examples`` of its training examples (None: all)."""
    import torch

    from bayesprune.inference.trainer import Trainer

    torch.set_num_threads(1)
    data = cell_data(case)
    trainer = Trainer(cell_network(case, seed, data), data, cell_config(case, seed))
    summary = trainer.fit(progress=False)
    train = training_data(case, seed, data)
    net = trainer.net.eval()
    head = {"case": case, "seed": seed, "widths": summary["widths"],
            "test_error": summary["test_error"]}  # fmt: skip
    x = train.x_train if examples is None else train.x_train[:examples]
    if layers is None:
        out = {**head, **unit_prices(net, trainer.guide, trainer.hyper, x)}
        print(out, flush=True)
        return out
    gates = trainer.guide.mode_gates()
    names = net.gated if layers == ["all"] else layers
    out = [{**head, **unit_prices(net, trainer.guide, trainer.hyper, x, layer=name, gates=gates,
                                  n_train=len(train.x_train))} for name in names]  # fmt: skip
    print(out, flush=True)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--cells", nargs="+", default=CELLS)
    parser.add_argument("--seed", type=seed_type, default=0)
    parser.add_argument(
        "--jobs", type=positive(int), default=2, help="processes at a time (1 thread each)"
    )
    parser.add_argument("--name", default="laplace_price")
    parser.add_argument("--results-dir", default=None, help="write the JSON there instead")
    parser.add_argument(
        "--layers", nargs="+", default=None,
        help="gated layers to price with the posterior mode's gates (all: every one); "
        "default: the first layer with every unit on, as the recorded first-layer table",
    )  # fmt: skip
    parser.add_argument(
        "--examples",
        type=int,
        default=None,
        help="price on this many training examples (N stays the run's)",
    )
    args = parser.parse_args(argv)
    label = commit()
    unknown = [c for c in args.cells if c not in CASES]
    if unknown:
        parser.error(f"not cells of robustness_matrix.py: {unknown}")
    if args.layers is None:
        flat = [c for c in args.cells if CASES[c]["arch"] != "mlp"]
        if flat:
            parser.error(f"the first-layer table is for MLP cells; use --layers for {flat}")
    jobs = [(case, args.seed, args.layers, args.examples) for case in args.cells]
    if args.jobs == 1:
        runs = [run(*job) for job in jobs]
    else:
        with ProcessPoolExecutor(args.jobs) as pool:
            runs = list(pool.map(run, *zip(*jobs, strict=True)))
    rows = [r for out in runs for r in (out if isinstance(out, list) else [out])]
    layer = LAYER if args.layers is None else " ".join(args.layers)
    result = {"commit": label, "cpu": cpu_model(), "threads": 1, "layer": layer, "rows": rows}
    if args.layers is not None:
        result["gates"] = "posterior mode"
        result["examples"] = args.examples
    write(args.name, result, None if args.results_dir is None else Path(args.results_dir))
    return result


if __name__ == "__main__":
    main()
