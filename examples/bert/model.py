"""BERT in Flax NNX, computing what Hugging Face's PyTorch BERT computes.

Parameters are float32; ``dtype`` sets the compute dtype (float32 or bfloat16). Modules are
built in training mode, as NNX modules are: call ``model.eval()`` to turn dropout off and
``model.train()`` to turn it back on. Dropout draws its keys from the ``"dropout"`` stream of
the ``rngs`` the model was built with (the default stream when there is none), 16 random bits
per element (:class:`Dropout`).

The names of the modules and parameters map onto Hugging Face's checkpoint names as
:func:`examples.bert.weights.hf_name` says.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from examples.bert.config import ACTIVATIONS, BertConfig

#: The jax versions [from, to) with which cuDNN's fused attention WITH dropout is reached
#: through jax's private ``jax._src.cudnn.fused_attention_stablehlo.dot_product_attention``
#: (checked against 0.10.2; the GPU machines run 0.11). Outside them, or where that function
#: is missing or takes other arguments, training with attention dropout spells the attention
#: out (the portable path).
CUDNN_DROPOUT_JAX = ((0, 10), (0, 12))
_CUDNN_MODULE = "jax._src.cudnn.fused_attention_stablehlo"
_CUDNN_ARGUMENTS = {"q_seqlen", "kv_seqlen", "scale", "mask_type", "dropout_rate", "qkv_layout"}

#: Random bits per dropout decision: two decisions from every 32-bit draw.
DROPOUT_BITS = 16


def keep_mask(key: jax.Array, keep_prob: float, shape: tuple[int, ...]) -> jax.Array:
    """Dropout's keep mask, 16 random bits per element.

    Every 32-bit draw of ``jax.random.bits`` is split into two 16-bit lanes, and an element is
    kept where its lane is below ``round(keep_prob * 2**16)``: half the random values (and
    half the hashing work) of ``jax.random.bernoulli``, which spends 32 bits on each element.
    The probability of keeping is that threshold over 2**16, within 2**-17 (7.6e-6) of
    ``keep_prob``.

    Args:
      key: a PRNG key.
      keep_prob: the probability of keeping an element, in [0, 1].
      shape: the mask's shape.

    Returns:
      A boolean array of ``shape``, True where the element is kept.
    """
    threshold = jnp.uint32(round(keep_prob * 2**DROPOUT_BITS))
    *lead, last = shape or (1,)
    pairs = (last + 1) // 2
    bits = jax.random.bits(key, (*lead, pairs), jnp.uint32)
    lanes = jax.lax.bitcast_convert_type(bits, jnp.uint16).reshape(*lead, 2 * pairs)
    return (lanes[..., :last].astype(jnp.uint32) < threshold).reshape(shape)


class DropoutKey(nnx.Variable):
    """A dropout stream's key, kept as raw key data (``jax.random.key_data``, uint32)."""


class DropoutCount(nnx.Variable):
    """How many keys a dropout stream has drawn (uint32)."""


class Dropout(nnx.Dropout):
    """``nnx.Dropout`` with a mask of 16 random bits per element (see :func:`keep_mask`).

    It takes ``nnx.Dropout``'s arguments, is turned off by ``model.eval()`` as that is, and
    scales kept elements by ``1 / (1 - rate)`` alike. Its key stream is ``nnx``'s (the same
    fork of the ``rngs`` given, the same keys: ``fold_in(key, count)``, the count then
    advanced), but kept as plain arrays, :class:`DropoutKey` (the key's raw data) and
    :class:`DropoutCount`: a train state that crosses a jit boundary then holds no typed PRNG
    key, which JAX rebuilds in Python on every call.
    """

    def __init__(
        self,
        rate: float,
        *,
        broadcast_dims: tuple[int, ...] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ):
        super().__init__(
            rate,
            broadcast_dims=broadcast_dims,
            deterministic=deterministic,
            rng_collection=rng_collection,
            rngs=rngs,
        )
        stream, self.rngs = self.rngs, nnx.data(None)
        self.key_impl: str | None = None
        if stream is not None:
            key = stream.key[...]
            self.key_impl = str(jax.random.key_impl(key))
            self.key_data = DropoutKey(jax.random.key_data(key))
            self.count = DropoutCount(stream.count[...])

    def _next_key(self) -> jax.Array:
        if self.key_impl is None:
            raise ValueError(
                "This Dropout was built without rngs: pass rngs= to it or to the call."
            )
        key = jax.random.wrap_key_data(self.key_data[...], impl=self.key_impl)
        key = jax.random.fold_in(key, self.count[...])
        self.count[...] += 1
        return key

    def __call__(
        self,
        inputs: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
    ) -> jax.Array:
        """Applies a random dropout mask to ``inputs`` unless deterministic.

        Args:
          inputs: the array to mask.
          deterministic: overrides the module's ``deterministic`` attribute.
          rngs: overrides the module's key stream (a key, a stream, or ``Rngs``).

        Returns:
          The masked inputs, reweighted to keep their mean.
        """
        deterministic = self.deterministic if deterministic is None else deterministic
        if self.rate == 0.0 or deterministic:
            return inputs
        if self.rate == 1.0:
            return jnp.zeros_like(inputs)
        if rngs is None:
            key = self._next_key()
        elif isinstance(rngs, nnx.Rngs):
            key = rngs[self.rng_collection]()
        elif isinstance(rngs, nnx.RngStream):
            key = rngs()
        else:
            key = rngs
        keep_prob = 1.0 - self.rate
        shape = [1 if dim in self.broadcast_dims else n for dim, n in enumerate(inputs.shape)]
        mask = jnp.broadcast_to(keep_mask(key, keep_prob, tuple(shape)), inputs.shape)
        return jax.lax.select(mask, inputs / keep_prob, jnp.zeros_like(inputs))


