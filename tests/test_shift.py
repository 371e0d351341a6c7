"""X-shift's tasks and measures (metalearn.shift): known answers and agreement with the
analyses they reuse."""

import numpy as np
import pandas as pd
import pytest
import torch

from metalearn import fewshot, models, reuse, shift
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
