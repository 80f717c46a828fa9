import pytest
import torch

from bayesprune.inference.projected_sgd import ProjectedSGD


def run(batch: int, steps: int, grads: torch.Tensor, window: float = 400.0) -> torch.Tensor:
    """θ after ``steps`` steps of ``batch`` examples each, ∂F/∂θ = N · grads (N = 1000)."""
    theta = torch.nn.Parameter(torch.full_like(grads, 0.5))
    opt = ProjectedSGD([theta], lr=1e-3, window=window, num_data=1000)
    for _ in range(steps):
        theta.grad = 1000 * grads.clone()
        opt.step(examples=batch)
    return theta.detach()


def test_evidence_is_an_average_per_example_and_the_step_is_per_example():
    grads = torch.tensor([0.1, -0.2])
    theta = torch.nn.Parameter(torch.tensor([0.5, 0.5]))
    opt = ProjectedSGD([theta], lr=1e-3, window=400.0, num_data=1000)
    theta.grad = 1000 * grads
    opt.step(examples=100)
    evidence = 0.25 * grads  # m = 0 + (100/400)(ĝ − 0)
    assert torch.allclose(opt.state[theta]["evidence"], evidence)
    assert torch.allclose(theta, 0.5 - 1e-3 * 100 * evidence)


def test_same_examples_seen_move_theta_alike_whatever_the_batch_size():
    grads = torch.tensor([0.03, -0.03, 0.005])  # small enough that no θ reaches a bound
    # 4,000 examples in batches of 50 or of 200: the same drift per example seen; they differ
    # only by the window's filling (W/B steps to fill: 8 against 2; 4% here). A step per batch
    # instead would drift four times as far at batch 50.
    small, large = run(50, 80, grads), run(200, 20, grads)
    torch.testing.assert_close(0.5 - small, 0.5 - large, rtol=0.06, atol=0.0)
    assert small[0] < 0.5 < small[1] and 0 < float(small.min()) and float(small.max()) < 1


def test_projects_onto_the_vertices_and_accumulates_without_moving():
    theta = torch.nn.Parameter(torch.tensor([0.02, 0.97]))
    opt = ProjectedSGD([theta], lr=1.0, window=100.0, num_data=10)
    theta.grad = torch.tensor([5.0, -5.0])
    opt.step(examples=100, move=False)
    assert theta.tolist() == pytest.approx([0.02, 0.97])  # warm-up: evidence only
    assert torch.allclose(opt.state[theta]["evidence"], torch.tensor([0.5, -0.5]))
    opt.step(examples=100)
    assert theta[0].item() == 0.0 and theta[1].item() == 1.0  # exactly on the vertices


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match=r"got 0\.0, 1\.0, 1,"):  # lr
        ProjectedSGD([torch.nn.Parameter(torch.zeros(2))], lr=0.0, window=1.0, num_data=1)
    with pytest.raises(ValueError, match=r"got 1\.0, 0\.0, 1,"):  # window
        ProjectedSGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0, window=0.0, num_data=1)


def test_only_the_released_parameters_move():
    first = torch.nn.Parameter(torch.tensor([0.5]))
    second = torch.nn.Parameter(torch.tensor([0.5]))
    opt = ProjectedSGD([first, second], lr=1e-2, window=10.0, num_data=1)
    first.grad, second.grad = torch.tensor([1.0]), torch.tensor([1.0])
    opt.step(examples=10, move={second})
    assert first.item() == 0.5 and second.item() == pytest.approx(0.4)
    assert opt.state[first]["evidence"].item() == 1.0  # evidence accumulates all the same


def test_at_most_the_transit_fraction_of_a_layer_is_away_from_one():
    # eight units, every one's evidence says "down", most strongly for the last ones
    grads = torch.linspace(0.1, 0.8, 8)
    theta = torch.nn.Parameter(torch.ones(8))
    opt = ProjectedSGD([theta], lr=1e-3, window=100.0, num_data=10, transit=0.5)
    away = []
    for _ in range(30):
        theta.grad = 10 * grads.clone()
        opt.step(examples=100)
        away.append(int((theta < 1).sum()))
    assert max(away) == 4  # half of the layer, never more
    assert torch.equal(theta[:4].detach(), torch.ones(4))  # the weakest evidence waits
    assert bool((theta[4:] == 0).all())  # the strongest went, all the way
    # once those are gone (removed: the tensor shrinks), the next ones may go
    survivors = torch.nn.Parameter(theta.detach()[:4].clone())
    opt = ProjectedSGD([survivors], lr=1e-3, window=100.0, num_data=10, transit=0.5)
    survivors.grad = 10 * grads[:4].clone()
    opt.step(examples=100)
    assert int((survivors < 1).sum()) == 2