def cudnn_dropout_attention() -> Callable[..., jax.Array] | None:
    """jax's private cuDNN fused attention with dropout, or None where it is not to be used.

    None unless jax's version lies in :data:`CUDNN_DROPOUT_JAX` and the private function
    exists and takes the arguments used here. (Whether a GPU is there is not asked: the
    caller asked for cuDNN, and a deviceless compile for a GPU target runs on a CPU.)
    """
    version = tuple(int(part) for part in jax.__version__.split(".")[:2])
    low, high = CUDNN_DROPOUT_JAX
    if not low <= version < high:
        return None
    try:
        module = importlib.import_module(_CUDNN_MODULE)
        function, mask_type = module.dot_product_attention, module.MaskType.PADDING
    except (ImportError, AttributeError):
        return None
    if not _CUDNN_ARGUMENTS <= set(inspect.signature(function).parameters):
        return None
    return functools.partial(function, mask_type=mask_type, qkv_layout="BTNH")


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


def embedding_lookup_for(backend: str) -> str:
    """:class:`BertEmbeddings`' ``embedding_lookup`` for a JAX ``backend``: ``"dense"`` on a
    GPU, whose scatter-adds serialise on repeated rows; ``"gather"`` elsewhere, the same values
    summed as every CPU run so far summed them. The training script and the benchmarks set it.

    Example:
      >>> embedding_lookup_for("gpu"), embedding_lookup_for("cpu")
      ('dense', 'gather')
    """
    return "dense" if backend == "gpu" else "gather"


class BertEmbeddings(nnx.Module):
    """The sum of word, position and token type embeddings, normalised, with dropout.

    How the position and token type rows are looked up is the attribute
    ``embedding_lookup``; both ways give the same values, their gradients differ in how they
    are summed:

    * ``"gather"`` (the default): every table through :class:`flax.nnx.Embed`, a gather
      whose gradient is a scatter-add. On a GPU XLA makes that scatter atomic adds, which
      serialise where rows repeat, and every token of a batch hits token type 0 and each
      position once per sequence: at BERT-base, batch 128, one such scatter took 60 ms of a
      86 ms step on an H200.
    * ``"dense"``: the first ``seq_len`` position rows sliced (their gradient a sum over the
      batch) and the token types a one-hot product with their few rows (their gradient a
      matrix product): no scatter but the word embeddings'. The training script picks it on
      a GPU (:func:`embedding_lookup_for`); on a CPU ``"gather"`` keeps the bits of the runs
      trained so far.
    """

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
        self.dropout = Dropout(config.hidden_dropout_prob, rngs=rngs)
        self.embedding_lookup: str = "gather"

    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        seq_len = input_ids.shape[-1]
        if seq_len > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"Sequences of {seq_len} tokens exceed max_position_embeddings "
                f"({self.position_embeddings.num_embeddings})."
            )
        if self.embedding_lookup == "gather":
            positions = self.position_embeddings(jnp.arange(seq_len))
            types = self.token_type_embeddings(token_type_ids)
        elif self.embedding_lookup == "dense":
            positions = _table(self.position_embeddings)[:seq_len]
            table = _table(self.token_type_embeddings)
            types = jax.nn.one_hot(token_type_ids, table.shape[0], dtype=table.dtype) @ table
        else:
            raise ValueError(
                f"embedding_lookup must be 'gather' or 'dense', got {self.embedding_lookup!r}"
            )
        x = self.word_embeddings(input_ids) + positions + types
        return self.dropout(self.layer_norm(x))


def _table(embed: nnx.Embed) -> jax.Array:
    """An embedding's table in its compute dtype, as :class:`flax.nnx.Embed` looks rows up."""
    (table,) = embed.promote_dtype((embed.embedding[...],), dtype=embed.dtype, inexact=False)
    return table


