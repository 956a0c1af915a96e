"""Parameters read from a run's checkpoint: a post-training start (``objective.init_from``), and
inference on a run (`lmx.infer.runs`). Parameters only.

`init_from` names a run directory (its latest checkpoint) or one checkpoint step directory
(``RUN/checkpoints/STEP``). Only the ``params`` subtree is read from disk (an Orbax partial restore,
so the source's optimizer moments are never loaded), straight into this run's shardings. Every
parameter of this run must exist in the source with the same shape, except new heads (a reward
model's ``reward_head``), which keep their fresh initialisation; source parameters this run does not
have (a language model's ``unembed`` under a reward model) are left behind.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import traverse_util

from lmx.checkpoint.manager import saved_steps
from lmx.errors import CheckpointError, ConfigError

# Parameters a run may add on top of its source's (they are initialised fresh).
NEW_HEADS = ("reward_head", "value_head")  # a reward model's score, PPO's value


@dataclasses.dataclass(frozen=True)
class InitSource:
    run_dir: Path
    step: int

    @property
    def state_dir(self) -> Path:
        return self.run_dir / "checkpoints" / str(self.step) / "state"


def resolve_init_from(spec: str) -> InitSource:
    """The run directory and checkpoint step that `spec` names; CheckpointError when there is none."""
    path = Path(spec).expanduser().absolute()
    key = f"objective.init_from={spec!r}"
    if path.name.isdigit() and path.parent.name == "checkpoints":
        source = InitSource(path.parent.parent, int(path.name))
    else:
        checkpoints = path / "checkpoints"
        steps = saved_steps(checkpoints)
        if not steps:
            raise CheckpointError(f"{key}: no checkpoint there (a run directory or RUN/checkpoints/STEP)")
        source = InitSource(path, steps[-1])
    if not source.state_dir.is_dir():
        raise CheckpointError(f"{key}: {source.state_dir} does not exist")
    return source


def _path_name(path: tuple[str, ...]) -> str:
    return "/".join(path)


def load_init_params(spec: str, target_params: Any) -> tuple[Any, InitSource, list[str]]:
    """``(params, source, new)``: the source's values of this run's parameters, restored into the
    shardings of `target_params` (arrays or `jax.ShapeDtypeStruct`s with shardings).

    `new` lists the parameters the source lacks (new heads): they are taken from `target_params`,
    which must then hold initialised arrays. Raises ConfigError naming the parameter when a shape
    differs or a parameter other than a new head is missing from the source.
    """
    source = resolve_init_from(spec)
    params, new = restore_params(source.state_dir, target_params, f"objective.init_from={spec!r}", NEW_HEADS)
    return params, source, new


def zero_new_heads(abstract_params: Any) -> Any:
    """`abstract_params` with the subtrees of NEW_HEADS made zeros in their shardings, so that a
    restore may leave them out (a frozen copy that never reads its new head)."""
    return {
        name: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype, device=x.sharding), tree)
        if name in NEW_HEADS
        else tree
        for name, tree in abstract_params.items()
    }


def restore_params(
    state_dir: Path, target_params: Any, key: str, new_heads: tuple[str, ...] = ()
) -> tuple[Any, list[str]]:
    """``(params, new)``: the ``params`` subtree of the train state saved in `state_dir` (an Orbax
    partial restore: the optimizer moments are never read), in the shardings of `target_params`.

    Parameters under `new_heads` may be missing from the checkpoint: they are taken from
    `target_params` and listed in `new`. Errors name `key` (what pointed here) and the parameter.
    """
    handler = ocp.PyTreeCheckpointHandler()
    location = Path(state_dir).absolute()  # Orbax refuses relative paths; messages keep the given one
    try:
        metadata = handler.metadata(location)
        saved = traverse_util.flatten_dict(dict((metadata.tree if hasattr(metadata, "tree") else metadata)["params"]))
    except Exception as e:  # Orbax raises many types for unreadable checkpoints
        raise CheckpointError(f"{state_dir}: cannot read its parameters ({_brief(e)}); damaged files?") from e
    target = traverse_util.flatten_dict(target_params)
    wanted, new = {}, []
    for path, array in target.items():
        if path not in saved:
            if path[0] in new_heads:
                new.append(_path_name(path))
                continue
            raise ConfigError(
                f"{key}: parameter {_path_name(path)!r} is not in {state_dir} (the saved model has another "
                "architecture)"
            )
        if tuple(saved[path].shape) != tuple(array.shape):
            raise ConfigError(
                f"{key}: parameter {_path_name(path)!r} has shape {tuple(saved[path].shape)} "
                f"in {state_dir} but {tuple(array.shape)} under this config's model section"
            )
        wanted[path] = jax.ShapeDtypeStruct(array.shape, array.dtype, sharding=array.sharding)
    abstract = {"params": traverse_util.unflatten_dict(wanted)}
    try:
        restored = handler.restore(
            location,
            args=ocp.args.PyTreeRestore(
                item=abstract,
                restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
                partial_restore=True,
            ),
        )
    except Exception as e:
        raise CheckpointError(f"{state_dir}: failed to restore parameters ({_brief(e)}); damaged files?") from e
    loaded = traverse_util.flatten_dict(restored["params"]) if wanted else {}
    merged = {path: loaded.get(path, array) for path, array in target.items()}
    unset = [_path_name(p) for p, v in merged.items() if isinstance(v, jax.ShapeDtypeStruct)]
    if unset:
        raise ValueError(f"new parameters {unset} need initialised values in target_params")
    return traverse_util.unflatten_dict(merged), new


def _brief(error: BaseException) -> str:
    """An Orbax or TensorStore error in one short line (their messages can hold kilobytes of spec)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"
