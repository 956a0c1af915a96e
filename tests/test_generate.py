"""KV-cache generation and sampling: cache == recompute, sampling rules, sharding, bad input, CLI."""

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmx.cli import main
from lmx.config import DEFAULT_RULES, MeshConfig, ModelConfig
from lmx.decode.generate import Generator, greedy_without_cache, prefill_width
from lmx.decode.sampling import Sampling, filter_logits, sample
from lmx.errors import CheckpointError, DataError
from lmx.infer.runs import load_run
from lmx.model import Transformer, unstack_layers
from lmx.model.layers import KVCache
from lmx.parallel import make_mesh

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_seq_len=48)
# Lengths 3..19 span two prefill buckets (16 and 32); one batch of 4 rows.
PROMPTS = [[5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [3], list(range(40, 59))]
NEW = 12


@pytest.fixture(scope="module")
def model_and_params():
    model = Transformer(CFG)
    params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))["params"]
    # Sharper logits than at initialisation, so that greedy choices are far from ties.
    return model, jax.tree.map(lambda x: 8 * x, params)


def mesh_of(data, fsdp, tensor):
    return make_mesh(MeshConfig(data=data, fsdp=fsdp, tensor=tensor), jax.devices()[: data * fsdp * tensor])


@pytest.fixture(scope="module")
def reference(model_and_params):
    model, params = model_and_params
    return greedy_without_cache(model, params, PROMPTS, NEW, CFG.max_seq_len)


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 2, 2)])
def test_cached_greedy_equals_recomputing_the_full_forward(model_and_params, reference, shape):
    model, params = model_and_params
    generator = Generator(model, params, mesh_of(*shape), DEFAULT_RULES, batch_size=4, eos_id=-1)
    out = generator.generate(PROMPTS, NEW)
    assert [g.tokens for g in out] == reference
    assert all(g.finish_reason == "length" for g in out)
    assert len(set(map(tuple, reference))) == len(PROMPTS)  # rows differ: not a degenerate model
    # Another order and a second batch of one prompt padded with dummy rows, in the same prompt
    # bucket: nothing is compiled again.
    out = generator.generate(PROMPTS[::-1] + PROMPTS[3:], NEW)
    assert [g.tokens for g in out] == reference[::-1] + reference[3:]
    assert generator.traces == {"prefill": 1, "step": 1}


def test_prompt_lengths_share_power_of_two_prefill_buckets():
    assert [prefill_width(n, 8, 128) for n in (1, 16, 17, 33, 100)] == [16, 16, 32, 64, 121]


def test_decoding_with_scanned_layers_equals_unrolled(model_and_params):
    """The Generator decodes unrolled; `Transformer.decode` on the scanned model gives the same
    logits and cache (a prefill of 5 tokens, then one step)."""
    model, params = model_and_params
    unrolled = Transformer(dataclasses.replace(CFG, scan_layers=False))
    unrolled_params = unstack_layers(params, CFG.n_layers)
    tokens = jnp.asarray([[5, 6, 7, 8, 9], [0, 0, 1, 2, 3]], jnp.int32)
    segments = jnp.asarray([[1] * 5, [0, 0, 1, 1, 1]], jnp.int32)
    positions = jnp.asarray([[0, 1, 2, 3, 4], [0, 0, 0, 1, 2]], jnp.int32)
    step = (jnp.asarray([[11], [12]]), jnp.ones((2, 1), jnp.int32), jnp.asarray([[5], [3]]))
    results = []
    for m, p in ((model, params), (unrolled, unrolled_params)):
        decode = jax.jit(lambda p, *a, m=m: m.apply({"params": p}, *a, method=Transformer.decode))
        _, cache = decode(p, tokens, segments, positions, KVCache.zeros(CFG, 2, 16))
        results.append(decode(p, *step, cache))
    (logits_s, cache_s), (logits_u, cache_u) = results
    np.testing.assert_allclose(logits_s, logits_u, atol=2e-5, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(cache_s), jax.tree.leaves(cache_u), strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-5)
    assert int(cache_u.index) == 6


