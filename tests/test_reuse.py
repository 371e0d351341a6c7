"""Feature reuse analyses (metalearn.reuse): freezing, per-layer weight distance, similarity
before/after adaptation and between models, checked against hand computations and the
independent code paths of core/models/fewshot/similarity on a tiny Conv4."""
import dataclasses
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch

from metalearn import core, fewshot, models, paths, reuse, similarity
from metalearn.params import ParameterError
from metalearn.tasks import Batch

N_WAY, K_SHOT, N_QUERY, T = 3, 2, 4, 3
SIDE = 16  # 16 -> 8 -> 4 -> 2 -> 1 with max-pooling
SPEC = fewshot.Spec.parse(f"maml-conv-{N_WAY}w{K_SHOT}s")
BODY = ("body.layer1", "body.layer2", "body.layer3", "body.layer4")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def tiny_model(seed=0):
    return models.init_model(lambda: models.conv4(N_WAY, channels=3, filters=4, image_size=SIDE, strided=False), seed)


def tiny_tasks(n_query=N_QUERY, seed=0):
    g = gen(seed)
    labels = lambda per_class: torch.arange(N_WAY).repeat_interleave(per_class).expand(T, -1).clone()
    return Batch(torch.rand(T, N_WAY * K_SHOT, 3, SIDE, SIDE, generator=g), labels(K_SHOT),
                 torch.rand(T, N_WAY * n_query, 3, SIDE, SIDE, generator=g), labels(n_query), torch.zeros(T))


def settings(steps=3, lr=0.1, bn="transductive"):
    return reuse.evaluation_settings(lr, steps, bn)


# ------------------------------------------------------------------- inputs and checks
def test_frozen_layers_parses_the_papers_settings():
    model = tiny_model()
    assert reuse.frozen_layers("none", model) == ()
    assert reuse.frozen_layers("1", model) == ("body.layer1",)
    assert reuse.frozen_layers("2", model) == ("body.layer2",)
    assert reuse.frozen_layers("1-3", model) == BODY[:3]
    assert reuse.frozen_layers("1-4", model) == BODY
    for bad in ("1-5", "0-2", "3-1", "1,2", "all", "", "head", 3):
        with pytest.raises(ValueError):
            reuse.frozen_layers(bad, model)


def test_unknown_layers_and_bad_inputs_raise_value_error():
    model, test = tiny_model(), tiny_tasks()
    with pytest.raises(ValueError, match="unknown layers"):
        reuse.check_layers(model, ["body.layer5"])
    with pytest.raises(ValueError, match="list"):
        reuse.check_layers(model, "head")
    with pytest.raises(ValueError, match="unknown layers"):
        reuse.weight_distances(SPEC, model, test, settings(), layers=["body.conv1"])
    with pytest.raises(ValueError, match="unknown layers"):
        reuse.pre_post_similarity(SPEC, model, test, settings(), layers=["body.layer1", "tail"])
    with pytest.raises(ValueError, match="unknown layers"):
        reuse.model_similarity(model, tiny_model(1), test, "transductive", ["layer1"])
    with pytest.raises(ValueError, match="unknown layers"):
        reuse.adapted_params(SPEC, model, models.params_of(model, False), test.xs[0], test.ys[0], settings(),
                             frozen=("body.layer9",))
    with pytest.raises(ValueError):
        reuse.freeze_accuracy(SPEC, model, test, settings(), freezes=["none", "none"])
    with pytest.raises(ValueError, match="method"):
        reuse.layer_similarity(torch.randn(50, 3), torch.randn(50, 3), "svd")
    with pytest.raises(ValueError, match="Reptile"):
        reuse.weight_distances(fewshot.Spec.parse("reptile-conv-3w2s"), model, test, settings())
    for bad in [dict(inner_lr=0.0, test_steps=3), dict(inner_lr=0.1, test_steps=-1),
                dict(inner_lr=0.1, test_steps=3, bn="batch")]:
        with pytest.raises(ValueError):
            reuse.evaluation_settings(**bad)


