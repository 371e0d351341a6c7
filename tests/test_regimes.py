"""Training regimes of the body (multiclass, multitask, NIL-training) and runs that start from
them (``<init>+head``, ``<init>+reptile``): labelled sampling, the losses against hand
computations, what each regime trains and leaves alone, shared and resumable pre-training,
and the result rows' keys against the papers' table."""
import copy

import pytest
import torch
import torch.nn.functional as F

import metalearn.paths
from metalearn import accuracy, core, fewshot, models, papers, regimes, results
from metalearn.datasets import EpisodeSampler
from metalearn.models import forward

SIDE = 10


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def images(n_classes=8, per_class=6, seed=3):
    return torch.randint(0, 256, (n_classes, per_class, SIDE, SIDE), generator=gen(seed), dtype=torch.uint8)


def small_model(n_way=3, filters=4):
    return models.init_model(lambda: fewshot.build_model(fewshot.Spec("maml", "conv", n_way, 1), "omniglot", filters), 0)


# ------------------------------------------------------------------ labelled sampling

def test_labelled_images_are_the_rotated_images_of_their_class():
    data = images()
    classes = torch.tensor([[0, 0], [1, 1], [1, 3], [5, 2]])  # a character with two rotations is two classes
    sampler = EpisodeSampler(data, classes, n_way=2, k_shot=1, n_query=1, seed=0)
    x, y = sampler.labelled(200, gen(1))
    assert x.shape == (200, 1, SIDE, SIDE) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert set(y.tolist()) == {0, 1, 2, 3}
    for image, label in zip(x, y):
        row, turns = classes[label].tolist()
        candidates = torch.rot90(data[row], turns, dims=(-2, -1)).float() / 255  # [per_class, H, W]
        assert any(torch.equal(image[0], c) for c in candidates)


def test_labelled_is_reproducible_and_refuses_bad_sizes():
    sampler = EpisodeSampler(images(), torch.arange(8), n_way=2, k_shot=1, n_query=1, seed=0)
    a, b = sampler.labelled(5, gen(4)), sampler.labelled(5, gen(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="positive integer"):
            sampler.labelled(bad)


# ----------------------------------------------------------------------- the losses

def test_nil_loss_equals_a_hand_computation():
    model = small_model()
    params = dict(model.named_parameters())
    batch = EpisodeSampler(images(), torch.arange(8), n_way=3, k_shot=2, n_query=2, seed=0).batch(2)
    loss, log_probs = regimes.nil_loss(model, params, batch)
    expected, rows = [], []
    for xs, ys, xq, yq in zip(batch.xs, batch.ys, batch.xq, batch.yq):
        s, q = model(xs, features=True), model(xq, features=True)
        unit = lambda f: f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)  # a dead unit's features are all 0
        cos = unit(q) @ unit(s).T
        p = torch.stack([cos.softmax(1)[:, ys == c].sum(1) for c in range(3)], dim=1)
        expected.append(-p.log()[torch.arange(len(yq)), yq].mean())
        rows.append(p.log())
    torch.testing.assert_close(loss, torch.stack(expected).mean())
    torch.testing.assert_close(log_probs, torch.stack(rows).detach())
    # and its gradient reaches the body only
    loss.backward()
    assert all(p.grad is None for p in model.head.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.body.parameters())


def first_step(regime, sampler, batch, lr=0.01):
    """The model after one pre-training step, and a copy of the model before it."""
    model = small_model()
    before = copy.deepcopy(model)
    regimes.pretrain(regime, model, sampler, 1, batch, lr, seed=0, name=f"t-{regime}", config={})
    return model, before


