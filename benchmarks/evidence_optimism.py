"""How optimistic is the evidence? A kept unit's value on its training examples and on test data.

Usage: ``.venv/bin/python benchmarks/evidence_optimism.py [--sizes 3000 10000 60000] [--seeds 0]
[--jobs 2] [--set key=value ...] [--name evidence_optimism]``. For each training-set size N
(Fashion-MNIST, LeNet-300-100, the shipped rule unless ``--set`` changes it, 10
epochs) it trains bayesprune and then, on the posterior-mode network, measures for every kept unit

- its value on the training examples, v_train: the mean cross-entropy increase over the N
  examples the weights were fitted to when the unit's output is set to 0 (what the gate's
  evidence −Δ_s estimates, at the mode instead of under q);
- the same on the 10,000 test examples, v_test (never used by the method; a diagnostic only);
- its price per example, τ KL_s / N (the prior's θ-gradient under the coupled posterior, Eq. (4c)),

and a Takeuchi (TIC) estimate of the optimism of the unit's parameters, tr(H⁻¹J)/N with H the
Gauss-Newton curvature of the loss plus the prior's and J the per-example gradients' second
moment, on a sample of up to 3,000 training examples: per unit, the full matrix over its incoming
weights and bias plus the diagonal over its outgoing weights ("tic"). TIC assumes weights at a
minimum of the training objective; the comparison says how far 10 epochs are from that. Over the
same blocks, the unit's effective number of parameters γ_s = tr(H (H + R)⁻¹) ("dof"; MacKay's
number of well-determined parameters, Moody's p_eff) with R the *untempered* prior precision
1/(σ₁² N) per example ("dof_tempered": τ/(σ₁² N)): for a well-specified model J = H and the
optimism of a fitted block is γ/N. Finally ("removals") the test error and loss of the mode with
every unit that fails "value, train − γ/N > price", or "value, test > price", switched off at
once (no retraining): whether the units that fail one at a time can all go together.
It writes ``results/evidence_optimism.json`` and its table in ``README.md``. A unit is kept when
v_train (in expectation under q) exceeds the price; the optimism v_train − v_test is what that
test overstates, and against the price it says how much of a kept unit's margin is fit to the
training sample (docs/method.md §6g). About a minute per size.
"""

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import commit, cpu_model, description, seed_type, write  # noqa: E402
from robustness_matrix import add_overrides_option, parse_overrides  # noqa: E402

from bayesprune.config import positive  # noqa: E402