@pytest.mark.parametrize("n,fraction,away", [(5, 0.5, 2), (7, 0.5, 3), (7, 0.3, 2), (3, 0.5, 1)])
def test_an_odd_layer_keeps_the_floor_of_its_transit_fraction(n, fraction, away):
    # ⌊t·n⌋ of Eq. (10t), not a rounded or ceiled count: 2 of 5, 3 of 7 and 2 of 7 at
    # t = 0.3, 1 of 3 may be away from 1 however strong every unit's evidence
    theta = torch.nn.Parameter(torch.ones(n))
    opt = ProjectedSGD([theta], lr=1e-3, window=100.0, num_data=10, transit=fraction)
    for _ in range(5):
        theta.grad = 10 * torch.linspace(0.1, 0.8, n)
        opt.step(examples=100)
        assert int((theta < 1).sum()) == away


def test_without_a_transit_limit_the_whole_layer_moves_together():
    theta = torch.nn.Parameter(torch.ones(8))
    opt = ProjectedSGD([theta], lr=1e-3, window=100.0, num_data=10, transit=1.0)
    theta.grad = 10 * torch.linspace(0.1, 0.8, 8)
    opt.step(examples=100)
    assert bool((theta < 1).all())


def test_the_hosts_shortcuts_of_the_transit_limit_are_the_ranked_step():
    """On the CPU the transit limit skips the ranking when no unit leaves, when all that leave
    fit and when none fits; each shortcut gives the step of the tensor-only (GPU) path."""
    from bayesprune.inference.projected_sgd import _limit_transit

    generator = torch.Generator().manual_seed(0)
    paths = set()
    for _ in range(300):
        n = int(torch.randint(1, 12, (), generator=generator))
        state = torch.randint(0, 4, (n,), generator=generator)  # at 1, in transit, at 0
        theta = torch.where(state == 0, 0.0, torch.where(state == 1, 0.5, 1.0))
        evidence = torch.randn(n, generator=generator) * (torch.rand((), generator=generator) < 0.8)
        fraction = float(torch.rand((), generator=generator))
        args = (theta, evidence, 1.0, 0.0, 1.0, fraction)
        ranked = _limit_transit(*args, host=False)
        assert torch.equal(_limit_transit(*args, host=True), ranked)
        leaving = (theta >= 1) & ((theta - evidence).clamp(0, 1) < 1)
        free = int(fraction * n) - int((theta < 1).sum())
        paths.add(
            "none"
            if not leaving.any()
            else "fit"
            if leaving.sum() <= free
            else "no place"
            if free <= 0
            else "ranked"
        )
    assert paths == {"none", "fit", "no place", "ranked"}  # every shortcut was exercised


def noisy_run(confidence: float, mean: float, sd: float, batch: int, steps: int, seed: int = 0):
    """θ of 200 units after ``steps`` steps whose per-example evidence has the given ``mean`` and
    per-example sd ``sd`` (a batch of B averages B examples: sd/√B per step), window 1,000."""
    gen = torch.Generator().manual_seed(seed)
    theta = torch.nn.Parameter(torch.ones(200))
    opt = ProjectedSGD([theta], lr=1.0, window=1000.0, num_data=10, confidence=confidence)
    records = []
    for _ in range(steps):
        noise = torch.randn(200, generator=gen) * sd / batch**0.5
        theta.grad = 10 * (mean + noise)  # ∂F/∂θ = N · ĝ
        opt.step(examples=batch)
        records.append(opt.state[theta]["evidence"].clone())
    return theta.detach(), opt.state[theta], torch.stack(records)


