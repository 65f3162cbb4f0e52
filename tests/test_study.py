"""The controlled study (examples/bert/study.py) and its parts: label noise, weight noise, the
line between two models, the paired statistics, and a --quick run end to end."""

import csv
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from examples.bert import flatness, perturb, study, train
from examples.bert.config import BertConfig
from examples.bert.model import BertForSequenceClassification
from examples.bert.train_config import ConfigError, TrainConfig
from tests.train_helpers import make_assets


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("study_assets"))


# ------------------------------------------------------------------------------ label noise


def test_flip_labels_flips_exactly_the_share_to_other_classes():
    labels = np.random.default_rng(1).integers(0, 3, size=1000).astype(np.int32)
    noisy = perturb.flip_labels(labels, 0.2, num_labels=3, seed=7)
    assert noisy.dtype == labels.dtype and noisy.shape == labels.shape
    assert int((noisy != labels).sum()) == 200  # every flip lands on another class
    assert noisy.min() >= 0 and noisy.max() <= 2
    np.testing.assert_array_equal(noisy, perturb.flip_labels(labels, 0.2, 3, seed=7))
    assert (perturb.flip_labels(labels, 0.2, 3, seed=8) != noisy).any()
    np.testing.assert_array_equal(perturb.flip_labels(labels, 0.0, 3, seed=7), labels)


def test_flip_labels_draws_the_new_class_uniformly():
    # All 30,000 labels are 0 and all flip: each new label is 1 or 2 with probability 1/2.
    noisy = perturb.flip_labels(np.zeros(30_000, np.int32), 1.0, num_labels=3, seed=0)
    ones = int((noisy == 1).sum())
    assert (noisy != 0).all()
    assert abs(ones - 15_000) < 4 * math.sqrt(30_000 * 0.25)  # 4 standard deviations


@pytest.mark.parametrize(
    "fraction, classes, message",
    [(1.5, 3, "must lie in \\[0, 1\\]"), (-0.1, 3, "must lie"), (0.1, 1, "two classes")],
)
def test_flip_labels_refuses_bad_input(fraction, classes, message):
    with pytest.raises(ValueError, match=message):
        perturb.flip_labels(np.zeros(4, np.int32), fraction, classes, seed=0)


@pytest.mark.parametrize("value", [1.0, -0.1, float("nan")])
def test_train_config_refuses_bad_label_noise(value):
    with pytest.raises(ConfigError, match="--label-noise"):
        TrainConfig(label_noise=value)


def test_training_sees_the_noisy_labels_and_validation_stays_clean(assets):
    common = dict(model=assets["model"], dataset=assets["data"], max_length=16, batch_size=8)
    clean = train.load(TrainConfig(**common)).dataset
    noisy = train.load(TrainConfig(**common, label_noise=0.25, seed=3)).dataset
    n = len(clean.train["labels"])
    assert int((noisy.train["labels"] != clean.train["labels"]).sum()) == round(0.25 * n)
    np.testing.assert_array_equal(noisy.validation["labels"], clean.validation["labels"])
    np.testing.assert_array_equal(noisy.train["input_ids"], clean.train["input_ids"])


# ----------------------------------------------------------------------------- weight noise


def test_perturb_weights_moves_every_row_by_sigma_times_its_norm():
    key = jax.random.key(0)
    params = {
        "dense": {"kernel": jax.random.normal(key, (6, 4)), "bias": jnp.arange(4.0)},
        "embed": {"embedding": jax.random.normal(jax.random.key(1), (5, 3))},
        "norm": {"scale": jnp.ones(3)},
    }
    moved = flatness.perturb_weights(params, 0.3, jax.random.key(2))
    d_kernel = moved["dense"]["kernel"] - params["dense"]["kernel"]
    np.testing.assert_allclose(  # a kernel's row is a column: what feeds one output unit
        jnp.linalg.norm(d_kernel, axis=0),
        0.3 * jnp.linalg.norm(params["dense"]["kernel"], axis=0),
        rtol=1e-5,
    )
    d_embed = moved["embed"]["embedding"] - params["embed"]["embedding"]
    np.testing.assert_allclose(  # an embedding's row is one token's vector
        jnp.linalg.norm(d_embed, axis=1),
        0.3 * jnp.linalg.norm(params["embed"]["embedding"], axis=1),
        rtol=1e-5,
    )
    np.testing.assert_array_equal(moved["dense"]["bias"], params["dense"]["bias"])
    np.testing.assert_array_equal(moved["norm"]["scale"], params["norm"]["scale"])
    same = flatness.perturb_weights(params, 0.0, jax.random.key(2))
    np.testing.assert_array_equal(same["dense"]["kernel"], params["dense"]["kernel"])
    other = flatness.perturb_weights(params, 0.3, jax.random.key(3))
    assert not np.allclose(other["dense"]["kernel"], moved["dense"]["kernel"])


