"""The loop's helpers: evaluate's chunks, the caller's random streams, device sync, the
cosine schedule."""

import random

import numpy as np
import pytest
import torch

from bayesprune import loop


@pytest.mark.parametrize("n,batch", [(10, 3), (7, 256), (9, 9), (11, 4)])
def test_evaluate_counts_every_example_once(n, batch):
    torch.manual_seed(0)
    net = torch.nn.Linear(5, 3)
    x, y = torch.randn(n, 5), torch.randint(0, 3, (n,))
    y[-1] = (net(x[-1:]).argmax(-1) + 1) % 3  # the last example is misclassified
    expected = int((net(x).argmax(-1) != y).sum()) / n
    assert loop.evaluate(net, x, y, batch=batch) == expected


def test_keeps_global_rng_gives_back_every_stream():
    @loop.keeps_global_rng
    def draws():
        random.seed(1), np.random.seed(1), torch.manual_seed(1)
        return random.random(), np.random.rand(), torch.rand(1).item()

    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    draws()
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    with pytest.raises(ZeroDivisionError):  # also when the function raises
        loop.keeps_global_rng(lambda: (torch.manual_seed(1), 1 / 0))()


def test_synchronize_waits_for_a_cuda_device_only(monkeypatch):
    seen = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: seen.append(device))
    loop.synchronize(torch.device("cpu"))
    assert seen == []
    loop.synchronize(torch.device("cuda", 1))
    assert seen == [torch.device("cuda", 1)]


def test_the_cosine_schedule_decays_to_zero_over_the_run():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = loop.lr_schedule(opt, "cosine", 10)
    lrs = []
    for _ in range(10):
        opt.step(), sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[4] == pytest.approx(0.5, abs=1e-9)  # half-way through: half the rate
    assert lrs[-1] == pytest.approx(0.0, abs=1e-9)
    assert loop.lr_schedule(opt, "constant", 10) is None