class BertSelfAttention(nnx.Module):
    """Multi-head self-attention over q, k and v in the (batch, seq, heads, head_dim) layout.

    The projections' outputs are reshaped to that layout (a free reshape, no transpose), the
    one that ``jax.nn.dot_product_attention`` and cuDNN consume. Which attention runs:

    * dropout off (``model.eval()``, or ``attention_probs_dropout_prob`` 0):
      ``jax.nn.dot_product_attention``, with ``implementation`` the attribute
      ``attention_implementation``: None (jax chooses; XLA's today) by default;
      ``model.set_attributes(attention_implementation="cudnn")`` asks for cuDNN's fused
      attention on an NVIDIA GPU (bfloat16 compute), which takes the padding as key lengths:
      the mask must then hide only a suffix of each sequence (right padding, as BERT's
      tokenizers pad).
    * training with attention dropout and ``attention_implementation="cudnn"``: cuDNN's fused
      attention with dropout on the probabilities, through jax's private API
      (:func:`cudnn_dropout_attention`; padding as key lengths again). Its dropout mask is
      drawn by cuDNN from a fixed seed and an offset that XLA advances on every call: it does
      NOT follow the run's seed (two seeds drop the same elements; a resumed run drops other
      elements than an unbroken one). Where that API is missing (another jax version), the
      attention is spelled out, as below.
    * otherwise, training with attention dropout: spelled out (scores, float32 softmax,
      :class:`Dropout` on the probabilities, as BERT does), the portable path, whose mask
      follows the ``dropout`` key stream.
    """

    def __init__(self, config: BertConfig, *, dtype: DTypeLike, rngs: nnx.Rngs):
        dense = _dense(config, dtype, rngs)
        self.num_heads = config.num_attention_heads
        self.attention_implementation: str | None = None
        self.query = dense(config.hidden_size, config.hidden_size)
        self.key = dense(config.hidden_size, config.hidden_size)
        self.value = dense(config.hidden_size, config.hidden_size)
        self.dropout = Dropout(config.attention_probs_dropout_prob, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        """Attends over a sequence.

        Args:
          x: hidden states, (batch, seq_len, hidden).
          mask: True for the tokens that may be attended to, (batch, 1, 1, seq_len); None for
            all of them.

        Returns:
          The heads' outputs concatenated, shaped as ``x``.
        """
        q, k, v = self._project(x)
        dropout = not (self.dropout.deterministic or self.dropout.rate == 0.0)
        cudnn = self.attention_implementation == "cudnn"
        if not dropout and cudnn and mask is not None:
            out = jax.nn.dot_product_attention(
                q, k, v, key_value_seq_lengths=_lengths(mask), implementation="cudnn"
            )
        elif not dropout:
            out = jax.nn.dot_product_attention(
                q, k, v, mask=mask, implementation=self.attention_implementation
            )
        elif cudnn and (fused := cudnn_dropout_attention()) is not None:
            lengths = (
                jnp.full(x.shape[:1], x.shape[1], jnp.int32) if mask is None else _lengths(mask)
            )
            out = fused(
                q,
                k,
                v,
                q_seqlen=lengths,
                kv_seqlen=lengths,
                scale=1.0 / math.sqrt(q.shape[-1]),
                dropout_rate=float(self.dropout.rate),
            )
        else:
            out = self._spelled_out(q, k, v, mask)
        return out.reshape(x.shape)

    def _project(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        # One GEMM for q, k and v: their kernels side by side, (hidden, 3 x hidden); the result
        # is reshaped, not transposed, to (batch, seq, 3, heads, head_dim).
        layers = (self.query, self.key, self.value)
        kernel = jnp.concatenate([layer.kernel[...] for layer in layers], axis=1)
        bias = jnp.concatenate([layer.bias[...] for layer in layers])
        dtype = self.query.dtype or x.dtype
        qkv = jnp.dot(x.astype(dtype), kernel.astype(dtype)) + bias.astype(dtype)
        qkv = qkv.reshape(*x.shape[:-1], 3, self.num_heads, -1)
        return qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]

    def _spelled_out(
        self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None
    ) -> jax.Array:
        # Einsums straight from and back to (batch, seq, heads, head_dim): no reshuffle of
        # q, k or v is written out; XLA lays the batched products out as it needs.
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
        if mask is not None:
            scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
        probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(v.dtype)
        return jnp.einsum("bhqk,bkhd->bqhd", self.dropout(probs), v)


def _lengths(mask: jax.Array) -> jax.Array:
    # cuDNN takes padding as key lengths (it refuses a (batch, 1, 1, seq) mask): the real
    # tokens come first, as BERT's tokenizers pad on the right.
    return mask.reshape(mask.shape[0], -1).sum(-1, dtype=jnp.int32)


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
        self.dropout = Dropout(config.hidden_dropout_prob, rngs=rngs)

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
        self.dropout = Dropout(config.hidden_dropout_prob if rate is None else rate, rngs=rngs)
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
