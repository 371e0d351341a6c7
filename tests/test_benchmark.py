"""The speed benchmark measures what it says: the workloads are the project's iterations,
the lower bound does the passes it claims, the statistics and ratios are right, and the
peers (when installed) compute our meta-gradient."""
import copy
import os

import numpy as np
import pytest
import torch

from metalearn import benchmark as B
from metalearn import core, models

TINY = dict(inner_lr=0.4, test_steps=2, filters=4)
OMNI = B.Setting("omniglot", 3, 1, 2, 2, 2, **TINY)           # 3-way 1-shot, 2 queries, 2 tasks, 2 steps
MINI = B.Setting("miniimagenet", 3, 2, 1, 2, 2, inner_lr=0.01, test_steps=2, filters=3)
PEERS_MISSING = {name: why for name, why in B.peer_status().items() if why}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/testenv.py


# --- settings ---------------------------------------------------------------------------

def test_gradient_difference_uses_one_scale_so_rounding_on_a_zero_gradient_is_not_an_error():
    ours = {"w": torch.tensor([2.0, -4.0]), "bias_before_bn": torch.tensor([1e-15, -1e-15])}
    theirs = {"w": torch.tensor([2.0, -4.0]), "bias_before_bn": torch.tensor([-1e-15, 1e-15])}
    assert B.gradient_difference(ours, theirs) == pytest.approx(2e-15 / 4.0)
    theirs["w"] = torch.tensor([2.0, -3.0])
    assert B.gradient_difference(ours, theirs) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="different parameters"):
        B.gradient_difference(ours, {"w": ours["w"]})


def test_settings_parse_and_name_themselves():
    s = B.Setting.parse("omniglot-20w1s-q1-b16-k5", inner_lr=0.1, filters=64)
    assert (s.dataset, s.n_way, s.k_shot, s.queries, s.meta_batch, s.inner_steps) == ("omniglot", 20, 1, 1, 16, 5)
    assert (s.inner_lr, s.filters, s.name) == (0.1, 64, "omniglot 20w1s q1 b16 k5")
    assert B.Setting.parse("miniimagenet-5w1s-q1-b1-k5").table6
    assert not B.Setting.parse("miniimagenet-5w1s-q15-b4-k5").table6
    assert not B.Setting.parse("omniglot-5w1s-q1-b1-k1").table6


@pytest.mark.parametrize("text,fixed,message", [
    ("omniglot-5w1s-b32-k1", {}, "is not '<dataset>"),
    ("omniglot 5w1s q1 b32 k1", {}, "is not '<dataset>"),
    ("cifar-5w1s-q1-b32-k1", {}, "unknown dataset 'cifar'"),
    ("omniglot-1w1s-q1-b32-k1", {}, "n_way must be an integer >= 2"),
    ("omniglot-5w0s-q1-b32-k1", {}, "k_shot must be an integer >= 1"),
    ("omniglot-5w1s-q0-b32-k1", {}, "queries must be an integer >= 1"),
    ("omniglot-5w1s-q1-b0-k1", {}, "meta_batch must be an integer >= 1"),
    ("omniglot-5w1s-q1-b4-k0", {}, "inner_steps must be an integer >= 1"),
    ("omniglot-5w1s-q1-b4-k1", {"inner_lr": 0.0}, "inner_lr must be a finite number > 0"),
    ("omniglot-5w1s-q1-b4-k1", {"inner_lr": float("nan")}, "inner_lr must be a finite number > 0"),
    ("omniglot-5w1s-q1-b4-k1", {"test_steps": True}, "test_steps must be an integer"),
    ("omniglot-5w1s-q1-b4-k1", {"filters": 2.0}, "filters must be an integer"),
])
def test_bad_settings_are_refused_with_the_reason(text, fixed, message):
    with pytest.raises(ValueError, match=message):
        B.Setting.parse(text, **fixed)


