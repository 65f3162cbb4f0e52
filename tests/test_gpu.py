"""What only a GPU can show: float32 parity at each matmul precision, cuDNN's fused attention.

The whole module is skipped where JAX has no GPU (CI, the developers' machines); the GPU
check (``python -m benchmarks.gpu``) runs it on one. The rest of the suite also runs there and
covers the model's float32 and bfloat16 parity at XLA's float32 precision (the check passes
``JAX_DEFAULT_MATMUL_PRECISION=highest``); this module adds what differs on a GPU.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from examples.bert.config import BertConfig
from examples.bert.model import BertForSequenceClassification
from examples.bert.weights import from_pretrained

pytestmark = pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU")

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "tiny_bert"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "reference.npz") as data:
        return dict(data)


def _logits(reference, dtype=jnp.float32):
    model, _ = from_pretrained(FIXTURE, num_labels=3, dtype=dtype)
    model.eval()
    forward = nnx.jit(lambda m, *x: m(*x))
    return np.asarray(forward(model, *[jnp.asarray(reference[n]) for n in INPUTS]))


def test_float32_parity_at_highest_precision(reference):
    with jax.default_matmul_precision("highest"):
        logits = _logits(reference)

    np.testing.assert_allclose(logits, reference["logits"], rtol=0, atol=1e-5)


def test_float32_at_the_gpus_default_precision_is_tf32_close(reference):
    # XLA may run float32 matmuls on TF32 tensor cores by default (10-bit mantissa): the logits
    # must stay within TF32's rounding of PyTorch's float32 reference. The error is printed for
    # the record (at "highest" it is float32's, above).
    logits = _logits(reference)
    error = float(np.abs(logits - reference["logits"]).max())
    print(f"float32 logits at the default matmul precision: max |error| = {error:.2e}")

    assert error < 5e-3


def test_bfloat16_compute_stays_close_to_float32(reference):
    logits = _logits(reference, jnp.bfloat16)

    np.testing.assert_allclose(logits, reference["logits"], rtol=0, atol=2e-2)


def _attention_model(implementation: str | None) -> BertForSequenceClassification:
    # BERT-base's head size (64) and heads, two layers; no dropout, so the two paths compute
    # the same function.
    config = BertConfig(
        vocab_size=1000,
        hidden_size=768,
        num_hidden_layers=2,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = BertForSequenceClassification(config, 3, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    model.set_attributes(attention_implementation=implementation)
    return model


def _batch(seq_len: int = 128, batch: int = 8):
    keys = jax.random.split(jax.random.key(1), 2)
    input_ids = jax.random.randint(keys[0], (batch, seq_len), 1, 1000)
    lengths = jax.random.randint(keys[1], (batch, 1), seq_len // 4, seq_len + 1)
    mask = (jnp.arange(seq_len) < lengths).astype(jnp.int32)
    return input_ids * mask, mask, jnp.arange(batch) % 3


def _loss_and_grads(model, input_ids, mask, labels):
    def loss_fn(model):
        logits = model(input_ids, mask)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits

    (loss, logits), grads = nnx.jit(nnx.value_and_grad(loss_fn, has_aux=True))(model)
    return loss, logits, dict(nnx.to_flat_state(grads))


def test_cudnn_attention_matches_xla_attention_forward_and_backward():
    input_ids, mask, labels = _batch()
    xla = _loss_and_grads(_attention_model("xla"), input_ids, mask, labels)
    cudnn = _loss_and_grads(_attention_model("cudnn"), input_ids, mask, labels)

    # Both compute in bfloat16 (8-bit mantissa), accumulating differently.
    np.testing.assert_allclose(cudnn[1], xla[1], rtol=0, atol=3e-2)
    np.testing.assert_allclose(cudnn[0], xla[0], rtol=2e-2)
    refs = {p: np.asarray(g.get_value(), np.float32).ravel() for p, g in xla[2].items()}
    gots = {p: np.asarray(g.get_value(), np.float32).ravel() for p, g in cudnn[2].items()}
    ref, got = np.concatenate(list(refs.values())), np.concatenate(list(gots.values()))
    overall = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    print(f"cuDNN vs XLA attention: gradients' relative error {overall:.2e} overall")
    assert overall < 3e-2
    # Leaf by leaf the direction must agree. Their relative error is no criterion: on an H200
    # the token type embeddings' gradient, a sum over 1024 tokens' bfloat16 gradients that
    # nearly cancel, differed by 10% between the two paths.
    for path, r in refs.items():
        cosine = float(r @ gots[path]) / max(np.linalg.norm(r) * np.linalg.norm(gots[path]), 1e-30)
        assert cosine > 0.98, (path, cosine)


def test_cudnn_attention_ignores_padding():
    # Tokens hidden by the mask must not change the real tokens' outputs on the fused path.
    model = _attention_model("cudnn")
    model.eval()
    input_ids, mask, _ = _batch()
    other = jnp.where(mask.astype(bool), input_ids, (input_ids + 7) % 1000)

    hidden, _ = nnx.jit(lambda m, i, a: m.bert(i, a))(model, input_ids, mask)
    hidden_other, _ = nnx.jit(lambda m, i, a: m.bert(i, a))(model, other, mask)

    real = np.asarray(mask, bool)
    np.testing.assert_allclose(
        np.asarray(hidden, np.float32)[real], np.asarray(hidden_other, np.float32)[real], atol=1e-3
    )


def test_training_with_cudnn_attention_dropout_runs_and_drops():
    # attention_implementation="cudnn" while training with attention dropout: cuDNN's fused
    # attention with dropout (jax's private API), where this jax is one it is pinned to.
    from examples.bert import model as model_lib

    if model_lib.cudnn_dropout_attention() is None:
        pytest.skip(f"jax {jax.__version__} is outside {model_lib.CUDNN_DROPOUT_JAX}")
    config = BertConfig(
        vocab_size=1000, hidden_size=768, num_hidden_layers=2, num_attention_heads=12,
        intermediate_size=3072, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.1,
    )  # fmt: skip
    model = BertForSequenceClassification(config, 3, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    model.set_attributes(attention_implementation="cudnn")
    input_ids, mask, labels = _batch()

    loss, logits, grads = _loss_and_grads(model, input_ids, mask, labels)
    model.eval()
    _, eval_logits, _ = _loss_and_grads(model, input_ids, mask, labels)

    assert np.isfinite(float(loss))
    assert all(np.isfinite(np.asarray(g.get_value(), np.float32)).all() for g in grads.values())
    assert not np.allclose(np.asarray(logits), np.asarray(eval_logits))  # something dropped
    np.testing.assert_allclose(np.asarray(logits), np.asarray(eval_logits), atol=0.5)
