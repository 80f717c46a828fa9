"""The ArviZ boundary: building, saving and reading an InferenceData, and its summary."""

import numpy as np
import xarray as xr

from bayesprune import arviz_io


def _idata():
    rng = np.random.default_rng(0)
    draws = {"fc1_gate": rng.binomial(1, [0.0, 0.5, 1.0], size=(400, 3)).astype(float),
             "fc1_slab_scale": np.full(400, 0.5)}  # fmt: skip
    dims = {"fc1_gate": ["fc1_unit"]}
    coords = {"fc1_unit": np.array([2, 5, 7])}
    extra = xr.Dataset({"fc1_theta": (("epoch", "fc1_unit"), np.ones((2, 3)))},
                       coords={"epoch": [1, 2], "fc1_unit": [2, 5, 7]})  # fmt: skip
    return arviz_io.to_arviz(draws, dims, coords, {"trajectories": extra})


def test_to_arviz_names_dims_and_keeps_groups():
    idata = _idata()
    post = arviz_io.group(idata, "posterior")
    assert post["fc1_gate"].dims == ("chain", "draw", "fc1_unit")
    assert post["fc1_slab_scale"].dims == ("chain", "draw")
    np.testing.assert_array_equal(post["fc1_unit"], [2, 5, 7])
    assert arviz_io.has_group(idata, "trajectories") and not arviz_io.has_group(idata, "traces")
    assert arviz_io.group(idata, "trajectories")["fc1_theta"].dims == ("epoch", "fc1_unit")


def test_netcdf_round_trip(tmp_path):
    idata = _idata()
    back = arviz_io.load(arviz_io.save(idata, tmp_path / "x.nc"))
    for name in ("posterior", "trajectories"):
        xr.testing.assert_equal(arviz_io.group(back, name), arviz_io.group(idata, name))


def test_summary_selects_units_by_id():
    idata = _idata()
    table = arviz_io.summary(idata, ["fc1_gate"], {"fc1_unit": np.array([5, 7])})
    assert list(table.index) == ["fc1_gate[5]", "fc1_gate[7]"]
    assert abs(table.loc["fc1_gate[5]", "mean"] - 0.5) < 0.08
    assert table.loc["fc1_gate[7]", "mean"] == 1.0 and table.loc["fc1_gate[7]", "sd"] == 0.0
