"""The BERT as it stood before issue 20 (examples/bert/model.py at commit 630073a), kept
unchanged as the "before" side of the benchmarks: q/k/v reshaped per head and attention
spelled out (with its transposes) while training with dropout; ``nnx.Dropout`` (32 random
bits per element). Its parameters are the same as today's model's.

The original docstring follows.

BERT in Flax NNX, computing what Hugging Face's PyTorch BERT computes.

Parameters are float32; ``dtype`` sets the compute dtype (float32 or bfloat16). Modules are
built in training mode, as NNX modules are: call ``model.eval()`` to turn dropout off and
``model.train()`` to turn it back on. Dropout draws its keys from the ``"dropout"`` stream of
the ``rngs`` the model was built with (the default stream when there is none).

The names of the modules and parameters map onto Hugging Face's checkpoint names as
:func:`examples.bert.weights.hf_name` says.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from examples.bert.config import ACTIVATIONS, BertConfig


def _dense(config: BertConfig, dtype: DTypeLike, rngs: nnx.Rngs) -> Callable[..., nnx.Linear]:
    """Makes Linear layers initialised as Hugging Face initialises BERT's."""
    init = nnx.initializers.normal(config.initializer_range)
    return functools.partial(
        nnx.Linear, dtype=dtype, param_dtype=jnp.float32, kernel_init=init, rngs=rngs
    )


def _layer_norm(config: BertConfig, dtype: DTypeLike, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(
        config.hidden_size,
        epsilon=config.layer_norm_eps,
        dtype=dtype,
        param_dtype=jnp.float32,
        rngs=rngs,
    )


class BertEmbeddings(nnx.Module):
    """The sum of word, position and token type embeddings, normalised, with dropout."""

    def __init__(self, config: BertConfig, *, dtype: DTypeLike, rngs: nnx.Rngs):
        embed = functools.partial(
            nnx.Embed,
            features=config.hidden_size,
            dtype=dtype,
            param_dtype=jnp.float32,
            embedding_init=nnx.initializers.normal(config.initializer_range),
            rngs=rngs,
        )
        self.word_embeddings = embed(config.vocab_size)
        self.position_embeddings = embed(config.max_position_embeddings)
        self.token_type_embeddings = embed(config.type_vocab_size)
        self.layer_norm = _layer_norm(config, dtype, rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout_prob, rngs=rngs)

    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        seq_len = input_ids.shape[-1]
        if seq_len > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"Sequences of {seq_len} tokens exceed max_position_embeddings "
                f"({self.position_embeddings.num_embeddings})."
            )
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(jnp.arange(seq_len))
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.layer_norm(x))


