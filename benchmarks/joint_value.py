"""What the units a layer's gates remove together are worth together, against each alone.

Usage: ``.venv/bin/python benchmarks/joint_value.py [--run RUN_DIR] [--layer conv2]
[--epoch K] [--examples 20000]``

The gates' evidence (Eq. (9s)) is each unit's value with the others present. docs/method.md §6p
found LeNet-5's conv2 at 60,000 examples cut to about half its start, where dense networks
trained from scratch say the objective is lowest at the start. This script loads a run at a
checkpoint taken before the layer's θ was released (default: the last such epoch), takes the
units of the layer's first removal after it, and measures on ``--examples`` of the run's own
training examples, with every gate at its posterior mode (θ ≥ ½), the data term's change per
example when each unit of the layer is switched off alone, and when the removed units are
switched off together; beside them, a unit's price per example, 4.8e-7 (60,000 / N)^½ per live
weight it owns or feeds (the approximation of ``benchmarks/second_layer_widths.py``). Without
``--run`` it trains LeNet-5 on full Fashion-MNIST with ``--theta-window 60000`` (seed 0, 10
epochs, 1 thread: about 6 minutes), the run of §6p whose conv2 is still whole at epoch 2.
Writes ``results/<--name>.json`` (default ``joint_value``) and its README table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import HERE, commit, cpu_model, description, mean_nll, write  # noqa: E402
from second_layer_widths import weight_price  # noqa: E402

DEFAULT_RUN = HERE.parent / "runs" / "joint_value_lenet5_w60000"


def off_costs(net, gates: dict, layer: str, together: list[int], x, y, chunk: int = 1000):
    """The mean data term with ``gates``, and its change when each unit of ``layer`` is switched
    off alone and when the units at positions ``together`` are switched off at once."""

    def data_term(g) -> float:
        return mean_nll(partial(net, gates=g), x, y, chunk)

    def without(positions) -> float:
        g = {**gates, layer: gates[layer].clone()}
        g[layer][list(positions)] = 0.0
        return data_term(g)

    full = data_term(gates)
    own = [without([p]) - full for p in range(net.width(layer))]
    return full, own, without(together) - full


def consumer_of(net, layer: str) -> str:
    return next(n for n in net.layers if n != layer and net.previous_gated(n) == layer)


def unit_weights(net, layer: str, live: int) -> int:
    """Live weights one unit of ``layer`` owns (fan-in + bias) or feeds (its consumer's columns
    for each of ``live`` consumer units), as the coupled posterior (4c) prices them."""
    return net.fan_in(layer) + 1 + net.blocks[consumer_of(net, layer)] * live


def measure(run_dir: Path, layer: str, epoch: int | None, examples: int) -> dict:
    from bayesprune.data import load_dataset
    from bayesprune.runs import load_run

    summary = json.loads((run_dir / "summary.json").read_text())
    per_epoch = summary["total_steps"] // summary["epochs"]
    events = sorted(
        (e for e in summary["prune_events"] if e["layer"] == layer), key=lambda e: e["step"]
    )
    if not events:
        raise SystemExit(f"joint_value: the run removed no unit of {layer}")
    if epoch is None:  # θ moves from the layer's release on: the last checkpoint before it
        epoch = (summary["release_steps"][layer] - 1) // per_epoch
    if epoch < 1:
        raise SystemExit(
            f"joint_value: {layer} was released in the first epoch; no checkpoint before"
        )
    later = [e for e in events if e["step"] > epoch * per_epoch]
    first = later[0]["step"]
    removed = [u for e in later if e["step"] == first for u in e["unit_ids"]]
    run = load_run(run_dir, epoch)
    guide, net = run.guide, run.guide.net
    gates = guide.mode_gates()
    ids = guide.unit_ids(layer).tolist()
    together = [ids.index(u) for u in removed]
    data = load_dataset(summary["dataset"])
    if summary.get("train_subset"):  # the run's own training examples
        data = data.subset(summary["train_subset"], seed=summary["seed"])
    n = len(data.x_train)
    pick = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:examples]
    full, own, joint = off_costs(
        net, gates, layer, together, data.x_train[pick], data.y_train[pick]
    )
    kept = [p for p in range(len(own)) if p not in together]
    consumer = consumer_of(net, layer)
    live = int(gates[consumer].sum()) if consumer in gates else net.width(consumer)
    final = summary["widths"][list(net.gated).index(consumer)] if consumer in gates else live
    price = weight_price(n) * unit_weights(net, layer, live)
    own_removed = torch.tensor([own[p] for p in together])
    return {
        "run": str(run_dir),
        "epoch": epoch,
        "step": epoch * per_epoch,
        "layer": layer,
        "widths": [net.width(name) for name in net.gated],
        "on": {name: int(g.sum()) for name, g in gates.items()},
        "examples": len(pick),
        "data_term": full,
        "removed_at_step": first,
        "removed": len(together),
        "own_removed_sum": float(own_removed.sum()),
        "own_removed_median": float(own_removed.median()),
        "own_kept_median": float(torch.tensor([own[p] for p in kept]).median()) if kept else None,
        "joint_removed": joint,
        "consumer": consumer,
        "price_per_unit": price,
        "price_per_unit_at_final_consumer": weight_price(n) * unit_weights(net, layer, final),
        "final_widths": summary["widths"],
        "test_error": summary["test_error"],
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--run", type=Path, default=None, help="a bayesprune run directory")
    parser.add_argument("--layer", default="conv2")
    parser.add_argument("--epoch", type=int, default=None)
    parser.add_argument("--examples", type=int, default=20_000)
    parser.add_argument("--name", default="joint_value")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    label = commit()
    run_dir = args.run
    if run_dir is not None and not (run_dir / "summary.json").is_file():
        parser.error(f"--run {run_dir}: not a finished bayesprune run directory (no summary.json)")
    if run_dir is None:
        run_dir = DEFAULT_RUN
        if not (run_dir / "summary.json").exists():
            command = [sys.executable, "-m", "bayesprune.cli", "train", "--arch", "lenet5"]
            command += ["--dataset", "fashion-mnist", "--epochs", "10", "--seed", "0"]
            command += ["--threads", "1", "--theta-window", "60000", "--no-progress"]
            subprocess.run([*command, "--out", str(run_dir)], check=True)
    result = {"commit": label, "cpu": cpu_model(), "threads": 1}
    result.update(measure(run_dir, args.layer, args.epoch, args.examples))
    print(json.dumps(result, indent=1), flush=True)
    write(args.name, result)
    return result


if __name__ == "__main__":
    main()