def test_one_multitask_step_is_one_adam_step_on_the_query_cross_entropy(monkeypatch, tmp_path):
    monkeypatch.setattr(metalearn.paths, "WORK", tmp_path)
    sampler = EpisodeSampler(images(), torch.arange(8), n_way=3, k_shot=1, n_query=2, seed=0)
    after, reference = first_step("multitask", sampler, batch=2)
    # the same tasks (run.gen is seeded with the seed), by hand: mean over tasks of the query loss
    tasks = sampler.batch(2, gen(0))
    optimizer = torch.optim.Adam(reference.parameters(), lr=0.01)
    loss = torch.stack([F.cross_entropy(reference(xq), yq) for xq, yq in zip(tasks.xq, tasks.yq)]).mean()
    loss.backward()
    optimizer.step()
    for (name, p), q in zip(after.body.named_parameters(), reference.body.parameters()):
        torch.testing.assert_close(p, q, msg=name)
    # the head the body was trained with is thrown away: the model's own head is back
    initial = small_model()
    assert all(torch.equal(p, q) for p, q in zip(after.head.parameters(), initial.head.parameters()))


def test_multiclass_trains_the_body_through_a_head_over_every_class(monkeypatch, tmp_path):
    monkeypatch.setattr(metalearn.paths, "WORK", tmp_path)
    sampler = EpisodeSampler(images(), torch.arange(8), n_way=3, k_shot=1, n_query=1, seed=0)
    after, reference = first_step("multiclass", sampler, batch=16)
    net = regimes._multiclass_net(reference, 8, seed=1)
    assert net.head.out_features == 8 and net.body is reference.body
    x, y = sampler.labelled(16, gen(0))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    F.cross_entropy(net(x), y).backward()
    optimizer.step()
    for (name, p), q in zip(after.body.named_parameters(), reference.body.parameters()):
        torch.testing.assert_close(p, q, msg=name)
    assert all(torch.equal(p, q) for p, q in zip(after.head.parameters(), small_model().head.parameters()))


def test_multiclass_pretraining_learns_the_training_classes(monkeypatch, tmp_path):
    monkeypatch.setattr(metalearn.paths, "WORK", tmp_path)
    sampler = EpisodeSampler(images(n_classes=4), torch.arange(4), n_way=2, k_shot=1, n_query=1, seed=0)
    model = small_model(filters=8)
    history = regimes.pretrain("multiclass", model, sampler, 60, 24, 0.02, seed=0, name="t", config={}, log_every=20)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["accuracy"] > 0.6  # chance: 0.25


def test_niltrain_leaves_the_head_alone(monkeypatch, tmp_path):
    monkeypatch.setattr(metalearn.paths, "WORK", tmp_path)
    sampler = EpisodeSampler(images(), torch.arange(8), n_way=3, k_shot=2, n_query=2, seed=0)
    after, before = first_step("niltrain", sampler, batch=2)
    assert all(torch.equal(p, q) for p, q in zip(after.head.parameters(), before.head.parameters()))
    assert all(not torch.equal(p, q) for p, q in zip(after.body.parameters(), before.body.parameters()))


def test_pretrain_refuses_bad_input(tmp_path):
    sampler = EpisodeSampler(images(), torch.arange(8), n_way=3, k_shot=1, n_query=1, seed=0)
    with pytest.raises(ValueError, match="unknown pre-training regime 'imagenet'"):
        regimes.pretrain("imagenet", small_model(), sampler, 1, 1, 0.1, 0, "t", {})
    with pytest.raises(ValueError, match="iterations >= 1 and batch >= 1"):
        regimes.pretrain("multiclass", small_model(), sampler, 0, 4, 0.1, 0, "t", {})


# ------------------------------------------------------------- runs from a pre-trained body

class Killed(Exception):
    pass


SETTINGS = fewshot.Settings(iterations=3, meta_batch=2, inner_steps=1, inner_lr=0.4, test_steps=1, meta_lr=0.01,
                            val_every=3, checkpoint_every=2, pretrain_iterations=4, pretrain_batch=8,
                            train_shots=1, inner_batch=2)


