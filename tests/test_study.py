"""The controlled study (examples/experiments/study.py) and its parts: label noise, weight noise,
the line between two models; the study's logic on synthetic rows (milliseconds); its command line;
the committed report re-derived from runs.csv; and a --quick run end to end."""

import csv
import dataclasses
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from examples.bert import perturb, train
from examples.bert.config import BertConfig
from examples.bert.model import BertForSequenceClassification
from examples.bert.train_config import ConfigError, TrainConfig
from examples.experiments import flatness, runner, study
from examples.experiments import study_design as design
from examples.experiments import study_report as report
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


def test_sorted_batches_give_the_padded_batches_metrics():
    from examples.bert import parallel, run_loop, steps

    model = BertForSequenceClassification(BertConfig.tiny(), 3, rngs=nnx.Rngs(0))
    _, eval_graphdef, params, model_state = steps.split_model(model)
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 21, size=37)  # 37 examples of 2-20 of 20 tokens
    mask = (np.arange(20)[None, :] < lengths[:, None]).astype(np.int32)
    ids, labels = rng.integers(1, 90, size=(37, 20)) * mask, rng.integers(0, 3, size=37)
    split = {"input_ids": ids, "attention_mask": mask, "token_type_ids": 0 * mask, "labels": labels}
    batches = flatness.sorted_batches(split, 8, multiple=4)
    for b in batches:  # each cut to its longest example, rounded up to 4 tokens
        longest = b["attention_mask"].sum(axis=1).max()
        assert b["input_ids"].shape[1] % 4 == 0 and longest <= b["input_ids"].shape[1] < longest + 4
    assert len({b["input_ids"].shape[1] for b in batches}) > 2
    assert sum(b["weights"].sum() for b in batches) == 37
    assert sorted(np.concatenate([b["labels"][b["weights"] > 0] for b in batches]).tolist()) == (
        sorted(split["labels"].tolist())
    )
    mesh = parallel.make_mesh()
    eval_step = steps.make_eval_step(eval_graphdef, 3, mesh)
    state = steps.TrainState(None, params, model_state, None)
    with jax.transfer_guard_device_to_host("allow"):
        padded = run_loop.evaluate(eval_step, state, split, 8, 3, mesh)
        cut = run_loop.evaluate_batches(eval_step, state, batches, 3, mesh)
    assert cut["accuracy"] == padded["accuracy"] and cut["macro_f1"] == padded["macro_f1"]
    assert cut["loss"] == pytest.approx(padded["loss"], rel=1e-5)


def test_interpolate_is_the_straight_line():
    a, b = {"w": jnp.array([0.0, 2.0])}, {"w": jnp.array([1.0, 4.0])}
    np.testing.assert_array_equal(flatness.interpolate(a, b, 0.0)["w"], a["w"])
    np.testing.assert_array_equal(flatness.interpolate(a, b, 1.0)["w"], b["w"])
    np.testing.assert_allclose(flatness.interpolate(a, b, -0.5)["w"], [-0.5, 1.0])


def test_weight_noise_at_sigma_0_is_the_clean_model():
    class Model:  # evaluate: a deterministic function of the weights
        def __init__(self):
            self.params = {"dense": {"kernel": jnp.arange(12.0).reshape(4, 3)}}
            self.validation, self.majority = {"labels": np.zeros(10)}, 0.4

        def evaluate(self, params):
            return {"accuracy": float(jnp.sum(params["dense"]["kernel"] ** 2)) / 1000}

    result = flatness.weight_noise(Model(), [0.0, 0.5], draws=3)
    assert result["accuracy"]["0"] == [result["clean"]] * 3
    assert all(a != result["clean"] for a in result["accuracy"]["0.5"])
    assert result["majority"] == 0.4 and result["examples"] == 10


class _Counted:
    """A model whose accuracy is a function of the weights, counting its evaluations."""

    def __init__(self):
        self.params = {"dense": {"kernel": jnp.arange(1.0, 13.0).reshape(4, 3)}}
        self.validation, self.majority, self.calls = {"labels": np.zeros(10)}, 0.4, 0

    def evaluate(self, params):
        self.calls += 1
        w = params["dense"]["kernel"]
        return {"accuracy": float(jnp.sum(w[:, 0])) / 100, "loss": float(jnp.sum(w**2)) / 100}


def test_weight_noise_resumes_draw_by_draw_with_the_same_draws():
    saved = []
    full = flatness.weight_noise(_Counted(), [0.1, 0.2], draws=2, save=saved.append)
    assert [r["sigmas"] for r in saved] == [[], [0.1], [0.1], [0.1, 0.2]]
    assert [len(r["accuracy"]["0.1"]) for r in saved] == [1, 2, 2, 2]  # each save a snapshot
    # Stopped after 0.1: resuming measures 0.2 only (its 2 draws), with the same values.
    model = _Counted()
    again = flatness.weight_noise(model, [0.1, 0.2], 2, done=saved[1])
    assert model.calls == 2 and again == full
    # Stopped within 0.2, after its first draw: one evaluation, its second draw.
    model = _Counted()
    assert flatness.weight_noise(model, [0.1, 0.2], 2, done=saved[2]) == full
    assert model.calls == 1
    # Stopped in the first sigma: the clean accuracy is kept, the rest measured.
    model = _Counted()
    assert flatness.weight_noise(model, [0.1, 0.2], 2, done=saved[0]) == full
    assert model.calls == 3 and saved[0]["sigmas"] == []
    # Draw d is one direction at every sigma: the move at 0.2 is twice that at 0.1.
    w = _Counted().params
    d1, d2 = (flatness.perturb_weights(w, s, jax.random.key(1))["dense"]["kernel"]
              - w["dense"]["kernel"] for s in (0.1, 0.2))  # fmt: skip
    np.testing.assert_allclose(d2, 2 * d1, rtol=1e-5)
    acc = full["accuracy"]
    change = [[a - full["clean"] for a in acc[s]] for s in ("0.1", "0.2")]
    np.testing.assert_allclose(change[1], 2 * np.array(change[0]), rtol=1e-4)
    # Draw d is key d whatever the number of draws: with 3 draws now, each sigma's first 2 are
    # kept (2 evaluations); with 1, the first is kept (none); another split: all measured again.
    model = _Counted()
    more = flatness.weight_noise(model, [0.1, 0.2], 3, done=full)
    assert model.calls == 2 and more["accuracy"]["0.1"][:2] == full["accuracy"]["0.1"]
    assert more == flatness.weight_noise(_Counted(), [0.1, 0.2], 3) and more["draws"] == 3
    model = _Counted()
    fewer = flatness.weight_noise(model, [0.1, 0.2], 1, done=full)
    assert model.calls == 0 and fewer["accuracy"]["0.2"] == full["accuracy"]["0.2"][:1]
    model = _Counted()
    flatness.weight_noise(model, [0.1, 0.2], 2, done={**full, "examples": 11})
    assert model.calls == 1 + 2 * 2


def test_the_line_resumes_point_by_point():
    a, b = _Counted(), _Counted()
    b.params = {"dense": {"kernel": a.params["dense"]["kernel"] * 3}}
    saved = []
    full = flatness.line(a, b, [0.0, 0.5, 1.0], save=saved.append)
    assert full["alphas"] == [0.0, 0.5, 1.0] and full["accuracy"] == pytest.approx(
        [0.22, 0.44, 0.66]
    )
    a.calls = 0
    assert flatness.line(a, b, [0.0, 0.5, 1.0], done=saved[1]) == full and a.calls == 1