def test_random_batch_has_the_settings_shapes_and_class_grouped_labels():
    b = B.random_batch(MINI, seed=3)
    assert b.xs.shape == (2, 6, 3, 84, 84) and b.xq.shape == (2, 3, 3, 84, 84)
    assert b.ys.tolist() == [[0, 0, 1, 1, 2, 2]] * 2 and b.yq.tolist() == [[0, 1, 2]] * 2
    assert 0 <= b.xs.min() and b.xs.max() <= 1
    assert torch.equal(B.random_batch(MINI, seed=3).xs, b.xs) and not torch.equal(B.random_batch(MINI, 4).xs, b.xs)


# --- the workloads are the project's iterations -----------------------------------------

@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "anil"])
def test_a_training_step_is_one_adam_step_on_the_algorithms_meta_gradient(algorithm):
    model, batch = B.make_model(OMNI, dtype=torch.float64), B.random_batch(OMNI, dtype=torch.float64)
    expected = copy.deepcopy(model)
    params = dict(expected.named_parameters())
    inner = core.inner_loop(algorithm, params, OMNI.inner_steps, OMNI.inner_lr)
    loss, _ = core.meta_loss(expected, params, batch.xs, batch.ys, batch.xq, batch.yq, inner,
                             core.class_sum_cross_entropy)
    loss.backward()
    torch.optim.Adam(expected.parameters(), lr=0.01).step()
    B.training_step(OMNI, algorithm, model, batch, meta_lr=0.01)()
    for (name, got), want in zip(model.named_parameters(), expected.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=name)


def test_training_steps_of_different_algorithms_differ():
    batch = B.random_batch(OMNI, dtype=torch.float64)
    after = {}
    for algorithm in ("maml", "fomaml", "anil", "reptile"):
        model = B.make_model(OMNI, dtype=torch.float64)
        B.training_step(OMNI, algorithm, model, batch)()
        after[algorithm] = torch.cat([p.detach().flatten() for p in model.parameters()])
    names = list(after)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not torch.allclose(after[a], after[b], rtol=0, atol=1e-12), (a, b)
    start = torch.cat([p.detach().flatten() for p in B.make_model(OMNI, dtype=torch.float64).parameters()])
    assert not torch.equal(after["reptile"], start)


@pytest.mark.parametrize("algorithm", ["maml", "anil"])
def test_inference_adapts_for_test_steps_then_predicts_the_queries(algorithm):
    model, batch = B.make_model(OMNI, dtype=torch.float64), B.random_batch(OMNI, dtype=torch.float64)
    logits = B.inference_step(OMNI, algorithm, model, batch)()
    assert logits.shape == (2, 6, 3)
    params = models.params_of(model, requires_grad=False)
    inner = core.inner_loop(algorithm, params, OMNI.test_steps, OMNI.inner_lr)
    for t in range(2):
        adapted = core.adapt(model, params, batch.xs[t], batch.ys[t], inner, core.class_sum_cross_entropy)
        torch.testing.assert_close(logits[t], models.forward(model, adapted, batch.xq[t]), rtol=1e-10, atol=1e-10)
    assert not torch.allclose(logits[0], models.forward(model, params, batch.xq[0]))  # adaptation happened


def _count_passes(model):
    counts = {"forward": 0, "backward": 0}

    def on_forward(*_):
        counts["forward"] += 1
    model.register_forward_hook(on_forward)
    model.head.weight.register_hook(lambda g: counts.__setitem__("backward", counts["backward"] + 1))
    return counts


@pytest.mark.parametrize("phase,forward,backward", [("training", 2 * 3, 2 * 3), ("inference", 2 * 3, 2 * 2)])
def test_the_lower_bound_does_the_plain_passes_one_iteration_contains(phase, forward, backward):
    setting = B.Setting("omniglot", 3, 1, 2, 2, 2, inner_lr=0.4, test_steps=2, filters=4)  # T=2 tasks, k=2 steps
    model = B.make_model(setting)
    counts = _count_passes(model)
    before = [p.detach().clone() for p in model.parameters()]
    B.lower_bound_step(setting, phase, model, B.random_batch(setting))()
    assert counts == {"forward": forward, "backward": backward}   # T (k + 1) forward; T (k + 1) or T k backward
    moved = any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert moved == (phase == "training")                          # training ends with one Adam step


