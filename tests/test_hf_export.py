"""`lmx export hf` against transformers itself: an exported lmx model gives lmx's logits and greedy
tokens in transformers, for every layout lmx has (tests/hf_support.py builds the runs)."""

import json
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pytest
from hf_support import FUNCTION_KEYS, VOCAB, hf_logits, lmx_logits, random_run, text_ids, torch, transformers

from lmx.cli import main
from lmx.config import Config
from lmx.decode.generate import Generator
from lmx.errors import ConfigError
from lmx.hf import export_hf, import_hf
from lmx.hf.importer import write_params_checkpoint
from lmx.infer.runs import load_run
from lmx.objectives.registry import objective_of

__all__ = ["text_ids"]  # a fixture

EXPORTS = {
    # The model's vocabulary padded past the tokenizer's, as for matmul-friendly sizes.
    "gqa-tied-scanned-padded-vocab": dict(vocab_size=VOCAB + 64),
    "mha-untied-unrolled-llama3rope": dict(
        n_kv_heads=4, tie_embeddings=False, scan_layers=False, rope_scaling="llama3", rope_original_max_len=64
    ),
    "mqa-qknorm-tied": dict(n_kv_heads=1, qk_norm=True),
    "gqa-qknorm-untied-unrolled-head32": dict(qk_norm=True, head_size=32, tie_embeddings=False, scan_layers=False),
}


@pytest.mark.parametrize("variant", EXPORTS)
def test_exported_model_gives_lmx_logits_and_greedy_tokens_in_transformers(variant, tokenizer, text_ids, tmp_path):
    run_dir, cfg, params = random_run(tmp_path / "run", tokenizer, **EXPORTS[variant])
    out = export_hf(run_dir, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM" if cfg.model.qk_norm else "LlamaForCausalLM"]
    assert ("lm_head.weight" in _tensor_names(out)) == (not cfg.model.tie_embeddings)

    ours = lmx_logits(cfg.model, params, text_ids)
    theirs = hf_logits(out, text_ids)
    print(f"{variant}: max |logit difference| {np.abs(ours - theirs).max():.2e} over {len(text_ids)} tokens")
    assert ours.std() > 0.5  # logits that say something
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)

    # Greedy decoding, 32 tokens: lmx's KV-cache generator against transformers' generate.
    prompt = text_ids[:40]
    run = load_run(run_dir, devices=jax.devices()[:1])
    generator = Generator(run.model, run.params, run.mesh, run.cfg.mesh.rules, 1, tokenizer.eos_id, 0)
    (ours_gen,) = generator.generate([prompt], 32)
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        theirs_gen = model.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False)[0, len(prompt) :]
    assert len(ours_gen.tokens) == 32 and list(ours_gen.tokens) == theirs_gen.tolist()


def _tensor_names(hf_dir: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(hf_dir / "model.safetensors"), "np") as f:
        assert f.metadata() == {"format": "pt"}
        return set(f.keys())


def test_bfloat16_export_is_the_float32_one_rounded(tokenizer, text_ids, tmp_path):
    run_dir, cfg, params = random_run(tmp_path / "run", tokenizer)
    out = export_hf(run_dir, tmp_path / "hf", dtype="bfloat16")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    from safetensors.numpy import load_file

    saved = load_file(str(out / "model.safetensors"))
    embedding = np.asarray(params["embed"]["embedding"])
    assert saved["model.embed_tokens.weight"].dtype.name == "bfloat16"
    np.testing.assert_array_equal(
        saved["model.embed_tokens.weight"], embedding.astype(saved["model.embed_tokens.weight"].dtype)
    )
    theirs = hf_logits(out, text_ids[:64])
    assert np.abs(theirs - lmx_logits(cfg.model, params, text_ids[:64])).max() < 0.1


def test_import_of_an_export_gives_bit_identical_parameters(tokenizer, tmp_path):
    """float32 both ways, through sharded safetensors files (an index and 100 kB shards)."""
    run_dir, cfg, _ = random_run(
        tmp_path / "run", tokenizer, n_kv_heads=1, qk_norm=True, tie_embeddings=False, rope_scaling="llama3"
    )
    exported = export_hf(run_dir, tmp_path / "hf", max_shard_bytes=100_000)
    index = json.loads((exported / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2 and not (exported / "model.safetensors").exists()
    back = import_hf(exported, tmp_path / "back")
    before = load_run(run_dir, devices=jax.devices()[:1])
    after = load_run(back, devices=jax.devices()[:1])
    for key in FUNCTION_KEYS:
        assert getattr(after.cfg.model, key) == getattr(cfg.model, key), key
    for a, b in zip(jax.tree.leaves(before.params), jax.tree.leaves(after.params), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert jax.tree.structure(before.params) == jax.tree.structure(after.params)


def test_export_refusals_are_one_line_and_leave_nothing(tokenizer, tmp_path, capsys):
    gelu_run, _, _ = random_run(tmp_path / "gelu", tokenizer, mlp="gelu")
    assert main(["export", "hf", str(gelu_run), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model.mlp='gelu'" in err and not (tmp_path / "out").exists()

    run_dir, _, _ = random_run(tmp_path / "run", tokenizer)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    assert main(["export", "hf", str(run_dir), str(taken)]) == 2
    assert "not empty" in capsys.readouterr().err and [p.name for p in taken.iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging directory left


def test_a_reward_model_is_not_exported_as_a_causal_lm(tokenizer, tmp_path):
    cfg = Config().replace(
        **{"objective.kind": "reward_model", "objective.train_files": "x.jsonl", "model.vocab_size": VOCAB}
    )
    model = objective_of(cfg).make_model(cfg)
    params = jax.jit(model.init)(jax.random.key(0), np.zeros((1, 8), np.int32))["params"]
    run_dir = tmp_path / "rm"
    run_dir.mkdir()
    write_params_checkpoint(cfg, jax.tree.map(np.asarray, nn.unbox(params)), run_dir)
    (run_dir / "config.json").write_text(cfg.to_json())
    with pytest.raises(ConfigError, match="kind='reward_model' trains a RewardModel with reward_head, not a causal"):
        export_hf(run_dir, tmp_path / "out")
