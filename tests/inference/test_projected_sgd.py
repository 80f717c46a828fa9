import pytest
import torch

from bayesprune.inference.projected_sgd import ProjectedSGD


def test_matches_heavy_ball_sgd_inside_the_box_and_projects_at_its_edges():
    theta = torch.nn.Parameter(torch.tensor([0.5, 0.5, 0.02, 0.97]))
    reference = torch.nn.Parameter(theta.detach().clone())
    opt = ProjectedSGD([theta], lr=0.1, momentum=0.9)
    ref = torch.optim.SGD([reference], lr=0.1, momentum=0.9)
    grads = [torch.tensor([0.1, -0.2, 0.5, -0.5]), torch.tensor([0.05, -0.1, 0.5, -0.5])]
    for g in grads:
        theta.grad, reference.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    assert torch.allclose(theta[:2], reference[:2])
    assert theta[2].item() == 0.0 and theta[3].item() == 1.0  # exactly on the vertices
    assert torch.allclose(
        opt.state[theta]["momentum_buffer"], ref.state[reference]["momentum_buffer"]
    )


def test_rejects_bad_settings():
    with pytest.raises(ValueError):
        ProjectedSGD([torch.nn.Parameter(torch.zeros(2))], lr=0.0)
    with pytest.raises(ValueError):
        ProjectedSGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0, momentum=1.0)
