"""The ArviZ boundary: building, saving and reading an InferenceData, and its summary."""

import os
from pathlib import Path

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


def _idata_of_draws(draws=50):
    rng = np.random.default_rng(0)
    return arviz_io.to_arviz(
        {"fc1_gate": rng.normal(size=(draws, 3)), "scale": np.arange(draws, dtype=float)},
        {"fc1_gate": ["fc1_unit"]},
        {"fc1_unit": np.array([2, 5, 7])},
    )


def test_every_draw_is_kept_in_order():
    post = arviz_io.group(_idata_of_draws(), "posterior")
    assert post.sizes["chain"] == 1 and post.sizes["draw"] == 50
    np.testing.assert_array_equal(post["scale"].values[0], np.arange(50.0))


def test_summary_has_only_the_statistics():
    table = arviz_io.summary(_idata_of_draws(), ["fc1_gate"], {"fc1_unit": np.array([5])})
    assert list(table.columns) == ["mean", "sd", "hdi_3%", "hdi_97%"]


def test_save_leaves_only_the_file_and_load_reads_it_into_memory(tmp_path):
    idata = _idata_of_draws()
    path = arviz_io.save(idata, tmp_path / "p.nc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.nc"]
    back = arviz_io.load(path)
    fds = Path("/proc/self/fd")
    if fds.is_dir():  # Linux: no descriptor left open on the file (its data are in memory)
        held = []
        for fd in fds.iterdir():
            try:
                held.append(Path(os.readlink(fd)))
            except OSError:
                pass
        assert path.resolve() not in held
    xr.testing.assert_equal(arviz_io.group(back, "posterior"), arviz_io.group(idata, "posterior"))