def measure(
    size: int, seed: int, epochs: int, dataset: str = "fashion-mnist",
    widths: tuple[int, ...] = (300, 100), overrides: dict | None = None,
) -> dict:  # fmt: skip
    """Train at ``size`` examples and return, per gated layer, the kept units' values and prices
    (``overrides``: TrainConfig fields set, e.g. ``{"optimizer": "sgd", "lr": 0.01}``)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from bayesprune.config import TrainConfig
    from bayesprune.data import load_dataset
    from bayesprune.export import deterministic_network
    from bayesprune.inference.elbo_fast import point_mass_prior
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models import GatedMLP

    torch.set_num_threads(1)
    data = load_dataset(dataset)
    config = TrainConfig(train_subset=size, seed=seed, epochs=epochs, **(overrides or {}))
    torch.manual_seed(seed)
    trainer = Trainer(GatedMLP(data.in_features, widths, data.num_classes), data, config)
    summary = trainer.fit(progress=False)
    guide = trainer.guide
    thetas = {n: guide.gate_probs(n).detach().clone().requires_grad_() for n in guide.net.gated}
    point_mass_prior(guide, trainer.hyper, thetas, None, []).backward()  # ∂/∂θ_s = τ KL_s
    mode = deterministic_network(guide)
    linears = [m for m in mode if isinstance(m, nn.Linear)]
    sets = {
        "train": (trainer.data.x_train, trainer.data.y_train),
        "test": (data.x_test, data.y_test),
    }

    @torch.no_grad()
    def losses() -> dict[str, float]:
        return {k: F.cross_entropy(mode(x), y).item() for k, (x, y) in sets.items()}

    tic, dof, dof_tempered = takeuchi(
        mode, trainer.data.x_train, trainer.data.y_train, size, trainer.hyper,
        {n: float(guide.slab_var(n)) for n in guide.net.layers},
    )  # fmt: skip
    layers = {}
    for i, name in enumerate(guide.net.gated):
        kept = torch.nonzero(guide.mode_mask(name)).flatten().tolist()
        consumer = linears[i + 1]
        base = losses()
        units = []
        for column, unit in enumerate(kept):
            saved = consumer.weight[:, column].clone()
            with torch.no_grad():
                consumer.weight[:, column] = 0.0  # the unit's output switched off
            off = losses()
            with torch.no_grad():
                consumer.weight[:, column] = saved
            units.append(
                {
                    "value_train": off["train"] - base["train"],
                    "value_test": off["test"] - base["test"],
                    "price": float(thetas[name].grad[unit]) / size,
                    "tic": float(tic[i][column]) / size,
                    "dof": float(dof[i][column]) / size,
                    "dof_tempered": float(dof_tempered[i][column]) / size,
                }
            )
        layers[name] = units

    @torch.no_grad()
    def removal(rule) -> dict:
        """Test error and loss of the mode with every unit failing ``rule`` switched off at once."""
        saved = [m.weight.clone() for m in linears]
        removed = []
        for i, name in enumerate(guide.net.gated):
            drop = [c for c, u in enumerate(layers[name]) if not rule(u)]
            linears[i + 1].weight[:, drop] = 0.0
            removed.append(len(drop))
        x, y = sets["test"]
        logits = mode(x)
        out = {"removed": removed, "test_loss": F.cross_entropy(logits, y).item(),
               "test_error": (logits.argmax(-1) != y).float().mean().item()}  # fmt: skip
        for m, w in zip(linears, saved, strict=True):
            m.weight.copy_(w)
        return out

    removals = {
        "none": removal(lambda u: True),
        "dof": removal(lambda u: u["value_train"] - u["dof"] > u["price"]),
        "test": removal(lambda u: u["value_test"] > u["price"]),
    }
    return {
        "removals": removals,
        "dataset": dataset,
        "size": size,
        "seed": seed,
        "epochs": epochs,
        "overrides": overrides or {},
        "widths": summary["widths"],
        "test_error": summary["test_error"],
        "temperature": summary["temperature"],
        "layers": layers,
    }


def takeuchi(mode, x, y, size: int, hyper, slab_vars: dict, sample: int = 3_000) -> list:
    """Per hidden layer of a two-hidden-layer MLP (the posterior-mode ``nn.Sequential``), each
    unit's tr((H + R)⁻¹J) with the tempered prior R, and its effective parameters
    tr(H (H + R)⁻¹) with the untempered and the tempered R: full over its incoming weights and
    bias, diagonal over its outgoing ones. Returns the three as lists of per-layer tensors.

    Gauss-Newton: with p the softmax and e = p − y, a unit with back-signal vector u (its
    pre-activation's Jacobian into the logits, masked by the ReLUs) has per-example gradient
    (u·e)·input and curvature (uᵀ(diag p − ppᵀ)u)·input inputᵀ; the prior adds τ/(σ² N) per
    described weight (F is N times the per-example loss).
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    first, second, out = [m for m in mode if isinstance(m, nn.Linear)]
    gen = torch.Generator().manual_seed(0)
    index = torch.randperm(len(x), generator=gen)[:sample]
    x = x[index].flatten(1).double()
    y = y[index]
    w1, w2, w3 = (m.weight.detach().double() for m in (first, second, out))
    tempered = {n: hyper.temperature / (v * size) for n, v in slab_vars.items()}
    untempered = {n: 1.0 / (v * size) for n, v in slab_vars.items()}
    with torch.no_grad():
        a1 = x @ w1.T + first.bias.double()
        h1 = a1.relu()
        a2 = h1 @ w2.T + second.bias.double()
        h2 = a2.relu()
        p = (h2 @ w3.T + out.bias.double()).softmax(-1)
        e = p - F.one_hot(y, p.shape[1]).double()
        m1, m2 = (a1 > 0).double(), (a2 > 0).double()
        jac2 = w3.unsqueeze(0) * m2.unsqueeze(1)  # B × C × H2: logits per fc2 pre-activation
        jac1 = torch.einsum("bct,ts->bcs", jac2, w2) * m1.unsqueeze(1)

        def signal(jac):  # per-example gradient factor u·e and curvature uᵀ(diag p − ppᵀ)u
            grad = (e.unsqueeze(-1) * jac).sum(1)
            curv = (p.unsqueeze(-1) * jac.square()).sum(1) - (p.unsqueeze(-1) * jac).sum(1) ** 2
            return grad, curv

        def incoming(inputs, grad, curv, layer):
            inputs = torch.cat([inputs, torch.ones(len(inputs), 1, dtype=inputs.dtype)], 1)
            eye = torch.eye(inputs.shape[1], dtype=inputs.dtype)
            values = []
            for s in range(grad.shape[1]):
                h = (inputs * curv[:, s : s + 1]).T @ inputs / len(inputs)
                j = (inputs * grad[:, s : s + 1].square()).T @ inputs / len(inputs)
                values.append(
                    [
                        torch.linalg.solve(h + tempered[layer] * eye, j).diagonal().sum(),
                        torch.linalg.solve(h + untempered[layer] * eye, h).diagonal().sum(),
                        torch.linalg.solve(h + tempered[layer] * eye, h).diagonal().sum(),
                    ]
                )
            return torch.tensor(values, dtype=torch.float64).T

        def outgoing(grad, curv, activations, layer):  # diagonal over the weights a unit feeds
            j = torch.einsum("bt,bs->ts", grad.square(), activations.square()) / len(grad)
            h = torch.einsum("bt,bs->ts", curv, activations.square()) / len(grad)
            return torch.stack(
                [
                    (j / (h + tempered[layer])).sum(0),
                    (h / (h + untempered[layer])).sum(0),
                    (h / (h + tempered[layer])).sum(0),
                ]
            )

        g1, c1 = signal(jac1)
        g2, c2 = signal(jac2)
        fc1 = incoming(x, g1, c1, "fc1") + outgoing(g2, c2, h1, "fc2")
        g3, c3 = e, p * (1 - p)  # the read-out's logits: u = the unit vector of each class
        fc2 = incoming(h1, g2, c2, "fc2") + outgoing(g3, c3, h2, "out")
    return [(fc1[k], fc2[k]) for k in range(3)]


def digest(run: dict) -> dict[str, dict]:
    """Per layer: medians of value and optimism, and how many kept units fall below the price."""
    import statistics

    out = {}
    for name, units in run["layers"].items():
        train = [u["value_train"] for u in units]
        test = [u["value_test"] for u in units]
        price = [u["price"] for u in units]
        optimism = [a - b for a, b in zip(train, test, strict=True)]
        tic = [u["tic"] for u in units]
        out[name] = {
            "units": len(units),
            "median_value_train": statistics.median(train),
            "median_value_test": statistics.median(test),
            "median_price": statistics.median(price),
            "median_optimism": statistics.median(optimism),
            "median_tic": statistics.median(tic),
            "tic_correlation": _correlation(optimism, tic),
            **_dof_digest(units, optimism),
            "train_below_price": sum(a < p for a, p in zip(train, price, strict=True)),
            "test_below_price": sum(b < p for b, p in zip(test, price, strict=True)),
        }
    return out


def _dof_digest(units: list[dict], optimism: list[float]) -> dict:
    """The effective-parameter estimate γ/N against the measured optimism, and the units that
    "value, train − γ/N > price" keeps against those the test set keeps (value, test > price)."""
    import statistics

    if not units or "dof" not in units[0]:
        return {}  # recorded before the estimate
    dof = [u["dof"] for u in units]
    by_dof = [u["value_train"] - u["dof"] > u["price"] for u in units]
    by_test = [u["value_test"] > u["price"] for u in units]
    return {
        "median_dof": statistics.median(dof),
        "dof_correlation": _correlation(optimism, dof),
        "dof_kept": sum(by_dof),
        "dof_kept_agree": sum(a and b for a, b in zip(by_dof, by_test, strict=True)),
        "test_kept": sum(by_test),
    }


def _correlation(a: list[float], b: list[float]) -> float | None:
    import statistics

    if len(a) < 3 or statistics.pstdev(a) == 0 or statistics.pstdev(b) == 0:
        return None
    return statistics.correlation(a, b)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--sizes", nargs="+", type=int, default=[3_000, 10_000, 60_000])
    parser.add_argument("--seeds", nargs="+", type=seed_type, default=[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--jobs", type=positive(int), default=2, help="processes at a time (1 thread each)"
    )
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--widths", default="300,100")
    parser.add_argument("--results-dir", default=None, help="write the JSON there instead")
    add_overrides_option(parser)
    parser.add_argument("--name", default="evidence_optimism", help="results/<name>.json")
    args = parser.parse_args(argv)
    label = commit()  # before the runs: a commit made while they run must not label them
    widths = tuple(int(w) for w in args.widths.split(","))
    overrides = parse_overrides(args.set)
    jobs = [
        (n, s, args.epochs, args.dataset, widths, overrides)
        for n in args.sizes for s in args.seeds
    ]  # fmt: skip
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(measure, *zip(*jobs, strict=True)))
    for run in runs:
        run["digest"] = digest(run)
        print(run["size"], run["seed"], run["widths"], run["digest"])
    result = {"commit": label, "cpu": cpu_model(), "threads": 1, "runs": runs}
    write(args.name, result, None if args.results_dir is None else Path(args.results_dir))
    return result


if __name__ == "__main__":
    main()