def test_load_model_round_trip_and_clear_errors(tmp_path):
    spec = fewshot.Spec.parse("maml-conv-5w1s")
    model = models.init_model(lambda: fewshot.build_model(spec, "omniglot", 8), 3)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    loaded = reuse.load_model(spec, "omniglot", 8, tmp_path / "m.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(ValueError, match="filters"):
        reuse.load_model(spec, "omniglot", 16, tmp_path / "m.pt")
    with pytest.raises(FileNotFoundError, match="no trained model"):
        reuse.load_model(spec, "omniglot", 8, tmp_path / "missing.pt")


def _fake_stage(root, stage, name, model, snapshots=(), test_steps=10, iterations=150, scores=(20.0, 40.0),
                dataset="miniimagenet", filters=4, split="maml"):
    """A training stage's outputs as the analyses read them: weights, kept weights, the run's and
    the stage's records (600 test tasks x 5 queries per class, seed 0), per-task scores."""
    folder = root / f"data/models/{stage}"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / f"{name}.pt")
    for iteration, state in snapshots:
        torch.save(state, folder / f"{name}@{iteration}.pt")
    (folder / f"{name}.json").write_text(json.dumps(
        {"spec": name.split("-seed")[0], "dataset": dataset, "filters": filters, "data": f"{dataset} (fake)",
         "identity": {"run": f"{stage}-{name}", "split": split},
         "settings": {"test_steps": test_steps, "iterations": iterations, "meta_batch": 2, "inner_lr": 0.4,
                      "bn": "transductive", "train_queries": 5, "inner_steps": 5}, "history": []}))
    (folder / "stage.json").write_text(json.dumps({"test": {"tasks": 600, "queries": 5, "seed": 0, "bn": "transductive"}}))
    (root / f"data/scores/{stage}").mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"adapt@0": [0.0] * len(scores), f"adapt@{test_steps}": scores}).to_csv(
        root / f"data/scores/{stage}/{name}.csv", index=False)


def test_load_trained_reads_how_the_training_stage_trained_and_tested_the_run(tmp_path, monkeypatch):
    """An analysis reads a training stage's model, its record and scores (rule 3 of the study's
    architecture), never its own copy of the stage's settings."""
    from metalearn import paths
    from metalearn.params import ParameterError

    monkeypatch.setenv(paths.STAGING_ENV, str(tmp_path))
    spec = fewshot.Spec.parse("maml-conv-5w1s")
    model = models.init_model(lambda: fewshot.build_model(spec, "omniglot", 8), 3)
    _fake_stage(tmp_path, "train_omniglot", "maml-conv-5w1s", model, test_steps=3, iterations=100, scores=(70.0, 90.0),
                dataset="omniglot", filters=8)
    trained = reuse.load_trained("train_omniglot", "maml-conv-5w1s", param="omni_runs")
    assert (trained.dataset, trained.spec, trained.tasks, trained.row.accuracy) == ("omniglot", spec, 600, 80.0)
    assert (trained.row.iterations, trained.row.meta_batch, trained.row.steps) == (100, 2, 3)
    assert trained.row.ci95 == pytest.approx(scipy.stats.t.ppf(0.975, 1) * np.std([70, 90], ddof=1) / math.sqrt(2))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.model.state_dict().values()))
    assert trained.identity == {"run": "train_omniglot-maml-conv-5w1s", "split": "maml"}
    other = fewshot.Spec.parse("maml-conv-7w1s")  # a run no stage trains (here or under the study's root)
    torch.save(models.init_model(lambda: fewshot.build_model(other, "omniglot", 8), 3).state_dict(),
               tmp_path / "data/models/train_omniglot/maml-conv-7w1s.pt")
    with pytest.raises(ParameterError, match="'omni_runs' has maml-conv-7w1s, but there is no "
                                             "data/models/train_omniglot/maml-conv-7w1s.json: run the stage"):
        reuse.load_trained("train_omniglot", "maml-conv-7w1s", param="omni_runs")


