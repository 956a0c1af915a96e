"""SFT and preference data: the chat template, loss masks, shared prompts, truncation, bad input."""

import codecs
import json

import numpy as np
import pytest

from lmx.data.chat import ChatTemplate, Message, jsonl_records
from lmx.data.preference import preference_batches, read_preference
from lmx.data.sft import read_sft, sft_batches
from lmx.errors import DataError

SEQ = 48


@pytest.fixture(scope="module")
def template(tokenizer):
    return ChatTemplate(tokenizer)


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


SFT_RECORDS = [
    {"prompt": "Add two numbers.", "response": "def add(a, b):\n    return a + b"},
    {"system": "Be brief.", "prompt": "Name a list method.", "response": "append"},
    {
        "messages": [
            {"role": "user", "content": "Say hi."},
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "Again, louder."},
            {"role": "assistant", "content": "HI!"},
        ]
    },
    {"prompt": "x" * 20, "response": "word " * 60},  # longer than SEQ
]


def test_template_renders_roles_as_single_tokens(template, tokenizer):
    ids = template.prompt_ids([Message("system", "Be brief."), Message("user", "hi")])
    sym = template.role_ids
    assert ids[0] == tokenizer.bos_id and ids[1] == sym["system"] and ids[-1] == sym["assistant"]
    assert list(ids).count(template.end_id) == 2
    assert tokenizer.decode(ids[2 : list(ids).index(template.end_id)]) == "Be brief."
    assert template.response_ids("ok")[-1] == tokenizer.eos_id


def test_sft_mask_is_one_exactly_on_response_and_eos(template, tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "sft.jsonl", SFT_RECORDS[:3])
    examples, stats = read_sft(path, template, SEQ)
    assert stats.kept == 3 and stats.dropped == stats.truncated == 0
    texts = ["def add(a, b):\n    return a + b", "append", "HI!"]
    for example, text in zip(examples, texts, strict=True):
        batch = next(iter(sft_batches([example], SEQ, 1, seed=0, shuffle=False)))
        mask, targets = batch["loss_mask"][0], batch["targets"][0]
        trained = targets[mask == 1]
        assert trained[-1] == tokenizer.eos_id
        assert tokenizer.decode(trained[:-1]) == text
        assert mask.sum() == len(tokenizer.encode(text)) + 1
        # Every prompt token is an input, never a trained target; padding has segment id 0.
        n = len(example.prompt) + len(example.response) - 1
        assert (batch["segment_ids"][0][:n] == 1).all() and (batch["segment_ids"][0][n:] == 0).all()
        assert (batch["inputs"][0][: len(example.prompt)] == example.prompt).all()
    # The multi-turn record: earlier assistant turns are prompt, not trained on.
    assert tokenizer.decode(examples[2].prompt).count("hi") == 2


def test_truncation_policies_are_counted(template, tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "sft.jsonl", SFT_RECORDS)
    _, dropped = read_sft(path, template, SEQ, "drop")
    assert (dropped.kept, dropped.dropped, dropped.truncated) == (3, 1, 0)
    examples, truncated = read_sft(path, template, SEQ, "truncate")
    assert (truncated.kept, truncated.dropped, truncated.truncated) == (4, 0, 1)
    long = examples[-1]
    assert len(long.prompt) + len(long.response) == SEQ + 1
    assert long.response[-1] != tokenizer.eos_id  # cut short: no EOS to learn from
    batch = next(iter(sft_batches([long], SEQ, 1, seed=0, shuffle=False)))
    assert batch["loss_mask"][0].sum() == len(long.response)


