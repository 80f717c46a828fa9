"""What the processes of tests/test_distributed.py's two-process tests run (torch.multiprocessing
spawns them; each imports the module its function is defined in). Kept apart from the test
module, which imports Lightning, so that the spawned processes do not: none of these
functions uses it."""

import os

import torch

BATCHES = [99, 100, 37]  # global batches, each split over the processes (99 → 50 + 49)


def _small_trainer():
    from bayesprune.config import TrainConfig
    from bayesprune.data import load_dataset
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models.network import build_network

    torch.manual_seed(0)
    data = load_dataset("teacher")
    net = build_network("mlp", data.in_shape, data.num_classes, (12, 6))
    config = TrainConfig(seed=0, prior_every=2, check_every=1000, merge="off")
    return Trainer(net, data, config)


def _steps(rank: int, world: int, port: int, path: str) -> None:
    """Three SVI steps of the same global batches, this process's share of each."""
    import pyro
    import torch.distributed as dist

    from bayesprune.distributed import GradientSync

    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    pyro.set_rng_seed(0)
    trainer = _small_trainer()
    before = {n: p.detach().clone() for n, p in trainer.guide.named_parameters()}
    sync = GradientSync(trainer)
    trainer.elbo.grad_sync = sync if world > 1 else None
    start = 0
    for size in BATCHES:
        idx = torch.arange(start, start + size)
        start += size
        mine = torch.tensor_split(idx, world)[rank]
        sync.local, sync.total = len(mine), size
        trainer.global_batch = size
        trainer.train_step(trainer.data.x_train[mine], trainer.data.y_train[mine], mine)
    if rank == 0:
        params = {n: p.detach().clone() for n, p in trainer.guide.named_parameters()}
        torch.save({"params": params, "before": before, "data": float(trainer.recent_data)}, path)
    if world > 1:
        dist.destroy_process_group()


def _running_stats(rank: int, world: int, port: int, path: str) -> None:
    """Each process's BatchNorm statistics from its own share; after the step's reduction all
    processes must hold the same (the merge moves evaluate in eval mode with them): the mean of
    the processes' own."""
    from types import SimpleNamespace

    import torch.distributed as dist

    from bayesprune.distributed import GradientSync
    from bayesprune.models.network import build_network

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    net = build_network("vgg16", (3, 32, 32), 10, width_mult=1 / 16)
    gen = torch.Generator().manual_seed(10 + rank)  # each process its own examples
    net.train()
    net(torch.randn(4, 3, 32, 32, generator=gen))
    own = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    GradientSync(SimpleNamespace(net=net)).reduce_running_stats()
    stats = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    torch.save({"own": own, "reduced": stats}, f"{path}.{rank}")
    dist.destroy_process_group()


def _sharded_merges(rank: int, world: int, port: int, path: str) -> None:
    """A merge round with each process measuring its share of the sample (rank 0 saves)."""
    import torch.distributed as dist

    from bayesprune.distributed import all_reduce_sum
    from tests.inference.test_merge import (
        _copies_network,
        _duplicate,
        _fitted,
        _inputs,
        _moves,
        _network,
    )

    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    out = {}
    for kind, layer in (("mlp", "fc1"), ("conv", "conv1")):
        net = _network(kind)
        x = _inputs(net)
        y = _fitted(net, x)
        _duplicate(net, layer, 0, net.width(layer) - 1)
        _, moves = _moves(net)
        if world > 1:
            moves.shard, moves.reduce = (rank, world), all_reduce_sum
        merges, removed = moves.layer(layer, x, y)
        pair = [u for u in removed if u in (0, net.width(layer) - 1)]
        out[kind] = (len(removed), len(pair), [m.delta_prior for m in merges])
    d = torch.randn(257, generator=torch.Generator().manual_seed(5))  # 129 + 128 examples
    out["moments"] = moves._moments(torch.tensor_split(d, world)[rank])
    # a group move (Eq. (14j), the default's in a layer of more units than inputs per unit + 1):
    # five pairs of copies, a unit of its own and a constant, single moves refused
    net, x, y = _copies_network()
    _, moves = _moves(net)
    moves.z = lambda k: float("inf")
    moves.groups = True
    if world > 1:
        moves.shard, moves.reduce = (rank, world), all_reduce_sum
    tests, moments = [], moves._moments  # every test's statistics: the group's come last
    moves._moments = lambda diff: tests.append(moments(diff)) or tests[-1]
    merges, removed = moves.layer("fc1", x, y)
    pairs = sum(len({u, u + 5} & set(removed)) == 1 for u in range(5))
    out["group"] = (len(removed), pairs, [(m.delta_prior, m.delta_data) for m in merges], tests)
    if rank == 0:
        torch.save(out, path)
    if world > 1:
        dist.destroy_process_group()


def _sharded_settle(rank: int, world: int, port: int, path: str) -> None:
    """The final settle (Eq. (15)) of every layer of the fitted networks at τ = 30, with each
    process measuring its share of the sample (rank 0 saves the units and their ΔF terms)."""
    import torch.distributed as dist

    from bayesprune.distributed import all_reduce_sum
    from tests.inference.test_settle import _fitted_at_tau_30

    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    out = {}
    for kind in ("mlp", "conv"):
        net, x, y, moves = _fitted_at_tau_30(kind)
        if world > 1:
            moves.shard, moves.reduce = (rank, world), all_reduce_sum
        out[kind] = {}
        for name in net.gated:
            merges, removed = moves.settle(name, x, y)
            out[kind][name] = (removed, [(m.delta_data, m.delta_prior) for m in merges])
    if rank == 0:
        torch.save(out, path)
    if world > 1:
        dist.destroy_process_group()