def test_the_probes_see_every_validation_example():
    config = TrainConfig(max_eval_samples=1000, label_noise=0.2, perturbed_eval=True)
    probe = flatness.probe_config(config)
    assert probe.max_eval_samples == 0  # 0: all
    assert probe.label_noise == 0.0 and not probe.perturbed_eval and probe.seed == config.seed


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
    d = runner.paired(rows, "dice", "baseline", "accuracy")
    mean = np.mean(diffs)
    half = 4.302652729749464 * np.std(diffs, ddof=1) / math.sqrt(3)  # t(0.975, 2)
    assert d["n"] == 3 and d["mean"] == pytest.approx(mean, abs=1e-12)
    assert d["lo"] == pytest.approx(mean - half, abs=1e-9)
    assert d["hi"] == pytest.approx(mean + half, abs=1e-9)
    assert d["verdict"] == verdict
    t = mean / (np.std(diffs, ddof=1) / math.sqrt(3))
    from scipy import stats

    assert d["p"] == pytest.approx(2 * stats.t.sf(abs(t), 2), rel=1e-9)


def test_paired_uses_only_shared_finite_seeds():
    rows = _rows("baseline", [0.5, 0.6, 0.7, 0.8]) + _rows("dice", [0.6, math.nan, 0.8])
    d = runner.paired(rows, "dice", "baseline", "accuracy")
    assert d["n"] == 2 and d["mean"] == pytest.approx(0.1)
    one = runner.paired(
        _rows("baseline", [0.5]) + _rows("dice", [0.7]), "dice", "baseline", "accuracy"
    )
    assert one["n"] == 1 and math.isnan(one["lo"]) and one["verdict"] == "not resolved at 1 seed(s)"
    assert runner.paired(_rows("baseline", [0.5]), "dice", "baseline", "accuracy") is None
    # None (a run with no measurement) is skipped, not a crash (issue 21, item 1).
    assert runner.paired(_rows("baseline", [None, 0.5]) + _rows("dice", [0.4, 0.6]),
                             "dice", "baseline", "accuracy")["n"] == 1  # fmt: skip
    # A seed whose pair lacks a value (a diverged run) is left out, and said so.
    assert d["left_out"] == 1 and "(n=2, 1 left out)" in runner.cell(d)
    assert "over 2 paired seed(s) (1 more left out: a run without a final value" in runner.said(d)
    full = runner.paired(_rows("baseline", [0.5, 0.6]) + _rows("dice", [0.6, 0.7]), "dice",
                         "baseline", "accuracy")  # fmt: skip
    # A probe made on one seed of two: the other seed is not paired, and not "left out" (its
    # runs have their accuracy: nothing diverged).
    both = _rows("baseline", [0.5, 0.6]) + _rows("dice", [0.6, 0.7])
    flats = [0.25, math.nan, 0.3, math.nan]
    probed = [{**r, "flat": f} for r, f in zip(both, flats, strict=True)]
    one_probe = runner.paired(probed, "dice", "baseline", "flat")
    assert (one_probe["n"], one_probe["left_out"]) == (1, 0)
    assert "left out" not in runner.said(one_probe)
    probed[3]["accuracy"] = math.nan  # dice seed 1 diverged: that seed is left out
    assert runner.paired(probed, "dice", "baseline", "flat")["left_out"] == 1
    assert full["left_out"] == 0 and "left out" not in runner.said(full) + runner.cell(full)
    two = _rows("baseline", [0.5, 0.6]) + _rows("dice", [0.49, 0.59])
    d = runner.paired(two, "dice", "baseline", "accuracy")
    assert d["hi"] == pytest.approx(d["lo"]) and d["verdict"] == "not resolved at 2 seed(s)"


def test_holm_and_the_power_estimate():
    assert runner.holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": math.nan}) == {
        "a": (0.03, True), "b": (0.06, False), "c": (0.06, False), "d": (math.nan, False)
    } or math.isnan(runner.holm({"d": math.nan})["d"][0])  # fmt: skip
    adjusted = runner.holm({"a": 0.001, "b": 0.02, "c": 0.04})
    assert adjusted == {"a": (0.003, True), "b": (0.04, True), "c": (0.04, True)}
    # Twice the SD needs about four times the seeds; zero SD needs the minimum.
    assert runner.seeds_needed(0.02) == 10 and runner.seeds_needed(0.04) == 34
    assert runner.seeds_needed(0.0) == 3 and runner.seeds_needed(1.0, most=7) == 7


# ----------------------------------------------------------- the study's logic, synthetic rows


def _cfg(**kw):
    return design.StudyConfig(committed="", **kw)


def _row(arm, seed, accuracy, lr=None, steps=150, noise=0.0, **extra):
    lr = 1e-4 * design.ARMS[arm].lr_scale if lr is None else lr
    perturbed = None if accuracy is None else accuracy - 0.05
    r = {"arm": arm, "seed": seed, "steps": steps, "lr": lr, "label_noise": noise,
         "accuracy": accuracy, "perturbed_accuracy": perturbed, "majority_accuracy": 0.4,
         "status": "completed", "run_dir": f"/nowhere/{arm}/{seed}", **extra}  # fmt: skip
    return design.complete(r)


def test_the_arms_and_their_learning_rates():
    import optax_dice

    assert design.DICE_MEAN == pytest.approx(optax_dice.odds(**design.DICE).expected_scale)
    assert design.CLIP_MATCHED == pytest.approx(1 / 0.37, abs=1e-3)
    cfg = _cfg()
    jobs = design.tuning_jobs(cfg, {})
    # Every arm is tuned over the same grid, factor 2 apart; the control at 0.37 x it.
    assert cfg.lr_factors == [0.25, 0.5, 1.0, 2.0, 4.0]
    for arm in design.ARMS:
        lrs = sorted(j.settings["lr"] for j in jobs if j.arm == arm and j.seed == 0)
        scale = 0.37 if arm == "lr-matched control" else 1.0
        assert lrs == pytest.approx([1e-4 * scale * f for f in cfg.lr_factors]), arm
    assert len(jobs) == len(design.ARMS) * 5 * 3
    by_arm = {j.arm: j.settings for j in jobs}
    assert by_arm["baseline, clip 2.7"]["clip_norm"] == design.CLIP_MATCHED
    assert by_arm["baseline, clip 2.7"]["mode"] == "off"
    assert by_arm["dice before, no clip"]["clip_norm"] == 0.0
    assert by_arm["dice before, no clip"]["threshold"] == 12
    assert by_arm["dice after"]["dice_position"] == "after"
    assert by_arm["fair die after"]["normalize"] is True
    assert "clip_norm" not in by_arm["dice before"]  # TrainConfig's 1.0
    assert len({j.workdir for j in jobs}) == len(jobs)


def test_best_lr_is_the_highest_mean_on_the_grid_over_the_shared_tuning_seeds():
    cfg = _cfg(seeds=3)
    rows = [_row("baseline", s, a) for s, a in enumerate([0.70, 0.72, 0.74])]
    rows += [_row("baseline", s, a, lr=2e-4) for s, a in enumerate([0.80, math.nan])]
    rows += [_row("baseline", 0, 0.99, lr=3e-4)]  # off the grid
    rows += [_row("dice before", 0, 0.6, lr=lr) for lr in (5e-5, 1e-4, 2e-4)]
    # dice after: 1e-4 has seeds 0-4 (mean 0.76, 0.667 over the tuning seeds), 5e-5 only seed
    # 0, where it beats 1e-4 (0.65 > 0.60): judged on seed 0 alone, 5e-5 wins.
    rows += [_row("dice after", s, a) for s, a in enumerate([0.60, 0.70, 0.70, 0.90, 0.90])]
    rows += [_row("dice after", 0, 0.65, lr=5e-5), _row("dice after", 0, 0.99, lr=2e-4, steps=600)]
    rows += [_row("fair die after", s, 0.7, lr=lr) for s, lr in enumerate([5e-5, 2e-4])]
    rows += [_row("fair die after", 1, 0.8, lr=1e-4)]
    best = design.best_lrs(cfg, rows)
    # On seeds 0-1, 0.71 > (0.80 + 0) / 2; 3e-4 is off the grid; a tie goes to the grid's
    # middle; only the tuning budget counts; lrs with no seed in common are compared over
    # every tuning seed (0.8 > 0.7).
    assert best == {"baseline": 1e-4, "dice before": 1e-4, "dice after": 5e-5,
                    "fair die after": 1e-4}  # fmt: skip
    # Equal sums are a tie although their float means differ in the last bit: the middle wins;
    # 0.5x and 2x tied, in either row order: the lower lr.
    assert np.mean([0.751, 0.720, 0.705]) != np.mean([0.719, 0.702, 0.755])
    rows = [_row("baseline", s, a, lr=lr) for lr, accs in ((2e-4, [0.751, 0.720, 0.705]),
            (1e-4, [0.719, 0.702, 0.755])) for s, a in enumerate(accs)]  # fmt: skip
    assert design.best_lrs(cfg, rows) == {"baseline": 1e-4}
    rows = [_row("baseline", s, 0.7, lr=lr) for lr in (5e-5, 2e-4) for s in range(3)]
    assert design.best_lrs(cfg, rows) == design.best_lrs(cfg, rows[::-1]) == {"baseline": 5e-5}


