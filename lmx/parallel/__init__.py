"""Device meshes and the logical-axis rules that place arrays on them."""

from lmx.parallel.mesh import make_mesh, resolve_mesh_shape
from lmx.parallel.rules import batch_sharding, data_parallel_size, mesh_axes_for, shardings_from_boxed

__all__ = [
    "batch_sharding",
    "data_parallel_size",
    "make_mesh",
    "mesh_axes_for",
    "resolve_mesh_shape",
    "shardings_from_boxed",
]