def test_the_profile_counts_the_forward_convolutions_and_splits_the_time_into_phases():
    setting = B.Setting("omniglot", 3, 1, 2, 2, 2, inner_lr=0.4, test_steps=2, filters=4)  # T=2 tasks, k=2 steps
    found = B.profile_setting(setting, repeats=2)
    assert set(found) == {"maml", B.LOWER_BOUND}
    for name, prof in found.items():
        calls = {o["op"]: o["calls"] for o in prof["ops"]}
        # per iteration, T (k + 1) = 6 forward passes of 4 conv layers, in MAML as in the plain passes
        assert calls["aten::conv2d"] == 2 * 3 * 4, name
        assert sum(prof["phases"].values()) == pytest.approx(prof["op_seconds"])
        assert prof["op_seconds"] == pytest.approx(sum(o["seconds"] for o in prof["ops"]))
        assert prof["phases"]["autograd engine"] > 0 and prof["phases"]["optimizer step"] > 0
        assert prof["outside_ops"] == pytest.approx(prof["wall"] - prof["op_seconds"])
        assert [o["seconds"] for o in prof["ops"]] == sorted((o["seconds"] for o in prof["ops"]), reverse=True)
    # second order: MAML differentiates through its inner gradients, the plain passes do not
    assert found["maml"]["calls"] > found[B.LOWER_BOUND]["calls"]
    with pytest.raises(ValueError, match="repeats >= 1"):
        B.profile(lambda: None, repeats=0)


def test_the_profile_phase_of_an_event_is_its_nearest_marked_ancestor():
    class Event:
        def __init__(self, name, parent=None):
            self.name, self.cpu_parent = name, parent
    engine = Event("autograd::engine::evaluate_function: MulBackward0")
    adam = Event("Optimizer.step#Adam.step")
    assert B._phase(Event("aten::mul", Event("aten::add", engine))) == "autograd engine"
    assert B._phase(Event("aten::add_", adam)) == "optimizer step"
    assert B._phase(Event("aten::conv2d", Event("aten::relu"))) == "forward"
    assert B._phase(engine) == "autograd engine"


def test_bad_algorithms_and_phases_are_refused():
    model, batch = B.make_model(OMNI), B.random_batch(OMNI)
    with pytest.raises(ValueError, match="unknown training algorithm 'head'"):
        B.training_step(OMNI, "head", model, batch)
    with pytest.raises(ValueError, match="unknown inference algorithm 'fomaml'"):
        B.inference_step(OMNI, "fomaml", model, batch)
    with pytest.raises(ValueError, match="phase must be"):
        B.lower_bound_step(OMNI, "testing", model, batch)
    with pytest.raises(ValueError, match="peers must be true, false or 'auto'"):
        B.peer_plan("false")


# --- statistics, timing, memory, ratios -------------------------------------------------

def test_summary_statistics_of_known_lists():
    s = B.summarize([5.0, 1.0, 4.0, 2.0, 3.0])
    assert s == {"median": 3.0, "q1": 2.0, "q3": 4.0, "iqr": 2.0, "min": 1.0, "max": 5.0, "mean": 3.0, "n": 5}
    values = [1.0, 2.0, 3.0, 10.0]
    s = B.summarize(values)
    assert (s["median"], s["q1"], s["q3"], s["mean"]) == (2.5, 1.75, 4.75, 4.0)
    assert (s["q1"], s["q3"]) == tuple(np.percentile(values, [25, 75]))
    assert B.summarize([0.5])["iqr"] == 0.0
    with pytest.raises(ValueError, match="no times"):
        B.summarize([])


