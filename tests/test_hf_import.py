"""`lmx import hf` against transformers itself: random Llama, Mistral and Qwen3 models give their own
logits in lmx, what lmx cannot compute is refused by name, and an imported model is a run lmx
evaluates, generates with, fine-tunes and exports again."""

import json
import shutil

import jax
import numpy as np
import pytest
from hf_support import (
    EMAIL_MESSAGE,
    byte_level_tokenizer,
    exported_tokenizer,
    hf_logits,
    lmx_logits,
    text_ids,
    torch,
    transformers,
    transformers_model,
)

from lmx.checkpoint import Checkpoints
from lmx.cli import main
from lmx.config import CheckpointConfig, Config, DataConfig, OptimConfig, TrainConfig
from lmx.data.hf_tokenizer import HFTokenizer
from lmx.data.tokenizer import SentencePieceTokenizer, load_tokenizer
from lmx.errors import CheckpointError, ConfigError
from lmx.hf import import_hf
from lmx.infer.runs import load_run

__all__ = ["exported_tokenizer", "text_ids"]  # fixtures


IMPORTS = {
    "llama-gqa-untied-theta5e5": (
        "llama",
        dict(tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
    ),
    "qwen3-mqa-tied-head32": ("qwen3", dict(num_key_value_heads=1, head_dim=32, tie_word_embeddings=True)),
    "mistral-no-window": ("mistral", dict(sliding_window=None, tie_word_embeddings=False)),
    # Llama 3's scaled RoPE, its wavelengths split among the three regimes within 520 positions.
    "llama-llama3-rope": (
        "llama",
        dict(
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 10000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            }
        ),
    ),
}


@pytest.mark.parametrize("variant", IMPORTS)
def test_imported_transformers_model_gives_its_logits_in_lmx(variant, exported_tokenizer, text_ids, tmp_path):
    kind, overrides = IMPORTS[variant]
    hf_dir = transformers_model(kind, tmp_path / "hf", exported_tokenizer, **overrides)
    run_dir = import_hf(hf_dir, tmp_path / "run", seq_len=64)
    run = load_run(run_dir, devices=jax.devices()[:1])
    assert run.step == 0 and isinstance(run.tokenizer, HFTokenizer)
    assert run.cfg.model.qk_norm == (kind == "qwen3")
    assert run.cfg.model.rope_scaling == ("llama3" if "llama3" in variant else "none")
    theirs = hf_logits(hf_dir, text_ids)
    ours = lmx_logits(run.cfg.model, run.params, text_ids)
    print(f"{variant}: max |logit difference| {np.abs(ours - theirs).max():.2e}, logit std {ours.std():.2f}")
    assert ours.std() > 0.5
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (dict(model_type="gpt2"), "model_type='gpt2'"),
        (dict(attention_bias=True), "attention_bias=True"),
        (dict(mlp_bias=True), "mlp_bias=True"),
        (dict(hidden_act="gelu"), "hidden_act='gelu'"),
        (dict(model_type="mistral", sliding_window=4096), "sliding_window=4096"),
        (dict(model_type="qwen3", use_sliding_window=True), "use_sliding_window=True"),
        (dict(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}), "rope_type='yarn'"),
        (dict(rope_scaling={"type": "linear", "factor": 2.0}), "rope_scaling.rope_type='linear'"),
        (dict(model_type="qwen3", layer_types=["full_attention", "sliding_attention"]), "layer_types="),
    ],
)
def test_import_refuses_what_lmx_cannot_compute_naming_the_key(overrides, named):
    from lmx.hf.convert import model_config_from_hf

    base = dict(
        model_type="llama",
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model_config_from_hf(base)  # the base itself imports
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace("[", r"\[")):
        model_config_from_hf({**base, **overrides})


