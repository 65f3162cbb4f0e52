"""Shared helpers of the tests of examples/bert/train.py: a tiny BERT folder and small datasets.

The tiny BERT is ``BertConfig.tiny()`` (2 layers of width 32, BERT's uncased vocabulary) with
random weights saved under Hugging Face's names, beside the packaged MiniLM's tokenizer files,
so the whole command-line path (resolve, tokenise, load, train, save) runs in seconds offline.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)

POSITIVE = "great good lovely happy excellent wonderful superb fine nice awesome".split()
NEGATIVE = "awful bad terrible sad horrible poor nasty ugly dreadful worst".split()
FILLER = "the movie phone car day food service team game show was is really quite".split()


def make_tiny_model_dir(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Writes a tiny random BERT checkpoint with a real tokenizer into ``folder``.

    Returns:
      The folder.
    """
    from flax import nnx
    from safetensors.numpy import save_file

    from examples.bert import weights
    from examples.bert.config import BertConfig
    from examples.bert.model import BertForSequenceClassification

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = BertConfig.tiny()
    model = BertForSequenceClassification(config, 2, rngs=nnx.Rngs(seed))
    # The classifier head is made afresh for each task: save the encoder only.
    tensors = {k: v for k, v in weights.hf_tensors(model).items() if k.startswith("bert.")}
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    source = weights.default_model_dir()
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, folder / name)
    return folder


def synthetic_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` short reviews whose label ("pos" or "neg") a keyword gives away."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        words = list(rng.choice(FILLER, 5))
        words.insert(int(rng.integers(0, 6)), str(rng.choice(POSITIVE if i % 2 else NEGATIVE)))
        rows.append({"review": " ".join(words), "sentiment": label})
    return rows


def write_csv(path: str | os.PathLike, rows: Sequence[dict[str, str]]) -> Path:
    """Writes rows as a csv file with a header."""
    path = Path(path)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: str | os.PathLike, rows: Sequence[dict[str, str]]) -> Path:
    """Writes rows as JSON lines."""
    path = Path(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Reads a JSON-lines file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def run_python(
    code: str, *, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    """Runs Python code in a fresh interpreter at the repository root."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def make_assets(root: str | os.PathLike) -> dict[str, str]:
    """A tiny BERT folder and a 240-row two-class csv under ``root``: what the sweep and
    study tests train on."""
    root = Path(root)
    return {
        "model": str(make_tiny_model_dir(root / "tiny_bert")),
        "data": str(write_csv(root / "reviews.csv", synthetic_rows(240))),
    }