def test_timing_skips_the_warmup_and_times_each_call_alone():
    now, calls = [0.0], []

    def step():  # call i takes i seconds of the fake clock
        calls.append(len(calls))
        now[0] += len(calls) - 1
    times = B.time_iterations(step, warmup=2, repeats=3, clock=lambda: now[0])
    assert len(calls) == 5 and times == [2.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="repeats >= 1"):
        B.time_iterations(step, warmup=0, repeats=0)


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="peak resident set is measured on Linux only")
def test_peak_memory_sees_a_temporary_allocation_and_not_an_empty_step():
    def allocate():
        block = torch.ones(32 * 2 ** 20)  # 128 MiB, freed on return
        return block.sum()
    assert B.peak_memory(allocate) > 100
    assert B.peak_memory(lambda: None) < 20


@pytest.mark.parametrize("warmup,calls", [(0, 3 + 1), (1, 1 + 3), (3, 3 + 3)])
def test_measure_takes_memory_from_an_untimed_call(warmup, calls):
    count = []
    out, = B.measure([lambda: count.append(1)], warmup=warmup, repeats=3)
    assert len(count) == calls and out["n"] == 3 and out["peak_mib"] is not None


def test_measure_times_the_workloads_round_robin():
    calls = []
    a, b = B.measure([lambda: calls.append("a"), lambda: calls.append("b")], warmup=1, repeats=3)
    assert calls == ["a", "b"] + ["a", "b"] * 3  # one warm-up each (memory), then alternating timed calls
    assert a["n"] == b["n"] == 3
    with pytest.raises(ValueError, match="repeats >= 1"):
        B.measure([lambda: None], warmup=0, repeats=0)


def test_speedups_are_ratios_of_the_statistic():
    rows = [{"setting": "s", "phase": p, "algorithm": a, "median": t} for p, a, t in [
        ("training", "maml", 2.0), ("training", "fomaml", 1.0), ("training", "anil", 0.5),
        ("training", "learn2learn", 6.0), ("training", B.LOWER_BOUND, 0.25), ("training", B.ranks_name(2), 1.5),
        ("inference", "maml", 1.0), ("inference", "anil", 0.25)]]
    got = {(r["phase"], r["ratio"]): r["value"] for r in B.speedups(rows)}
    assert got == {("training", "anil over maml"): 4.0, ("training", "fomaml over maml"): 2.0,
                   ("training", "ours over learn2learn"): 3.0, ("training", "maml over lower bound"): 8.0,
                   ("training", "2 ranks over one"): 2.0 / 1.5, ("training", "ours (2 ranks) over learn2learn"): 4.0,
                   ("inference", "anil over maml"): 4.0}  # no higher row, no inference lower bound: no ratio


def test_run_setting_measures_every_workload_once():
    rows = B.run_setting(OMNI, warmup=0, repeats=2, peers=(), ranks=[2, 3], batched=True)
    assert [(r["phase"], r["algorithm"]) for r in rows] == [
        ("training", "maml"), ("training", "fomaml"), ("training", "anil"), ("training", "reptile"),
        ("inference", "maml"), ("inference", "anil"), ("training", B.LOWER_BOUND), ("inference", B.LOWER_BOUND),
        ("training", "maml, batched"), ("training", "maml, 2 ranks")]  # 3 ranks: more than the meta-batch of 2
    assert all(r["n"] == 2 and r["min"] <= r["median"] <= r["max"] and r["setting"] == OMNI.name for r in rows)


def test_the_batched_training_step_trains_the_weights_of_the_loop():
    """What the benchmark times as `maml, batched` is MAML: float64, two iterations, the same weights."""
    setting = B.Setting.parse("omniglot-3w1s-q2-b3-k2", filters=4, inner_lr=0.4)
    batch = B.random_batch(setting, dtype=torch.float64)
    weights = {}
    for path in ("loop", "batched"):
        model = B.make_model(setting, dtype=torch.float64)
        step = B.training_step(setting, "maml", model, batch, path=path)
        step(), step()
        weights[path] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.allclose(weights["batched"], weights["loop"], rtol=0, atol=1e-9)
    assert not torch.equal(weights["loop"], torch.cat([p.flatten() for p in B.make_model(setting, dtype=torch.float64)
                                                       .parameters()]))  # it trained