def test_cache_is_sharded_over_batch_and_kv_heads(model_and_params):
    model, params = model_and_params
    generator = Generator(model, params, mesh_of(2, 2, 2), DEFAULT_RULES, batch_size=4, eos_id=-1)
    cache = generator._new_cache()
    assert len(cache.k) == len(cache.v) == model.cfg.n_layers
    b, k, s, e = cache.k[0].shape
    # batch over data x fsdp (4 ways), kv heads over tensor (2 ways).
    for layer in (*cache.k, *cache.v):
        assert {shard.data.shape for shard in layer.addressable_shards} == {(b // 4, k // 2, s, e)}


def test_eos_stops_a_row_and_is_not_returned(model_and_params, reference):
    model, params = model_and_params
    eos = reference[0][4]  # the fifth token row 0 generates
    out = Generator(model, params, mesh_of(1, 1, 1), DEFAULT_RULES, 4, eos_id=eos).generate(PROMPTS, NEW)
    first = reference[0].index(eos)
    assert out[0].tokens == reference[0][:first] and out[0].finish_reason == "eos"


@pytest.fixture(scope="module")
def generator(model_and_params):
    model, params = model_and_params
    return Generator(model, params, mesh_of(2, 2, 2), DEFAULT_RULES, batch_size=4, eos_id=-1)


def test_zero_temperature_and_top_k_one_equal_greedy(generator, reference):
    for sampling in (Sampling(temperature=1e-6, seed=1), Sampling(temperature=1.5, top_k=1, seed=2)):
        assert [g.tokens for g in generator.generate(PROMPTS, NEW, sampling)] == reference


def test_a_seed_reproduces_a_sample_and_another_seed_differs(generator, reference):
    def draw(seed):
        return [g.tokens for g in generator.generate(PROMPTS, NEW, Sampling(temperature=1.0, seed=seed))]

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)
    assert draw(3) != reference


def test_top_p_never_samples_outside_the_nucleus():
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    logits = jnp.log(jnp.asarray(np.tile(probs, (20_000, 1)), jnp.float32))
    args = {"temperature": jnp.float32(1.0), "top_k": jnp.int32(0)}
    drawn = np.asarray(sample(logits, jax.random.key(0), top_p=jnp.float32(0.7), **args))
    # 0.5 < 0.7 <= 0.5 + 0.3: the nucleus is {0, 1}, renormalised to 0.625 / 0.375.
    assert set(np.unique(drawn)) == {0, 1}
    assert np.mean(drawn == 0) == pytest.approx(0.625, abs=0.015)
    drawn = np.asarray(sample(logits, jax.random.key(1), top_p=jnp.float32(0.5), **args))
    assert set(np.unique(drawn)) == {0}  # the first token alone reaches 0.5
    kept = filter_logits(logits[:1], jnp.int32(3), jnp.float32(0.99))
    assert np.isfinite(np.asarray(kept)[0]).tolist() == [True, True, True, False]


def test_bad_prompts_fail_clearly(generator):
    with pytest.raises(DataError, match="prompt 1: empty prompt"):
        generator.generate([[1, 2], []], 4)
    too_long = r"prompt 0: 45 prompt tokens \+ max_new_tokens 4 exceed the model's context of 48"
    with pytest.raises(DataError, match=too_long):
        generator.generate([list(range(45))], 4)
    with pytest.raises(DataError, match="f.txt:3: empty"):
        generator.generate([[1], [2], []], 4, names=["f.txt:1", "f.txt:2", "f.txt:3"])


def test_run_directory_without_a_checkpoint_fails_clearly(full_run, tmp_path, capsys):
    _, run_dir, _ = full_run
    (tmp_path / "config.json").write_text((run_dir / "config.json").read_text())
    with pytest.raises(CheckpointError, match="no checkpoint to load"):
        load_run(tmp_path)
    assert main(["generate", str(tmp_path), "--prompt", "x"]) == 2
    assert "no checkpoint to load" in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()  # nothing was created


def test_generate_command_streams_one_prompt_and_batches_a_file(full_run, tmp_path, capsys):
    _, run_dir, _ = full_run
    args = ["generate", str(run_dir), "--max-new-tokens", "8", "--temperature", "0"]
    assert main([*args, "--prompt", "def main("]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("def main(") and "tokens, stopped by" in captured.err
    run = load_run(run_dir)
    prompts = ["def main(", "import os\n", "class A:"]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    assert main([*args, "--prompts-file", str(tmp_path / "p.jsonl"), "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    greedy = greedy_without_cache(
        run.model, run.params, run.tokenizer.encode_batch(prompts), 8, run.cfg.model.max_seq_len
    )
    for prompt, tokens in zip(prompts, greedy, strict=True):
        # The CLI's greedy text is the recompute reference's (EOS, if any, ends it early).
        eos = tokens.index(run.tokenizer.eos_id) if run.tokenizer.eos_id in tokens else len(tokens)
        assert prompt + run.tokenizer.decode(tokens[:eos]) in out
    (tmp_path / "bad.txt").write_text("hello\n\nworld\n")
    assert main([*args, "--prompts-file", str(tmp_path / "bad.txt")]) == 2
    assert "bad.txt:2: empty prompt" in capsys.readouterr().err


def test_generate_refuses_a_reward_model_and_shows_its_defaults(full_run, tmp_path, capsys):
    import shutil

    _, run_dir, _ = full_run
    rm_dir = tmp_path / "rm"
    shutil.copytree(run_dir, rm_dir)
    cfg = json.loads((rm_dir / "config.json").read_text())
    cfg["objective"] = {"kind": "reward_model", "train_files": "pairs.jsonl", "init_from": str(run_dir)}
    (rm_dir / "config.json").write_text(json.dumps(cfg))
    assert main(["generate", str(rm_dir), "--prompt", "def "]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "objective.kind='reward_model' is not a language model" in err
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = capsys.readouterr().out
    assert "(default: 64)" in out and "(default: 1.0)" in out
    flat = " ".join(out.split())  # the chat flag's default follows the run: its help says so, no "None"
    assert "--chat, --no-chat render each prompt" in flat and "off for pretraining) --max-new-tokens" in flat


def test_chat_mode_on_a_pretraining_run_answers_through_the_template_with_a_note(full_run, tmp_path, capsys):
    """`--chat` is off by default for a pretraining run (the CLI test above continues raw text); asked
    for, it renders each prompt as `lmx eval --responses` does and prints the answers alone."""
    from lmx.data.chat import ChatTemplate, Message
    from lmx.infer.chat_eval import AnswerItem, exact_match

    _, run_dir, _ = full_run
    records = [
        {"prompt": "def main("},
        {"system": "Answer in Python.", "prompt": "import os"},
        {"messages": [{"role": "user", "content": "class A:"}, {"role": "assistant", "content": "pass"}]},
    ]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    args = ["generate", str(run_dir), "--chat", "--max-new-tokens", "8", "--temperature", "0", "--batch-size", "3"]
    assert main([*args, "--prompts-file", str(path)]) == 0
    captured = capsys.readouterr()
    assert "was not trained on the chat template (objective.kind='pretrain')" in captured.err
    conversations = [
        [Message("user", "def main(")],
        [Message("system", "Answer in Python."), Message("user", "import os")],
        [Message("user", "class A:")],  # the trailing assistant message is a reference answer: left out
    ]
    run = load_run(run_dir)
    template = ChatTemplate(run.require_tokenizer())
    generator = Generator(run.model, run.params, run.mesh, run.cfg.mesh.rules, 3, template.eos_id, template.pad_id)
    items = [AnswerItem(f"{path}:{i + 1}", c, "unused", "") for i, c in enumerate(conversations)]
    expected = exact_match(generator, template, items, 8).predictions
    blocks = captured.out.split("=== ")[1:]
    assert len(blocks) == 3
    for block, item, prediction in zip(blocks, items, expected, strict=True):
        header, body = block.split("\n", 1)
        assert header.startswith(f"{item.where} (")
        turns = [f"[{m.role}] {m.content}" for m in item.messages]
        assert body == "\n".join([*turns, f"[assistant] {prediction['answer']}"]) + "\n"
    assert "<|" not in captured.out  # no template tokens in what is printed
    (tmp_path / "empty.txt").write_text("a\n\n")
    assert main([*args, "--prompts-file", str(tmp_path / "empty.txt")]) == 2
    assert "empty.txt:2: empty prompt" in capsys.readouterr().err
