"""The Flax NNX BERT against the PyTorch reference (tests/fixtures/tiny_bert), and its behaviour."""

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from examples.bert.config import BertConfig
from examples.bert.model import BertForSequenceClassification, BertModel
from examples.bert.weights import from_pretrained

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "tiny_bert"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "reference.npz") as data:
        return dict(data)


@pytest.fixture(scope="module")
def tiny_bert() -> BertForSequenceClassification:
    model, _ = from_pretrained(FIXTURE, num_labels=3)
    model.eval()
    return model


def inputs(reference):
    return [jnp.asarray(reference[name]) for name in INPUTS]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_parity_with_pytorch_reference(tiny_bert, reference, jit):
    logits_fn = nnx.jit(lambda m, *x: m(*x)) if jit else lambda m, *x: m(*x)
    encode_fn = nnx.jit(lambda m, *x: m.bert(*x)) if jit else lambda m, *x: m.bert(*x)

    logits = logits_fn(tiny_bert, *inputs(reference))
    hidden, pooled = encode_fn(tiny_bert, *inputs(reference))

    assert logits.dtype == hidden.dtype == pooled.dtype == jnp.float32
    np.testing.assert_allclose(logits, reference["logits"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(hidden, reference["last_hidden_state"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(pooled, reference["pooler_output"], rtol=0, atol=1e-5)


def test_bfloat16_compute_stays_close_to_float32(reference):
    model, _ = from_pretrained(FIXTURE, num_labels=3, dtype=jnp.bfloat16)
    model.eval()

    logits = model(*inputs(reference))
    hidden, _ = model.bert(*inputs(reference))

    assert logits.dtype == jnp.float32
    assert hidden.dtype == jnp.bfloat16
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert {p.dtype for p in params} == {jnp.dtype(jnp.float32)}
    np.testing.assert_allclose(logits, reference["logits"], rtol=0, atol=2e-2)


def test_padding_does_not_change_the_outputs_of_real_tokens():
    config = BertConfig.tiny()
    model = BertModel(config, rngs=nnx.Rngs(0))
    model.eval()
    tokens = jax.random.randint(jax.random.key(1), (2, 10), 1, config.vocab_size)
    padding = jax.random.randint(jax.random.key(2), (2, 38), 1, config.vocab_size)

    def encode(seq_len):
        pad = padding[:, : seq_len - tokens.shape[1]]  # real ids, so that only the mask hides them
        input_ids = jnp.concatenate([tokens, pad], axis=1)
        mask = jnp.arange(seq_len) < tokens.shape[1]
        return model(input_ids, jnp.broadcast_to(mask, input_ids.shape))

    hidden_16, pooled_16 = encode(16)
    hidden_48, pooled_48 = encode(48)

    np.testing.assert_allclose(pooled_16, pooled_48, rtol=0, atol=1e-5)
    np.testing.assert_allclose(hidden_16[:, :10], hidden_48[:, :10], rtol=0, atol=1e-5)


def test_no_mask_attends_to_every_token():
    model = BertModel(BertConfig.tiny(), rngs=nnx.Rngs(0))
    model.eval()
    input_ids = jnp.arange(1, 25).reshape(2, 12)

    np.testing.assert_array_equal(
        model(input_ids)[0], model(input_ids, jnp.ones_like(input_ids))[0]
    )


def test_attention_implementation_is_an_attribute(reference):
    model, _ = from_pretrained(FIXTURE, num_labels=3)
    model.eval()

    model.set_attributes(attention_implementation="xla")
    np.testing.assert_allclose(model(*inputs(reference)), reference["logits"], atol=1e-5)
    if jax.default_backend() == "cpu":  # the request reaches jax.nn.dot_product_attention
        model.set_attributes(attention_implementation="cudnn")
        with pytest.raises(RuntimeError, match="cuDNN"):
            model(*inputs(reference))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_dense_embedding_lookup_gives_the_gathers_values_without_their_scatters(reference, dtype):
    # "dense" (the GPU's lookup) slices the positions and multiplies one-hot token types:
    # the same embeddings bit for bit, the same float32 gradients up to the order of their sums,
    # and the gradient has one scatter-add (the word embeddings') instead of three.
    model, _ = from_pretrained(FIXTURE, num_labels=3, dtype=dtype)
    model.eval()
    ids, _, types = inputs(reference)
    types = types.at[:, ids.shape[1] // 2 :].set(1)  # both token types in use

    def loss(model):
        return jnp.sum(model.bert.embeddings(ids, types).astype(jnp.float32) ** 2)

    def embed_and_grad(lookup):
        model.set_attributes(embedding_lookup=lookup)
        grads = nnx.grad(loss)(model).bert.embeddings
        jaxpr = str(jax.make_jaxpr(nnx.grad(loss))(model))
        return model.bert.embeddings(ids, types), grads, jaxpr.count("scatter-add")

    gathered, gather_grads, gather_scatters = embed_and_grad("gather")
    dense, dense_grads, dense_scatters = embed_and_grad("dense")

    np.testing.assert_array_equal(np.asarray(dense), np.asarray(gathered))
    assert (gather_scatters, dense_scatters) == (3, 1)
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        want = getattr(gather_grads, name).embedding[...]
        got = getattr(dense_grads, name).embedding[...]
        assert np.any(np.asarray(want) != 0), name
        if dtype == jnp.float32:  # in bfloat16 the gather's scatter-add sums in bfloat16
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    model.set_attributes(embedding_lookup="one-hot")
    with pytest.raises(ValueError, match="'gather' or 'dense'"):
        model.bert.embeddings(ids, types)


def test_dropout_only_in_training_mode(reference):
    model, _ = from_pretrained(FIXTURE, num_labels=3)

    model.eval()
    np.testing.assert_array_equal(model(*inputs(reference)), model(*inputs(reference)))
    np.testing.assert_allclose(model(*inputs(reference)), reference["logits"], atol=1e-5)
    model.train()
    assert not np.allclose(model(*inputs(reference)), model(*inputs(reference)))


def test_attention_dropout_path_computes_the_fused_attention():
    # Training with attention dropout spells the attention out; at a rate that drops nothing in
    # float32 it must compute what jax.nn.dot_product_attention does.
    config = BertConfig.tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=1e-9)
    model = BertForSequenceClassification(config, 3, rngs=nnx.Rngs(0))
    input_ids = jax.random.randint(jax.random.key(1), (2, 12), 1, config.vocab_size)
    mask = jnp.arange(12) < jnp.array([[12], [7]])

    model.eval()
    fused = model.bert(input_ids, mask)[0]
    model.train()
    spelled_out = model.bert(input_ids, mask)[0]

    np.testing.assert_allclose(spelled_out, fused, rtol=0, atol=1e-5)


def test_gradients_reach_every_parameter(reference):
    model, _ = from_pretrained(FIXTURE, num_labels=3)
    model.train()
    labels = jnp.array([0, 1, 2])

    def loss_fn(model):
        logits = model(*inputs(reference))
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads = nnx.jit(nnx.grad(loss_fn))(model)

    params = nnx.to_flat_state(nnx.state(model, nnx.Param))
    grads = dict(nnx.to_flat_state(grads))
    assert sorted(grads) == sorted(path for path, _ in params)
    for path, grad in grads.items():
        value = np.asarray(grad.get_value())
        assert np.isfinite(value).all(), path
        assert np.any(value != 0), path


def test_logits_are_float32_and_shaped_batch_by_labels():
    model = BertForSequenceClassification(
        BertConfig.tiny(), 5, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)
    )
    model.eval()

    logits = model(jnp.ones((4, 9), jnp.int32))

    assert logits.shape == (4, 5)
    assert logits.dtype == jnp.float32


def test_sequences_longer_than_the_position_embeddings_are_refused():
    model = BertModel(BertConfig.tiny(max_position_embeddings=8), rngs=nnx.Rngs(0))

    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(jnp.ones((1, 9), jnp.int32))


def test_config_from_json_reads_the_fixture():
    config = BertConfig.from_json(FIXTURE / "config.json")

    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 2, 4)
    assert config.vocab_size == 256
    assert config.classifier_dropout is None
    assert BertConfig.from_dict(config.to_dict()) == config


def test_tiny_config_takes_overrides():
    config = BertConfig.tiny(num_hidden_layers=1)

    assert (config.hidden_size, config.num_hidden_layers) == (32, 1)
    assert dataclasses.replace(config, num_hidden_layers=2) == BertConfig.tiny()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "roberta"}, "model_type 'bert'"),
        ({"hidden_size": 30, "num_attention_heads": 4}, "not a multiple of num_attention_heads"),
        ({"position_embedding_type": "relative_key"}, "absolute position embeddings"),
        ({"is_decoder": True}, "not decoders"),
        ({"hidden_act": "mish"}, "hidden_act 'mish'"),
        ({"hidden_dropout_prob": 1.0}, "hidden_dropout_prob"),
        ({"num_hidden_layers": 0}, "num_hidden_layers must be positive"),
    ],
)
def test_invalid_configs_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        BertConfig.from_dict(BertConfig.tiny().to_dict() | change)
