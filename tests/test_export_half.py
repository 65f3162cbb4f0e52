"""examples/experiments/export_half.py: a float16 copy of a checkpoint that the loader reads as
float32."""

import pathlib
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from examples.bert import weights
from examples.bert.weights import from_pretrained, load_tokenizer
from examples.experiments import export_half

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "tiny_bert"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _logits(folder):
    model, report = from_pretrained(folder, num_labels=3)
    model.eval()
    with np.load(FIXTURE / "reference.npz") as ref:
        return np.asarray(model(*[jnp.asarray(ref[n]) for n in INPUTS])), report


def test_half_copy_loads_as_float32_and_computes_what_the_original_does(tmp_path):
    facts = export_half.export_half(FIXTURE, tmp_path / "half")

    with safe_open(tmp_path / "half" / "model.safetensors", framework="numpy") as f:
        dtypes = {f.get_tensor(name).dtype for name in f.keys()}
    assert np.dtype(np.float16) in dtypes
    assert not {np.dtype(np.float32), np.dtype(np.float64)} & dtypes
    assert facts["bytes_after"] < 0.55 * facts["bytes_before"]
    assert 0 < facts["max_rel_error"] <= 2.0**-11  # float16's unit roundoff
    original, original_report = _logits(FIXTURE)
    half, report = _logits(tmp_path / "half")
    assert report.initialised == original_report.initialised == []  # the head came along too
    # Weights rounded by at most 2**-11 relative: the logits move by far less than 1e-2.
    np.testing.assert_allclose(half, original, rtol=0, atol=2e-3)
    assert not np.array_equal(half, original)  # the rounding is real, not a copy
    for name in ("config.json",):
        assert (tmp_path / "half" / name).read_bytes() == (FIXTURE / name).read_bytes()


def test_half_copy_of_the_packaged_minilm_keeps_its_tokenizer(tmp_path):
    try:
        source = weights.default_model_dir()
    except FileNotFoundError:
        pytest.skip("the packaged MiniLM is not installed")
    export_half.export_half(None, tmp_path / "half")

    text = "Rolling a natural twenty!"
    assert load_tokenizer(tmp_path / "half")(text) == load_tokenizer(source)(text)
    assert (tmp_path / "half" / "model.safetensors").stat().st_size < 46_000_000


def test_an_existing_copy_is_not_overwritten(tmp_path):
    export_half.export_half(FIXTURE, tmp_path / "half")

    with pytest.raises(FileExistsError, match="choose an empty folder"):
        export_half.export_half(FIXTURE, tmp_path / "half")


def test_weights_beyond_float16_are_refused(tmp_path):
    source = tmp_path / "big"
    shutil.copytree(FIXTURE, source)
    tensors = load_file(source / "model.safetensors")
    name = next(n for n, t in tensors.items() if t.dtype == np.float32)
    tensors[name] = tensors[name].copy()
    tensors[name].flat[0] = 1e6
    save_file(tensors, str(source / "model.safetensors"))

    with pytest.raises(ValueError, match="beyond float16's largest value"):
        export_half.export_half(source, tmp_path / "half")
    assert not (tmp_path / "half").exists()


def test_command_line(tmp_path, capsys):
    assert export_half.main([str(tmp_path / "half"), "--model", str(FIXTURE)]) == 0
    assert "MiB ->" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        export_half.main([str(tmp_path / "half"), "--model", str(FIXTURE)])
    assert "choose an empty folder" in capsys.readouterr().err
