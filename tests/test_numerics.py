"""The numerics versions hold what they promise: small runs of every kind of training
(training.NUMERICS) and of every kind of test (evaluation.NUMERICS) give the numbers recorded
for the current version.

Trained models, checkpoints and test scores are reused by their settings and these versions,
never by the source of the code (metalearn.store): a change that alters any number a run
produces must bump the version, or the study would reuse models that its code no longer
computes. When a test here fails, the numbers changed: if that was meant, bump the version and
record the new fingerprints (``python tests/test_numerics.py`` prints them); if not, the
change broke the numerics.

A fingerprint is the sum of absolute values and the sum of squares of every resulting tensor,
compared to 1e-5 relative. The runs compute in float64 (models, episodes, rewards): in float32 a
few iterations already amplify the rounding that differs between CPUs (AVX2 vs AVX-512 kernels sum
in other orders) to 1e-4 for MAML and 6e-3 for Reptile, measured; in float64 that noise stays
below 1e-9, while any change to the maths moves a fingerprint by far more than 1e-5.
"""
from __future__ import annotations

import math
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from metalearn import cheetah, core, evaluation, fewshot, models, paths, reuse, rl, tasks, training
from metalearn.datasets import EpisodeSampler

IMAGES = torch.randint(0, 256, (12, 8, 28, 28), generator=torch.Generator().manual_seed(7), dtype=torch.uint8)
SETTINGS = fewshot.Settings(iterations=2, meta_batch=2, inner_steps=1, inner_lr=0.4, test_steps=2, val_every=1,
                            train_queries=2, inner_batch=4, train_shots=2, pretrain_iterations=2, pretrain_batch=8)
IMAGE_RUNS = ["maml-conv-3w1s", "fomaml-conv-3w1s", "anil-conv-3w1s", "random-conv-3w1s", "reptile-conv-3w1s",
              "multiclass+head-conv-3w1s", "multitask+head-conv-3w1s", "niltrain+head-conv-3w1s", "maml-mlp-3w1s"]


def fingerprint(tensors) -> tuple[float, float]:
    """(sum of |x|, sum of x^2) over a dict or list of tensors, in float64."""
    values = list(tensors.values()) if isinstance(tensors, dict) else list(tensors)
    return (sum(float(t.detach().double().abs().sum()) for t in values),
            sum(float(t.detach().double().pow(2).sum()) for t in values))


class Float64Episodes(EpisodeSampler):
    """Episodes in the default dtype (the study's sampler gives float32)."""
    def _gather(self, chosen, picks):
        return super()._gather(chosen, picks).to(torch.get_default_dtype())


class Float64Cheetah(cheetah.HalfCheetah):
    """HalfCheetah whose observations and rewards are in the default dtype (the study's: float32)."""
    def _observe(self, datas, out=None):
        return super()._observe(datas, out).to(torch.get_default_dtype())

    def step(self, state, action, goal):
        state, reward, done = super().step(state, action, goal)
        return state, reward.to(torch.get_default_dtype()), done


def episodes(split, spec, shots, queries):
    return Float64Episodes(IMAGES, torch.arange(12), spec.n_way, shots, queries, seed=3)


def trained_image_run(name: str) -> dict:
    spec = fewshot.Spec.parse(name)
    settings = SETTINGS if spec.algorithm == "reptile" else replace(SETTINGS, inner_steps=2)
    model = models.init_model(lambda: fewshot.build_model(spec, "omniglot", 4), 0)
    shots = settings.train_shots if spec.algorithm == "reptile" else spec.k_shot
    val = episodes("val", spec, 1, 2).fixed_episodes(2, 1000)
    fewshot.train(spec, model, episodes("train", spec, shots, 2), val, settings, 0, "numerics", {"x": 1})
    return model.state_dict()


