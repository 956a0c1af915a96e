"""Corpus readers, tokenizer, prepare, and the Grain pretraining pipeline."""

import json

import numpy as np
import pytest

from lmx.data.corpus import Corpus, CorpusStats, split_of
from lmx.data.prepare import load_split, prepare, read_meta, token_dtype
from lmx.data.pretrain import TokenWindows, pretrain_batches, window_order
from lmx.data.tokenizer import SentencePieceTokenizer, train_tokenizer
from lmx.errors import DataError

SEQ = 32


@pytest.fixture(scope="session")
def code_corpus(tmp_path_factory):
    """60 small Python-like files (one of them not valid UTF-8, one empty)."""
    root = tmp_path_factory.mktemp("code")
    for i in range(60):
        body = "".join(f"    x_{j} = {i * j}  # line {j}\n" for j in range(i % 7 + 3))
        (root / f"mod_{i:02d}.py").write_text(f"def f_{i}(a, b):\n{body}    return a\t+ b\n\n")
    (root / "latin1.py").write_bytes(b"# caf\xe9\nprint('ok')\n")
    (root / "empty.py").write_text("")
    return Corpus.parse(f"text:{root}/*.py", validation_fraction=0.2)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, code_corpus, tokenizer):
    out = tmp_path_factory.mktemp("prepared")
    prepare(code_corpus, tokenizer, out)
    return out


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_same_seed_same_batches_other_seed_other_order(prepared):
    first = take(iter(pretrain_batches(prepared, "train", SEQ, 4, seed=1)), 5)
    again = take(iter(pretrain_batches(prepared, "train", SEQ, 4, seed=1)), 5)
    other = take(iter(pretrain_batches(prepared, "train", SEQ, 4, seed=2)), 5)
    assert_batches_equal(first, again)
    assert not all(np.array_equal(a["inputs"], b["inputs"]) for a, b in zip(first, other, strict=True))


def test_each_epoch_covers_every_window_once_in_a_new_order():
    n = 37
    order = list(window_order(n, seed=3)[: 2 * n])
    epoch1, epoch2 = order[:n], order[n:]
    assert sorted(epoch1) == list(range(n)) and sorted(epoch2) == list(range(n))
    assert epoch1 != epoch2  # reshuffled


def test_the_global_batch_is_the_same_however_many_processes_read_it(prepared):
    """Each process reads its rows (`rows`) of every global batch: together they are exactly the
    one-process batch, row for row, at every step."""
    whole = take(iter(pretrain_batches(prepared, "train", SEQ, 8, seed=4)), 6)
    for processes in (2, 4):
        per = 8 // processes
        parts = [
            take(iter(pretrain_batches(prepared, "train", SEQ, 8, seed=4, rows=(p * per, (p + 1) * per))), 6)
            for p in range(processes)
        ]
        joined = [{k: np.concatenate([part[s][k] for part in parts]) for k in whole[s]} for s in range(6)]
        assert_batches_equal(joined, whole)


def test_reading_from_a_step_is_reading_from_the_start_and_skipping_to_it(prepared):
    """A resumed run needs no saved iterator state: the step says where the data resumes."""
    uninterrupted = take(iter(pretrain_batches(prepared, "train", SEQ, 4, seed=7)), 12)
    resumed = take(iter(pretrain_batches(prepared, "train", SEQ, 4, seed=7, start_step=7)), 5)
    assert_batches_equal(resumed, uninterrupted[7:12])
    second_half = take(iter(pretrain_batches(prepared, "train", SEQ, 4, seed=7, rows=(2, 4), start_step=7)), 5)
    assert_batches_equal(second_half, [{k: v[2:] for k, v in b.items()} for b in uninterrupted[7:12]])


def test_decoding_a_document_gives_back_its_source_byte_for_byte(tokenizer, tmp_path):
    stdlib = Corpus.parse("stdlib", validation_fraction=0.02)
    docs = [d for d, _ in zip(stdlib.documents("validation"), range(12), strict=False)]
    texts = [d.text for d in docs]
    for text, ids in zip(texts, tokenizer.encode_batch(texts), strict=True):
        assert tokenizer.decode(ids).encode("utf-8") == text.encode("utf-8")


