"""The device mesh, built from the config and checked against the devices present."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
from jax.sharding import AxisType, Mesh

from lmx.config import MeshConfig
from lmx.errors import ConfigError


def resolve_mesh_shape(cfg: MeshConfig, n_devices: int) -> tuple[int, ...]:
    """Replaces a -1 with the devices left over and checks that the product is the device count."""
    sizes = list(cfg.shape)
    if -1 in sizes:
        known = math.prod(s for s in sizes if s != -1)
        if n_devices % known:
            i = sizes.index(-1)
            raise ConfigError(
                f"mesh.{cfg.AXES[i]}=-1: the other axes use {known} devices, which does not divide "
                f"the {n_devices} devices present"
            )
        sizes[sizes.index(-1)] = n_devices // known
    if math.prod(sizes) != n_devices:
        shown = ", ".join(f"mesh.{a}={s}" for a, s in zip(cfg.AXES, cfg.shape, strict=True))
        raise ConfigError(f"{shown}: the mesh has {math.prod(sizes)} devices but {n_devices} are present")
    return tuple(sizes)


def make_mesh(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with axes ("data", "fsdp", "tensor"), all of type Auto.

    Auto (not the new Explicit default of `jax.make_mesh`) lets the pmap-style step run data
    parallelism by hand while XLA places the model-parallel axes from the sharding annotations.
    """
    devices = list(devices) if devices is not None else jax.devices()
    shape = resolve_mesh_shape(cfg, len(devices))
    return jax.make_mesh(shape, cfg.AXES, axis_types=(AxisType.Auto,) * len(shape), devices=devices)