def test_perturb_weights_finds_the_bert_matrices():
    model = BertForSequenceClassification(BertConfig.tiny(), 2, rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    moved = flatness.perturb_weights(params, 0.1, jax.random.key(0))
    kinds = {}
    for (path, before), after in zip(
        jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(moved), strict=True
    ):
        kind = flatness.matrix_kind(path)
        kinds[kind] = kinds.get(kind, 0) + 1
        changed = not np.array_equal(np.asarray(before), np.asarray(after))
        assert changed == (kind is not None), jax.tree_util.keystr(path)
    assert kinds["embedding"] == 3  # word, position, token type
    assert (
        kinds["kernel"] == 2 * 6 + 2
    )  # per layer: q, k, v, out, intermediate, output; pooler, head


def test_interpolate_is_the_straight_line():
    a, b = {"w": jnp.array([0.0, 2.0])}, {"w": jnp.array([1.0, 4.0])}
    np.testing.assert_array_equal(flatness.interpolate(a, b, 0.0)["w"], a["w"])
    np.testing.assert_array_equal(flatness.interpolate(a, b, 1.0)["w"], b["w"])
    np.testing.assert_allclose(flatness.interpolate(a, b, -0.5)["w"], [-0.5, 1.0])


# ------------------------------------------------------------------------------- statistics


def _rows(arm, values, key="accuracy"):
    return [{"arm": arm, "seed": s, key: v} for s, v in enumerate(values)]


@pytest.mark.parametrize(
    "diffs, verdict",
    [
        ([0.05, 0.06, 0.07], "helps"),
        ([-0.05, -0.06, -0.07], "hurts"),
        ([-0.001, 0.0, 0.001], "no difference"),
        ([0.1, 0.2, 0.3], "not resolved at 3 seeds"),
        ([-0.005, 0.0, 0.005], "not resolved at 3 seeds"),  # CI +-0.0124 crosses +-0.01
    ],
)
def test_paired_difference_and_its_verdict(diffs, verdict):
    base = [0.5, 0.6, 0.7]
    rows = _rows("baseline", base) + _rows(
        "dice", [b + d for b, d in zip(base, diffs, strict=True)]
    )
    d = study.paired(rows, "dice", "baseline", "accuracy")
    mean = np.mean(diffs)
    half = 4.302652729749464 * np.std(diffs, ddof=1) / math.sqrt(3)  # t(0.975, 2)
    assert d["n"] == 3 and d["mean"] == pytest.approx(mean, abs=1e-12)
    assert d["lo"] == pytest.approx(mean - half, abs=1e-9)
    assert d["hi"] == pytest.approx(mean + half, abs=1e-9)
    assert d["verdict"] == verdict


def test_paired_uses_only_shared_finite_seeds():
    rows = _rows("baseline", [0.5, 0.6, 0.7, 0.8]) + _rows("dice", [0.6, math.nan, 0.8])
    d = study.paired(rows, "dice", "baseline", "accuracy")
    assert d["n"] == 2 and d["mean"] == pytest.approx(0.1)
    one = study.paired(
        _rows("baseline", [0.5]) + _rows("dice", [0.7]), "dice", "baseline", "accuracy"
    )
    assert one["n"] == 1 and math.isnan(one["lo"]) and one["verdict"] == "not resolved at 1 seed(s)"
    assert study.paired(_rows("baseline", [0.5]), "dice", "baseline", "accuracy") is None
    # Two seeds that agree give an interval of width 0: no verdict from fewer than three.
    two = _rows("baseline", [0.5, 0.6]) + _rows("dice", [0.49, 0.59])
    d = study.paired(two, "dice", "baseline", "accuracy")
    assert d["hi"] == pytest.approx(d["lo"]) and d["verdict"] == "not resolved at 2 seed(s)"


def test_flat_sigma_counts_from_the_start_of_the_grid():
    result = {
        "sigmas": [0.1, 0.2, 0.3],
        "clean": 0.80,
        "accuracy": {"0.1": [0.80, 0.79], "0.2": [0.78, 0.78], "0.3": [0.80, 0.80]},
    }
    row = {}
    study.add_flatness(row, result)
    assert row["weight_noise_0.1"] == pytest.approx(0.795)
    assert row["weight_noise_change_0.2"] == pytest.approx(-0.02)
    assert row["flat_sigma"] == 0.1  # 0.2 drops 2 points; 0.3's recovery does not count
    result["accuracy"]["0.1"] = [0.7, 0.7]
    study.add_flatness(row, result)
    assert row["flat_sigma"] == 0.0


def test_best_lr_is_the_highest_mean_and_a_diverged_run_counts_zero():
    rows = [
        {"arm": "baseline", "lr_factor": f, "label_noise": 0.0, "accuracy": a}
        for f, a in [(1.0, 0.70), (1.0, 0.72), (3.0, 0.80), (3.0, math.nan)]
    ] + [
        {"arm": "dice before", "lr_factor": f, "label_noise": 0.0, "accuracy": 0.6}
        for f in (1 / 3, 1.0, 3.0)
    ]
    best = study.best_factors(rows)
    assert best == {"baseline": 1.0, "dice before": 1.0}  # 0.71 > 0.40; a tie goes to x1


# ----------------------------------------------------------------------------- end to end


def test_quick_study_of_one_arm_writes_its_rows_and_resumes(assets, tmp_path, monkeypatch):
    # The default suite's end-to-end check (two runs); the slow test below runs every phase.
    argv = [
        "--quick", "--arms", "baseline", "--lr-factors", "1", "--extra-seeds", "0",
        "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
        "--lr", "3e-3", "--model", assets["model"], "--dataset", assets["data"],
    ]  # fmt: skip
    rows = study.main(argv)
    assert [(r["arm"], r["seed"], r["label_noise"]) for r in rows] == [
        ("baseline", 0, 0.0),
        ("baseline", 0, 0.2),
    ]
    clean, noisy = rows
    assert clean["weight_noise_clean"] >= clean["weight_noise_1"] - 1.0  # the columns exist
    assert "weight_noise_1" not in noisy  # weight noise is measured on clean runs only
    with open(tmp_path / "results" / "runs.csv") as f:
        table = list(csv.DictReader(f))
    assert [t["label_noise"] for t in table] == ["0.0", "0.2"]
    assert table[1]["weight_noise_0.1"] == ""
    md = (tmp_path / "results" / "study.md").read_text()
    # One arm: every answer that needs another arm says it was not measured.
    assert "## Answers" in md and "dice minus baseline: not measured yet" in md
    monkeypatch.setattr(study.train, "train", lambda *a, **k: pytest.fail("trained again"))
    monkeypatch.setattr(study, "FinalModel", lambda *a, **k: pytest.fail("evaluated again"))
    assert study.main([*argv, "--report-only"]) == rows


@pytest.mark.slow
def test_quick_study_runs_every_phase_and_resumes(assets, tmp_path, monkeypatch):
    argv = [
        "--quick",
        "--arms", "baseline", "dice-before",
        "--lr-factors", "1",  # one lr: the choice of the best is tested above, and saves runs
        "--runs-dir", str(tmp_path / "runs"),
        "--results-dir", str(tmp_path / "results"),
        "--lr", "3e-3",
        "--model", assets["model"],
        "--dataset", assets["data"],
    ]  # fmt: skip
    rows = study.main(argv)
    # quick: 1 seed x 1 lr x 2 arms, 1 more seed for both at their best lr, 1 noisy run each.
    assert len(rows) == 6
    clean = [r for r in rows if not r["label_noise"]]
    noisy = [r for r in rows if r["label_noise"]]
    assert len(noisy) == 2 and {r["label_noise"] for r in noisy} == {0.2}
    best = study.best_factors(clean)
    for r in noisy:
        assert r["lr_factor"] == best[r["arm"]]
        saved = json.loads(Path(r["run_dir"], "config.json").read_text())["args"]
        assert saved["label_noise"] == 0.2 and saved["lr"] == pytest.approx(r["lr"])
    assert sorted(r["seed"] for r in clean if r["lr_factor"] == best[r["arm"]]) == [0, 0, 1, 1]

    results = tmp_path / "results"
    with open(results / "runs.csv") as f:
        table = list(csv.DictReader(f))
    required = ["arm", "seed", "lr", "label_noise", "accuracy", "best_accuracy", "macro_f1",
                "perturbed_accuracy", "weight_noise_0.1", "weight_noise_1"]  # fmt: skip
    assert set(required) <= set(table[0])
    with_noise = [t for t in table if t["weight_noise_0.1"]]
    assert len(with_noise) == 4  # the clean runs at their arm's best lr
    for t in table:
        assert float(t["best_accuracy"]) >= float(t["accuracy"]) - 1e-12
    for name in ("study.md", "study.csv", "accuracy_vs_lr.png", "weight_noise.png",
                 "interpolation.png", "label_noise.png"):  # fmt: skip
        assert (results / name).stat().st_size > 0, name
    md = (results / "study.md").read_text()
    for section in ("## Answers", "## Clean labels", "## Paired differences", "## Weight noise",
                    "flipped", "## The line between"):  # fmt: skip
        assert section in md
    line = json.loads((tmp_path / "runs" / "interpolation.json").read_text())
    assert line["alphas"][0] == -0.5 and line["alphas"][-1] == 1.5 and 0.0 in line["alphas"]

    # A second call trains nothing and evaluates nothing again: it reads what is there.
    def refuse(*args, **kwargs):
        raise AssertionError("the study ran again")

    monkeypatch.setattr(study.train, "train", refuse)
    monkeypatch.setattr(study, "FinalModel", refuse)
    again = study.main(argv)
    assert [r["accuracy"] for r in again] == [r["accuracy"] for r in rows]
    assert study.main([*argv, "--report-only"]) == again
    # Finished runs made with other settings are refused, not mixed in.
    with pytest.raises(SystemExit, match="weight_decay 0.01 \\(not 0.02\\)"):
        study.main([*argv, "--weight-decay", "0.02"])


def test_study_refuses_an_unknown_arm(capsys):
    with pytest.raises(SystemExit):
        study.main(["--arms", "dice-sideways"])
    assert "unknown arm(s) ['dice-sideways']" in capsys.readouterr().err