class BertSelfAttention(nnx.Module):
    """Multi-head self-attention, through ``jax.nn.dot_product_attention``.

    Its ``implementation`` is the attribute ``attention_implementation``: None (today XLA's) by
    default; ``model.set_attributes(attention_implementation="cudnn")`` asks for cuDNN's fused
    attention on an NVIDIA GPU (bfloat16 compute), which takes the padding as key lengths: the
    mask must then hide only a suffix of each sequence (right padding, as BERT's tokenizers
    pad). That function has no dropout, so while
    training with ``attention_probs_dropout_prob > 0`` the attention is spelled out with dropout
    on its probabilities, as BERT does; set that probability to 0 to train with fused attention.
    """

    def __init__(self, config: BertConfig, *, dtype: DTypeLike, rngs: nnx.Rngs):
        dense = _dense(config, dtype, rngs)
        self.num_heads = config.num_attention_heads
        self.attention_implementation: str | None = None
        self.query = dense(config.hidden_size, config.hidden_size)
        self.key = dense(config.hidden_size, config.hidden_size)
        self.value = dense(config.hidden_size, config.hidden_size)
        self.dropout = nnx.Dropout(config.attention_probs_dropout_prob, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        """Attends over a sequence.

        Args:
          x: hidden states, (batch, seq_len, hidden).
          mask: True for the tokens that may be attended to, (batch, 1, 1, seq_len); None for
            all of them.

        Returns:
          The heads' outputs concatenated, shaped as ``x``.
        """
        heads = (*x.shape[:-1], self.num_heads, -1)
        q, k, v = (f(x).reshape(heads) for f in (self.query, self.key, self.value))
        if self.dropout.deterministic or self.dropout.rate == 0.0:
            if self.attention_implementation == "cudnn" and mask is not None:
                # cuDNN takes padding as key lengths (it refuses a (batch, 1, 1, seq) mask):
                # the real tokens come first, as BERT's tokenizers pad on the right.
                lengths = mask.reshape(mask.shape[0], -1).sum(-1, dtype=jnp.int32)
                return jax.nn.dot_product_attention(
                    q, k, v, key_value_seq_lengths=lengths, implementation="cudnn"
                ).reshape(x.shape)
            out = jax.nn.dot_product_attention(
                q, k, v, mask=mask, implementation=self.attention_implementation
            )
        else:
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
            if mask is not None:
                scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
            probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(v.dtype)
            out = jnp.einsum("bhqk,bkhd->bqhd", self.dropout(probs), v)
        return out.reshape(x.shape)


class BertLayer(nnx.Module):
    """One encoder layer: self-attention then a feed-forward block, each with dropout, a
    residual connection and LayerNorm (post-norm)."""

    def __init__(self, config: BertConfig, *, dtype: DTypeLike, rngs: nnx.Rngs):
        dense = _dense(config, dtype, rngs)
        hidden, intermediate = config.hidden_size, config.intermediate_size
        self.attention = BertSelfAttention(config, dtype=dtype, rngs=rngs)
        self.attention_output = dense(hidden, hidden)
        self.attention_norm = _layer_norm(config, dtype, rngs)
        self.intermediate = dense(hidden, intermediate)
        self.activation = ACTIVATIONS[config.hidden_act]
        self.output = dense(intermediate, hidden)
        self.output_norm = _layer_norm(config, dtype, rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout_prob, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        attended = self.attention_output(self.attention(x, mask))
        x = self.attention_norm(x + self.dropout(attended))
        y = self.output(self.activation(self.intermediate(x)))
        return self.output_norm(x + self.dropout(y))


class BertModel(nnx.Module):
    """The BERT encoder and its pooler.

    Args:
      config: the hyperparameters.
      dtype: the compute dtype; parameters are float32 whatever it is.
      rngs: keys for the initialisation and for dropout.
    """

    def __init__(self, config: BertConfig, *, dtype: DTypeLike = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = BertEmbeddings(config, dtype=dtype, rngs=rngs)
        self.layers = nnx.List(
            [BertLayer(config, dtype=dtype, rngs=rngs) for _ in range(config.num_hidden_layers)]
        )
        self.pooler = _dense(config, dtype, rngs)(config.hidden_size, config.hidden_size)

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        token_type_ids: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Encodes a batch of token sequences.

        Args:
          input_ids: token ids, (batch, seq_len) integers.
          attention_mask: 1 (or True) for real tokens, 0 for padding, shaped as ``input_ids``;
            None attends to every token.
          token_type_ids: segment ids, shaped as ``input_ids``; None means all 0.

        Returns:
          The last hidden states, (batch, seq_len, hidden), and the pooled output, (batch,
          hidden): tanh of a dense layer on the first ([CLS]) token's hidden state. Both are in
          the compute dtype.
        """
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        mask = None if attention_mask is None else attention_mask.astype(bool)[:, None, None, :]
        x = self.embeddings(input_ids, token_type_ids)
        for layer in self.layers:
            x = layer(x, mask)
        return x, jnp.tanh(self.pooler(x[:, 0]))


class BertForSequenceClassification(nnx.Module):
    """BERT with a linear classifier on the pooled output, after dropout.

    The classifier computes in float32 whatever the compute dtype, so logits are float32.

    Args:
      config: the hyperparameters.
      num_labels: the number of classes.
      dtype: the compute dtype of the encoder; parameters are float32 whatever it is.
      rngs: keys for the initialisation and for dropout.
    """

    def __init__(
        self,
        config: BertConfig,
        num_labels: int,
        *,
        dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if num_labels < 1:
            raise ValueError(f"num_labels must be positive, got {num_labels}.")
        self.bert = BertModel(config, dtype=dtype, rngs=rngs)
        rate = config.classifier_dropout
        self.dropout = nnx.Dropout(config.hidden_dropout_prob if rate is None else rate, rngs=rngs)
        self.classifier = _dense(config, jnp.float32, rngs)(config.hidden_size, num_labels)

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        token_type_ids: jax.Array | None = None,
    ) -> jax.Array:
        """Returns float32 logits, (batch, num_labels); the arguments are as for
        :class:`BertModel`."""
        _, pooled = self.bert(input_ids, attention_mask, token_type_ids)
        return self.classifier(self.dropout(pooled))