def _grid_rows(cfg, accuracy, factors=None, arms=tuple(design.ARMS)):
    """The arms at every factor of the grid (default) on the tuning seeds, ``accuracy(arm,
    factor)`` each."""
    return [_row(arm, seed, accuracy(arm, f), lr=design.lr_of(cfg, arm, f))
            for arm in arms for f in factors or cfg.lr_factors
            for seed in range(cfg.seeds)]  # fmt: skip


def test_an_arm_whose_best_lies_at_the_grids_end_is_tuned_past_it():
    cfg = _cfg(seeds=3)
    assert cfg.widen == 2 and design.factors(cfg) == [
        0.0625,
        0.125,
        *cfg.lr_factors,
        8.0,
        16.0,
    ]

    def accuracy(arm, f):  # dice after rises with the lr, dice before falls, the rest peak at 1
        slope = {"dice after": 0.01, "dice before": -0.01}.get(arm, 0.0)
        return 0.7 + slope * math.log2(f) - (0.0 if slope else 0.01 * abs(math.log2(f)))

    rows = _grid_rows(cfg, accuracy)
    wider = design.widen_jobs(cfg, {}, rows)
    assert sorted((j.arm, j.settings["lr"], j.seed) for j in wider) == sorted(
        [("dice after", pytest.approx(8e-4), s) for s in range(3)]
        + [("dice before", pytest.approx(1.25e-5), s) for s in range(3)]
    )
    assert {design.phase_of(cfg, j) for j in wider} == {"tuning"}
    assert design.widen_jobs(dataclasses.replace(cfg, widen=0), {}, rows) == []
    assert "--widen must be 0 or more, got -1" in _cfg(widen=-1).problems()
    # An arm whose grid misses a tuning seed is not widened yet.
    gap = [r for r in rows if (r["arm"], r["seed"], r["lr"]) != ("dice after", 2, 2.5e-5)]
    assert {j.arm for j in design.widen_jobs(cfg, {}, gap)} == {"dice before"}
    # Better at 8: the next step, 16, is the last --widen allows; the answer says it is the edge.
    up = rows + _grid_rows(cfg, accuracy, [8.0], ["dice after"])
    assert [j.settings["lr"] for j in design.widen_jobs(cfg, {}, up) if j.arm == "dice after"] == (
        pytest.approx([1.6e-3] * 3)
    )
    top = up + _grid_rows(cfg, accuracy, [16.0], ["dice after"])
    assert not [j for j in design.widen_jobs(cfg, {}, top) if j.arm == "dice after"]
    v = report.View(cfg, top, [], design.best_lrs(cfg, top))
    assert v.best["dice after"] == pytest.approx(1.6e-3)
    assert v.lr("dice after") == "0.0016, best of 7 of 7 lrs, the highest tried"
    assert v.lr("baseline") == "0.0001, best of 5 of 5 lrs"
    # Worse at 8: the best stays at 4, no further step, and it is no longer the edge.
    down = rows + [_row("dice after", s, 0.6, lr=8e-4) for s in range(3)]
    assert not [j for j in design.widen_jobs(cfg, {}, down) if j.arm == "dice after"]
    v = report.View(cfg, down, [], design.best_lrs(cfg, down))
    assert v.best["dice after"] == pytest.approx(4e-4)
    assert v.lr("dice after") == "0.0004, best of 6 of 6 lrs"
    # Better at 8 on the one seed measured so far (an interrupted step): its other seeds first.
    part = [*rows, _row("dice after", 0, 0.9, lr=8e-4)]
    assert sorted(j.seed for j in design.widen_jobs(cfg, {}, part) if j.arm == "dice after") == [
        0, 1, 2]  # fmt: skip


def test_the_study_widens_the_grid_step_by_step(monkeypatch):
    cfg = _cfg(seeds=3, phases=["tuning"], runs_dir="/nowhere")

    def accuracy(arm, f):
        return 0.7 + (0.01 * math.log2(f) if arm == "dice after" else -0.01 * abs(math.log2(f)))

    trained = []
    monkeypatch.setattr(
        runner, "run_jobs", lambda jobs, **kw: trained.extend(j for j in jobs if not kw["skip"](j))
    )
    factor = {}

    def gather(plan, committed):
        for j in plan:
            factor.setdefault(j.key, j.settings["lr"] / design.lr_of(cfg, j.arm, 1.0))
        return [_row(j.arm, j.seed, accuracy(j.arm, factor[j.key]), lr=j.settings["lr"])
                for j in trained if j.settings["steps"] == 150]  # fmt: skip

    monkeypatch.setattr(study, "gather", gather)
    v = study.study(cfg, {})
    past = [(j.arm, round(j.settings["lr"], 8)) for j in trained[len(design.ARMS) * 5 * 3 :]]
    assert past == [("dice after", 8e-4)] * 3 + [("dice after", 1.6e-3)] * 3
    assert len(trained) == len({j.key for j in trained})  # nothing twice
    assert v.best["dice after"] == pytest.approx(1.6e-3) and v.best["baseline"] == 1e-4