def training_runs() -> dict[str, tuple[float, float]]:
    """Every kind of training the study has, a few iterations each."""
    out = {name: fingerprint(trained_image_run(name)) for name in IMAGE_RUNS}
    sine = tasks.SineFamily(amplitude=(0.1, 5.0), phase=(0.0, math.pi))
    net = models.init_model(lambda: models.mlp([1, 16, 16, 1]), 0)
    run = training.Run("numerics-sine", {}, net, 0, torch.optim.Adam(net.parameters(), 1e-2))
    inner = core.inner_loop("maml", models.params_of(net), steps=2, lr=0.01)
    run.train(3, lambda r: training.maml_step(r, lambda g: sine.batch(4, 5, 5, g), inner, path="vmap"))
    out["maml-sine"] = fingerprint(net.state_dict())
    net = models.init_model(lambda: models.mlp([1, 16, 16, 1]), 0)
    run = training.Run("numerics-pretrained", {}, net, 0, torch.optim.Adam(net.parameters(), 1e-2))
    def all_tasks(gen):
        batch = sine.batch(4, 5, 0, gen)
        return batch.xs.reshape(-1, 1), batch.ys.reshape(-1, 1)

    run.train(3, lambda r: training.supervised_step(r, all_tasks))
    out["supervised"] = fingerprint(net.state_dict())
    params, errors = training.train_independent(lambda: models.mlp([1, 8, 1]), sine, 3, 5, 0.01, seed=0, weight=0.1)
    out["independent"] = fingerprint([*params.values(), errors])
    for name in ("sgd", "adam", "rmsprop"):
        net = models.init_model(lambda: models.mlp([1, 16, 1]), 0)
        sample = lambda gen: tasks.reptile_tasks([sine], 10, 5, 3, gen)  # noqa: E731
        result = training.train_reptile(f"numerics-reptile-{name}", {}, net, 0, sample,
                                        core.InnerOptimizer(name, lr=0.01), 3, 1.0, keep_state=name != "sgd")
        out[f"reptile-sine-{name}"] = fingerprint(result["params"])
    return {**out, **rl_runs()}


#: TRPO's default damping (1e-5) leaves the conjugate gradient on these tiny policies' near-singular
#: Fisher matrices amplifying rounding: a start moved by 1e-13 moved Navigation's fingerprint by 5 %
#: (measured), so it differed between CPUs even in float64. With 0.1 the same move stays near 1e-13.
WELL_CONDITIONED = rl.TRPO(damping=0.1)


def rl_runs(moved: float = 0.0) -> dict[str, tuple[float, float]]:
    """MAML with TRPO on 2D navigation and HalfCheetah, 2 iterations each, the policies' initial
    weights scaled by 1 + ``moved``."""
    out = {}
    for name, env, sizes in (("Navigation", rl.Navigation(horizon=6), (2, 2)),
                             ("HalfCheetah", Float64Cheetah("velocity", horizon=4), (20, 6))):
        policy = models.init_model(lambda: rl.gaussian_policy(*sizes, [8]), 0)
        with torch.no_grad():
            for weight in policy.parameters():
                weight.mul_(1 + moved)
        setting = rl.MetaRL(env, core.inner_loop("maml", models.params_of(policy), 1, 0.1), meta_batch=2,
                            trajectories=2, trpo=WELL_CONDITIONED)
        result = rl.train(f"numerics-{name}-{moved}", {}, policy, setting, 2, seed=0)
        out[f"maml-{name}"] = fingerprint(result["params"])
    return out


def scoring_runs() -> dict[str, tuple[float, float]]:
    """Every kind of test-time computation: adaptation curves, NIL head, frozen layers, Reptile's
    optimiser, and the analyses of trained models (weight distances, CCA/CKA)."""
    spec, model = fewshot.Spec.parse("maml-conv-3w1s"), models.init_model(
        lambda: fewshot.build_model(fewshot.Spec.parse("maml-conv-3w1s"), "omniglot", 4), 1)
    test = fewshot.test_episodes(episodes, spec, 3, 2, 0)
    params = models.params_of(model, requires_grad=False)
    out = {}
    for head, frozen, algorithm in (("adapt", (), "maml"), ("nil", (), "maml"), ("adapt", ("body.layer1",), "maml"),
                                    ("adapt", (), "reptile"), ("adapt", (), "anil")):
        run = replace(spec, algorithm=algorithm)
        scores = fewshot.evaluate(run, model, params, test, SETTINGS, head=head, frozen=frozen)
        out[f"{algorithm}-{head}-{'-'.join(frozen) or 'all'}"] = fingerprint([scores["loss"], scores["accuracy"]])
    other = models.init_model(lambda: fewshot.build_model(spec, "omniglot", 4), 2)
    for name, table in (("weight-distance", reuse.weight_distances(spec, model, test, SETTINGS)),
                        ("pre-post-similarity", reuse.pre_post_similarity(spec, model, test, SETTINGS)),
                        ("model-similarity", reuse.model_similarity(model, other, test, "transductive",
                                                                    ["body.layer1", "body.layer4"], ["cca", "cka"]))):
        out[name] = fingerprint([torch.tensor(table.select_dtypes("floating").to_numpy(dtype="float64"))])
    sine = tasks.SineFamily(amplitude=(0.1, 5.0), phase=(0.0, math.pi))
    net = models.init_model(lambda: models.mlp([1, 16, 1]), 0)
    batch = sine.batch(3, 5, 10, torch.Generator().manual_seed(0))
    out["sine-curves"] = fingerprint([evaluation.learning_curves(net, models.params_of(net), batch.xs, batch.ys,
                                                                 batch.xq, batch.yq, core.InnerLoop(3, 0.01))])
    env = rl.Navigation(horizon=6)
    policy = models.init_model(lambda: rl.gaussian_policy(2, 2, [8]), 0)
    returns, _ = rl.evaluate(env, policy, models.params_of(policy, False), env.sample_goals(2, torch.Generator()
                             .manual_seed(0)), 2, (0.1,), 2, torch.Generator().manual_seed(1))
    out["nav-returns"] = fingerprint([returns])
    return out


