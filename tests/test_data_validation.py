"""Validation at the data boundary: token ids a model cannot embed and evaluations whose loss is not
finite are errors that name their cause, never a NaN reported as a result."""

import json
import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

import lmx.data.prepare as prepare_module
from lmx.config import DataConfig
from lmx.data.corpus import Corpus
from lmx.data.prepare import ensure_prepared, load_split, prepare, read_meta
from lmx.data.pretrain import TokenWindows, pretrain_batches
from lmx.errors import DataError
from lmx.model import Transformer
from lmx.objectives.chat import Records, evaluate_objective, make_objective_eval_step
from lmx.objectives.lm_eval import evaluate, make_eval_step, source_eval_batches
from lmx.objectives.pretrain import pretrain_loss
from lmx.parallel import make_mesh
from lmx.parallel.mapping import step_batch_sharding


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    for i in range(16):
        (root / f"{i:02d}.py").write_text(f"def f_{i}(a, b):\n    return a * {i} + b  # doc {i}\n" * (i % 4 + 2))
    return root


def prepare_docs(corpus_dir, tokenizer, out):
    return prepare(Corpus.parse(f"text:{corpus_dir}/*.py", validation_fraction=0.25), tokenizer, out)


def overwrite_in_place(path, new_ids):
    """Replaces a token file's content with `new_ids` (same length and dtype), keeping its inode, and
    gives it a later mtime (file systems stamp mtimes at a coarse tick, so a write within a few
    milliseconds of `prepare` could otherwise keep the recorded one)."""
    before = path.stat()
    with open(path, "r+b") as f:
        f.write(np.asarray(new_ids).astype(np.uint16).tobytes())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))


def test_prepare_records_the_id_range_and_a_smaller_vocabulary_names_file_and_numbers(corpus_dir, tokenizer, tmp_path):
    out = tmp_path / "prepared"
    meta = prepare_docs(corpus_dir, tokenizer, out)
    tokens, _, _ = load_split(out, "train")
    info = meta["splits"]["train"]
    assert (info["min_id"], info["max_id"]) == (int(tokens.min()), int(tokens.max()))
    assert read_meta(out) == meta  # recorded in meta.json as returned
    hi = info["max_id"]
    load_split(out, "train", vocab_size=hi + 1)  # exactly fits
    expected = re.escape(f"{out / 'train.tokens'}: token ids must lie in [0, {hi}) (model.vocab_size={hi}), found [")
    with pytest.raises(DataError, match=expected + rf"\d+, {hi}\]; it was prepared with a tokenizer of 1024 ids"):
        load_split(out, "train", vocab_size=hi)
    with pytest.raises(DataError, match=expected):
        TokenWindows(out, "train", 8, vocab_size=hi)
    with pytest.raises(DataError, match=expected):
        pretrain_batches(out, "train", 8, 4, seed=0, vocab_size=hi)


