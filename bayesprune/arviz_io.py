"""Every call into ArviZ, in one place, so that a change of ArviZ version touches only this file.

Written for ArviZ 0.23 (``InferenceData``). The lines marked ``ArviZ 1.x`` change there:
``InferenceData`` becomes an ``xarray.DataTree`` (built with ``xarray.DataTree.from_dict``, read
and written with ``xarray.open_datatree`` / ``DataTree.to_netcdf``), a group is read with
``tree[name].to_dataset()``, and ``summary``/``plot_forest`` move to ``arviz_stats`` and
``arviz_plots`` (re-exported as ``az.summary``/``az.plot_forest``, with other keyword arguments).
Everything else in :mod:`bayesprune` handles plain ``xarray.Dataset`` objects, which both share.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr


def to_arviz(
    draws: Mapping[str, np.ndarray],
    dims: Mapping[str, list[str]],
    coords: Mapping[str, np.ndarray],
    groups: Mapping[str, xr.Dataset] | None = None,
) -> az.InferenceData:
    """An ``InferenceData`` with ``draws`` as the posterior (one chain) and more groups as given.

    :param draws: per variable, posterior draws with the draw axis first, shape ``(D, ...)``.
    :param dims: per variable, the names of its non-draw dimensions (e.g. ``["fc1_unit"]``).
    :param coords: coordinate values per dimension name.
    :param groups: further groups (name → ``xarray.Dataset``), e.g. ``constant_data`` or the
        training trajectories.
    """
    posterior = {name: np.asarray(value)[np.newaxis] for name, value in draws.items()}
    # ArviZ 1.x: xr.DataTree.from_dict({"posterior": dataset(posterior), **groups})
    idata = az.from_dict(posterior=posterior, dims=dict(dims), coords=dict(coords))
    if groups:
        idata.add_groups(dict(groups))
    return idata


def group(idata: az.InferenceData, name: str) -> xr.Dataset:
    """One group of an ``InferenceData`` as an ``xarray.Dataset``."""
    return idata[name]  # ArviZ 1.x: idata[name].to_dataset()


def has_group(idata: az.InferenceData, name: str) -> bool:
    """Whether ``idata`` has the group ``name``."""
    return name in idata.groups()  # ArviZ 1.x: name in idata.children


def save(idata: az.InferenceData, path: Path) -> Path:
    """Write ``idata`` to a netCDF file.

    Writes a temporary file next to it and renames it, so that a reader still holding the old
    file open (``az.from_netcdf`` reads lazily) does not block the write.
    """
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    _check_room(idata, path)
    try:
        idata.to_netcdf(str(partial))  # ArviZ 1.x: the same method on the DataTree
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)  # a failed write leaves the previous file, no debris
        raise
    return path


def _check_room(idata: az.InferenceData, path: Path) -> None:
    """An ``OSError`` (ENOSPC) if the folder has less free space than the arrays need (with
    room for netCDF's own records): HDF5 met a full disk with a segmentation fault, which no
    handler can turn into the one-line error a full disk gets everywhere else."""
    need = sum(
        int(array.nbytes) for name in idata.groups() for array in idata[name].data_vars.values()
    )
    free = shutil.disk_usage(path.parent).free
    if free < 1.5 * need + 2**20:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device: {path.name} needs about {need / 2**20:.1f} MiB and "
            f"{free / 2**20:.1f} MiB are free",
            str(path),
        )


def load(path: Path) -> az.InferenceData:
    """Read an ``InferenceData`` written by :func:`save`, into memory (the file is closed)."""
    with az.rc_context({"data.load": "eager"}):  # ArviZ 1.x: xr.load_datatree(path)
        return az.from_netcdf(str(path))


def summary(
    idata: az.InferenceData, var_names: list[str], coords: Mapping[str, np.ndarray]
) -> pd.DataFrame:
    """Posterior mean, standard deviation and 94% HDI of ``var_names`` at ``coords``.

    Only the statistics: with one chain of independent draws from q the MCMC diagnostics (R-hat,
    ESS) say nothing.
    """
    # ArviZ 1.x: az.summary(idata, var_names=..., coords=..., kind="stats") with arviz_stats
    return az.summary(idata, var_names=var_names, coords=dict(coords), kind="stats")


def plot_forest(idata: az.InferenceData, var_name: str, coords: Mapping[str, np.ndarray], ax):
    """Forest plot (mean and 94% HDI) of one variable at ``coords`` onto ``ax``."""
    # ArviZ 1.x: arviz_plots.plot_forest(idata, var_names=..., coords=...) returns a PlotCollection
    az.plot_forest(
        idata, var_names=[var_name], coords=dict(coords), combined=True, ax=ax, textsize=8
    )
