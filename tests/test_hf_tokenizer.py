"""Tokenizers both ways: lmx's SentencePiece model as transformers' tokenizer files gives lmx's ids
and chat template, and tokenizer.json files (lmx's own exports, byte-level BPE like Llama 3's or
Qwen's) serve behind lmx's tokenizer interface."""

import numpy as np
from hf_support import EMAIL_MESSAGE, byte_level_tokenizer, exported_tokenizer, transformers

from lmx.data.chat import ChatTemplate, Message
from lmx.data.corpus import Corpus
from lmx.data.hf_tokenizer import HFTokenizer
from lmx.data.tokenizer import load_tokenizer

__all__ = ["exported_tokenizer"]  # a fixture


def test_auto_tokenizer_gives_lmx_ids_on_the_held_out_corpus(tokenizer, exported_tokenizer):
    """Every held-out document of the built-in corpus (long indentation runs, non-ASCII text), and
    text it lacks (tab-indented code, characters outside the vocabulary): transformers' ids are
    lmx's, and decode gives the text back."""
    hf = transformers.AutoTokenizer.from_pretrained(exported_tokenizer)
    documents = [d.text for d in Corpus.parse("stdlib").documents("validation")]
    assert any(" " * 16 in d for d in documents) and any(any(ord(c) > 127 for c in d) for d in documents)
    documents += [
        "class A:\n\tdef f(self):\n\t\treturn {'tab':\t1}\n\n\n",
        "x = 1" + " " * 37 + "# far\r\n  \t  trailing   \n",
        "naïve café — 数字 🙂 ünïcode",  # byte fallback for what the vocabulary lacks
    ]
    specials = ("<s>", "</s>", "<pad>", "<unk>")
    for text in documents:
        ids = tokenizer.encode(text)
        # Hugging Face tokenizers read a special token's spelling in text as that token; lmx reads it as
        # text. With split_special_tokens they agree everywhere (docs/USER_GUIDE.md, Hugging Face).
        assert hf(text, split_special_tokens=True)["input_ids"] == ids
        if not any(s in text for s in specials):
            assert hf(text)["input_ids"] == ids
        assert hf.decode(ids) == text
    assert hf.bos_token_id == tokenizer.bos_id and hf.eos_token_id == tokenizer.eos_id
    assert hf.pad_token_id == tokenizer.pad_id


def test_exported_chat_template_renders_lmx_prompts_and_responses(tokenizer, exported_tokenizer):
    hf = transformers.AutoTokenizer.from_pretrained(exported_tokenizer)
    template = ChatTemplate(tokenizer)
    messages = [Message("system", "be brief"), Message("user", "copy 3 1 4"), Message("assistant", "3 1 4")]
    as_dicts = [{"role": m.role, "content": m.content} for m in messages]
    prompt = hf.apply_chat_template(as_dicts[:2], add_generation_prompt=True, tokenize=True, return_dict=False)
    assert list(prompt) == template.prompt_ids(messages[:2]).tolist()
    full = hf.apply_chat_template(as_dicts, tokenize=True, return_dict=False)
    expected = [*template.prompt_ids(messages[:2]).tolist(), *template.response_ids("3 1 4").tolist()]
    assert list(full) == expected
    # An earlier assistant turn inside a prompt is a closed message, as lmx renders it.
    longer = hf.apply_chat_template(
        [*as_dicts, as_dicts[1]], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert list(longer) == template.prompt_ids([*messages, messages[1]]).tolist()


def test_lmx_reads_the_exported_tokenizer_json_as_its_own(tokenizer, exported_tokenizer):
    """One interface: the tokenizer.json through `tokenizers` gives the SentencePiece model's ids,
    special ids and byte lengths (so bits per byte agree)."""
    as_json = load_tokenizer(exported_tokenizer / "tokenizer.json")
    assert isinstance(as_json, HFTokenizer)
    text = EMAIL_MESSAGE.read_text() + "\tnon-ASCII: naïve café — ünïcode\n"
    assert as_json.encode(text) == tokenizer.encode(text)
    assert as_json.decode(tokenizer.encode(text)) == text
    assert (as_json.bos_id, as_json.eos_id, as_json.pad_id) == (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id)
    assert as_json.vocab_size == tokenizer.vocab_size
    np.testing.assert_array_equal(as_json.byte_lengths(), tokenizer.byte_lengths())
    assert as_json.piece_id("<|user|>") == tokenizer.piece_id("<|user|>")


def test_byte_level_tokenizer_counts_bytes_exactly(tmp_path):
    tokenizer = load_tokenizer(byte_level_tokenizer(tmp_path) / "tokenizer.json")
    text = "def f(x):\n\treturn x  # naïve — 数字\n"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text and tokenizer.bos_id == -1
    assert int(tokenizer.byte_lengths()[ids].sum()) == len(text.encode())
    assert tokenizer.byte_lengths()[tokenizer.eos_id] == 0
    # A special token spelled in text is text, as lmx's SentencePiece models read it.
    assert tokenizer.eos_id not in tokenizer.encode("a <|endoftext|> b")