def test_preference_pairs_share_the_prompt_tokens(template, tokenizer, tmp_path):
    records = [
        {"prompt": "Sort a list.", "chosen": "sorted(xs)", "rejected": "xs.sort() returns None"},
        {
            "messages": [{"role": "system", "content": "Python only."}, {"role": "user", "content": "Reverse."}],
            "chosen": "xs[::-1]",
            "rejected": "reverse it",
        },
    ]
    pairs, stats = read_preference(write_jsonl(tmp_path / "p.jsonl", records), template, SEQ)
    assert stats.kept == 2
    batch = next(iter(preference_batches(pairs, SEQ, 2, seed=0, shuffle=False)))
    for row, (pair, record) in enumerate(zip(pairs, records, strict=True)):
        p = int(batch["prompt_length"][row])
        assert p == len(pair.prompt)
        np.testing.assert_array_equal(batch["chosen_inputs"][row][:p], batch["rejected_inputs"][row][:p])
        np.testing.assert_array_equal(batch["chosen_inputs"][row][:p], pair.prompt)
        for side in ("chosen", "rejected"):
            mask, targets = batch[f"{side}_loss_mask"][row], batch[f"{side}_targets"][row]
            assert tokenizer.decode(targets[mask == 1][:-1]) == record[side]
            assert (mask[: p - 1] == 0).all()


def test_batches_have_one_shape_and_follow_the_seed(template, tmp_path):
    records = [{"prompt": f"q{i}", "response": "a" * (i % 5 + 1)} for i in range(12)]
    examples, _ = read_sft(write_jsonl(tmp_path / "s.jsonl", records), template, SEQ)

    def first_epoch(seed):
        it = iter(sft_batches(examples, SEQ, 4, seed=seed, epochs=1))
        return [b["inputs"] for b in it]

    a, b, c = first_epoch(1), first_epoch(1), first_epoch(2)
    assert len(a) == 3 and all(x.shape == (4, SEQ) for x in a)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert any((x != y).any() for x, y in zip(a, c, strict=True))
    # Every example appears once per epoch.
    rows = {tuple(r) for batch in a for r in batch}
    assert len(rows) == 12


@pytest.mark.parametrize(
    ("line", "reader", "message"),
    [
        ('{"prompt": "a", "response": "b"', read_sft, r"bad.jsonl:2: malformed JSON"),
        ('{"prompt": "a"}', read_sft, r"bad.jsonl:2: missing field 'response'"),
        ('{"response": "a"}', read_sft, r"bad.jsonl:2: missing field 'prompt' or 'messages'"),
        ('{"prompt": 3, "response": "a"}', read_sft, r"bad.jsonl:2: field 'prompt' must be a string"),
        ("[1, 2]", read_sft, r"bad.jsonl:2: expected a JSON object"),
        ('{"messages": [{"role": "bot", "content": "x"}]}', read_sft, r"bad.jsonl:2: messages\[0\]: role 'bot'"),
        ('{"messages": [{"role": "user", "content": "x"}]}', read_sft, r"bad.jsonl:2: the last message must be"),
        ('{"prompt": "a", "chosen": "b"}', read_preference, r"bad.jsonl:2: missing field 'rejected'"),
        ('{"prompt": "a", "response": " "}', read_sft, r"bad.jsonl:2: field 'response' is empty"),
        (
            '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]}',
            read_sft,
            r"bad.jsonl:2: the assistant's response is empty",
        ),
        ('{"prompt": "a", "chosen": "", "rejected": "b"}', read_preference, r"bad.jsonl:2: field 'chosen' is empty"),
        (
            '{"prompt": "a", "chosen": "b", "rejected": "b"}',
            read_preference,
            r"bad.jsonl:2: 'chosen' and 'rejected' are",
        ),
    ],
)
def test_bad_records_name_file_and_line(template, tmp_path, line, reader, message):
    good = {"prompt": "q", "response": "a", "chosen": "a", "rejected": "b"}
    path = write_jsonl(tmp_path / "bad.jsonl", [good, line])
    with pytest.raises(DataError, match=message):
        reader(path, template, SEQ)