def test_the_evidence_standard_error_is_that_of_the_running_average_at_any_batch_size():
    # Eq. (10s): se(m)² = v·a/(2 − a), v the steps' variance (∝ 1/B), a = B/W: the spread of m
    # over time, and the same whatever B (sd²/(2W − B) per example)
    for batch in (10, 50):
        _, state, history = noisy_run(2.0, 0.0, 0.5, batch, steps=4000 // batch * 10)
        settled = history[len(history) // 2 :]  # past the window's filling
        spread = settled.std(0).mean()
        se = (state["evidence"] - state["decision"]).mean() / 2.0
        assert float(se) == pytest.approx(float(spread), rel=0.1)
        assert float(se) == pytest.approx(0.5 / (2 * 1000 - batch) ** 0.5, rel=0.1)


def test_an_epochs_short_last_batch_leaves_the_standard_error_where_it_was():
    # epochs of seven full steps of 256 and a last one of 64, a window of ten full steps. The
    # short step's ĝ is four times as noisy and enters m at a quarter of the rate: m's spread,
    # and so se(m), stay where they were. With the short step's own a in v·a/(2 − a), se fell
    # to about half for that step (z = 2 read as z = 1), and units left on weaker evidence.
    gen = torch.Generator().manual_seed(0)
    theta = torch.nn.Parameter(torch.ones(4000))
    opt = ProjectedSGD([theta], lr=1.0, window=2560.0, num_data=10, confidence=2.0)
    full, short, spread = [], [], []
    for epoch in range(16):
        for batch in [256] * 7 + [64]:
            theta.grad = 10 * torch.randn(4000, generator=gen) * 0.5 / batch**0.5
            opt.step(examples=batch)
            state = opt.state[theta]
            if epoch >= 4:  # past the window's filling
                se = float((state["evidence"] - state["decision"]).mean()) / 2.0
                (short if batch == 64 else full).append(se)
                if batch == 64:  # m's spread over the 4,000 units, at the short steps
                    spread.append(float(state["evidence"].std()))
    mean_full, mean_short = sum(full) / len(full), sum(short) / len(short)
    assert mean_short == pytest.approx(sum(spread) / len(spread), rel=0.1)
    assert mean_short == pytest.approx(mean_full, rel=0.1)


def test_theta_falls_only_on_evidence_beyond_its_standard_error():
    # units worth 0.3 standard errors more than their price: the noisy average crosses the
    # price every window or so, and at z = 0 over a quarter of them sit at θ = 0 (where removal
    # follows) at the end; at z = 2 none. Units worth 10 standard errors less than their price
    # go at either z.
    se = 0.5 / (2 * 1000 - 10) ** 0.5
    worth = {z: noisy_run(z, -0.3 * se, 0.5, 10, steps=2000)[0] for z in (0.0, 2.0)}
    assert float((worth[0.0] == 0).float().mean()) > 0.2
    assert not bool((worth[2.0] == 0).any())
    assert float((worth[2.0] == 1).float().mean()) > 0.95
    for z in (0.0, 2.0):
        strong, _, _ = noisy_run(z, 10 * se, 0.5, 10, steps=2000)
        assert bool((strong == 0).all())


def test_units_that_start_below_one_have_their_standard_error_measured():
    # --init-theta 0.5: every unit starts in transit, where se(m) is held, not measured; it had
    # nothing to hold (0), so d was m and (10s) did nothing until a unit first reached 1. Until
    # then se is measured in transit: the running average's, as for a unit that is on.
    gen = torch.Generator().manual_seed(0)
    theta = torch.nn.Parameter(torch.full((200,), 0.5))
    opt = ProjectedSGD([theta], lr=1e-9, window=1000.0, num_data=10, confidence=2.0)
    for _ in range(2000):  # θ stays near ½ (a tiny rate): in transit throughout
        theta.grad = 10 * torch.randn(200, generator=gen) * 0.5 / 10**0.5
        opt.step(examples=10)
    assert bool(((theta > 0.4) & (theta < 0.6)).all())
    state = opt.state[theta]
    se = state["evidence_se"].mean()
    assert float(se) == pytest.approx(0.5 / (2 * 1000 - 10) ** 0.5, rel=0.1)
    assert torch.equal(state["decision"], state["evidence"] - 2.0 * state["evidence_se"])
    # once on, a unit's se is held in transit as before: it reached 1, then left
    state["evidence_was_on"][:] = 1.0
    held = state["evidence_se"].clone()
    theta.grad = 10 * torch.randn(200, generator=gen)
    opt.step(examples=10)
    assert torch.equal(state["evidence_se"], held)


def test_a_unit_at_one_has_its_standard_error_measured_and_held_once_it_leaves():
    # (10s): se(m) is measured while θ sits at 1 (exactly: the projection puts it there) and
    # held in transit, where the gate draws' spread would widen it
    gen = torch.Generator().manual_seed(0)
    theta = torch.nn.Parameter(torch.ones(50))
    opt = ProjectedSGD([theta], lr=1e-3, window=1000.0, num_data=10, confidence=2.0)
    for _ in range(500):  # evidence for keeping: θ pushed up, stays at 1
        theta.grad = 10 * (-0.1 + 0.05 * torch.randn(50, generator=gen))
        opt.step(examples=10)
    state = opt.state[theta]
    assert bool((theta == 1).all()) and bool((state["evidence_was_on"] == 1).all())
    on = state["evidence_se"].clone()
    assert float(on.mean()) == pytest.approx(0.05 * (10 / (2 * 1000 - 10)) ** 0.5, rel=0.15)
    with torch.no_grad():
        theta.fill_(0.5)  # in transit
    for _ in range(50):  # ten times the spread there
        theta.grad = 10 * (-0.1 + 0.5 * torch.randn(50, generator=gen))
        opt.step(examples=10)
    assert bool(((theta > 0) & (theta < 1)).all()) and torch.equal(state["evidence_se"], on)


def test_confidence_zero_is_the_sign_rule_and_negative_is_refused():
    grads = torch.tensor([0.3, -0.3, 0.05])
    theta = torch.nn.Parameter(torch.full_like(grads, 0.5))
    opt = ProjectedSGD([theta], lr=1e-3, window=400.0, num_data=1000, confidence=0.0)
    theta.grad = 1000 * grads
    opt.step(examples=100)
    assert "decision" not in opt.state[theta]  # no second average: the rule before, to the bit
    assert torch.equal(theta.detach(), run(100, 1, grads))
    with pytest.raises(ValueError, match=r"confidence >= 0; got .*, -1\.0$"):
        ProjectedSGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0, window=1.0, num_data=1,
                     confidence=-1.0)  # fmt: skip