#: the fingerprints of training.NUMERICS and evaluation.NUMERICS: {version: {run: (sum |x|, sum x^2)}}
TRAINING = {1: {
    'maml-conv-3w1s': (62.04188506297605, 22.65553568022469),
    'fomaml-conv-3w1s': (61.951829590881125, 22.61677373539604),
    'anil-conv-3w1s': (62.009596955127705, 22.635124018495496),
    'random-conv-3w1s': (61.978594893833225, 22.636208657647234),
    'reptile-conv-3w1s': (148.35935509755475, 69.73432035371724),
    'multiclass+head-conv-3w1s': (61.99157913635269, 22.613837645742105),
    'multitask+head-conv-3w1s': (61.99493175478034, 22.63085060926975),
    'niltrain+head-conv-3w1s': (62.00595710354736, 22.63501100021396),
    'maml-mlp-3w1s': (5781.582582303471, 685.4655437337996),
    'maml-sine': (48.8607527270638, 12.893978457992768),
    'supervised': (48.83497593143186, 12.848333650149733),
    'independent': (46.62988800971398, 215.93897507800727),
    'reptile-sine-sgd': (14.734201333696355, 7.185971806072925),
    'reptile-sine-adam': (14.765788079457565, 7.2778799907386835),
    'reptile-sine-rmsprop': (14.831203726120428, 7.3516831255668995),
    'maml-Navigation': (9.367947158006206, 3.242883367978004),
    'maml-HalfCheetah': (27.862866809713193, 4.880598162682404),
}}
TESTING = {1: {
    'maml-adapt-all': (33.66941138670765, 110.48184386657717),
    'maml-nil-all': (11.04702459707098, 35.19241660008761),
    'maml-adapt-body.layer1': (33.97360804239739, 108.49238137040791),
    'reptile-adapt-all': (14.094756127122933, 14.214393130886524),
    'anil-adapt-all': (33.76020501096674, 106.5413083233694),
    'weight-distance': (21.666138693149914, 31.332910680606993),
    'pre-post-similarity': (5.583215546473751, 2.44601947308551),
    'model-similarity': (2.645350911546328, 0.7968162460116073),
    'sine-curves': (83.21675757832628, 721.6672063804763),
    'nav-returns': (20.058561276605133, 67.52311611189269),
}}


@pytest.fixture(autouse=True)
def _float64_one_thread_and_a_work_folder(tmp_path, monkeypatch):
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    monkeypatch.setattr(paths, "WORK", tmp_path / "work")
    yield
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)


def test_the_rl_fingerprints_do_not_amplify_rounding():
    """A start moved by 1e-13 moves no TRPO fingerprint by more than 1e-9: rounding that differs
    between CPUs stays far below the test's 1e-5, so only a change to the maths fails it."""
    base, moved = rl_runs(), rl_runs(1e-13)
    assert {run: moved[run] for run in base} == {run: pytest.approx(base[run], rel=1e-9) for run in base}


@pytest.mark.parametrize("kind,version,recorded,compute", [
    ("training", lambda: training.NUMERICS, TRAINING, training_runs),
    ("testing", lambda: evaluation.NUMERICS, TESTING, scoring_runs),
])
def test_the_numbers_are_those_recorded_for_the_numerics_version(kind, version, recorded, compute):
    assert version() in recorded, (f"{kind} numerics version {version()} has no recorded fingerprints: "
                                   "run `python tests/test_numerics.py` and add them")
    got, wanted = compute(), recorded[version()]
    assert got.keys() == wanted.keys()
    changed = {run: (got[run], wanted[run]) for run in wanted if got[run] != pytest.approx(wanted[run], rel=1e-5)}
    assert not changed, (f"the {kind} numbers changed (got, recorded): {changed}; if that is meant, bump the "
                         f"{kind} numerics version and record the new fingerprints (python tests/test_numerics.py)")


if __name__ == "__main__":
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)  # another count: a check of the noise
    torch.set_default_dtype(torch.float64)
    paths.WORK = Path(tempfile.mkdtemp())
    print(f"TRAINING = {{{training.NUMERICS}: {training_runs()!r}}}")
    print(f"TESTING = {{{evaluation.NUMERICS}: {scoring_runs()!r}}}")