def test_ensure_prepared_checks_ids_against_the_models_vocabulary(corpus_dir, tokenizer, tmp_path):
    """`lmx train` and `lmx eval` open prepared data through ensure_prepared: a tokenizer larger
    than the model fails there, naming the file, the ids, the vocabulary and the fix."""
    cfg = DataConfig(corpus=f"text:{corpus_dir}/*.py", dir=str(tmp_path), tokenizer=str(tokenizer.path))
    _, prepared_dir, meta = ensure_prepared(cfg, 1024, log=lambda _: None)
    small = 256
    assert meta["splits"]["train"]["max_id"] >= small  # the corpus uses ids beyond 256
    with pytest.raises(DataError, match=r"train.tokens: token ids must lie in \[0, 256\)") as e:
        ensure_prepared(cfg, small, log=lambda _: None)
    message = str(e.value)
    assert str(prepared_dir / "train.tokens") in message
    assert f"tokenizer of 1024 ids ({tokenizer.path})" in message and "model.vocab_size to at least 1024" in message


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded-range", "legacy-meta"])
def test_a_token_file_changed_after_prepare_is_caught(corpus_dir, tokenizer, tmp_path, recorded):
    """A same-size overwrite passes read_meta's size check. With the range recorded, the file's new
    mtime makes the recorded range untrusted; a meta.json from before ranges were recorded (legacy)
    is checked by scanning the file."""
    out = tmp_path / "prepared"
    meta = prepare_docs(corpus_dir, tokenizer, out)
    if not recorded:
        for info in meta["splits"].values():
            for key in ("min_id", "max_id", "tokens_mtime_ns"):
                del info[key]
        (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    load_split(out, "validation", vocab_size=1024)  # fine as prepared
    path = out / "validation.tokens"
    ids = np.array(np.memmap(path, dtype=np.uint16, mode="r"))
    ids[len(ids) // 2] = 1500  # an id beyond the tokenizer's and the model's 1024
    overwrite_in_place(path, ids)
    assert read_meta(out) is not None  # same size: the directory still looks complete
    expected = re.escape(f"{path}: token ids must lie in [0, 1024) (model.vocab_size=1024), found [")
    with pytest.raises(DataError, match=expected + r"\d+, 1500\]; its tokenizer has 1024 ids, so the file changed"):
        load_split(out, "validation", vocab_size=1024)
    with pytest.raises(DataError, match=re.escape(f"delete {out / 'meta.json'} to prepare it again")):
        TokenWindows(out, "validation", 8, vocab_size=1024)


def test_the_recorded_range_is_the_cheap_path(corpus_dir, tokenizer, tmp_path):
    """An unchanged file is not read to check its ids: the range comes from meta.json."""
    out = tmp_path / "prepared"
    prepare_docs(corpus_dir, tokenizer, out)
    prepare_module._scanned_ranges.clear()
    load_split(out, "train", vocab_size=1024)
    assert not prepare_module._scanned_ranges  # nothing scanned


# ------------------------------------------------------------------------------------------------
# Non-finite evaluations


@pytest.fixture(scope="module")
def tiny_model():
    cfg = tiny_config(**{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2})
    model = Transformer(cfg.model)
    params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))["params"]
    mesh = make_mesh(cfg.mesh, jax.devices())
    tokens = np.random.default_rng(0).integers(4, cfg.model.vocab_size, 4 * cfg.data.seq_len + 1)
    windows = TokenWindows.from_tokens(tokens, np.array([0, len(tokens)]), cfg.data.seq_len, "concat", "random")
    return cfg, model, params, mesh, windows


def with_nan_embedding(params):
    """`params` with one NaN in the token embedding (a diverged or damaged checkpoint)."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    path = next(p for p, leaf in flat if leaf.ndim == 2 and "embed" in jax.tree_util.keystr(p).lower())
    return jax.tree_util.tree_map_with_path(lambda p, x: x.at[0, 0].set(jnp.nan) if p == path else x, params)


def test_a_non_finite_language_model_evaluation_is_an_error(tiny_model):
    cfg, model, params, mesh, windows = tiny_model
    step = make_eval_step(model, mesh, cfg.mesh.rules, np.ones(cfg.model.vocab_size, np.int32))
    sharding = step_batch_sharding(mesh)
    result = evaluate(step, params, source_eval_batches(cfg, mesh, windows, 0), sharding)
    assert np.isfinite(result.loss) and result.tokens == 4 * cfg.data.seq_len
    with pytest.raises(DataError, match=r"the evaluation of 64 tokens gave a non-finite loss \(nan\); likely causes"):
        evaluate(step, with_nan_embedding(params), source_eval_batches(cfg, mesh, windows, 0), sharding)


def test_a_non_finite_objective_evaluation_is_an_error(tiny_model):
    cfg, model, params, mesh, windows = tiny_model
    step = make_objective_eval_step(pretrain_loss(model), mesh, cfg.mesh.rules)
    source = Records(len(windows), windows.__getitem__)
    metrics = evaluate_objective(step, cfg, mesh, params, source, count_name="windows")
    assert np.isfinite(metrics["loss"]) and metrics["windows"] == 4 * cfg.data.seq_len
    with pytest.raises(DataError, match=r"the evaluation of 4 windows gave a non-finite loss \(nan\)"):
        evaluate_objective(step, cfg, mesh, with_nan_embedding(params), source, count_name="windows")
