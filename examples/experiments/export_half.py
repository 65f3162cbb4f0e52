"""Writes a BERT checkpoint folder with its weights in float16, half the size on disk.

The packaged all-MiniLM-L6-v2 is 87 MiB in float32, 44 MiB in float16: small enough to travel
to a machine without network. ``--model DIR`` loads the copy, upcast to float32 parameters
(only the starting weights carry float16's rounding, at most 2**-11 relative). float16, not
bfloat16: safetensors' numpy reader has no bfloat16 (weights out of range are refused).

Run:  python examples/experiments/export_half.py OUT_DIR            (the packaged MiniLM)
      python examples/experiments/export_half.py OUT_DIR --model DIR (any BERT checkpoint folder)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from examples.bert import weights

#: Files copied as they are: the config and the tokenizer's files, where present.
COPIED = (
    "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "vocab.txt",
)  # fmt: skip
FLOAT16_MAX = float(np.finfo(np.float16).max)


def export_half(source: str | os.PathLike | None, out: str | os.PathLike) -> dict[str, float]:
    """Copies a BERT checkpoint folder to ``out`` with its floating-point tensors in float16.

    Args:
      source: a checkpoint folder as :func:`examples.bert.weights.resolve_model_dir` takes it
        (None: the packaged all-MiniLM-L6-v2).
      out: the new folder; created, and refused if it already holds a model.safetensors.

    Returns:
      ``{"bytes_before", "bytes_after", "max_abs", "max_rel_error"}``: file sizes, the largest
      magnitude in the checkpoint and the largest relative rounding error of a nonzero weight
      that is a normal float16 number.

    Raises:
      FileExistsError: if ``out`` already holds a model.safetensors.
      ValueError: if a weight lies outside float16's range.
    """
    folder = weights.resolve_model_dir(source)
    out = Path(out)
    target = out / "model.safetensors"
    if target.exists():
        raise FileExistsError(f"{target} exists: choose an empty folder.")
    tensors: dict[str, np.ndarray] = {}
    max_abs, max_rel = 0.0, 0.0
    with safe_open(folder / "model.safetensors", framework="numpy") as checkpoint:
        for name in checkpoint.keys():
            array = checkpoint.get_tensor(name)
            if not np.issubdtype(array.dtype, np.floating):
                tensors[name] = array  # integer buffers (position ids) stay as they are
                continue
            wide = array.astype(np.float64)
            peak = float(np.abs(wide).max(initial=0.0))
            if peak > FLOAT16_MAX:
                raise ValueError(
                    f"{name} holds {peak:g}, beyond float16's largest value {FLOAT16_MAX:g}: "
                    "this checkpoint cannot be halved without overflow."
                )
            half = array.astype(np.float16)
            normal = np.abs(wide) >= np.finfo(np.float16).tiny
            if normal.any():
                rel = np.abs(half.astype(np.float64) - wide)[normal] / np.abs(wide)[normal]
                max_rel = max(max_rel, float(rel.max()))
            max_abs = max(max_abs, peak)
            tensors[name] = half
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target), metadata={"format": "pt"})
    for name in COPIED:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, out / name)
    return {
        "bytes_before": float((folder / "model.safetensors").stat().st_size),
        "bytes_after": float(target.stat().st_size),
        "max_abs": max_abs,
        "max_rel_error": max_rel,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python examples/experiments/export_half.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("out", help="the new checkpoint folder")
    parser.add_argument(
        "--model", default=None, help="a BERT checkpoint folder (default: the packaged MiniLM)"
    )
    args = parser.parse_args(argv)
    try:
        facts = export_half(args.model, args.out)
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    print(
        f"wrote {args.out}: {facts['bytes_before'] / 2**20:.1f} MiB -> "
        f"{facts['bytes_after'] / 2**20:.1f} MiB; largest |weight| {facts['max_abs']:.3g}, "
        f"largest relative rounding error {facts['max_rel_error']:.2e}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