def test_ranks_are_timed_together_and_refused_beyond_the_meta_batch():
    setting = B.Setting.parse("omniglot-3w1s-q1-b2-k1", filters=4)
    row = B.measure_ranks(setting, 2, warmup=1, repeats=2)
    assert row["n"] == 2 and 0 < row["min"] <= row["median"] <= row["max"] and row["peak_mib"] is not None
    with pytest.raises(ValueError, match="3 ranks for 2 tasks"):
        B.measure_ranks(setting, 3, warmup=0, repeats=1)


# --- peers ------------------------------------------------------------------------------

def test_missing_peers_give_an_error_naming_the_install_command(monkeypatch):
    monkeypatch.setattr(B, "PEERS", {"no_such_peer_xyz": "1.0"})
    with pytest.raises(ModuleNotFoundError, match="no_such_peer_xyz.*make bench-peers"):
        B.require_peers(["no_such_peer_xyz"])
    with pytest.raises(ModuleNotFoundError, match="make bench-peers"):
        B.peer_plan(True)
    run, absent = B.peer_plan("auto")
    assert run == [] and "make bench-peers" in absent["no_such_peer_xyz"]
    assert B.peer_plan(False) == ([], {"no_such_peer_xyz": "not requested (peers: false)"})
    with pytest.raises(ValueError, match="unknown peers"):
        B.require_peers(["tensorflow"])


needs_peers = pytest.mark.skipif(bool(PEERS_MISSING), reason=f"benchmark peers unavailable: {PEERS_MISSING}")


@needs_peers
@pytest.mark.parametrize("setting", [OMNI, MINI], ids=["omniglot", "miniimagenet"])
def test_peers_meta_gradients_equal_ours_and_the_check_can_fail(setting):
    differences = B.check_meta_gradients(setting, list(B.PEERS), tolerance=1e-10)
    assert all(d <= 1e-10 for d in differences.values())
    # the comparison is sharp: a first-order meta-gradient is far from the peers' second-order one
    model, batch = B.make_model(setting, dtype=torch.float64), B.random_batch(setting, dtype=torch.float64)
    params = dict(model.named_parameters())
    inner = core.inner_loop("fomaml", params, setting.inner_steps, setting.inner_lr)
    loss, _ = core.meta_loss(model, params, batch.xs, batch.ys, batch.xq, batch.yq, inner, core.class_sum_cross_entropy)
    first_order = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    for peer in B.PEERS:
        assert B.gradient_difference(first_order, B.meta_gradients(peer, setting, model, batch)) > 1e-4


@needs_peers
@pytest.mark.parametrize("peer", sorted(B.PEERS))
def test_a_peers_timed_training_step_updates_the_weights_as_ours_does(peer):
    batch = B.random_batch(OMNI, dtype=torch.float64)
    ours, theirs = B.make_model(OMNI, dtype=torch.float64), B.make_model(OMNI, dtype=torch.float64)
    B.training_step(OMNI, "maml", ours, batch, meta_lr=0.01)()
    B.peer_training_step(OMNI, peer, theirs, batch, meta_lr=0.01)()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# --- results rows and verdicts ----------------------------------------------------------

def _rows(settings, seconds):
    """Fake measured rows: every workload of each setting with ``seconds[(phase, algorithm)]``."""
    return [{"setting": s.name, "phase": p, "algorithm": a, "median": t, "mean": 2 * t, "iqr": 0.1, "peak_mib": 5.0}
            for s in settings for (p, a), t in seconds.items()]


SECONDS = {("training", "maml"): 4.0, ("training", "fomaml"): 2.0, ("training", "anil"): 1.0,
           ("inference", "maml"): 2.0, ("inference", "anil"): 1.0, ("training", "learn2learn"): 12.0,
           ("training", "higher"): 6.0}


