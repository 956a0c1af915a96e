"""Post-training learns: pretrain -> SFT -> DPO, and a reward model, on the generated tasks.

The chain starts from the conftest's 30-step pretrained run (its model and tokenizer) and trains on
one device (an 8-device pmap-style run of the same steps is covered by tests/test_objectives.py).
Answers are decoded greedily with the KV cache and compared with the references.

SFT trains on all four tasks. The preference tests judge pairs of copy, reverse and sort: a model
this small (2 layers, 64 wide) does not learn to add in the test's budget (SFT exact match on add
0.16), so neither DPO's implicit reward nor a reward model tells a right sum from a wrong one well
(add 0.60 and 0.42); with add in the mix, DPO's held-out accuracy sat at the 0.9 threshold (0.89)
and the reward model's below it (docs/USER_GUIDE.md, Post-training, has the per-task figures).
"""

import json

import pytest
from post_support import post_config

from lmx.cli import main
from lmx.data.chat import ChatTemplate, Message
from lmx.data.synth import prompts_in, write_synth_tasks
from lmx.decode.generate import Generator
from lmx.infer.chat_eval import AnswerItem, evaluate_pairs_run, exact_match, exact_match_run
from lmx.infer.runs import load_run
from lmx.train.loop import train

pytestmark = pytest.mark.slow

JUDGED_TASKS = ("copy", "reverse", "sort")


@pytest.fixture(scope="module")
def judged(synth, tmp_path_factory):
    """Preference pairs of JUDGED_TASKS whose prompts the SFT model never saw, held-out or not."""
    seen = prompts_in([str(synth["sft_train"]), str(synth["sft_heldout"])])
    out = tmp_path_factory.mktemp("judged")
    # 600 held-out pairs: one standard error of an accuracy near 0.95 is then 0.009.
    return write_synth_tasks(out, train=6000, heldout=600, tasks=JUDGED_TASKS, seed=1, exclude=seen)


def test_sft_answers_held_out_prompts_the_pretrained_model_cannot(full_run, sft_run, synth, cpu_devices):
    _, pretrain_dir, _ = full_run
    _, before = exact_match_run(pretrain_dir, str(synth["sft_heldout"]))  # on its (2, 2, 2) mesh
    _, after = exact_match_run(sft_run, str(synth["sft_heldout"]), devices=cpu_devices[:1])
    print(f"exact match: pretrained {before.accuracy:.3f}, after SFT {after.accuracy:.3f} {after.per_task}")
    assert before.accuracy < 0.05
    assert after.accuracy > 0.6
    assert after.items == 200 and set(after.per_task) == {"copy", "reverse", "sort", "add"}
    # Evaluation rows say what they count, and name no z-loss when the run has none.
    final = json.loads((sft_run / "summary.json").read_text())["final_eval"]
    assert "eval/response_tokens" in final and "eval/examples" not in final and "eval/z_loss" not in final


def test_generate_answers_an_sft_run_through_the_chat_template(sft_run, capsys, cpu_devices):
    """`lmx generate` on an SFT run renders the prompt as a user turn of the chat template by default
    and prints the answer alone: `lmx eval --responses`'s greedy answer to the same prompt. With
    --no-chat it continues the raw text instead."""
    prompt = "copy 3 1 4"  # lmx.data.synth's copy task
    assert main(["generate", str(sft_run), "--prompt", prompt, "--temperature", "0"]) == 0
    chat = capsys.readouterr()
    assert "not trained on the chat template" not in chat.err and "stopped by eos" in chat.err
    run = load_run(sft_run, devices=cpu_devices[:1])
    template = ChatTemplate(run.require_tokenizer())
    generator = Generator(run.model, run.params, run.mesh, run.cfg.mesh.rules, 1, template.eos_id, template.pad_id)
    item = AnswerItem("--prompt", [Message("user", prompt)], "3 1 4", "copy")
    # The budget the command uses (its default 64, lowered to what the 64-token context leaves), so
    # that both decode the same padded batch.
    budget = run.cfg.model.max_seq_len - len(template.prompt_ids(item.messages))
    (expected,) = exact_match(generator, template, [item], budget).predictions
    assert chat.out == expected["answer"] + "\n"
    assert expected["correct"]  # the SFT model answers its easiest task (copy: near 1.0 held out)

    assert main(["generate", str(sft_run), "--prompt", prompt, "--temperature", "0", "--no-chat"]) == 0
    raw = capsys.readouterr().out
    raw_ids = template.tokenizer.encode(prompt)
    (continuation,) = generator.generate([raw_ids], run.cfg.model.max_seq_len - len(raw_ids))
    print(f"chat answer {chat.out!r}, exact match's {expected['answer']!r}, raw continuation {raw!r}")
    assert raw == prompt + template.tokenizer.decode(continuation.tokens) + "\n" and raw != chat.out


def test_dpo_separates_held_out_pairs_and_the_margin_grows(full_run, sft_run, judged, tmp_path, cpu_devices):
    pretrain_cfg, _, _ = full_run
    # Batch 16 (measured 2026-12-04, outside pytest): held-out margins 1.85, 3.11, 3.76, 4.26 at
    # steps 150-600 and accuracy 0.984 -> 1.0, in 16 s of training; batch 32 gave 2.20 -> 4.96 in 33 s.
    cfg = post_config(
        pretrain_cfg, "preference", sft_run, "preference", judged, steps=600, lr=1e-3, **{"train.batch_size": 16}
    )
    result = train(cfg, tmp_path, devices=cpu_devices[:1])
    evals = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    margins = [row["eval/margin"] for row in evals if "eval/margin" in row]
    final = result.summary["final_eval"]
    print(f"DPO held-out: reward accuracy {final['eval/reward_accuracy']:.3f}, margins {margins}")
    assert final["eval/pairs"] == 600
    assert final["eval/reward_accuracy"] > 0.9
    assert margins[0] > 0 and margins[-1] > 1.5 * margins[0]
    # Scored again outside training, with the run's reference reloaded from init_from: the same.
    _, metrics = evaluate_pairs_run(tmp_path, str(judged["preference_heldout"]), devices=cpu_devices[:1])
    assert metrics["reward_accuracy"] == pytest.approx(final["eval/reward_accuracy"], abs=1e-6)


def test_reward_model_ranks_held_out_pairs(full_run, sft_run, judged, tmp_path, cpu_devices):
    """Issue 5's target: > 0.9 held-out pairwise accuracy. Measured 2026-12-03: 2,000 steps at
    2e-3 gave 0.928 (train.seed 0, used here) and 0.927 (seed 3) in 78 s; 1,200 steps gave 0.893-0.947
    over seeds 0-2, and 4,000 steps at 1e-3 (this test until then, 230 s in CI) 0.947-0.98."""
    pretrain_cfg, _, _ = full_run
    cfg = post_config(pretrain_cfg, "reward_model", sft_run, "preference", judged, steps=2000, lr=2e-3)
    train(cfg, tmp_path, devices=cpu_devices[:1])
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_losses = [row["loss"] for row in rows if "loss" in row]
    assert train_losses[-1] < 0.5 * train_losses[0]  # from about log 2
    assert main(["eval", str(tmp_path), "--pairs", str(judged["preference_heldout"])]) == 0
    metrics = json.loads(next(tmp_path.glob("eval-pairs-*.json")).read_text())
    print(f"reward model held-out pairwise accuracy {metrics['accuracy']:.3f}")
    assert metrics["pairs"] == 600
    assert metrics["accuracy"] > 0.9