def train(spec_name, work, monkeypatch, sampler, kill_after=None):
    """fewshot.train of ``spec_name`` on random images; ``labelled`` raises on call ``kill_after + 1``."""
    monkeypatch.setattr(metalearn.paths, "WORK", work)
    spec = fewshot.Spec.parse(spec_name)
    model = models.init_model(lambda: fewshot.build_model(spec, "omniglot", 4), 0)
    calls = {"n": 0}
    draw = EpisodeSampler.labelled.__get__(sampler)  # the method itself, not an earlier test wrapper

    def labelled(*args, **kwargs):
        if kill_after is not None and calls["n"] == kill_after:
            raise Killed
        calls["n"] += 1
        return draw(*args, **kwargs)

    monkeypatch.setattr(sampler, "labelled", labelled)
    fewshot.train(spec, model, sampler, sampler.fixed_episodes(2, seed=7), SETTINGS, seed=0, stage="t", config={})
    return model, calls["n"]


def test_head_runs_keep_the_pretrained_body_and_share_its_pretraining(monkeypatch, tmp_path):
    sampler = EpisodeSampler(images(n_classes=12), torch.arange(12), n_way=3, k_shot=1, n_query=1, seed=0)
    model, calls = train("multiclass+head-conv-3w1s", tmp_path, monkeypatch, sampler)
    assert calls == 4
    body = small_model(n_way=3)
    regimes.pretrain("multiclass", body, sampler, 4, 8, 0.01, 0, "elsewhere", {"model": "conv"})
    for (name, p), q in zip(model.body.named_parameters(), body.body.parameters()):
        assert torch.equal(p, q), name  # the body is exactly the pre-trained one: frozen after
    assert all(not torch.equal(p, q) for p, q in zip(model.head.parameters(), body.head.parameters()))
    # Reptile from the same pre-training reuses its checkpoint: no image is drawn again
    _, calls = train("multiclass+reptile-conv-3w1s", tmp_path, monkeypatch, sampler)
    assert calls == 0


def test_pretraining_killed_and_restarted_ends_identically(monkeypatch, tmp_path):
    sampler = EpisodeSampler(images(n_classes=12), torch.arange(12), n_way=3, k_shot=1, n_query=1, seed=0)
    reference, _ = train("multiclass+head-conv-3w1s", tmp_path / "a", monkeypatch, sampler)
    with pytest.raises(Killed):
        train("multiclass+head-conv-3w1s", tmp_path / "b", monkeypatch, sampler, kill_after=3)
    resumed, calls = train("multiclass+head-conv-3w1s", tmp_path / "b", monkeypatch, sampler)
    assert calls == 2  # checkpoint after step 2, killed in step 4: steps 3 and 4 are redone
    for (name, p), q in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name


def test_a_pretrained_run_without_pretraining_steps_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(metalearn.paths, "WORK", tmp_path)
    spec = fewshot.Spec.parse("niltrain+head-conv-3w1s")
    sampler = EpisodeSampler(images(), torch.arange(8), n_way=3, k_shot=1, n_query=1, seed=0)
    settings = fewshot.Settings(iterations=1, meta_batch=1, inner_steps=1, inner_lr=0.1, test_steps=1)
    with pytest.raises(ValueError, match="pretrain_iterations >= 1"):
        fewshot.train(spec, small_model(), sampler, sampler.fixed_episodes(1, 0), settings, 0, "t", {})


# --------------------------------------------------------------- names and result rows

@pytest.mark.parametrize("name,spec", [
    ("multiclass+head-conv-5w1s", fewshot.Spec("head", "conv", 5, 1, "multiclass")),
    ("niltrain+head-conv-5w5s", fewshot.Spec("head", "conv", 5, 5, "niltrain")),
    ("multitask+reptile-mlp-20w1s", fewshot.Spec("reptile", "mlp", 20, 1, "multitask")),
])
def test_pretrained_run_names_round_trip(name, spec):
    assert fewshot.Spec.parse(name) == spec and spec.name == name and spec.regime == spec.init


