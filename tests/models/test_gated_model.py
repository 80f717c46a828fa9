import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from bayesprune.guides import GateGuide
from bayesprune.models import Flattening, GatedMLP, GatedModel, GaussianScaleMixture, HyperPrior


def test_model_declares_vectorised_sites_and_scales_the_batch():
    net = GatedMLP(5, (4, 3), 2)
    hyper = HyperPrior(temperature=0.2)
    model, guide = GatedModel(net, hyper), GateGuide(net, hyper)
    x, y = torch.randn(6, 5), torch.randint(0, 2, (6,))
    with pyro.validation_enabled(False):
        tr = poutine.trace(guide).get_trace(x, y, num_data=60, index=torch.arange(6))
        mt = poutine.trace(poutine.replay(model, trace=tr)).get_trace(
            x, y, num_data=60, index=torch.arange(6)
        )
    sample_sites = {
        n for n, s in mt.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)
    }
    expected = {f"{layer}.{kind}" for layer in ("fc1", "fc2") for kind in
                ("prob", "slab_var", "weight", "gate")}  # fmt: skip
    assert sample_sites == expected | {"out.slab_var", "out.weight", "obs"}
    assert isinstance(mt.nodes["fc1.prob"]["fn"], Flattening)
    assert isinstance(mt.nodes["fc2.weight"]["fn"], GaussianScaleMixture)
    assert mt.nodes["fc1.weight"]["value"].shape == (4, 6)  # augmented [W | b]
    assert mt.nodes["fc2.gate"]["value"].shape == (6, 3)  # one gate per example and unit
    assert mt.nodes["obs"]["scale"] == 10.0  # N / B
    assert mt.nodes["fc1.weight"]["scale"] == 0.2  # the temperature, via poutine.scale