def test_result_rows_key_table6_settings_as_the_paper_and_the_rest_as_s_speed():
    table6 = B.Setting.parse("miniimagenet-5w1s-q1-b1-k5")
    training = B.Setting.parse("miniimagenet-5w1s-q15-b4-k5")
    omni = B.Setting.parse("omniglot-5w1s-q1-b32-k1")
    out = B.result_rows(_rows([table6, training, omni], SECONDS), [table6, training, omni], "scale")
    cell = {(r["experiment"], r["setting"], r["metric"]): r for r in out}
    anil = cell[("A-time", "miniimagenet anil conv 5w1s training", "speed-up over maml")]
    assert float(anil["value"]) == 4.0 and anil["paper"] == "1.79"            # ratio of means, paper's beside
    assert cell[("A-time", "miniimagenet maml conv 5w1s inference", "median seconds")]["value"] == "2"
    assert cell[("A-time", "miniimagenet maml conv 5w1s inference", "median seconds")]["paper"] == "0.078"
    assert not any(k[1].endswith("reptile conv 5w1s training") for k in cell if k[0] == "A-time")
    fo = cell[("M-fo-speed", "miniimagenet fomaml conv training", "speed-up (%)")]
    assert float(fo["value"]) == 100.0 and fo["scale"].startswith(training.name)  # the meta-batch 4 setting
    assert cell[("A-time", "omniglot 5w1s q1 b32 k1 higher training", "median seconds")]["value"] == "6"
    assert float(cell[("A-time", "omniglot 5w1s q1 b32 k1 training ours over learn2learn", "speed-up (x)")]
                 ["value"]) == 3.0
    assert all(r["experiment"] in ("A-time", "M-fo-speed", "A-time") for r in out)


def test_verdicts_hold_our_fastest_configuration_to_each_datasets_target_and_anil_to_the_papers_speed_up():
    table6 = B.Setting.parse("miniimagenet-5w1s-q1-b1-k5")
    omni = B.Setting.parse("omniglot-5w1s-q1-b32-k1")
    rows = _rows([table6], SECONDS) + _rows([omni], {**SECONDS, ("training", B.ranks_name(2)): 2.5})
    got = {v["claim"]: v for v in B.verdicts(rows, [table6, omni])}
    l2l = got[f"{table6.name}: MAML training >= 1.1x faster than learn2learn (1 process)"]
    assert (l2l["ours"], l2l["met"]) == (3.0, True)
    higher = got[f"{table6.name}: MAML training >= 1.1x faster than higher (1 process)"]
    assert (higher["ours"], higher["met"]) == (1.5, True)
    two = got[f"{omni.name}: MAML training >= 1.5x faster than higher (2 ranks)"]  # 6 / 2.5 beats 6 / 4
    assert (two["ours"], two["target"], two["met"]) == (2.4, 1.5, True)
    assert sum("faster than" in claim for claim in got) == 4  # one per setting and peer: the fastest of ours
    # the papers' speed-ups were timed on a GPU: beside ours as ratios, never met or not met on a CPU
    inference = got["A-time miniimagenet anil conv 5w1s inference: speed-up over maml, ours beside the paper's"]
    assert (inference["ours"], inference["target"], inference["met"]) == (2.0, 4.15, None)
    training = got["A-time miniimagenet anil conv 5w1s training: speed-up over maml, ours beside the paper's"]
    assert (training["ours"], training["target"], training["met"]) == (4.0, 1.79, None)
    assert got["M-fo-speed miniimagenet fomaml conv training: speed-up (%), ours beside the paper's"]["target"] == 33.0
    assert B.finding(training) == ("- beside the paper (its GPU, our CPU: no verdict): A-time miniimagenet anil conv "
                                   "5w1s training: speed-up over maml, ours beside the paper's (ours 4.00, paper 1.79)")
    assert B.finding(two) == (f"- met: {omni.name}: MAML training >= 1.5x faster than higher (2 ranks) (ours 2.40, "
                              "target 1.50)")