def test_prepared_documents_round_trip(prepared, code_corpus, tokenizer):
    tokens, offsets, meta = load_split(prepared, "train")
    docs = list(code_corpus.documents("train"))
    assert len(offsets) == len(docs) + 1 == meta["splits"]["train"]["documents"] + 1
    for i in (0, len(docs) // 2, len(docs) - 1):
        ids = tokens[offsets[i] : offsets[i + 1]]
        assert ids[-1] == tokenizer.eos_id
        assert tokenizer.decode(ids[:-1].tolist()) == docs[i].text
    assert meta["splits"]["train"]["utf8_bytes"] == sum(len(d.text.encode()) for d in docs)


def test_document_packing_restarts_segments_and_masks_cross_document_targets(prepared):
    windows = TokenWindows(prepared, "train", SEQ, "document")
    _, offsets, _ = load_split(prepared, "train")
    for i in range(len(windows)):
        r = windows[i]
        start = i * SEQ
        boundaries = [b - start for b in offsets if start < b < start + SEQ]  # docs starting inside
        for b in boundaries:
            assert r["positions"][b] == 0 and r["segment_ids"][b] == r["segment_ids"][b - 1] + 1
            assert r["loss_mask"][b - 1] == 0  # the EOS would predict the next document's first token
        assert r["loss_mask"].sum() == SEQ - sum(1 for b in offsets if start < b <= start + SEQ)
        assert r["segment_ids"][0] == 1 and np.all(np.diff(r["segment_ids"]) >= 0)
    concat = TokenWindows(prepared, "train", SEQ, "concat")[0]
    assert np.all(concat["segment_ids"] == 1) and np.all(concat["loss_mask"] == 1)
    np.testing.assert_array_equal(concat["inputs"], windows[0]["inputs"])


def test_split_is_deterministic_and_invalid_utf8_is_counted(code_corpus):
    stats = CorpusStats()
    names = [d.name for d in code_corpus.documents(None, stats)]
    assert names == sorted(names)
    assert stats.invalid_utf8_documents == 1 and stats.empty_documents == 1
    assert split_of("mod_07.py", 0.2) == split_of("mod_07.py", 0.2)
    train = {d.name for d in code_corpus.documents("train")}
    val = {d.name for d in code_corpus.documents("validation")}
    assert train and val and not train & val and train | val == set(names)


def test_rerun_does_nothing_and_changed_input_reprepares(tmp_path, tokenizer):
    root = tmp_path / "src"
    root.mkdir()
    for i in range(20):
        (root / f"{i}.txt").write_text(f"document {i}\n" * (i + 1))
    corpus = Corpus.parse(f"text:{root}/*.txt", validation_fraction=0.3)
    meta = prepare(corpus, tokenizer, tmp_path / "out")
    stamp = (tmp_path / "out" / "train.tokens").stat().st_mtime_ns
    assert prepare(corpus, tokenizer, tmp_path / "out") == meta
    assert (tmp_path / "out" / "train.tokens").stat().st_mtime_ns == stamp
    (root / "3.txt").write_text("changed\n")
    assert prepare(corpus, tokenizer, tmp_path / "out")["fingerprint"] != meta["fingerprint"]


def test_interrupted_prepare_leaves_nothing_trusted(tmp_path, tokenizer, prepared, code_corpus):
    class SimulatedKillError(Exception):
        pass

    class FailingTokenizer(SentencePieceTokenizer):
        calls = 0

        def encode_batch(self, texts, num_threads=-1):
            FailingTokenizer.calls += 1
            if FailingTokenizer.calls > 1:
                raise SimulatedKillError
            return super().encode_batch(texts, num_threads)

    out = tmp_path / "out"
    with pytest.raises(SimulatedKillError):
        prepare(code_corpus, FailingTokenizer(tokenizer.proto), out, chunk_docs=4)
    assert read_meta(out) is None
    assert not (out / "train.tokens").exists()  # only a .partial file, which nothing reads
    with pytest.raises(DataError, match="no complete prepared data"):
        load_split(out, "train")
    # A stale complete directory whose token file was truncated is not trusted either.
    stale = tmp_path / "stale"
    prepare(code_corpus, tokenizer, stale)
    with open(stale / "train.tokens", "r+b") as f:
        f.truncate(10)
    assert read_meta(stale) is None
    prepare(code_corpus, tokenizer, stale)
    assert read_meta(stale) is not None


def test_bad_input_raises_data_error_naming_file_and_line(tmp_path, tokenizer):
    with pytest.raises(DataError, match="nothing-here"):
        Corpus.parse(f"text:{tmp_path}/nothing-here/*.txt").files()
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "a.txt").write_text("")
    with pytest.raises(DataError, match="no non-empty documents"):
        list(Corpus.parse(f"text:{tmp_path}/e/*.txt").documents("train"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "fine"}) + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed JSON"):
        list(Corpus.parse(f"jsonl:{bad}@text").documents(None))
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({"text": "a"}) + "\n" + json.dumps({"body": "b"}) + "\n")
    with pytest.raises(DataError, match=r"missing.jsonl:2: missing field 'text'"):
        list(Corpus.parse(f"jsonl:{missing}@text").documents(None))
    with pytest.raises(DataError, match="Vocabulary size too high"):
        train_tokenizer(["tiny corpus"] * 5, tmp_path / "t.model", vocab_size=50_000)
    with pytest.raises(DataError, match="corpus 'nope'"):
        Corpus.parse("nope")


def test_token_dtype_fits_the_vocabulary(prepared):
    assert token_dtype(65_536) == np.uint16 and token_dtype(65_537) == np.uint32
    assert load_split(prepared, "train")[0].dtype == np.uint16


def test_tokenizer_special_ids_come_from_the_model(tokenizer):
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 2, 3)
    assert tokenizer.encode("<|user|>") == [tokenizer.piece_id("<|user|>")]
    text = "def f(x):\n\tif x:\n        return 'é ✓'\n\n"
    assert tokenizer.decode(tokenizer.encode(text)) == text
