"""lmx's tokenizers as Hugging Face tokenizer files, and lmx's chat template as Jinja.

A SentencePiece model becomes a ``tokenizer.json`` built with the `tokenizers` library so that
`AutoTokenizer` gives lmx's exact ids (tests/test_hf.py checks it on the built-in corpus):

- the same vocabulary and ids; BPE merges derived from the vocabulary, ranked by the merged piece's
  score, which is how SentencePiece's BPE chooses (it merges the best-scoring adjacent pair first);
  a unigram model keeps its pieces' scores;
- SentencePiece's normalisation as lmx trains it: identity (no NFKC), spaces written as U+2581, no
  dummy prefix, no whitespace collapsing; the user-defined symbols (newline, chat roles) as added
  tokens matched before the model, as SentencePiece matches them; byte fallback for the rest;
- control symbols (pad, bos, eos) and unk as special tokens; no BOS or EOS added when encoding,
  as `lmx.data.tokenizer` encodes.

The ``tokenizer.model`` goes along too, for tools that read SentencePiece directly.
"""

from __future__ import annotations

import json
from typing import Any

from lmx.data.tokenizer import CHAT_SYMBOLS, SentencePieceTokenizer, Tokenizer
from lmx.errors import ConfigError, DataError

# SentencePiece's ModelProto piece types and model types (sentencepiece_model.proto).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED = 1, 2, 3, 4
UNIGRAM, BPE = 1, 2
SPACE = "\u2581"

# lmx's chat template (lmx.data.chat): every message is <|role|> content <|end|>, the prompt ends with
# <|assistant|>, and a final assistant message (the response trained on) ends with EOS instead.
CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{% if loop.last and message['role'] == 'assistant' and not add_generation_prompt %}"
    "{{ '<|assistant|>' + message['content'] + eos_token }}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def _model_proto(tokenizer: SentencePieceTokenizer) -> Any:
    from sentencepiece import sentencepiece_model_pb2  # protobuf: installed with wandb

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(tokenizer.proto)
    return proto


def model_type(tokenizer: SentencePieceTokenizer) -> int:
    """BPE or UNIGRAM."""
    return _model_proto(tokenizer).trainer_spec.model_type


def _check_normalizer(proto: Any, where: str) -> None:
    spec = proto.normalizer_spec
    if spec.name not in ("identity", "") or spec.precompiled_charsmap:
        raise ConfigError(f"{where}: normalization rule {spec.name!r}: only identity (lmx's) exports exactly")
    if spec.remove_extra_whitespaces:
        raise ConfigError(f"{where}: remove_extra_whitespaces=true: only lmx's setting (false) exports exactly")


def tokenizer_json(tokenizer: SentencePieceTokenizer) -> str:
    """The ``tokenizer.json`` text that encodes as `tokenizer` does."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

    where = str(tokenizer.path or "tokenizer")
    proto = _model_proto(tokenizer)
    _check_normalizer(proto, where)
    pieces = [(p.piece, p.score, p.type) for p in proto.pieces]
    vocab = {piece: i for i, (piece, _, _) in enumerate(pieces)}
    unk = next(piece for piece, _, kind in pieces if kind == UNKNOWN)
    byte_fallback = proto.trainer_spec.byte_fallback
    if proto.trainer_spec.model_type == BPE:
        merges = []
        for piece, score, kind in pieces:
            if kind != NORMAL or len(piece) < 2:
                continue
            for cut in range(1, len(piece)):
                left, right = piece[:cut], piece[cut:]
                if left in vocab and right in vocab:
                    merges.append((-score, vocab[left], vocab[right], left, right))
        merges.sort()
        model = models.BPE(
            vocab=vocab,
            merges=[(left, right) for *_, left, right in merges],
            unk_token=unk,
            byte_fallback=byte_fallback,
            fuse_unk=True,
        )
    elif proto.trainer_spec.model_type == UNIGRAM:
        model = models.Unigram([(piece, score) for piece, score, _ in pieces], vocab[unk], byte_fallback)
    else:
        raise ConfigError(
            f"{where}: SentencePiece model type {proto.trainer_spec.model_type}: lmx exports bpe and unigram"
        )
    backend = Tokenizer(model)
    steps = [normalizers.Replace(" ", SPACE)] if proto.normalizer_spec.escape_whitespaces else []
    decode = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if proto.normalizer_spec.add_dummy_prefix:
        steps.insert(0, normalizers.Prepend(SPACE))
        decode.append(decoders.Strip(" ", 1, 0))
    if steps:
        backend.normalizer = normalizers.Sequence(steps)
    backend.decoder = decoders.Sequence(decode)
    # In id order, so each keeps its id.
    for piece, _, kind in pieces:
        if kind in (CONTROL, UNKNOWN):
            backend.add_special_tokens([AddedToken(piece, special=True, normalized=False)])
        elif kind == USER_DEFINED:
            backend.add_tokens([AddedToken(piece, special=False, normalized=False)])
    return backend.to_str(pretty=True)


def tokenizer_config(tokenizer: SentencePieceTokenizer, max_length: int) -> dict[str, Any]:
    """``tokenizer_config.json``: the special tokens by name, no BOS/EOS added on encoding, and lmx's
    chat template (when the vocabulary has its role symbols)."""
    sp = tokenizer.sp

    def name(i: int) -> str | None:
        return sp.id_to_piece(i) if i >= 0 else None

    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": name(tokenizer.bos_id),
        "eos_token": name(tokenizer.eos_id),
        "pad_token": name(tokenizer.pad_id),
        "unk_token": name(sp.unk_id()),
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": max_length,
    }
    if has_chat_roles(tokenizer):
        config["chat_template"] = CHAT_TEMPLATE
    return config


def has_chat_roles(tokenizer: Tokenizer) -> bool:
    """Whether the vocabulary has lmx's chat role symbols as single tokens."""
    try:
        for symbol in CHAT_SYMBOLS:
            tokenizer.piece_id(symbol)
    except DataError:
        return False
    return True


def write_tokenizer_files(tokenizer: SentencePieceTokenizer, out_dir: Any, max_length: int) -> list[str]:
    """Writes tokenizer.json, tokenizer_config.json, special_tokens_map.json and tokenizer.model into
    `out_dir`; returns their names."""
    config = tokenizer_config(tokenizer, max_length)
    special = {k: config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if config[k]}
    files = {
        "tokenizer.json": tokenizer_json(tokenizer),
        "tokenizer_config.json": json.dumps(config, indent=2) + "\n",
        "special_tokens_map.json": json.dumps(special, indent=2) + "\n",
    }
    for file, text in files.items():
        (out_dir / file).write_text(text, encoding="utf-8")
    (out_dir / "tokenizer.model").write_bytes(tokenizer.proto)
    return [*files, "tokenizer.model"]
