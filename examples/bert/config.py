"""BERT hyperparameters, read from a Hugging Face ``config.json``."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable
from typing import Any

import jax

# The values of ``hidden_act`` that the model implements, as Hugging Face defines them.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The settings of a BERT encoder, named and defaulted as in Hugging Face's ``BertConfig``
    (``"gelu"`` the exact GELU; ``classifier_dropout=None``: ``hidden_dropout_prob``); checked
    on construction."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    classifier_dropout: float | None = None
    initializer_range: float = 0.02
    pad_token_id: int = 0
    model_type: str = "bert"

    def __post_init__(self) -> None:
        if self.model_type != "bert":
            raise ValueError(f"Expected a config with model_type 'bert', got {self.model_type!r}.")
        sizes = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
        sizes += ("intermediate_size", "max_position_embeddings", "type_vocab_size")
        for name in sizes:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) is not a multiple of "
                f"num_attention_heads ({self.num_attention_heads})."
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not one of {list(ACTIVATIONS)}.")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            rate = getattr(self, name)
            if rate is not None and not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {rate}.")

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> BertConfig:
        """A config from a ``config.json`` mapping (unused keys ignored); ValueError when it is
        not a BERT encoder's (absolute positions, no decoder) or is inconsistent."""
        position_embedding_type = config.get("position_embedding_type", "absolute")
        if position_embedding_type != "absolute":
            raise ValueError(
                f"Only absolute position embeddings are supported, got {position_embedding_type!r}."
            )
        if config.get("is_decoder") or config.get("add_cross_attention"):
            raise ValueError("Only BERT encoders are supported, not decoders.")
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in config.items() if key in names})

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> BertConfig:
        """Reads a config from a ``config.json`` file, as :meth:`from_dict` does."""
        with open(path, encoding="utf-8") as file:
            return cls.from_dict(json.load(file))

    def to_dict(self) -> dict[str, Any]:
        """Returns the config as a ``config.json`` mapping."""
        return dataclasses.asdict(self)

    @classmethod
    def tiny(cls, **overrides: Any) -> BertConfig:
        """A small config for fast tests (2 layers of width 32, 2 heads, BERT's vocabulary),
        with ``overrides``."""
        settings = dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=128,
        )  # fmt: skip
        return cls(**settings | overrides)