def _synthetic(seeds=5, gap=-0.08, sd=0.01):
    """Every arm at its grid's middle lr; dice before behind the baseline by ``gap``."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(seeds):
        base = 0.75 + 0.01 * seed
        for arm in design.ARMS:
            shift = gap if arm == "dice before" else 0.0
            rows.append(_row(arm, seed, base + shift + sd * rng.standard_normal()))
    return rows


def test_later_phases_add_seeds_noise_and_budgets_at_the_best_lr():
    cfg = _cfg(seeds=3)
    rows = _synthetic(seeds=3, sd=0.03)
    jobs = design.later_jobs(cfg, {}, rows)
    more = [j for j in jobs if j.settings["steps"] == 150 and not j.settings["label_noise"]]
    noisy = [j for j in jobs if j.settings["label_noise"]]
    longer = [j for j in jobs if j.settings["steps"] != 150]
    # The power estimate asks for more than --max-seeds for dice before (SD 0.03 > 2 points).
    assert max(j.seed for j in more if j.arm == "dice before") == cfg.max_seeds - 1
    assert {j.arm for j in more} == {a for q in design.HEADLINE for a in (q.arm, q.ref)}
    assert {j.arm for j in noisy} == set(design.ORIGINAL_ARMS)
    assert all(
        j.settings["label_noise"] == 0.2 and j.settings["lr"] == 1e-4 * design.ARMS[j.arm].lr_scale
        for j in noisy
    )
    # Answer 7's arms get --min-seeds noisy seeds before any is measured, the others --seeds.
    seeds = {a: sorted(j.seed for j in noisy if j.arm == a) for a in design.ORIGINAL_ARMS}
    assert seeds["baseline"] == seeds["dice before"] == seeds["fair die before"] == [0, 1, 2, 3, 4]
    assert seeds["dice after"] == seeds["lr-matched control"] == [0, 1, 2]
    # Once measured, the interaction's paired SD sets them: 0.03 asks for more than --max-seeds.
    rng = np.random.default_rng(1)
    measured = rows + [dict(r, label_noise=0.2, accuracy=r["accuracy"] - 0.05
                            + 0.03 * rng.standard_normal()) for r in rows]  # fmt: skip
    best = design.best_lrs(cfg, rows)
    assert design.noise_seeds(cfg, measured, best)["dice before"] == cfg.max_seeds
    steady = rows + [dict(r, label_noise=0.2, accuracy=r["accuracy"] - 0.05) for r in rows]
    assert design.noise_seeds(cfg, steady, best)["dice before"] == cfg.min_seeds
    assert {(j.arm, j.settings["steps"]) for j in longer} == {
        (a, b) for a in design.BUDGET_ARMS for b in (600, 2000)
    }
    assert {j.seed for j in longer} == set(range(5))
    # The first budget runs first (it decides what the other answers mean), the longer last.
    first_more = next(i for i, j in enumerate(jobs) if j in more)
    steps = [j.settings["steps"] for j in jobs]
    assert set(steps[:first_more]) == {600} and steps[first_more:].count(600) == 0
    assert steps[-1] == 2000


def test_the_probes_measure_the_probe_arms_seed_by_seed_and_train_what_is_gone(monkeypatch):
    cfg = _cfg(probe_seeds=2)
    rows = _synthetic(seeds=4)
    done = dict(_row("baseline", 1, 0.7), flat_sigma=0.2)  # measured already
    rows = [done if (r["arm"], r["seed"]) == ("baseline", 1) else r for r in rows]
    best = design.best_lrs(cfg, rows)
    targets = study.probe_targets(cfg, rows, best)
    assert [(r["arm"], r["seed"]) for r in targets] == [
        ("baseline", 0), ("dice before", 0), ("baseline, clip 2.7", 0),
        ("dice before", 1), ("baseline, clip 2.7", 1),
    ]  # fmt: skip
    # A committed row's flat_sigma read back from runs.csv is NaN: it is measured.
    read_back = dict(rows[0], flat_sigma=math.nan)
    assert study.probe_targets(cfg, [read_back], best) == [read_back]
    assert study.probe_targets(_cfg(probe_seeds=2, arms=["dice-before"]), rows, best)[0][
        "arm"] == "dice before"  # fmt: skip
    trained, status, ended = [], {}, {}

    def train(jobs, **kw):
        trained.extend(jobs)
        status.update((j.workdir, "completed") for j in jobs)

    monkeypatch.setattr(runner, "run_jobs", train)
    monkeypatch.setattr(runner, "run_status", lambda workdir: status.get(workdir, "missing"))
    monkeypatch.setattr(runner, "read_summary", lambda workdir: ended.get(workdir, {}))
    again = design.job(cfg, {}, rows[0]["arm"], rows[0]["lr"], 0, 150, 0.0).workdir
    ended[again] = {"eval_accuracy": rows[0]["accuracy"], "eval_macro_f1": 0.61}
    folder = study.probe_folder(cfg, {}, rows[0], "line")  # its folder is gone: trained again
    assert [j.workdir for j in trained] == [folder] and folder.startswith(cfg.runs_dir)
    # Trained again, it must end where the row did (the row's macro-F1 too, where it has one).
    assert study.probe_folder(cfg, {}, dict(rows[0], macro_f1=0.61), "line") == folder
    for other in ({"accuracy": rows[0]["accuracy"] + 0.001}, {"macro_f1": 0.61 + 1e-9}):
        elsewhere = {**rows[0], "macro_f1": 0.61, **other}
        assert study.probe_folder(cfg, {}, elsewhere, "line") is None
        # Weight noise, a per-run measurement, measures it (the row then says where it ended).
        assert study.probe_folder(cfg, {}, elsewhere, "weight-noise", retrained_ok=True) == folder
    assert len(trained) == 1
    # A folder whose run diverged is not trained again (it is final) nor probed as the row's.
    diverged = dict(rows[0], seed=7)
    status[design.job(cfg, {}, diverged["arm"], diverged["lr"], 7, 150, 0.0).workdir] = "diverged"
    monkeypatch.setattr(runner, "run_jobs", lambda jobs, **kw: None)
    assert study.probe_folder(cfg, {}, diverged, "line") is None
    monkeypatch.setattr(runner, "run_jobs", train)
    status.clear()
    assert trained[0].settings["lr"] == rows[0]["lr"] and trained[0].seed == 0
    assert (
        study.probe_folder(dataclasses.replace(cfg, report_only=True), {}, rows[0], "line") is None
    )
    no_line = dataclasses.replace(cfg, phases=["weight-noise"])
    assert study.probe_folder(no_line, {}, rows[0], "line") is None
    assert len(trained) == 1


def test_weight_noise_on_a_run_trained_again_that_ended_elsewhere_says_so(tmp_path, monkeypatch):
    cfg = _cfg(runs_dir=str(tmp_path), probe_seeds=1, weight_noise_sigmas=[0.1, 0.2],
               weight_noise_draws=2)  # fmt: skip
    rows = [_row(arm, 0, 0.7, macro_f1=0.6) for arm in design.PROBE_ARMS]
    best = design.best_lrs(cfg, rows)
    clip = design.job(cfg, {}, "baseline, clip 2.7", rows[2]["lr"], 0, 150, 0.0).workdir
    status = {}

    def train(jobs, **kw):
        for j in jobs:
            status[j.workdir] = "completed"
            Path(j.workdir).mkdir(parents=True)

    def summary(workdir):  # the clip row's run, trained again here, ends 0.01 lower
        return {"eval_accuracy": 0.69 if workdir == clip else 0.7, "eval_macro_f1": 0.6}

    def weight_noise(model, sigmas, draws, done=None, save=None):
        result = {"sigmas": sigmas, "draws": draws, "clean": 0.72, "majority": 0.4,
                  "accuracy": {"0.1": [0.72, 0.72], "0.2": [0.64, 0.56]}}  # fmt: skip
        save(result)
        return result

    monkeypatch.setattr(runner, "run_jobs", train)
    monkeypatch.setattr(runner, "run_status", lambda workdir: status.get(workdir, "missing"))
    monkeypatch.setattr(runner, "read_summary", summary)
    monkeypatch.setattr(flatness, "FinalModel", lambda folder: folder)
    monkeypatch.setattr(flatness, "weight_noise", weight_noise)
    out = {r["arm"]: r for r in study.with_flatness(cfg, {}, rows, best)}
    assert set(status) == {design.job(cfg, {}, r["arm"], r["lr"], 0, 150, 0.0).workdir
                           for r in rows}  # fmt: skip
    assert [out[a]["weight_noise_run_accuracy"] for a in design.PROBE_ARMS] == [0.7, 0.7, 0.69]
    assert all(r["flat_sigma"] == 0.1 for r in out.values())  # -0.12 / 0.32 at 0.2
    assert out["baseline, clip 2.7"]["weight_noise_change_0.2"] == pytest.approx(-0.12 / 0.32)
    said = " ".join(report.retrained_runs(list(out.values())))
    assert "clip 2.7 seed 0 (final evaluation: the row's run 0.700, the run probed 0.690)" in said
    assert "baseline seed" not in said and "dice before seed" not in said
    assert report.retrained_runs(rows) == []  # nothing probed: nothing to say
    # Read back from runs.csv, the column survives; a row probed before it was a column is
    # the row's own run (only those were probed then).
    runner.write_csv(str(tmp_path / "runs.csv"), list(out.values()))
    back = {r["arm"]: design.complete(r) for r in runner.read_csv(str(tmp_path / "runs.csv"))}
    assert back["baseline, clip 2.7"]["weight_noise_run_accuracy"] == 0.69
    old = {k: v for k, v in out["baseline"].items() if k != "weight_noise_run_accuracy"}
    assert design.complete(old)["weight_noise_run_accuracy"] == 0.7


def test_phases_run_alone_on_the_committed_rows(tmp_path, monkeypatch):
    cfg = _cfg(seeds=3)
    rows = _synthetic(seeds=3, sd=0.03)
    jobs = design.tuning_jobs(cfg, {}) + design.later_jobs(cfg, {}, rows)
    phases = {design.phase_of(cfg, j) for j in jobs}
    assert phases == {"tuning", "budgets", "seeds", "noise"}
    assert all((design.phase_of(cfg, j) == "budgets") == (j.settings["steps"] != 150) for j in jobs)
    # --phases budgets on a GPU: the committed CPU rows choose the lrs, only budget runs train,
    # no probe trains a run again.
    committed = tmp_path / "runs.csv"
    runner.write_csv(str(committed), rows)
    trained = []
    monkeypatch.setattr(runner, "run_jobs", lambda jobs, **kw: trained.extend(jobs))
    gpu = design.StudyConfig(committed=str(committed), seeds=3, budgets=[2000], phases=["budgets"],
                            runs_dir=str(tmp_path / "gpu"))  # fmt: skip
    v = study.study(gpu, {"model": "DIR"})
    assert {(j.arm, j.settings["steps"]) for j in trained} == {
        (a, 2000) for a in design.BUDGET_ARMS
    }
    assert {j.seed for j in trained} == set(range(5)) and len(v.rows) == len(rows)
    assert all(j.settings["model"] == "DIR" for j in trained)
    assert "--phases: no phase tune; choose from tuning, budgets" in " ".join(
        design.StudyConfig(phases=["tune"]).problems()
    )


def test_failed_runs_and_derived_columns():
    ok = _row("baseline", 0, 0.43)
    assert not ok["failed"] and ok["perturbation_drop"] == pytest.approx(0.05)
    assert _row("baseline", 0, 0.419)["failed"]  # within 2 points of the majority (0.4)
    diverged = _row("baseline", 0, None)
    assert diverged["failed"] and math.isnan(diverged["accuracy"])
    old = design.complete(
        {
            "arm": "baseline, no clip",
            "seed": 0,
            "lr": 1e-4,
            "label_noise": 0.0,
            "accuracy": 0.7,
            "perturbed_accuracy": 0.6,
            "majority_accuracy": 0.4,
        }
    )
    assert old["steps"] == 150 and old["clip_norm"] == 0.0  # rows from before the columns
    assert (
        old["platform"] == "cpu" and _row("baseline", 0, 0.5, platform="gpu")["platform"] == "gpu"
    )


def test_flatness_is_normalised_by_headroom_and_flat_sigma_is_of_the_mean_curve():
    accuracy = {"0.1": [0.80, 0.78], "0.2": [0.78, 0.78], "0.3": [0.76, 0.76], "0.4": [0.8, 0.8]}
    sigmas = [0.1, 0.2, 0.3, 0.4]
    result = {"sigmas": sigmas, "clean": 0.80, "majority": 0.40, "accuracy": accuracy, "draws": 2}
    r = design.add_flatness(_row("baseline", 0, 0.8), result)
    assert r["weight_noise_0.1"] == pytest.approx(0.79)
    assert r["weight_noise_change_0.1"] == pytest.approx(-0.01 / 0.4)
    assert r["weight_noise_change_0.2"] == pytest.approx(-0.02 / 0.4)
    assert r["flat_sigma"] == 0.2  # -5% of the headroom is still flat; 0.4's recovery counts not
    # Two runs flat to 0.1 and 0.3: the mean of per-run values (0.2) is not the mean curve's.
    a = {"weight_noise_change_0.1": 0.0, "weight_noise_change_0.2": -0.2,
         "weight_noise_change_0.3": 0.0}  # fmt: skip
    b = {"weight_noise_change_0.1": 0.0, "weight_noise_change_0.2": 0.0,
         "weight_noise_change_0.3": 0.0}  # fmt: skip
    assert design.flat_sigma([a, b], [0.1, 0.2, 0.3]) == 0.1
    # Not measured is not "flat up to 0": NaN, and the answer says so.
    assert math.isnan(design.flat_sigma([_row("baseline", 0, 0.8)], [0.1, 0.2]))
    assert math.isnan(design.flat_sigma([a, b], []))
    assert design.flat_sigma([{"weight_noise_change_0.1": -0.5}], [0.1]) == 0.0
    assert r["weight_noise_draws"] == 2 and "weight_noise_examples" not in r

    # Re-read from runs.csv, the derived columns follow from the measured ones.
    def reread(r):
        return design.complete(
            {k: v for k, v in r.items() if "change" not in k and k != "flat_sigma"}
        )

    again = reread(r)
    assert again["weight_noise_change_0.2"] == pytest.approx(r["weight_noise_change_0.2"])
    assert again["flat_sigma"] == 0.2
    # The probe's split has its own majority (0.45, every validation example), not the run's
    # (0.4, its evaluation subsample): re-read, the headroom is still the probe's.
    r = design.add_flatness(_row("baseline", 0, 0.8), {**result, "majority": 0.45})
    assert r["weight_noise_change_0.2"] == pytest.approx(-0.02 / 0.35) and r["flat_sigma"] == 0.1
    again = reread(r)
    assert again["weight_noise_change_0.2"] == pytest.approx(-0.02 / 0.35)
    assert again["flat_sigma"] == 0.1 and again["weight_noise_majority"] == 0.45


def test_the_flatness_tables_pair_answer_8s_contrasts():
    cfg = _cfg()

    def probed(arm, seed, at_03):  # the unperturbed 0.8, majority 0.4: headroom 0.4
        accuracy = {"0.1": [0.8, 0.8], "0.3": [at_03, at_03]}
        result = {"sigmas": [0.1, 0.3], "clean": 0.8, "majority": 0.4, "draws": 2,
                  "examples": 9, "accuracy": accuracy}  # fmt: skip
        return design.add_flatness(_row(arm, seed, 0.75), result)

    drops = {
        "baseline": (0.70, 0.72),
        "dice before": (0.76, 0.76),
        "baseline, clip 2.7": (0.72, 0.72),
    }
    rows = [probed(arm, seed, d[seed]) for arm, d in drops.items() for seed in (0, 1)]
    md = "\n".join(report.flatness_tables(report.View(cfg, rows, [], design.best_lrs(cfg, rows))))
    # dice before - baseline at 0.3: (-0.04 + 0.10) / 0.4 and (-0.04 + 0.08) / 0.4
    want = runner.cell(runner.paired(rows, "dice before", "baseline", "weight_noise_change_0.3"))
    row = next(x for x in md.splitlines() if x.startswith("| dice before - baseline |"))
    assert want.startswith("+0.125") and row.endswith(f"| {want} |"), row
    assert "| baseline, clip 2.7 - baseline |" in md
    row = next(x for x in md.splitlines() if x.startswith("| dice before - baseline, clip 2.7 |"))
    assert "+0.100 [+0.100, +0.100] (n=2)" in row, row  # (-0.04 + 0.08) / 0.4 on both seeds
    assert "| arm | runs | unperturbed | sigma 0.1 | sigma 0.3 | flat sigma |" in md
    # The baseline alone: its curve, no table of differences.
    alone = [r for r in rows if r["arm"] == "baseline"]
    md = "\n".join(report.flatness_tables(report.View(cfg, alone, [], design.best_lrs(cfg, alone))))
    assert "| baseline | 2 |" in md and "Paired differences" not in md


def test_a_cached_line_is_kept_only_between_the_same_runs(tmp_path, monkeypatch):
    cfg = _cfg(runs_dir=str(tmp_path), alphas=3)
    rows = [_row(arm, 0, 0.7) for arm in ("baseline", "dice before")]
    monkeypatch.setattr(study, "probe_folder", lambda cfg, extra, r, phase: f"/runs/{r['lr']}")
    monkeypatch.setattr(flatness, "FinalModel", lambda folder: folder)
    calls = []

    def line(a, b, alphas, done=None, save=None):
        calls.append((a, b, done))
        result = {"alphas": alphas, "loss": [1.0] * len(alphas), "accuracy": [0.5] * len(alphas)}
        save(result)
        return result

    monkeypatch.setattr(flatness, "line", line)
    out = study.lines_of(cfg, {}, rows, design.best_lrs(cfg, rows), [])
    assert len(calls) == 1 and [p["alpha"] for p in out] == [-0.5, 0.0, 0.5, 1.0, 1.5]
    assert study.lines_of(cfg, {}, rows, design.best_lrs(cfg, rows), []) == out  # cached
    assert len(calls) == 1
    # The dice's best lr is another: the cached line is between other runs, measured again.
    moved = [rows[0], _row("dice before", 0, 0.7, lr=2e-4)]
    study.lines_of(cfg, {}, moved, design.best_lrs(cfg, moved), [])
    assert len(calls) == 2 and calls[1] == ("/runs/0.0001", "/runs/0.0002", {})


def test_the_barrier_is_the_largest_loss_above_the_chord():
    straight = {"alphas": [-0.5, 0.0, 0.5, 1.0, 1.5], "loss": [1.0, 0.6, 0.75, 0.9, 1.2]}
    assert design.barrier(straight) == 0.0  # on the chord: no barrier
    bump = {"alphas": [0.0, 0.25, 0.5, 0.75, 1.0], "loss": [0.6, 0.7, 0.75, 0.95, 0.9]}
    # 0.95 - (0.25 x 0.6 + 0.75 x 0.9) = 0.125; the old "highest above the higher end": 0.05
    assert design.barrier(bump) == pytest.approx(0.125)
    assert "no barrier" in report.barrier_words([0.0, 0.005, 0.0])
    assert "**a barrier**" in report.barrier_words([0.1, 0.12, 0.11])
    assert "on 1 of 3 seed(s)" in report.barrier_words([0.0, 0.05, 0.0])
    assert report.barrier_words([]) == "not measured yet"
    # A barrier is never negative: the t-interval ([-0.033, 0.053] here) is cut at 0.
    assert report.barrier_words([0.0, 0.0, 0.03]).startswith("mean 0.010 [0.000, 0.053], at most")


def test_label_noise_robustness_is_the_paired_interaction():
    cfg = _cfg()
    rows = []
    for seed, (b_clean, b_noisy, d_clean, d_noisy) in enumerate(
        [(0.75, 0.70, 0.65, 0.64), (0.76, 0.70, 0.66, 0.63), (0.74, 0.71, 0.64, 0.62)]
    ):
        rows += [
            _row("baseline", seed, b_clean),
            _row("baseline", seed, b_noisy, noise=0.2),
            _row("dice before", seed, d_clean),
            _row("dice before", seed, d_noisy, noise=0.2),
        ]
    best = design.best_lrs(cfg, rows)
    d = design.interaction(rows, best, 150, 0.2, "dice before")
    # The dice lose 0.01, 0.03, 0.02; the baseline 0.05, 0.06, 0.03: +0.04, +0.03, +0.01.
    assert d["n"] == 3 and d["mean"] == pytest.approx(0.08 / 3)
    assert design.interaction(rows, best, 150, 0.2, "fair die before") is None
    # Answer 7 in its own words: the dice lose about 0.04 less on every seed, "more robust".
    losses = {"baseline": (0.75, lambda seed: 0.05), "dice before": (0.65, lambda seed: 0.01)}
    rows = [
        _row(arm, seed, clean - lost(seed) * noisy - 0.001 * seed * (arm == "dice before"),
             noise=0.2 * noisy)
        for seed in range(4) for noisy in (0, 1) for arm, (clean, lost) in losses.items()
    ]  # fmt: skip
    seventh = report.answers(report.View(cfg, rows, [], design.best_lrs(cfg, rows)))[6]
    assert "dice lose less): +0.0" in seventh and "**more robust**" in seventh, seventh


def test_answers_are_worded_from_their_intervals():
    cfg = _cfg()
    rows = _synthetic()
    v = report.View(cfg, rows, [], design.best_lrs(cfg, rows))
    text = "\n".join(report.answers(v))
    d = runner.paired(rows, "dice before", "baseline", "accuracy")
    assert d["verdict"] == "hurts" and d["hi"] < 0
    assert f"dice minus baseline: {runner.said(d)}." in text
    assert "**hurts**" in text.splitlines()[0] and "over 5 paired seed(s)" in text
    assert "4. **The fair die after AdamW" in text and "not measured yet" in text  # no noise yet
    assert "8. **Flatter?** Weight noise: not measured yet." in text
    noise = {"sigmas": [0.1, 0.3], "accuracy": {"0.1": [0.7], "0.3": [0.5]}, "clean": 0.7}
    measured = [design.add_flatness(r, noise) if r["arm"] in ("baseline", "dice before") else r
                for r in rows]  # fmt: skip
    v = report.View(cfg, measured, [], design.best_lrs(cfg, rows))
    text = "\n".join(report.answers(v))
    assert ("Flat sigma (of the mean curve), baseline: 0.1; dice before: 0.1; baseline, clip "
            "2.7: not measured yet; the change at sigma 0.3") in text  # fmt: skip
    assert (
        "(positive: the dice lose less of it; within 0.01 of the headroom: no difference), "
        "dice minus baseline: +0.000" in text
    )

    # The dice keep more of their headroom at sigma 0.3 on every seed: "flatter", not "helps".
    def probed(r):
        if r["arm"] not in ("baseline", "dice before"):
            return r
        kept = 0.6 + 0.01 * r["seed"] if r["arm"] == "dice before" else 0.5
        return design.add_flatness(r, {**noise, "accuracy": {"0.1": [0.7], "0.3": [kept]}})

    v = report.View(cfg, [probed(r) for r in rows], [], design.best_lrs(cfg, rows))
    eighth = report.answers(v)[7]
    assert (
        ": **flatter**; dice minus AdamW clipped at the matched threshold: not measured "
        in (eighth)
        and "helps" not in eighth
    ), eighth
    assert report.said_as(None, "flatter", "sharper") == "not measured yet"
    d = {"n": 5, "mean": -0.1, "lo": -0.2, "hi": -0.05, "verdict": "hurts"}
    assert report.said_as(d, "flatter", "sharper").endswith("**sharper**")
    assert report.said_as({**d, "verdict": "no difference"}, "a", "b").endswith("**no difference**")
    v = report.View(cfg, rows, [], design.best_lrs(cfg, rows))
    # The budget: behind at 150, level at 2000 -> "learns slower"; behind at both -> "ends worse".
    for gap, word in ((0.0, "learns slower"), (-0.08, "ends worse")):
        longer = [dict(r, steps=2000, accuracy=r["accuracy"] + (r["arm"] == "dice before") *
                       (gap + 0.08)) for r in rows]  # fmt: skip
        v = report.View(cfg, rows + longer, [], design.best_lrs(cfg, rows))
        assert word in report.budget_words(v, "dice before", "baseline")
    # Each budget's difference with its interval and seeds, one verdict: the course's.
    at150, at2000 = (runner.cell(v.d("dice before", "baseline", steps=b)) for b in (150, 2000))
    assert report.budget_words(v, "dice before", "baseline") == (
        f"dice before minus baseline at 150, 600 and 2000 updates: {at150.split(': ')[0]}, not "
        f"measured, {at2000.split(': ')[0]}: **ends worse (still behind at 2000 updates)**"
    )
    assert report.budget_words(report.View(cfg, rows, [], v.best), "dice before", "baseline") == (
        f"dice before minus baseline at 150, 600 and 2000 updates: {at150.split(': ')[0]}, not "
        "measured, not measured: **behind at 150 updates (2000 not measured yet)**"
    )
    # Behind at 150, ahead at 2000: it ends better, not "not resolved".
    ahead = [dict(r, steps=2000, accuracy=r["accuracy"] + (r["arm"] == "dice before") * 0.16)
             for r in rows]  # fmt: skip
    v = report.View(cfg, rows + ahead, [], design.best_lrs(cfg, rows))
    assert "**ends better (behind at 150, ahead at 2000 updates)**" in report.budget_words(
        v, "dice before", "baseline"
    )
    assert "not measured yet" in report.budget_words(report.View(cfg, [], [], {}), "a", "b")
    # Behind at 150 and 600 with 2000 to come: not yet "ends worse".
    at600 = [dict(r, steps=600) for r in rows]
    v = report.View(cfg, rows + at600, [], design.best_lrs(cfg, rows))
    assert "**still behind at 600 updates (2000 not measured yet)**" in report.budget_words(
        v, "dice before", "baseline"
    )
    # One seed at 2000 is shown but does not decide: still behind at 600, 2000 pending.
    one = [dict(r, steps=2000) for r in rows if r["seed"] == 0]
    v = report.View(cfg, rows + at600 + one, [], design.best_lrs(cfg, rows))
    assert "**still behind at 600 updates (2000: 1 paired seed(s) so far)**" in (
        report.budget_words(v, "dice before", "baseline")
    )
    # Too few pairs at every budget: shown, not resolved yet; behind at 150 only: pending.
    few = [r for r in rows if r["seed"] < 2]
    assert report.budget_words(report.View(cfg, few, [], design.best_lrs(cfg, few)), "dice before",
                              "baseline").endswith(": **not resolved yet**")  # fmt: skip
    v = report.View(cfg, rows, [], design.best_lrs(cfg, rows))
    assert "**behind at 150 updates (2000 not measured yet)**" in report.budget_words(
        v, "dice before", "baseline"
    )
    # Level at 150, behind at 600: it falls behind, and "still" would say it was behind before.
    level = [dict(r, accuracy=r["accuracy"] + (r["arm"] == "dice before") * 0.08) for r in rows]
    v = report.View(cfg, level + at600, [], design.best_lrs(cfg, rows))
    assert "**no difference at 150, behind at 600 updates (2000 not measured yet)**" in (
        report.budget_words(v, "dice before", "baseline")
    )
    # Level at 150, behind at 600, level at 2000: it learns slower (dice after's course).
    back = [dict(r, steps=2000) for r in level]
    v = report.View(cfg, level + at600 + back, [], design.best_lrs(cfg, rows))
    assert "**learns slower (behind at 600, level by 2000 updates)**" in (
        report.budget_words(v, "dice before", "baseline")
    )
    # Ahead at 600, level by 2000: it learns faster; level throughout: no difference.
    up = [dict(r, steps=600, accuracy=r["accuracy"] + (r["arm"] == "dice before") * 0.16)
          for r in rows]  # fmt: skip
    v = report.View(cfg, level + up + back, [], design.best_lrs(cfg, rows))
    assert "**learns faster (ahead at 600, level by 2000 updates)**" in (
        report.budget_words(v, "dice before", "baseline")
    )
    flat = [dict(r, steps=b) for r in level for b in (600, 2000)]
    v = report.View(cfg, level + flat, [], design.best_lrs(cfg, rows))
    assert "**no difference at any budget (150, 600 and 2000 updates)**" in (
        report.budget_words(v, "dice before", "baseline")
    )
    # Too noisy to tell at 2000: not resolved there, with where it was before.
    noisy = [dict(r, steps=2000, accuracy=r["accuracy"] + (r["arm"] == "dice before")
                  * (0.08 + 0.1 * (-1) ** r["seed"])) for r in rows]  # fmt: skip
    v = report.View(cfg, level + at600 + noisy, [], design.best_lrs(cfg, rows))
    assert "**not resolved at 2000 updates (level at 150, behind at 600)**" in (
        report.budget_words(v, "dice before", "baseline")
    )
    v = report.View(cfg, rows, [], design.best_lrs(cfg, rows))
    assert "Holm's adjustment keeps answers 1, 2 at 5% family-wise" in report.holm_sentence(v)
    empty = report.holm_sentence(report.View(cfg, [], [], {}))
    assert "over the 0 headline contrasts measured, Holm's adjustment keeps none of them" in empty
    assert empty.endswith(" Answers 8 and 9 (weight noise, the barrier) are exploratory: outside "
                          "the family, their intervals unadjusted.")  # fmt: skip
    # Two seeds at 2000 updates, far apart from 0 (p 0.004): no verdict yet, so not in the family.
    two = [dict(r, steps=2000, accuracy=r["accuracy"] + 0.001 * r["seed"]) for r in rows
           if r["seed"] < 2]  # fmt: skip
    v = report.View(cfg, rows + two, [], design.best_lrs(cfg, rows))
    assert v.d("dice before", "baseline", steps=2000)["n"] == 2
    sentence = report.holm_sentence(v)
    assert "over the 7 headline contrasts" not in sentence and "6" not in sentence, sentence


def test_the_report_is_built_from_tables(tmp_path):
    cfg = _cfg()
    rows = _synthetic()
    lines = [{"seed": 0, "alpha": a, "loss": loss, "accuracy": 0.7}
             for a, loss in ((0.0, 0.6), (0.5, 0.9), (1.0, 0.8))]  # fmt: skip
    v = report.View(cfg, rows, lines, design.best_lrs(cfg, rows))
    md = report.report(v, "CMD")
    for section in ("## Answers", "## Multiple comparisons and seeds", "## Clean labels",
                    "## Paired differences", "## The budget curve", "flipped",
                    "## Seed stability", "## The line between"):  # fmt: skip
        assert section in md, section
    assert "| 0 | 0.6000 | 0.8000 | 0.2000 |" in md  # seed 0's barrier: 0.9 - 0.7
    assert "| 1 | dice before - baseline | 5 |" in md
    # The held-out column: seeds 3 and 4 only (the lrs were chosen on 0-2).
    held = runner.cell(runner.paired([r for r in rows if r["seed"] >= 3], "dice before",
                                     "baseline", "accuracy"))  # fmt: skip
    line = next(x for x in md.splitlines() if x.startswith("| 1 | dice before - baseline |"))
    assert line.endswith(f"| {held} |") and "(n=2)" in held, line
    acc = np.array([r["accuracy"] for r in rows if r["arm"] == "baseline"])
    perturbed = f"{acc.mean() - 0.05:.3f} ± {acc.std(ddof=1):.3f}"
    # The lr is chosen on the tuning seeds (0-2): their mean beside every seed's.
    assert (f"| baseline | 0.0001 | 5 | {acc[:3].mean():.3f} | {acc.mean():.3f} ± "
            f"{acc.std(ddof=1):.3f} | - | - | - | {perturbed} | 0% |") in md  # fmt: skip
    assert "Runs: 150 updates: 45 on the CPU; 600 updates: none; 2000 updates: none." in md
    mixed = rows + [dict(r, steps=600, platform="gpu" if r["seed"] else "cpu") for r in rows]
    md = report.report(report.View(cfg, mixed, lines, design.best_lrs(cfg, rows)), "CMD")
    assert "600 updates: 9 on the CPU, 36 on the GPU (mixed: pairs may cross platforms)" in md
    table = report.aggregate(rows)
    assert {e["arm"] for e in table} == set(design.ARMS) and all(e["runs"] == 5 for e in table)


# ------------------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lr", "-1"], "--lr must be positive and finite"),
        (["--lr-factors", "0"], "--lr-factors must be positive and finite"),
        (["--dataset", "/no/such.csv"], "--dataset /no/such.csv: no such file"),
        (["--arms", "dice-sideways"], "--arms: unknown arm(s) ['dice-sideways']"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--weight-decay", "-1"], "--weight-decay must be >= 0"),
    ],
)
def test_bad_input_is_one_line_under_the_study_s_name(argv, message, capsys):
    with pytest.raises(SystemExit):
        study.main(argv)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("python examples/experiments/study.py: error: "), line
    assert message in line, line


def test_import_starts_no_jax():
    code = (
        "import examples.experiments.study, sys; print('jax' in sys.modules, 'flax' in sys.modules)"
    )
    from tests.train_helpers import run_python

    assert run_python(code).stdout.strip() == "False False"


def test_smoke_runs_write_under_the_runs_unless_told():
    cfg, _ = study.parse_args(["--quick", "--report-only", "--runs-dir", "runs/q"])
    assert runner.results_dir(cfg.results_dir, cfg.runs_dir) == "runs/q/results"
    assert cfg.committed_rows() == ""  # --quick reads no committed rows
    cfg, _ = study.parse_args([])
    assert runner.results_dir(cfg.results_dir, cfg.runs_dir) == "runs/study/results"


def test_the_committed_report_is_re_derived_from_runs_csv(tmp_path, capsys):
    committed = Path(study.__file__).resolve().parents[2] / "benchmarks" / "results"
    study.main(["--report-only", "--runs-dir", str(tmp_path / "none"),
                "--results-dir", str(tmp_path)])  # fmt: skip
    capsys.readouterr()
    mine = (tmp_path / "study.md").read_text().splitlines()
    theirs = (committed / "study.md").read_text().splitlines()
    assert mine[2].startswith("Command: `python examples/experiments/study.py --report-only")
    assert mine[3:] == theirs[3:] and len(mine) > 40
    assert (tmp_path / "runs.csv").read_text() == (committed / "runs.csv").read_text()


# ----------------------------------------------------------------------------- end to end


def test_quick_study_of_one_arm_writes_its_rows_and_resumes(assets, tmp_path, monkeypatch):
    # Two runs: the tuning run and one budget run (the slow test below runs every phase).
    argv = [
        "--quick", "--arms", "baseline", "--lr-factors", "1", "--budgets", "6",
        "--min-seeds", "1", "--max-seeds", "1", "--label-noise", "0",
        "--runs-dir", str(tmp_path / "runs"), "--lr", "3e-3", "--model", assets["model"],
        "--dataset", assets["data"],
    ]  # fmt: skip
    rows = study.main(argv)
    assert [(r["arm"], r["seed"], r["steps"], r["label_noise"]) for r in rows] == [
        ("baseline", 0, 4, 0.0), ("baseline", 0, 6, 0.0)
    ]  # fmt: skip
    clean = rows[0]
    assert clean["weight_noise_clean"] >= 0 and "flat_sigma" in clean  # measured
    assert "weight_noise_1" not in rows[1]  # weight noise at the tuning budget only
    results = tmp_path / "runs" / "results"
    with open(results / "runs.csv") as f:
        table = list(csv.DictReader(f))
    assert [t["steps"] for t in table] == ["4", "6"]
    md = (results / "study.md").read_text()
    assert "## Answers" in md and "dice minus baseline: not measured yet" in md
    monkeypatch.setattr(runner, "train_here", lambda *a: pytest.fail("trained again"))
    monkeypatch.setattr(flatness, "FinalModel", lambda *a: pytest.fail("evaluated again"))
    again = study.main([*argv, "--report-only"])
    assert [r["accuracy"] for r in again] == [r["accuracy"] for r in rows]
    # Committed rows are not run again, even where their folders are gone.
    committed = tmp_path / "committed.csv"
    runner.write_csv(str(committed), rows)
    other = [*argv, "--runs-dir", str(tmp_path / "elsewhere"), "--committed", str(committed)]
    assert [r["accuracy"] for r in study.main(other)] == [r["accuracy"] for r in rows]
    # Finished runs made with other settings are refused, not mixed in.
    with pytest.raises(SystemExit, match="weight_decay 0.01 \\(not 0.02\\)"):
        study.main([*argv, "--weight-decay", "0.02"])


@pytest.mark.slow
def test_quick_study_runs_every_phase(assets, tmp_path):
    argv = ["--quick", "--arms", "baseline", "dice-before", "--lr-factors", "1",
            "--runs-dir", str(tmp_path / "runs"), "--lr", "3e-3", "--model", assets["model"],
            "--dataset", assets["data"]]  # fmt: skip
    rows = study.main(argv)
    results = tmp_path / "runs" / "results"
    for name in ("study.md", "study.csv", "lines.csv", "accuracy_vs_lr.png", "budget.png",
                 "weight_noise.png", "interpolation.png", "label_noise.png"):  # fmt: skip
        assert (results / name).stat().st_size > 0, name
    md = (results / "study.md").read_text()
    for section in ("## Weight noise", "flipped", "## The line between", "## The budget curve"):
        assert section in md
    assert {r["steps"] for r in rows} == {4, 8}
    lines = runner.read_csv(str(results / "lines.csv"))
    assert {p["seed"] for p in lines} == {0, 1} and min(p["alpha"] for p in lines) == -0.5


def test_the_study_is_one_process_that_can_be_interrupted(assets, tmp_path, monkeypatch, capsys):
    # Ctrl-C in a run stops the study: the run counts neither as finished nor as failed.
    def interrupted(settings, workdir):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "train_here", interrupted)
    with pytest.raises(SystemExit) as stop:
        study.main(["--quick", "--arms", "baseline", "--runs-dir", str(tmp_path),
                    "--model", assets["model"], "--dataset", assets["data"]])  # fmt: skip
    assert stop.value.code == 130 and "Interrupted" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_readme_quotes_the_committed_answers():
    root = Path(study.__file__).resolve().parents[2]
    md = (root / "benchmarks" / "results" / "study.md").read_text().splitlines()
    readme = (root / "README.md").read_text()
    quoted = [line for line in md if line[:3] in {f"{i}. " for i in range(1, 10)}]
    quoted += [line for line in md if line.startswith("Multiple comparisons:")]
    assert len(quoted) == 10
    for line in quoted:
        assert line in readme, line


def test_the_answers_are_re_quoted_in_the_readme(tmp_path):
    readme = tmp_path / "README.md"
    before = "# X\n\n1. **Elsewhere** kept\n\n## Results: y\n\nintro\n\n1. **Old** one\n"
    readme.write_text(
        before + "9. **Old** nine\nMultiple comparisons: old.\n\n## Next\n\n2. **Kept**\n"
    )
    text = "## Answers\n\n1. **New** one\n9. **New** nine\n\nMultiple comparisons: new.\n"
    report.quote_in_readme(str(readme), text)
    assert readme.read_text() == (
        "# X\n\n1. **Elsewhere** kept\n\n## Results: y\n\nintro\n\n1. **New** one\n"
        "9. **New** nine\nMultiple comparisons: new.\n\n## Next\n\n2. **Kept**\n"
    )


def test_the_figures_draw_from_rows_with_missing_values(tmp_path):
    from examples.experiments import figures

    cfg = _cfg()
    rows = _synthetic(seeds=3)
    # Two sigma grids (round 1's and round 2's), a diverged run, a noisy run per seed.
    one = {"sigmas": [0.1, 0.2], "clean": 0.7, "accuracy": {"0.1": [0.7], "0.2": [0.6]}}
    two = {"sigmas": [0.05, 0.1], "clean": 0.7, "accuracy": {"0.05": [0.7], "0.1": [0.69]}}
    rows = [design.add_flatness(r, one if r["seed"] else two) for r in rows]
    rows.append(_row("dice after", 3, None))
    rows += [_row(a, s, 0.6, noise=0.2) for a in ("baseline", "dice before") for s in range(3)]
    lines = [{"seed": 0, "alpha": a, "loss": 0.5 + a * (1 - a), "accuracy": 0.7}
             for a in (-0.5, 0.0, 0.5, 1.0, 1.5)]  # fmt: skip
    v = report.View(cfg, rows, lines, design.best_lrs(cfg, rows))
    figures.plot_study(v, str(tmp_path))
    for name in ("accuracy_vs_lr", "budget", "weight_noise", "interpolation", "label_noise"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0, name
    # The flatness table says its sign and its "no difference" bound, in its own units.
    assert (
        '(> 0: the first loses less of its headroom; "no difference" within ±0.01 of the headroom)'
        in (report.report(v, "CMD"))
    )


def test_a_figure_with_nothing_to_draw_leaves_no_old_file_behind(tmp_path):
    # An earlier report's weight_noise.png stayed beside a report that measured no weight noise.
    from examples.experiments import figures

    cfg = _cfg()
    rows = _synthetic(seeds=3)
    stale = ("budget", "weight_noise", "interpolation", "label_noise")
    for name in stale:
        (tmp_path / f"{name}.png").write_bytes(b"old")
    figures.plot_study(report.View(cfg, rows, [], design.best_lrs(cfg, rows)), str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accuracy_vs_lr.png", "budget.png"]
    assert (tmp_path / "budget.png").read_bytes() != b"old"
