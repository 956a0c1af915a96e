"""The device mesh, built from the config and checked against the devices present.

Over several processes (hosts) the mesh is hybrid: `tensor` stays within a host (its collectives
are the most frequent and want the fast local links), `data` and then `fsdp` span hosts, split as
``mesh.data_hosts`` says (`host_split`). JAX's `create_hybrid_device_mesh` lays the devices out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

from lmx.config import MeshConfig
from lmx.errors import ClusterError, ConfigError


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


def host_split(cfg: MeshConfig, shape: Sequence[int], processes: int) -> tuple[int, int, int]:
    """How many host groups each mesh axis spans: ``(data_hosts, fsdp_hosts, 1)``, whose product
    is `processes`. Raises ClusterError naming the sizes when the mesh cannot be laid over them."""
    data, fsdp, tensor = shape
    per_process = math.prod(shape) // processes
    if per_process % tensor:
        raise ClusterError(
            f"mesh.tensor={tensor} must fit within one process, and each of the {processes} processes has "
            f"{per_process} devices"
        )
    data_hosts = math.gcd(data, processes) if cfg.data_hosts == -1 else cfg.data_hosts
    if data % data_hosts or processes % data_hosts:
        raise ClusterError(
            f"mesh.data_hosts={data_hosts} must divide both mesh.data={data} and the {processes} processes"
        )
    fsdp_hosts = processes // data_hosts
    if fsdp % fsdp_hosts:
        raise ClusterError(
            f"{processes} processes over mesh.data={data} (in {data_hosts} host groups) leave {fsdp_hosts} host "
            f"groups for mesh.fsdp={fsdp}, which they do not divide; change mesh.data/fsdp or mesh.data_hosts"
        )
    return data_hosts, fsdp_hosts, 1


def make_mesh(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with axes ("data", "fsdp", "tensor"), all of type Auto.

    Auto (not the new Explicit default of `jax.make_mesh`) lets the pmap-style step run data
    parallelism by hand while XLA places the model-parallel axes from the sharding annotations.
    """
    devices = list(devices) if devices is not None else jax.devices()
    shape = resolve_mesh_shape(cfg, len(devices))
    axis_types = (AxisType.Auto,) * len(shape)
    per_process: dict[int, int] = {}
    for d in devices:
        per_process[d.process_index] = per_process.get(d.process_index, 0) + 1
    if len(per_process) == 1:
        return jax.make_mesh(shape, cfg.AXES, axis_types=axis_types, devices=devices)
    if len(set(per_process.values())) > 1:
        counts = ", ".join(f"process {p}: {n}" for p, n in sorted(per_process.items()))
        raise ClusterError(f"every process must bring the same number of devices to the mesh ({counts})")
    hosts = host_split(cfg, shape, len(per_process))
    local = tuple(s // h for s, h in zip(shape, hosts, strict=True))
    grid = mesh_utils.create_hybrid_device_mesh(local, hosts, devices, process_is_granule=True)
    return Mesh(np.asarray(grid), cfg.AXES, axis_types=axis_types)
