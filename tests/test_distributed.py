"""Data-parallel meta-training (metalearn.distributed): the same maths on any number of ranks.

Ranks here are forked processes on this machine talking through gloo, as in the training
stages. Every test runs with one thread per process, so a task computed by a rank is computed
exactly as one process computes it and the comparisons between rank counts can be bit for bit.
"""
import os
import signal
import subprocess
import sys

import pytest
import torch

import metalearn.paths
from metalearn import core, distributed, fewshot, models, training
from metalearn.datasets import EpisodeSampler
from metalearn.params import ParameterError
from metalearn.tasks import Batch

IMAGES = torch.randint(0, 256, (12, 6, 14, 14), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/testenv.py


def test_shares_cover_the_tasks_in_order_and_differ_by_at_most_one():
    for n_tasks in range(1, 8):
        for world in range(1, n_tasks + 1):
            shares = [distributed.Group(rank, world).share(n_tasks) for rank in range(world)]
            assert [t for share in shares for t in share] == list(range(n_tasks))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1 and min(map(len, shares)) >= 1
    with pytest.raises(ValueError, match="3 ranks for 2 tasks"):
        distributed.Group(0, 3).share(2)


def test_ordered_sum_adds_left_to_right():
    """In float32, 1e8 + 1 rounds to 1e8: left to right gives 1, the exact sum is 2."""
    rows = torch.tensor([[1e8], [1.0], [-1e8], [1.0]], dtype=torch.float32)
    assert distributed.ordered_sum(rows).item() == 1.0
    assert distributed.ordered_sum(rows.double()).item() == 2.0
    assert distributed.ordered_sum(rows[[0, 2, 1, 3]]).item() == 2.0  # another order, another float32 answer


def test_flat_and_unflat_are_inverse():
    params = models.params_of(models.conv4(3, 1, 4, 14, strided=True))
    vector = models.flat(params)
    assert vector.shape == (sum(p.numel() for p in params.values()),)
    back = models.unflat(vector, params)
    assert list(back) == list(params) and all(torch.equal(back[k], params[k]) for k in params)


def double_batch(n_tasks=4, seed=0):
    sampler = EpisodeSampler(IMAGES, torch.arange(12), n_way=3, k_shot=1, n_query=2, seed=0)
    batch = sampler.batch(n_tasks, torch.Generator().manual_seed(seed))
    return Batch(*(t.double() if t.is_floating_point() else t for t in batch))


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "anil"])
def test_per_task_meta_gradients_are_the_meta_gradient_task_by_task(algorithm):
    """Conv4 with batch norm, float64: each row is the gradient of that task's meta-loss alone,
    and their mean is the gradient of meta_loss over the batch (autograd's own sum)."""
    model = models.init_model(lambda: models.conv4(3, 1, 4, 14, strided=True), 0).double()
    params = dict(model.named_parameters())
    batch = double_batch()
    inner = core.inner_loop(algorithm, params, 2, 0.4)
    loss_fn = core.class_sum_cross_entropy
    rows, losses, predictions = core.task_meta_gradients(model, params, *batch[:4], inner, loss_fn)
    assert rows.shape == (4, models.flat(params).numel()) and losses.shape == (4,) and predictions.shape == (4, 6, 3)
    loss, whole = core.meta_loss(model, params, *batch[:4], inner, loss_fn)
    expected = models.flat(dict(zip(params, torch.autograd.grad(loss, list(params.values())))))
    torch.testing.assert_close(rows.mean(0), expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(losses.mean(), loss.detach(), rtol=1e-14, atol=0)
    torch.testing.assert_close(predictions, whole)
    one = [b[2:3] for b in batch[:4]]
    alone, _ = core.meta_loss(model, params, *one, inner, loss_fn)
    grads = torch.autograd.grad(alone, list(params.values()), allow_unused=True, materialize_grads=True)
    torch.testing.assert_close(rows[2], models.flat(dict(zip(params, grads))), rtol=1e-12, atol=1e-14)
    subset, _, _ = core.task_meta_gradients(model, params, *batch[:4], inner, loss_fn, tasks=range(1, 3))
    assert torch.equal(subset, rows[1:3])


def train_maml(workers, work_dir, iterations=3, ordered_alone=False, sample_hook=None):
    """``iterations`` MAML meta-iterations (meta-batch 4) of a float64 Conv4 on ``workers`` ranks;
    ``ordered_alone``: the task-by-task path in this process (a group of one). Returns
    (weights, history) of rank 0."""
    model = models.init_model(lambda: models.conv4(3, 1, 4, 14, strided=True), 0).double()
    # SGD, not Adam: Adam's step g / (|g| + 1e-8) turns a rounding difference in a gradient near
    # 1e-8 (the conv biases under batch norm) into 1e-9 of weight, which would hide what is compared
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    inner = core.inner_loop("maml", models.params_of(model), 2, 0.4)

    def sample(gen):
        if sample_hook:
            sample_hook()
        return double_batch(4, int(torch.randint(1000, (1,), generator=gen)))

    def loop(group):
        run = training.Run("dp", {}, model, 0, optimizer, checkpoint_every=2, work_dir=work_dir,
                           writes=group is None or group.writes)
        run.train(iterations, lambda r: training.maml_step(r, sample, inner, core.class_sum_cross_entropy, group=group),
                  log_every=1)
        return {k: v.detach().clone() for k, v in model.state_dict().items()}, run.history

    return loop(distributed.Group()) if ordered_alone else distributed.run_ranks(workers, loop)


def test_maml_on_two_and_three_ranks_is_one_process_bit_for_bit_and_the_plain_path_to_rounding(tmp_path):
    """Float64: the weights after 3 meta-iterations and the logged losses do not depend on the
    number of ranks (3 ranks share 4 tasks unevenly), and agree with autograd's sum to rounding."""
    alone, alone_history = train_maml(1, tmp_path / "alone", ordered_alone=True)
    for workers in (2, 3):
        weights, history = train_maml(workers, tmp_path / f"w{workers}")
        assert all(torch.equal(weights[k], alone[k]) for k in alone), workers
        assert history == alone_history
    plain, plain_history = train_maml(1, tmp_path / "plain")
    start = models.init_model(lambda: models.conv4(3, 1, 4, 14, strided=True), 0).double().state_dict()
    for k in plain:
        torch.testing.assert_close(alone[k], plain[k], rtol=1e-9, atol=1e-12)
    assert any(not torch.equal(plain[k], start[k]) for k in plain)  # it trained
    assert [h["loss"] for h in plain_history] == pytest.approx([h["loss"] for h in alone_history], rel=1e-12)
    assert {p.name for p in (tmp_path / "w2").iterdir()} == {f"{training.run_key('dp', {})}.pt"}  # rank 0 wrote it


SETTINGS = {
    "maml": fewshot.Settings(iterations=4, meta_batch=4, inner_steps=1, inner_lr=0.4, test_steps=1, meta_lr=0.01,
                             val_every=2, checkpoint_every=2),
    "reptile": fewshot.Settings(iterations=4, meta_batch=4, inner_steps=2, inner_lr=0.01, test_steps=1,
                                train_shots=1, inner_batch=2, val_every=2, checkpoint_every=2),
}


def train_images(monkeypatch, work, algorithm, workers, fail=None):
    """A tiny fewshot.train run on ``workers`` ranks; ``fail`` = (rank, call, how): that rank's
    sampler raises (``"raise"``) or the rank kills itself (``"kill"``) on its call ``call``."""
    monkeypatch.setattr(metalearn.paths, "WORK", work)
    spec = fewshot.Spec(algorithm, "conv", 3, 1)
    model = models.init_model(lambda: fewshot.build_model(spec, "omniglot", 4), seed=0)
    shots = 1
    sampler = EpisodeSampler(IMAGES, torch.arange(12), n_way=3, k_shot=shots, n_query=1, seed=0)
    val = sampler.fixed_episodes(2, seed=7)
    draw, calls, parent = sampler.batch, {"n": 0}, os.getpid()

    def batch(*args, **kwargs):
        calls["n"] += 1
        if fail and calls["n"] == fail[1] and (os.getpid() == parent) == (fail[0] == 0):
            if fail[2] == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("a rank's own error")
        return draw(*args, **kwargs)

    sampler.batch = batch
    history = fewshot.train(spec, model, sampler, val, SETTINGS[algorithm], seed=0, stage="test",
                            config={"dataset": "synthetic"}, workers=workers)
    return model.state_dict(), history


def test_reptile_on_two_ranks_is_one_process_bit_for_bit(monkeypatch, tmp_path):
    """Reptile's ranks exchange adapted weights, and the update is the one-process computation."""
    one, one_history = train_images(monkeypatch, tmp_path / "1", "reptile", 1)
    two, two_history = train_images(monkeypatch, tmp_path / "2", "reptile", 2)
    assert all(torch.equal(one[k], two[k]) for k in one) and one_history == two_history
    spec, settings = fewshot.Spec("reptile", "conv", 3, 1), SETTINGS["reptile"]
    assert fewshot.run_identity(spec, settings, 0, "s", {}, workers=2) == fewshot.run_identity(spec, settings, 0, "s", {})


def test_maml_identity_says_when_ranks_sum_task_by_task():
    spec, settings = fewshot.Spec("maml", "conv", 3, 1), SETTINGS["maml"]
    alone = fewshot.run_identity(spec, settings, 0, "s", {})[1]
    two, three = (fewshot.run_identity(spec, settings, 0, "s", {}, workers=w)[1] for w in (2, 3))
    assert two == three == {**alone, "meta_gradient": "summed task by task"}


def test_a_killed_rank_names_itself_and_the_run_resumes_to_the_same_weights(monkeypatch, tmp_path):
    reference, reference_history = train_images(monkeypatch, tmp_path / "a", "maml", 2)
    with pytest.raises(RuntimeError, match=r"rank 1 of 2 died \(exit code -9\).*resume"):
        train_images(monkeypatch, tmp_path / "b", "maml", 2, fail=(1, 4, "kill"))  # after the checkpoint at 2
    assert len(list((tmp_path / "b").glob("*.pt"))) == 1
    resumed, history = train_images(monkeypatch, tmp_path / "b", "maml", 2)
    assert all(torch.equal(reference[k], resumed[k]) for k in reference) and history == reference_history
    with pytest.raises(RuntimeError, match="rank 1 of 2 failed: RuntimeError: a rank's own error"):
        train_images(monkeypatch, tmp_path / "c", "maml", 2, fail=(1, 1, "raise"))
    with pytest.raises(RuntimeError, match="^a rank's own error$"):  # rank 0's own error, as it is
        train_images(monkeypatch, tmp_path / "d", "maml", 2, fail=(0, 2, "raise"))


def test_workers_beyond_the_meta_batch_are_refused_naming_the_parameter(monkeypatch, tmp_path):
    monkeypatch.setattr(metalearn.paths, "WORK", tmp_path)

    def episodes(split, spec, shots, queries):
        return EpisodeSampler(IMAGES, torch.arange(12), spec.n_way, shots, queries, seed=0)

    for workers in (0, 5):
        with pytest.raises(ParameterError, match=r"parameter 'workers' must lie in 1\.\.4 .* got " + str(workers)):
            fewshot.train_runs([fewshot.Spec("maml", "conv", 3, 1)], "omniglot", 4, episodes,
                               lambda spec: SETTINGS["maml"], 2, 1, 0, "s", {}, workers=workers)
    with pytest.raises(ValueError, match="keep_state.*cannot be shared"):
        training.reptile_step(None, lambda gen: [], None, 1.0, keep_state=True, group=distributed.Group(0, 2))


LAUNCHED = """
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
import metalearn.paths
from pathlib import Path
metalearn.paths.WORK = Path({work!r})
from test_distributed import image_run
state, history = image_run("maml", 1)  # workers 1: the launcher's 2 ranks decide
if torch.distributed.get_rank() == 0:
    torch.save((state, history), {out!r})
"""


def image_run(algorithm, workers):
    """The tiny fewshot.train run of :func:`train_images`, without a sampler hook (also run by torchrun)."""
    spec = fewshot.Spec(algorithm, "conv", 3, 1)
    model = models.init_model(lambda: fewshot.build_model(spec, "omniglot", 4), seed=0)
    sampler = EpisodeSampler(IMAGES, torch.arange(12), n_way=3, k_shot=1, n_query=1, seed=0)
    history = fewshot.train(spec, model, sampler, sampler.fixed_episodes(2, seed=7), SETTINGS[algorithm], seed=0,
                            stage="test", config={"dataset": "synthetic"}, workers=distributed.ranks(workers))
    return model.state_dict(), history


def test_torchrun_ranks_train_as_forked_ranks(monkeypatch, tmp_path):
    """The same code on ranks started by torchrun (as on several machines) gives the forked ranks' weights."""
    monkeypatch.setattr(metalearn.paths, "WORK", tmp_path / "forked")
    forked, forked_history = image_run("maml", 2)
    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED.format(tests=os.path.dirname(__file__), work=str(tmp_path / "launched"),
                                      out=str(tmp_path / "out.pt")))
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    done = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", str(script)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    launched, launched_history = torch.load(tmp_path / "out.pt")
    assert all(torch.equal(forked[k], launched[k]) for k in forked) and launched_history == forked_history
    assert len(list((tmp_path / "launched").glob("*.pt"))) == 1  # rank 0's checkpoint only