@pytest.mark.parametrize("name,match", [
    ("imagenet+head-conv-5w1s", "unknown pre-training 'imagenet'"),
    ("multiclass+maml-conv-5w1s", "goes to one of"),
    ("multiclass+random-conv-5w1s", "goes to one of"),
    ("multiclass+-conv-5w1s", "is not"),
    ("a+b+head-conv-5w1s", "is not"),
])
def test_bad_pretrained_run_names(name, match):
    with pytest.raises(ValueError, match=match):
        fewshot.Spec.parse(name)


def test_regime_and_pretraining_rows_find_the_papers_values():
    """Each run's rows land on the keys of the papers' tables (a misspelt setting would
    silently lose the paper column)."""
    expect = {
        ("maml-conv-5w1s", "adapt"): [("M-mini", 48.70), ("A-anil", 46.9), ("A-regimes", 46.9)],
        ("maml-conv-5w5s", "nil"): [("A-nil", None), ("A-regimes", 61.5)],
        ("anil-conv-5w5s", "nil"): [("A-nil", 62.2), ("A-regimes", 62.2)],
        ("random-conv-5w1s", "nil"): [("A-nil", None), ("A-regimes", 32.9)],
        ("multiclass+head-conv-5w5s", "adapt"): [("A-regimes", 54.6)],
        ("multitask+head-conv-5w1s", "nil"): [("A-regimes", 26.5)],
        ("niltrain+head-conv-5w5s", "nil"): [("A-regimes", 43.0)],
        ("niltrain+head-conv-5w1s", "adapt"): [("A-regimes", None)],
        ("reptile-conv-5w1s", "adapt"): [("R-mini", 51.6), ("R-pretrain", 51.6)],
        ("reptile-conv-5w5s", "adapt"): [("R-mini", 67.4)],
        ("multiclass+reptile-conv-5w1s", "adapt"): [("R-pretrain", 49.4)],
    }
    for (name, head), wanted in expect.items():
        got = accuracy.experiments("miniimagenet", fewshot.Spec.parse(name), head)
        assert [e for e, _ in got] == [e for e, _ in wanted], name
        for (experiment, setting), (_, paper) in zip(got, wanted):
            assert papers.paper_value(experiment, setting, "accuracy") == paper, (name, head, setting)
            assert results.row(experiment, setting, "accuracy", 50.0, "scale")["experiment"] == experiment
    assert accuracy.experiments("omniglot", fewshot.Spec.parse("multiclass+reptile-conv-5w1s"), "adapt") == [
        ("R-pretrain", "omniglot reptile conv 5w1s from multiclass")]
    assert accuracy.experiments("omniglot", fewshot.Spec.parse("reptile-conv-5w1s"), "nil") == []


def test_regime_table_puts_each_body_and_head_in_its_cell():
    import pandas as pd
    table = pd.DataFrame([
        dict(run="maml-conv-5w1s", head="adapt", accuracy=40.04, ci95=1.0),
        dict(run="maml-conv-5w1s", head="nil", accuracy=41.0, ci95=0.96),
        dict(run="multiclass+head-conv-5w5s", head="nil", accuracy=30.0, ci95=1.5),
        dict(run="reptile-conv-5w1s", head="adapt", accuracy=99.0, ci95=0.1),   # not a body regime
        dict(run="maml-mlp-5w1s", head="adapt", accuracy=99.0, ci95=0.1),       # not the conv body
    ])
    got = accuracy.regime_table(table)
    assert list(got.index) == ["maml", "multiclass"]
    assert got.loc["maml", ("5w1s", "MAML head")] == "40.0 +- 1.0"
    assert got.loc["maml", ("5w1s", "NIL head")] == "41.0 +- 1.0"
    assert got.loc["multiclass", ("5w5s", "NIL head")] == "30.0 +- 1.5"
    assert got.isna().sum().sum() == 3
    assert accuracy.regime_table(table.iloc[3:]).empty