def test_import_refusals_are_one_line_and_leave_nothing(exported_tokenizer, tmp_path, capsys):
    biased = transformers_model("llama", tmp_path / "biased", exported_tokenizer, attention_bias=True)
    capsys.readouterr()  # transformers' own progress bars
    assert main(["import", "hf", str(biased), str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "attention_bias=True" in err and not (tmp_path / "run").exists()

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    assert main(["import", "hf", str(tmp_path / "hf-none"), str(taken)]) == 2
    assert "not empty" in capsys.readouterr().err and (taken / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


# ---- an imported model through lmx: SFT, eval, generate, export again ----------------------------


def test_imported_model_fine_tunes_with_sft_evaluates_generates_and_exports_again(tmp_path, capsys):
    from lmx.data.synth import write_synth_tasks
    from lmx.train.loop import train

    hf_dir = byte_level_tokenizer(tmp_path / "hf")
    vocab = load_tokenizer(hf_dir / "tokenizer.json").vocab_size
    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.05,
        tie_word_embeddings=True,
    )
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(hf_dir)
    imported = tmp_path / "imported"
    assert main(["import", "hf", str(hf_dir), str(imported), "--seq-len", "64"]) == 0

    # The imported run is a run: evaluation and generation read it.
    assert main(["eval", str(imported), "--text", f"text:{EMAIL_MESSAGE}", "--batches", "2"]) == 0
    assert main(["generate", str(imported), "--prompt", "def ", "--max-new-tokens", "8", "--temperature", "0"]) == 0
    capsys.readouterr()

    synth = write_synth_tasks(tmp_path / "synth", train=64, heldout=16, tasks=("copy",))
    cfg = Config(
        name="sft-imported",
        model=load_run(imported, devices=jax.devices()[:1]).cfg.model,
        data=DataConfig(seq_len=64),
        optim=OptimConfig(learning_rate=3e-3, warmup_steps=1),
        train=TrainConfig(batch_size=8, steps=8),
    ).replace(
        **{
            "objective.kind": "sft",
            "objective.init_from": str(imported),
            "objective.train_files": str(synth["sft_train"]),
            "objective.eval_files": str(synth["sft_heldout"]),
            "mesh.data": 1,
            "mesh.fsdp": 1,
            "mesh.tensor": 1,
            "eval.every_steps": 0,
            "eval.final_batches": 1,
            "log.every_steps": 1,
            "log.progress": False,
        }
    )
    sft_dir = tmp_path / "sft"
    train(cfg, sft_dir, devices=jax.devices()[:1])
    losses = [
        json.loads(line)["loss"] for line in (sft_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in line
    ]
    assert len(losses) == 8 and losses[-1] < losses[0]
    assert (sft_dir / "tokenizer.json").is_file() and (sft_dir / "tokenizer_config.json").is_file()

    out = tmp_path / "sft-hf"
    assert main(["export", "hf", str(sft_dir), str(out), "--dtype", "float32"]) == 0
    run = load_run(sft_dir, devices=jax.devices()[:1])
    ids = run.tokenizer.encode(EMAIL_MESSAGE.read_text())[:128]
    np.testing.assert_allclose(hf_logits(out, ids), lmx_logits(run.cfg.model, run.params, ids), atol=1e-4, rtol=0)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert hf_tokenizer(EMAIL_MESSAGE.read_text())["input_ids"] == run.tokenizer.encode(EMAIL_MESSAGE.read_text())


def test_bfloat16_checkpoints_import_exactly(exported_tokenizer, tmp_path):
    hf_dir = transformers_model("llama", tmp_path / "hf", exported_tokenizer, dtype=torch.bfloat16)
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.bfloat16)
    run = load_run(import_hf(hf_dir, tmp_path / "run"), devices=jax.devices()[:1])
    embedding = model.model.embed_tokens.weight.detach().float().numpy()
    assert np.array_equal(np.asarray(run.params["embed"]["embedding"]), embedding)
    assert run.params["embed"]["embedding"].dtype == np.float32


def test_tokenizer_sources_a_checkpoint_may_bring(tokenizer, exported_tokenizer, tmp_path):
    """A SentencePiece tokenizer.model alone; a tokenizer.json whose special tokens are named only
    by ids in config.json (no tokenizer_config.json)."""
    sp_dir = transformers_model("llama", tmp_path / "sp", exported_tokenizer)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (sp_dir / name).unlink()
    shutil.copyfile(tokenizer.path, sp_dir / "tokenizer.model")
    run = load_run(import_hf(sp_dir, tmp_path / "sp-run"), devices=jax.devices()[:1])
    assert isinstance(run.tokenizer, SentencePieceTokenizer) and run.tokenizer.eos_id == tokenizer.eos_id

    bare = transformers_model("llama", tmp_path / "bare", exported_tokenizer, bos_token_id=2, eos_token_id=[3, 1])
    (bare / "tokenizer_config.json").unlink()
    run = load_run(import_hf(bare, tmp_path / "bare-run"), devices=jax.devices()[:1])
    assert isinstance(run.tokenizer, HFTokenizer)
    assert (run.tokenizer.bos_id, run.tokenizer.eos_id) == (2, 3)  # the first of several stop ids ends a text

    no_eos = transformers_model("llama", tmp_path / "no-eos", exported_tokenizer, eos_token_id=None)
    (no_eos / "tokenizer_config.json").unlink()
    (no_eos / "generation_config.json").unlink()
    with pytest.raises(ConfigError, match="no eos_token"):
        import_hf(no_eos, tmp_path / "no-eos-run")
    assert not (tmp_path / "no-eos-run").exists()


def test_training_does_not_resume_an_imported_checkpoint_and_leaves_it_alone(exported_tokenizer, tmp_path):
    """An import holds parameters only: resuming it as a train state is refused, nothing is moved."""
    run_dir = import_hf(transformers_model("llama", tmp_path / "hf", exported_tokenizer), tmp_path / "run")
    checkpoints = Checkpoints(run_dir / "checkpoints", CheckpointConfig())
    with pytest.raises(CheckpointError, match="holds parameters only"):
        checkpoints.restore_latest(abstract_state=None)
    checkpoints.close()
    assert (run_dir / "checkpoints" / "0").is_dir() and not (run_dir / "corrupt_checkpoints").exists()
