"""X-shift's tasks and measures (metalearn.shift): known answers and agreement with the
analyses they reuse."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from metalearn import claims, core, fewshot, models, reuse, shift, tasks
from test_reuse import N_QUERY, SPEC, settings, tiny_model, tiny_tasks


def test_one_alphabet_tasks_draw_every_tasks_classes_from_one_alphabet():
    images = torch.arange(6, dtype=torch.uint8)[:, None, None, None].expand(6, 4, 2, 2).clone()  # a character's index
    alphabets = np.array(["a", "a", "a", "b", "b", "c"])
    classes = torch.stack([torch.arange(6), torch.zeros(6, dtype=torch.long)], 1)
    two_way = fewshot.Spec.parse("maml-conv-2w1s")
    batch = shift.one_alphabet_tasks(images, classes, alphabets, two_way, 40, 2, seed=3)
    drawn = {frozenset(alphabets[task[:, 0].numpy()]) for task in batch.task}
    assert drawn == {frozenset("a"), frozenset("b")}  # "c" has one character: never drawn for 2 ways
    for task, xs in zip(batch.task, batch.xs):  # the images are the drawn classes'
        assert torch.equal(xs[:, 0, 0, 0] * 255, task[:, 0].float().repeat_interleave(1))
    again = shift.one_alphabet_tasks(images, classes, alphabets, two_way, 40, 2, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(batch, again))
    three = shift.one_alphabet_tasks(images, classes, alphabets, fewshot.Spec.parse("maml-conv-3w1s"), 5, 2, seed=0)
    assert {frozenset(alphabets[task[:, 0].numpy()]) for task in three.task} == {frozenset("a")}
    with pytest.raises(ValueError, match="no alphabet has 4 classes"):
        shift.one_alphabet_tasks(images, classes, alphabets, fewshot.Spec.parse("maml-conv-4w1s"), 5, 2, seed=0)


def test_the_other_datasets_images_are_prepared_as_this_ones():
    white = np.full((2, 3, 84, 84, 3), 255, np.uint8)
    assert shift.as_omniglot(white).shape == (2, 3, 28, 28) and (shift.as_omniglot(white) == 0).all()  # no ink
    no_ink = np.zeros((2, 3, 28, 28), np.uint8)
    as_mini = shift.as_miniimagenet(no_ink)
    assert as_mini.shape == (2, 3, 84, 84, 3) and (as_mini == 255).all()  # white paper again
    ink = np.full((1, 1, 28, 28), 255, np.uint8)
    assert (shift.as_omniglot(shift.as_miniimagenet(ink)) == 255).all()  # there and back


def test_tasks_converted_after_drawing_are_the_tasks_drawn_from_the_converted_pool():
    rng = np.random.default_rng(0)
    spec = fewshot.Spec.parse("maml-conv-3w1s")
    for pool, convert in ((rng.integers(0, 256, (4, 6, 84, 84, 3), dtype=np.uint8), shift.as_omniglot),
                          (rng.integers(0, 256, (4, 6, 28, 28), dtype=np.uint8), shift.as_miniimagenet)):
        drawn = fewshot.test_episodes(fewshot.episode_factory({"test": torch.from_numpy(pool)}, None, 5), spec, 3, 2, 5)
        whole = fewshot.test_episodes(fewshot.episode_factory({"test": torch.from_numpy(convert(pool))}, None, 5),
                                      spec, 3, 2, 5)
        assert all(torch.equal(a, b) for a, b in zip(shift.converted(drawn, convert), whole))


def _case(steps):
    trained = reuse.Trained("miniimagenet", SPEC, tiny_model(), pd.Series(dtype=float), 3)
    return reuse.Case(trained, settings(steps=steps), tiny_tasks(), "tiny", N_QUERY)


def test_without_adaptation_nothing_moves_freezing_costs_nothing_and_layers_match_themselves():
    case = _case(steps=0)
    out = shift.reuse_measures(case, case.test, chance_tasks=2, permutations=2).set_index(["measure", "layer", "method"])
    assert out.loc[("freeze cost", "body", ""), "value"] == 0
    assert (out.loc["relative movement"].value == 0).all()
    assert np.allclose(out.loc["similarity"].value, 1, atol=1e-4)
    assert (out.loc["chance"].value < 0.999).all()  # random pairings do not match


def test_the_measures_agree_with_the_analyses_they_summarise():
    case = _case(steps=3)
    out = shift.reuse_measures(case, case.test, methods=("cka",), chance_tasks=2, permutations=2).set_index(
        ["measure", "layer", "method"])
    scores = shift.task_scores(case, case.test)
    assert out.loc[("accuracy", "", ""), "value"] == pytest.approx(scores.adapt.mean(), abs=1e-4)
    nil = fewshot.evaluate(SPEC, case.trained.model, models.params_of(case.trained.model, requires_grad=False),
                           case.test, case.settings, head="nil")["accuracy"][:, 0] * 100
    assert np.allclose(scores.nil, nil.numpy())
    frozen = reuse.freeze_accuracy(SPEC, case.trained.model, case.test, case.settings, ["none", "1-4"])
    assert out.loc[("freeze cost", "body", ""), "value"] == pytest.approx(frozen.cost.iloc[1])
    moved = reuse.weight_distances(SPEC, case.trained.model, case.test, case.settings).set_index("layer").relative
    assert out.loc["relative movement"].value.droplevel("method").to_dict() == pytest.approx(moved.to_dict())


# --- sinusoids -------------------------------------------------------------------------------

def test_the_first_step_of_every_sine_axis_is_the_training_family_and_the_others_move_as_stated():
    family = tasks.SineFamily()
    reference = family.batch(4, 5, 6, torch.Generator().manual_seed(0))
    shifts = shift.sine_shifts(family)
    assert list(shifts) == ["amplitude", "phase", "inputs", "frequency", "family"]
    for levels in shifts.values():
        first = levels[0][1].batch(4, 5, 6, torch.Generator().manual_seed(0))
        assert all(torch.equal(a, b) for a, b in zip(first, reference))
    amplitude, phase, inputs = (dict(shifts[axis]) for axis in ("amplitude", "phase", "inputs"))
    assert amplitude[10.0].amplitude == (10.1, 15.0) and phase[math.pi].phase == (math.pi, 2 * math.pi)
    assert inputs[20.0].x_range == (15.0, 25.0)
    x, task = torch.linspace(-5, 5, 7).reshape(1, 7, 1), torch.tensor([[2.0, 0.5]])
    assert torch.allclose(dict(shifts["frequency"])[2.0](task, x), 2 * torch.sin(2 * x + 0.5))
    fourier = dict(shifts["family"])["fourier"](task, x)
    assert torch.allclose(fourier, 2 * torch.sin(x + 0.5) + 6 * torch.sin(x / 3 + 0.5))


def test_cubics_are_the_polynomials_of_their_coefficients():
    cubic = shift.CubicFamily()
    x = torch.tensor([[[-5.0], [0.0], [2.5], [5.0]]])
    assert torch.allclose(cubic(torch.tensor([[1.0, 0, 0, 0]]), x), torch.ones(1, 4, 1))
    assert torch.allclose(cubic(torch.tensor([[0.0, 2, 0, 1]]), x), 2 * x / 5 + (x / 5) ** 3)
    coefficients = cubic.sample_tasks(1000, torch.Generator().manual_seed(0))
    assert coefficients.shape == (1000, 4) and coefficients.abs().max() <= 2.5 and coefficients.abs().max() > 2.4


def test_relative_error_is_zero_for_a_perfect_fit_and_averages_one_for_predicting_zero():
    y = torch.randn(5, 8, 1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(shift.relative_error(y, y), torch.zeros(5))
    zero = shift.relative_error(torch.zeros_like(y), y)
    assert torch.allclose(zero.mean(), torch.tensor(1.0)) and not torch.allclose(zero, zero[0])  # one scale for all


def _sine_setting(seed=0):
    net = models.init_model(lambda: models.mlp([1, 8, 8, 1]), seed)
    batch = tasks.SineFamily().batch(6, 5, 20, torch.Generator().manual_seed(seed))
    return net, models.params_of(net, requires_grad=False), batch


def test_vmapped_adaptation_is_the_plain_loop_over_tasks():
    net, params, batch = _sine_setting()
    for algorithm in ("maml", "anil"):
        inner = core.inner_loop(algorithm, params, steps=3, lr=0.05)
        fast = shift.adapted(net, params, batch.xs, batch.ys, inner)
        for t in range(len(batch.xs)):
            *_, slow = core.adapt_path(net, params, batch.xs[t], batch.ys[t], inner)
            for name in params:
                torch.testing.assert_close(fast[name][t], slow[name], rtol=1e-5, atol=1e-6)
            if algorithm == "anil":  # only the head moved
                assert all(torch.equal(fast[n][t], params[n]) for n in params if not n.startswith("head"))


def test_sine_measures_know_their_answers_without_adaptation_and_with_the_same_parameters_everywhere():
    net, params, batch = _sine_setting()
    still = shift.sine_task_measures(net, params, params, params, batch, 0, 0.05, chance_tasks=2, permutations=3)
    assert (still.maml == still.frozen).all() and (still.maml == still.control).all()
    assert (still[[c for c in still if c.startswith("moved")]] == 0).all().all()
    assert np.allclose(still[[c for c in still if c.startswith("cka")]], 1)
    assert still["chance body.layer1"].iloc[:2].notna().all() and still["chance body.layer1"].iloc[2:].isna().all()
    moving = shift.sine_task_measures(net, params, params, params, batch, 2, 0.05)
    assert (moving.anil == moving.frozen).all() and (moving.control == moving.maml).all()  # same parameters, same inner loops
    assert (moving[[c for c in moving if c.startswith("moved")]] > 0).all().all()
    summary = shift.sine_summary(moving).set_index(["measure", "layer"])
    paired = claims.paired(moving.frozen, moving.maml)
    assert summary.loc[("freeze cost", ""), "value"] == pytest.approx(paired["difference"])
    assert summary.loc[("freeze cost", ""), "ci95"] == pytest.approx(paired["ci95"])
    assert summary.loc[("anil - maml", ""), "value"] == pytest.approx((moving.anil - moving.maml).mean())
    assert ("chance", "body.layer1") not in summary.index  # no task had a chance level


def test_a_diverged_adaptation_is_an_infinite_error_not_a_crash():
    net, params, batch = _sine_setting()
    out = shift.sine_task_measures(net, params, params, params, batch, 3, 1e6)
    assert np.isinf(out.maml).all() and out["cka body.layer1"].isna().all()


def test_a_missing_sine_model_says_which_stage_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("METALEARN_STAGING", str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="run the nowhere stage first"):
        shift.sine_model("maml", stage="nowhere")


def test_sine_verdicts_apply_the_claims_rule_guarded_by_the_control():
    def rows(maml, control, freeze, anil):
        return [dict(measure="relative error", layer="maml", value=maml, ci95=0.01),
                dict(measure="relative error", layer="control", value=control, ci95=0.01),
                dict(measure="freeze cost", layer="", value=freeze, ci95=0.002),
                dict(measure="anil - maml", layer="", value=anil, ci95=0.005)]
    table = pd.concat([pd.DataFrame(rows(0.1, 0.9, 0.005, 0.001)).assign(axis="a", step=0, distance="0"),
                       pd.DataFrame(rows(0.1, 0.9, 0.5, 0.1)).assign(axis="a", step=1, distance="1"),
                       pd.DataFrame(rows(0.95, 0.9, 0.005, 0.001)).assign(axis="b", step=0, distance="x")])
    out = claims.sine_shift_verdicts(table, 0.01, 0.02).set_index(["axis", "step"])
    assert out.loc[("a", 0), ["freeze", "anil"]].tolist() == ["reproduced", "reproduced"]
    assert out.loc[("a", 1), ["freeze", "anil"]].tolist() == ["contradicted", "contradicted"]
    assert out.loc[("b", 0), ["freeze", "anil"]].tolist() == ["not testable at this scale"] * 2  # no better than control
    assert out.loc[("a", 1), "distance"] == "1" and out.loc[("a", 0), "error"] == 0.1