def test_gpu_verdicts_take_our_fastest_maml_path_and_say_not_measured_without_rows():
    mini, omni = B.Setting.parse("miniimagenet-5w1s-q15-b4-k5"), B.Setting.parse("omniglot-20w1s-q1-b16-k5")
    assert {mini.name, omni.name} == set(B.GPU_TARGETS)
    rows = _rows([mini], {("training", "maml"): 0.5, ("training", B.BATCHED): 0.03, ("training", B.GRAPH): 0.012,
                          ("training", "anil"): 0.001})  # ANIL is no MAML path
    rows += _rows([omni], {("training", "maml"): 1.3, ("training", B.BATCHED): 0.025, ("inference", "maml"): 0.01})
    got = {v["claim"]: v for v in B.gpu_verdicts(rows)}
    fast = got[f"{mini.name}: MAML training <= 15 ms per meta-iteration on one GPU ({B.GRAPH})"]
    assert (fast["ours"], fast["met"]) == (0.012, True)
    slow = got[f"{omni.name}: MAML training <= 20 ms per meta-iteration on one GPU ({B.BATCHED})"]
    assert (slow["ours"], slow["met"]) == (0.025, False)
    assert B.gpu_finding(slow) == (f"- NOT met: {omni.name}: MAML training <= 20 ms per meta-iteration on one GPU "
                                   f"({B.BATCHED}) (ours 25.0 ms, target 20 ms)")
    empty = B.gpu_verdicts([])
    assert [v["met"] for v in empty] == [None, None] and all(v["ours"] is None for v in empty)
    assert B.gpu_finding(empty[0]).startswith("- not measured (no GPU timings in data/analyses/benchmark_gpu/timings.json")


def test_make_bench_gpu_writes_every_workload_of_each_gpu_setting(tmp_path, monkeypatch):
    """`make bench-gpu`'s command, tried on the CPU as the Makefile says: the section's gpu_settings
    at its warm-up and repeats, every workload once (the CUDA graph only on CUDA), each setting
    written as soon as it is done; on a machine without CUDA, device cuda is refused."""
    import json
    import yaml
    section = {"seed": 0, "filters_omniglot": 4, "inner_lr_omniglot": 0.4, "test_steps_omniglot": 2,
               "filters_miniimagenet": 4, "inner_lr_miniimagenet": 0.01, "test_steps_miniimagenet": 2,
               "reptile_batch": 4, "meta_lr": 0.001, "gpu_settings": ["omniglot-3w1s-q1-b2-k1", "miniimagenet-2w1s-q1-b1-k1"],
               "gpu_warmup": 1, "gpu_repeats": 2}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"benchmark": section}))
    monkeypatch.setattr(B.paths, "ROOT", tmp_path)
    B.main(["--device", "cpu", "--params", str(params), "--out", "gpu.json"])
    written = json.loads((tmp_path / "gpu.json").read_text())
    assert written["parameters"] == {"gpu_settings": section["gpu_settings"], "gpu_warmup": 1, "gpu_repeats": 2}
    assert written["scale"].startswith("2 timed iterations after 1 warm-up per workload; random inputs; cpu")
    assert [(r["setting"], r["algorithm"]) for r in written["rows"] if r["phase"] == "training"][:6] == [
        ("omniglot 3w1s q1 b2 k1", a) for a in ("maml", "fomaml", "anil", "reptile", B.LOWER_BOUND, B.BATCHED)]
    assert {r["setting"] for r in written["rows"]} == {"omniglot 3w1s q1 b2 k1", "miniimagenet 2w1s q1 b1 k1"}
    assert all(r["n"] == 2 and r["algorithm"] != B.GRAPH for r in written["rows"])
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="sees no CUDA device"):
            B.main(["--device", "cuda", "--params", str(params), "--out", "gpu.json"])