def test_no_usable_examples_and_missing_files(template, tmp_path):
    path = write_jsonl(tmp_path / "long.jsonl", [SFT_RECORDS[-1]])
    with pytest.raises(DataError, match="no usable SFT examples"):
        read_sft(path, template, SEQ, "drop")
    with pytest.raises(DataError, match="matches no files"):
        read_sft(str(tmp_path / "none*.jsonl"), template, SEQ)


def test_a_tokenizer_without_chat_symbols_is_refused(tmp_path):
    from lmx.data.tokenizer import train_tokenizer

    texts = [f"line {i} of plain text\n" * 20 for i in range(50)]
    plain = train_tokenizer(texts, tmp_path / "plain.model", vocab_size=300, user_symbols=())
    with pytest.raises(DataError, match="chat role symbols"):
        ChatTemplate(plain)


def test_a_prompt_longer_than_the_context_is_dropped_or_cut_and_counted(template, tmp_path):
    long_prompt = "word " * 200
    records = [
        {"prompt": "q", "chosen": "yes", "rejected": "no"},
        {"prompt": long_prompt, "chosen": "yes", "rejected": "no"},
        {"prompt": "q2", "chosen": "a " * 200, "rejected": "no"},
    ]
    path = write_jsonl(tmp_path / "p.jsonl", records)
    pairs, stats = read_preference(path, template, SEQ, "drop")
    assert (stats.records, stats.kept, stats.dropped, stats.truncated) == (3, 1, 2, 0)
    # Truncation can shorten a response, never a prompt: the long prompt is still dropped.
    pairs, stats = read_preference(path, template, SEQ, "truncate")
    assert (stats.kept, stats.dropped, stats.truncated) == (2, 1, 1)
    assert all(len(p.prompt) + len(p.chosen) <= SEQ + 1 for p in pairs)


def test_a_token_limit_of_seq_len_keeps_room_for_a_reward_models_whole_sequence(template, tmp_path):
    """A language model's row holds seq_len + 1 tokens (seq_len predictions); a reward model reads
    every token of prompt + response, so its pairs must fit in seq_len."""
    prompt = template.prompt_ids([Message("user", "q")])
    chosen = "a " * 60
    while len(prompt) + len(template.response_ids(chosen)) > SEQ + 1:
        chosen = chosen[:-2]
    assert len(prompt) + len(template.response_ids(chosen)) == SEQ + 1  # fills a language model's row
    records = [{"prompt": "q", "chosen": chosen, "rejected": "b"}, {"prompt": "q", "chosen": "c", "rejected": "d"}]
    path = write_jsonl(tmp_path / "p.jsonl", records)
    assert read_preference(path, template, SEQ)[1].kept == 2
    pairs, stats = read_preference(path, template, SEQ, "drop", max_tokens=SEQ)
    assert (stats.kept, stats.dropped) == (1, 1) and len(pairs[0].chosen) == 2  # "c" and EOS
    pairs, stats = read_preference(path, template, SEQ, "truncate", max_tokens=SEQ)
    assert (stats.kept, stats.truncated) == (2, 1)
    assert len(pairs[0].prompt) + len(pairs[0].chosen) == SEQ


def test_jsonl_in_any_encoding_a_user_hands_over(tmp_path):
    record = {"prompt": "a\u2028b", "response": "c"}  # U+2028 inside a string is not a line break
    line = json.dumps(record, ensure_ascii=False) + "\n"
    for name, data in {
        "utf8.jsonl": line.encode(),
        "bom.jsonl": codecs.BOM_UTF8 + line.encode(),
        "utf16.jsonl": line.encode("utf-16"),
    }.items():
        (tmp_path / name).write_bytes(data)
        assert [r for _, r in jsonl_records(str(tmp_path / name))] == [record], name
    (tmp_path / "binary.jsonl").write_bytes(line.encode() + b"\x80\x81\n")
    with pytest.raises(DataError, match=r"binary.jsonl:2: not UTF-8/UTF-16 text"):
        list(jsonl_records(str(tmp_path / "binary.jsonl")))