def test_a_case_repeats_the_stages_test_tasks_and_settings(tmp_path, monkeypatch):
    from metalearn import paths
    from metalearn.params import ParameterError

    monkeypatch.setenv(paths.STAGING_ENV, str(tmp_path))
    spec = fewshot.Spec.parse("maml-conv-5w1s")
    model = models.init_model(lambda: fewshot.build_model(spec, "omniglot", 8), 3)
    _fake_stage(tmp_path, "train_omniglot", "maml-conv-5w1s", model, test_steps=3, dataset="omniglot", filters=8)
    images = torch.randint(0, 255, (40, 20, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(reuse, "_test_images", lambda dataset, split, device: (images, torch.arange(40), "fake"))
    case = reuse.load_case("train_omniglot", "maml-conv-5w1s", 7, param="omni_runs")
    assert (case.settings.inner_lr, case.settings.test_steps, case.settings.bn, case.queries) == (0.4, 3, "transductive", 5)
    expected = fewshot.test_episodes(fewshot.episode_factory({"test": images}, {"test": torch.arange(40)}, 0),
                                     spec, 7, 5, 0)  # the stage's seed 0 and 5 queries
    assert torch.equal(case.test.xq, expected.xq) and torch.equal(case.test.ys, expected.ys)
    assert case.data == "omniglot (fake)" and "7 test tasks x 5 queries/class, 3 test steps of 0.4" in case.scale("here")
    assert case.scale("here").startswith(f"{case.trained.record['settings']['iterations']} iterations x ")  # not 3.0
    assert case.scale("here").startswith(f"{reuse.describe_training(case.trained.record)} (training); ")
    with pytest.raises(ParameterError, match="601 test tasks asked here, but train_omniglot tested it on 600"):
        reuse.load_case("train_omniglot", "maml-conv-5w1s", 601, param="omni_runs")


def test_a_run_of_another_stage_and_its_kept_weights(tmp_path, monkeypatch):
    """train_seeds' runs are named <spec>-seed<s>; snapshot() reads the weights kept at an iteration."""
    from metalearn import paths
    from metalearn.params import ParameterError

    monkeypatch.setenv(paths.STAGING_ENV, str(tmp_path))  # seeds 7, 8: no such run under the root either
    spec = fewshot.Spec.parse("maml-conv-5w1s")
    final = models.init_model(lambda: fewshot.build_model(spec, "miniimagenet", 4), 1)
    early = models.init_model(lambda: fewshot.build_model(spec, "miniimagenet", 4), 2)
    _fake_stage(tmp_path, "train_seeds", "maml-conv-5w1s-seed7", final, [(50, early.state_dict())])
    trained = reuse.load_trained("train_seeds", "maml-conv-5w1s-seed7")
    assert (trained.stage, trained.name, trained.tasks, trained.row.iterations) == (
        "train_seeds", "maml-conv-5w1s-seed7", 600, 150)
    assert reuse.snapshot(trained, 150) is trained.model
    kept = reuse.snapshot(trained, 50)
    assert all(torch.equal(a, b) for a, b in zip(kept.state_dict().values(), early.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(trained.model.state_dict().values(), final.state_dict().values()))
    with pytest.raises(FileNotFoundError, match="no weights of maml-conv-5w1s-seed7 at iteration 100"):
        reuse.snapshot(trained, 100)
    with pytest.raises(ParameterError, match="maml-conv-5w1s-seed8, but there is no data/models/train_seeds/"):
        torch.save(final.state_dict(), tmp_path / "data/models/train_seeds/maml-conv-5w1s-seed8.pt")
        reuse.load_trained("train_seeds", "maml-conv-5w1s-seed8")


# ------------------------------------------------------------------------ adaptation
@pytest.mark.parametrize("bn", ["transductive", "inductive"])
@pytest.mark.parametrize("freeze", ["none", "1-2", "1-4"])
def test_adapted_params_are_the_adaptation_fewshot_evaluate_tests(bn, freeze):
    model, test, st = tiny_model(), tiny_tasks(), settings(bn=bn)
    params = models.params_of(model, requires_grad=False)
    frozen = reuse.frozen_layers(freeze, model)
    expected = fewshot.evaluate(SPEC, model, params, test, st, frozen=frozen, every_step=False)["accuracy"][:, -1]
    got = []
    for xs, ys, xq, yq in zip(test.xs, test.ys, test.xq, test.yq):
        adapted = reuse.adapted_params(SPEC, model, params, xs, ys, st, frozen)
        got.append((core.predict(model, adapted, xq, xs, bn).argmax(-1) == yq).float().mean())
    torch.testing.assert_close(torch.stack(got), expected, rtol=0, atol=0)


def test_freezing_the_whole_body_leaves_body_weights_bit_identical():
    model, test = tiny_model(), tiny_tasks()
    params = models.params_of(model, requires_grad=False)
    adapted = reuse.adapted_params(SPEC, model, params, test.xs[0], test.ys[0], settings(steps=5), BODY)
    body = [k for k in params if k.startswith("body.")]
    assert body and all(torch.equal(adapted[k], params[k]) for k in body)
    assert not torch.equal(adapted["head.weight"], params["head.weight"])  # the head did adapt
    full = reuse.adapted_params(SPEC, model, params, test.xs[0], test.ys[0], settings(steps=5))
    assert not torch.equal(full["body.layer1.layer.weight"], params["body.layer1.layer.weight"])


def test_freezing_the_body_of_a_maml_model_is_anils_head_only_adaptation():
    """freeze 1-4 through MAML's masked inner loop == ANIL's head-only path (body run once)."""
    model, test, st = tiny_model(), tiny_tasks(), settings(steps=4)
    table = reuse.freeze_accuracy(SPEC, model, test, st, freezes=["none", "1-4"]).set_index("frozen")
    params = models.params_of(model, requires_grad=False)
    anil = fewshot.evaluate(fewshot.Spec.parse("anil-conv-3w2s"), model, params, test, st, every_step=False)
    assert table.loc["1-4", "accuracy"] == pytest.approx(100 * anil["accuracy"][:, -1].double().mean().item(), abs=1e-4)
    assert table.loc["1-4", "layers"] == ", ".join(BODY) and table.loc["none", "layers"] == "-"
    assert (table.tasks == T).all()


def test_freeze_cost_is_the_paired_difference_over_the_same_tasks():
    model, test, st = tiny_model(), tiny_tasks(), settings(steps=4, lr=0.5)
    table = reuse.freeze_accuracy(SPEC, model, test, st, freezes=["none", "1-4"]).set_index("frozen")
    params = models.params_of(model, requires_grad=False)
    per_task = {name: fewshot.evaluate(SPEC, model, params, test, st, frozen=reuse.frozen_layers(name, model),
                                       every_step=False)["accuracy"][:, -1].double() * 100 for name in ("none", "1-4")}
    diff = per_task["none"] - per_task["1-4"]
    from metalearn.evaluation import mean_ci95
    assert (table.loc["1-4", "cost"], table.loc["1-4", "cost_ci95"]) == pytest.approx(mean_ci95(diff), abs=1e-9)
    assert table.loc["1-4", "cost"] == pytest.approx(table.loc["none", "accuracy"] - table.loc["1-4", "accuracy"])
    assert (table.loc["none", "cost"], table.loc["none", "cost_ci95"]) == (0.0, 0.0)
    without = reuse.freeze_accuracy(SPEC, model, test, st, freezes=["1", "1-4"])
    assert without.cost.isna().all()


def test_zero_test_steps_every_freeze_setting_gives_the_unadapted_accuracy():
    model, test, st = tiny_model(), tiny_tasks(), settings(steps=0)
    table = reuse.freeze_accuracy(SPEC, model, test, st)
    params = models.params_of(model, requires_grad=False)
    unadapted = torch.stack([(core.predict(model, params, xq, xs).argmax(-1) == yq).float().mean()
                             for xs, xq, yq in zip(test.xs, test.xq, test.yq)]).double().mean().item() * 100
    assert table.accuracy.tolist() == pytest.approx([unadapted] * 5, abs=1e-4)  # float32 scores


# ------------------------------------------------------------------------- distances
def test_weight_distance_is_zero_unadapted_and_equals_a_hand_computation():
    model = tiny_model()
    before = models.params_of(model, requires_grad=False)
    assert all(d == 0.0 for d, _ in reuse.weight_distance(before, before, model.layers).values())
    after = {k: v.clone() for k, v in before.items()}
    after["body.layer2.layer.weight"][0, 0, 0, 0] += 3.0
    after["body.layer2.norm.bias"][1] -= 4.0
    after["head.bias"][:] += 1.0
    got = reuse.weight_distance(before, after, model.layers)  # float32 weights: (w + 3) - w is 3 to ~1e-7
    assert got["body.layer2"][0] == pytest.approx(5.0, rel=1e-6)
    assert got["head"][0] == pytest.approx(math.sqrt(N_WAY), rel=1e-6)
    assert got["body.layer1"][0] == got["body.layer3"][0] == got["body.layer4"][0] == 0.0
    hand = math.sqrt(sum(float((before[k].double() ** 2).sum()) for k in before if k.startswith("body.layer2.")))
    assert got["body.layer2"][1] == pytest.approx(hand, rel=1e-12)
    with pytest.raises(ValueError, match="names differ"):
        reuse.weight_distance(before, {k: v for k, v in before.items() if k != "head.bias"}, model.layers)


def test_weight_distances_are_the_task_mean_of_a_hand_adapted_distance():
    model, test, st = tiny_model(), tiny_tasks(), settings(steps=3)
    table = reuse.weight_distances(SPEC, model, test, st).set_index("layer")
    assert list(table.index) == model.layers and (table.tasks == T).all()
    params = models.params_of(model, requires_grad=False)
    inner = core.inner_loop("maml", params, 3, 0.1)
    for layer in model.layers:
        names = [k for k in params if k.startswith(layer + ".")]
        norm = torch.cat([params[k].flatten() for k in names]).double().norm().item()
        dists = []
        for xs, ys in zip(test.xs, test.ys):
            adapted = core.adapt(model, params, xs, ys, inner, core.class_sum_cross_entropy)
            dists.append(torch.cat([(adapted[k] - params[k]).flatten() for k in names]).double().norm().item())
        assert table.loc[layer, "distance"] == pytest.approx(sum(dists) / T, rel=1e-6)
        assert table.loc[layer, "norm"] == pytest.approx(norm, rel=1e-9)
        assert table.loc[layer, "relative"] == pytest.approx(sum(dists) / T / norm, rel=1e-6)
        assert table.loc[layer, "parameters"] == sum(params[k].numel() for k in names)
    unadapted = reuse.weight_distances(SPEC, model, test, settings(steps=0))
    assert (unadapted.distance == 0).all() and (unadapted.relative == 0).all()


# ------------------------------------------------------------------------ similarity
@pytest.mark.parametrize("bn", ["transductive", "inductive"])
def test_layer_outputs_end_in_the_models_prediction(bn):
    model, test = tiny_model(), tiny_tasks()
    params = models.params_of(model, requires_grad=False)
    xs, xq = test.xs[0], test.xq[0]
    acts = reuse.layer_outputs(model, params, xq, xs, bn, model.layers)
    torch.testing.assert_close(acts["head"], core.predict(model, params, xq, xs, bn), rtol=0, atol=0)
    assert acts["body.layer1"].shape == (len(xq), 4, SIDE // 2, SIDE // 2)
    assert acts["body.layer4"].shape == (len(xq), 4, 1, 1)
    if bn == "transductive":  # the independent hook reader of models
        for layer, value in models.activations(model, params, xq).items():
            torch.testing.assert_close(acts[layer], value, rtol=0, atol=0)


def test_pre_post_similarity_with_zero_steps_is_one_everywhere():
    model, test = tiny_model(), tiny_tasks()
    table = reuse.pre_post_similarity(SPEC, model, test, settings(steps=0))
    assert len(table) == len(model.layers) * 2
    assert table.value.tolist() == pytest.approx([1.0] * len(table), abs=1e-10)
    assert (table.note == "").all() and (table.tasks == T).all()
    head = table[(table.layer == "head") & (table.method == "cca")].iloc[0]
    assert (head.points, head.units) == (N_WAY * N_QUERY, N_WAY)
    l1 = table[table.layer == "body.layer1"].iloc[0]
    assert (l1.points, l1.units) == (N_WAY * N_QUERY * (SIDE // 2) ** 2, 4)


def test_pre_post_similarity_is_the_task_mean_of_a_hand_computation():
    model, test, st = tiny_model(), tiny_tasks(), settings(steps=3, lr=0.3)
    table = reuse.pre_post_similarity(SPEC, model, test, st).set_index(["layer", "method"])
    params = models.params_of(model, requires_grad=False)
    inner = core.inner_loop("maml", params, 3, 0.3)
    for method in ("cca", "cka"):
        for layer in model.layers:
            values = []
            for xs, ys, xq in zip(test.xs, test.ys, test.xq):
                adapted = core.adapt(model, params, xs, ys, inner, core.class_sum_cross_entropy)
                pre = models.activations(model, params, xq, [layer])[layer]
                post = models.activations(model, adapted, xq, [layer])[layer]
                values.append(similarity.compare(pre, post, method).value)
            assert table.loc[(layer, method), "value"] == pytest.approx(sum(values) / T, abs=1e-9)
    assert table.loc[("head", "cka"), "value"] < 1 - 1e-6  # the head did move


def test_too_few_data_points_raise_or_give_nan_with_a_note():
    X, Y = torch.randn(6, 5, generator=gen(1)), torch.randn(6, 5, generator=gen(2))
    with pytest.raises(ValueError, match="data points"):
        reuse.layer_similarity(X, Y, "cca")
    s, note = reuse.layer_similarity(X, Y, "cca", too_few="nan")
    assert math.isnan(s.value) and "6 data points for 5 units" in note and (s.n, s.units_x) == (6, 5)
    s, note = reuse.layer_similarity(X, Y, "cka")  # CKA is defined here
    assert 0 <= s.value <= 1 and note == ""
    # a task with one query per class: the head has 3 points for 3 units
    model, test = tiny_model(), tiny_tasks(n_query=1)
    table = reuse.pre_post_similarity(SPEC, model, test, settings()).set_index(["layer", "method"])
    assert math.isnan(table.loc[("head", "cca"), "value"]) and "CCA undefined" in table.loc[("head", "cca"), "note"]
    assert math.isnan(table.loc[("head", "cca"), "ci95"])
    assert math.isfinite(table.loc[("head", "cka"), "value"])
    assert math.isfinite(table.loc[("body.layer1", "cca"), "value"])
    with pytest.raises(ValueError, match="data points"):
        reuse.pre_post_similarity(SPEC, model, test, settings(), too_few="raise")


def test_model_similarity_to_itself_and_to_a_channel_permuted_copy_is_one():
    model, test = tiny_model(), tiny_tasks()
    table = reuse.model_similarity(model, model, test, "transductive", list(BODY))
    assert list(table.layer.unique()) == [*BODY, "mean"]
    assert table.value.tolist() == pytest.approx([1.0] * len(table), abs=1e-10)
    # the same function with layer 1's channels permuted: other weights, identical representations
    twin = tiny_model()
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        for name in ("layer.weight", "layer.bias", "norm.weight", "norm.bias"):
            p = twin.body.layer1.get_parameter(name)
            p.copy_(p[perm])
        twin.body.layer2.layer.weight.copy_(twin.body.layer2.layer.weight[:, perm])
    assert not torch.equal(twin.body.layer1.layer.weight, model.body.layer1.layer.weight)
    table = reuse.model_similarity(model, twin, test, "transductive", list(BODY))
    assert table.value.tolist() == pytest.approx([1.0] * len(table), abs=1e-9)


def test_model_similarity_mean_row_is_the_per_task_mean_over_layers():
    a, b, test = tiny_model(0), tiny_model(1), tiny_tasks()
    table = reuse.model_similarity(a, b, test, "transductive", list(BODY[:3])).set_index(["layer", "method"])
    for method in ("cca", "cka"):
        per_layer = [table.loc[(layer, method), "value"] for layer in BODY[:3]]
        assert table.loc[("mean", method), "value"] == pytest.approx(sum(per_layer) / 3, abs=1e-12)
        assert all(0 < v < 1 for v in per_layer)
    assert table.loc[("mean", "cca"), "points"] == min(table.loc[(l, "cca"), "points"] for l in BODY[:3])
    with pytest.raises(ValueError, match="at least one layer"):
        reuse.model_similarity(a, b, test, "transductive", [])


# ----------------------------------------------------------------------------- seeds
def test_seed_pair_similarity_of_a_model_with_itself_is_its_pre_post_similarity():
    """Two 'seeds' that are one model: pre,pre and post,post are 1; pre,post and post,pre are
    the model's own pre/post similarity (both measures are symmetric)."""
    model, test, st = tiny_model(), tiny_tasks(), settings(steps=3, lr=0.3)
    table = reuse.seed_pair_similarity(SPEC, model, model, test, st).set_index(["comparison", "layer", "method"])
    own = reuse.pre_post_similarity(SPEC, model, test, st).set_index(["layer", "method"])
    for layer in model.layers:
        for method in ("cca", "cka"):
            for same in ("pre,pre", "post,post"):
                assert table.loc[(same, layer, method), "value"] == pytest.approx(1.0, abs=1e-9)
            for cross in ("pre,post", "post,pre"):
                assert table.loc[(cross, layer, method), "value"] == pytest.approx(own.loc[(layer, method), "value"],
                                                                                 abs=1e-9)
    assert table.loc[("pre,post", "head", "cka"), "value"] < 1 - 1e-6
    assert set(table.index.get_level_values(0)) == set(reuse.SEED_COMPARISONS) and (table.tasks == T).all()


def test_seed_pair_similarity_of_two_seeds_is_the_task_mean_of_a_hand_computation():
    a, b, test, st = tiny_model(0), tiny_model(1), tiny_tasks(), settings(steps=2, lr=0.3)
    table = reuse.seed_pair_similarity(SPEC, a, b, test, st, layers=["body.layer2"], methods=["cka"])
    table = table.set_index("comparison")
    pa, pb = models.params_of(a, False), models.params_of(b, False)
    inner = lambda p: core.inner_loop("maml", p, 2, 0.3)
    values = []
    for xs, ys, xq in zip(test.xs, test.ys, test.xq):
        post_b = core.adapt(b, pb, xs, ys, inner(pb), core.class_sum_cross_entropy)
        acts_a = models.activations(a, pa, xq, ["body.layer2"])["body.layer2"]
        acts_b = models.activations(b, post_b, xq, ["body.layer2"])["body.layer2"]
        values.append(similarity.compare(acts_a, acts_b, "cka").value)
    assert table.loc["pre,post", "value"] == pytest.approx(sum(values) / T, abs=1e-9)
    assert all(0 < v < 1 for v in table.value)


def test_chance_levels_are_the_scores_of_randomly_paired_points_far_below_a_real_match():
    """With no adaptation (post = pre) every layer scores 1; paired at random the same activations
    score the chance level, well below 1, seeded and the same on a second call; CCA with too few
    points is NaN there too; a bad task count is refused."""
    model, test = tiny_model(), tiny_tasks()
    table = reuse.pre_post_chance(SPEC, model, test, settings(steps=0), tasks=2, permutations=3)
    assert len(table) == len(model.layers) * 2 and (table.tasks == 2).all() and (table.permutations == 3).all()
    finite = table.dropna(subset=["chance"])
    assert (finite.chance < 0.9).all() and (finite.chance >= 0).all()
    params = models.params_of(model, requires_grad=False)
    by_hand = []
    for t in (0, 1):  # task t's permutations are seeded by t (seed 0)
        points = similarity.conv_to_points(models.activations(model, params, test.xq[t], ["body.layer2"])["body.layer2"])
        by_hand.append(similarity.chance(points, points, "cka", 3, seed=t).mean)
    got = table.set_index(["layer", "method"]).loc[("body.layer2", "cka"), "chance"]
    assert got == pytest.approx(sum(by_hand) / 2, abs=1e-12)
    again = reuse.pre_post_chance(SPEC, model, test, settings(steps=0), tasks=2, permutations=3)
    pd.testing.assert_frame_equal(table, again)
    few = reuse.pre_post_chance(SPEC, model, tiny_tasks(n_query=1), settings(), tasks=2, permutations=2)
    assert math.isnan(few.set_index(["layer", "method"]).loc[("head", "cca"), "chance"])
    with pytest.raises(ValueError, match="tasks"):
        reuse.pre_post_chance(SPEC, model, test, settings(), tasks=T + 1, permutations=2)


def test_a_random_body_is_the_runs_architecture_from_its_own_seed():
    """A-regime-sim's random body: MiniImageNet's Conv4 with the run's filters, initialised from the
    seed given (the same weights as a run of that seed starts from), not from the run's."""
    spec = fewshot.Spec.parse("maml-conv-5w1s")
    start = models.init_model(lambda: fewshot.build_model(spec, "miniimagenet", 4), 0)
    trained = reuse.Trained("miniimagenet", spec, start, pd.Series(dtype=float), 10, record={"filters": 4, "seed": 0})
    body = reuse.random_body(trained, 1)
    assert [(k, v.shape) for k, v in body.state_dict().items()] == [(k, v.shape) for k, v in start.state_dict().items()]
    assert not torch.equal(body.body.layer1.layer.weight, start.body.layer1.layer.weight)
    again = models.init_model(lambda: fewshot.build_model(spec, "miniimagenet", 4), 1)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in body.state_dict().items())
    assert torch.equal(reuse.random_body(trained, 0).body.layer1.layer.weight, start.body.layer1.layer.weight)


def test_over_seeds_is_the_student_t_interval_of_the_seeds_values_and_one_seeds_own_interval_over_tasks():
    table = pd.DataFrame({"run": ["a"] * 3 + ["b"] * 3 + ["c"], "seed": [0, 1, 2] * 2 + [0],
                          "cost": [1.0, 2.0, 6.0, 0.5, 0.5, 0.5, 4.0], "accuracy": [50, 52, 54, 40, 41, 42, 30],
                          "cost_ci95": [9.0] * 6 + [0.7], "ci95": [9.0] * 6 + [1.5]})
    out = reuse.over_seeds(table, ["run"], {"cost": "cost_ci95", "accuracy": "ci95"}).set_index("run")
    # known answer: mean 3, sd sqrt(7), t(0.975, 2) = 4.302653; the seeds' own task intervals play no part
    assert out.loc["a", "cost"] == pytest.approx(3.0)
    assert out.loc["a", "cost_ci95"] == pytest.approx(4.302653 * math.sqrt(7 / 3), rel=1e-6)
    assert out.loc["b", "cost_ci95"] == 0.0 and out.loc["b", "accuracy"] == pytest.approx(41.0)
    assert list(out.seeds) == [3, 3, 1]
    # one seed: its value and its own interval over the test tasks
    assert (out.loc["c", "cost"], out.loc["c", "cost_ci95"], out.loc["c", "accuracy_ci95"]) == (4.0, 0.7, 1.5)
    with pytest.raises(ValueError, match="repeat a seed"):
        reuse.over_seeds(pd.concat([table, table.iloc[:1]]), ["run"], {"cost": "cost_ci95"})


def test_seed_run_names_a_seeds_stages_run_by_its_seed_and_a_one_seed_stages_by_its_record(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "ROOT", tmp_path)
    monkeypatch.setenv(paths.STAGING_ENV, str(tmp_path / "staging"))  # nothing staged: the root's files
    folder = tmp_path / "data/models"
    (folder / "seeds").mkdir(parents=True)
    (folder / "campaign").mkdir()
    (folder / "seeds/maml-conv-5w1s-seed1.json").write_text(json.dumps({"identity": {"seed": 1}}))
    (folder / "campaign/maml-conv-5w1s.json").write_text(json.dumps({"identity": {"seed": 0}}))
    assert reuse.seed_run("seeds", "maml-conv-5w1s", 1) == "maml-conv-5w1s-seed1"
    assert reuse.seed_run("campaign", "maml-conv-5w1s", 0) == "maml-conv-5w1s"
    with pytest.raises(ParameterError, match="early_seeds.*trained maml-conv-5w1s with seed 0 only"):
        reuse.seed_run("campaign", "maml-conv-5w1s", 1, "early_seeds")
    with pytest.raises(ParameterError, match="no data/models/seeds/maml-conv-5w1s.json"):
        reuse.seed_run("seeds", "maml-conv-5w1s", 2)


def test_seed_fits_are_least_squares_lines_through_the_body_layers_points():
    rng = np.random.default_rng(0)
    rows = []
    for pair in ("0-1", "0-2", "1-2"):
        for layer in ("body.layer1", "body.layer2", "head"):
            x = rng.uniform(0.3, 0.9)
            values = {"pre,pre": x, "pre,post": 0.5 * x + 0.2,  # on a line: known answer
                      "post,pre": x + rng.normal(0, 0.05), "post,post": 0.9 if layer == "head" else x}
            rows += [dict(pair=pair, layer=layer, method="cca", comparison=c, value=v) for c, v in values.items()]
    rows += [dict(pair="0-1", layer="body.layer1", method="cka", comparison=c, value=0.5) for c in reuse.SEED_COMPARISONS]
    cross = pd.DataFrame(rows)
    fits = reuse.seed_fits(cross).set_index("comparison")
    assert list(fits.method) == ["cca"] * 3  # cka has one point: no fit
    line = fits.loc["pre,post"]
    assert (line.slope, line.intercept, line.r2, line.points) == (pytest.approx(0.5), pytest.approx(0.2),
                                                                  pytest.approx(1.0), 6)  # the head is left out
    assert fits.loc["post,post"].slope == pytest.approx(1.0) and fits.loc["post,post"].intercept == pytest.approx(0.0)
    body = cross[(cross.layer != "head") & (cross.method == "cca")].pivot_table(
        index=["pair", "layer"], columns="comparison", values="value")
    slope, intercept = np.polyfit(body["pre,pre"], body["post,pre"], 1)  # an independent least-squares fit
    r = np.corrcoef(body["pre,pre"], body["post,pre"])[0, 1]
    assert (fits.loc["post,pre"].slope, fits.loc["post,pre"].intercept, fits.loc["post,pre"].r2) == (
        pytest.approx(slope), pytest.approx(intercept), pytest.approx(r ** 2))
    missing = cross.copy()
    missing.loc[(missing.pair == "0-1") & (missing.layer == "body.layer1") & (missing.comparison == "post,post"),
                "value"] = np.nan
    assert reuse.seed_fits(missing).points.tolist() == [5, 5, 5]  # a point missing any comparison is left out


def test_a_forced_cca_is_a_note_on_its_row_not_a_printed_warning(recwarn):
    X, Y = torch.randn(20, 18, dtype=torch.float64), torch.randn(20, 18, dtype=torch.float64)  # 18 + 18 > 19
    result, note = reuse.layer_similarity(X, Y, "cca")
    assert "canonical correlations are 1 whatever the data" in note and result.value > 0.9
    assert not [w for w in recwarn if issubclass(w.category, similarity.ForcedCorrelationWarning)]
    _, clean = reuse.layer_similarity(torch.randn(200, 3), torch.randn(200, 3), "cca")
    assert clean == ""
    with pytest.warns(UserWarning, match="other"):  # other warnings still reach the reader
        reuse.forced_as_note(lambda: warnings.warn("other"))


def test_describe_training_names_what_each_iteration_does_and_only_the_settings_the_run_uses():
    settings = dataclasses.asdict(fewshot.Settings(iterations=1000, meta_batch=4, inner_steps=5, inner_lr=0.4,
                                                   test_steps=10, train_queries=15, pretrain_iterations=600,
                                                   pretrain_batch=64))

    def described(run, **changed):
        return reuse.describe_training({"spec": run, "settings": {**settings, **changed}})

    assert described("maml-conv-5w1s") == "1000 iterations x 4 tasks x 15 queries/class, 5 inner steps of 0.4"
    assert described("reptile-conv-5w1s") == ("1000 iterations x 4 tasks x 10 shots/class, 5 inner Adam steps of 10 "
                                              "images (lr 0.4)")
    assert described("multiclass+head-conv-5w1s") == ("multiclass pre-training 600 iterations x 64 images, then "
                                                      + described("head-conv-5w1s"))
    assert described("multitask+reptile-conv-5w1s").startswith("multitask pre-training 600 iterations x 4 tasks, then")
    assert described("maml-conv-5w1s", train_shots=3) == described("maml-conv-5w1s")  # Reptile's own: unused
    assert described("reptile-conv-5w1s", train_queries=1) == described("reptile-conv-5w1s")  # no queries in Reptile
    assert described("maml-conv-5w1s", pretrain_iterations=1) == described("maml-conv-5w1s")  # no init: unused
    assert ";" not in described("multiclass+reptile-conv-5w1s")  # a scale's clauses are split at ";"


def test_an_analysis_identity_leaves_out_where_it_runs_and_what_its_runs_already_name():
    """The same analysis of the same runs under another stage name (freeze_campaign runs the freeze
    notebook) or with the training stage named by a parameter is the same computation; any other
    parameter is not."""
    from types import SimpleNamespace

    base = dict(threads=2, stage="freeze", mini_stage="train_miniimagenet", n_test_tasks=300)
    identity = reuse.analysis_identity(SimpleNamespace(**base), [])
    assert identity == reuse.analysis_identity(SimpleNamespace(**{**base, "threads": 1, "stage": "freeze_campaign",
                                                                  "mini_stage": "campaign_miniimagenet"}), [])
    assert identity["parameters"] == {"n_test_tasks": 300}
    assert identity != reuse.analysis_identity(SimpleNamespace(**{**base, "n_test_tasks": 200}), [])
