"""Speed benchmark: seconds per meta-iteration and peak memory (experiments A-time and
M-fo-speed).

What is timed, per setting (:class:`Setting`: dataset, N-way K-shot, Q queries per
class, T tasks per meta-batch, k inner steps):

============  ==========================================================================
workload      one iteration is
============  ==========================================================================
training      one meta-iteration of ``maml``, ``fomaml`` or ``anil`` exactly as
              :func:`metalearn.fewshot.train` runs it (:func:`training.maml_step`: inner
              loop, meta-loss, backward, Adam step), or of ``reptile``
              (:func:`training.reptile_step`: k Adam steps on minibatches per task, then
              the Reptile update)
inference     test-time adaptation (``test_steps`` SGD steps) and query prediction for
              each of the T tasks, ``maml`` or ``anil`` (:func:`core.query_outputs`, as
              :func:`evaluation.few_shot` calls it)
lower-bound   the plain forward and backward passes one MAML iteration contains, with
              ordinary autograd and no meta-learning machinery: per task k support
              forward+backward passes and one query forward+backward (training, then
              an Adam step), or ``test_steps`` support forward+backward passes and one
              query forward (inference)
ranks         MAML training on W ranks that share the meta-batch's tasks
              (:mod:`metalearn.distributed`, as ``fewshot.train`` runs it with ``workers``
              W; the threads divided among them), algorithm ``maml, W ranks``
peers         the same MAML training iteration written with learn2learn
              (``l2l.algorithms.MAML``, ``clone``, ``adapt``) and with higher
              (``higher.innerloop_ctx``): same module, weights, data, loss, step size and
              steps (:func:`meta_gradients` checks that the maths is the same)
============  ==========================================================================

Inputs are random tensors of the right shapes (images ``[T, N*K, C, H, W]`` uniform in
[0, 1], labels grouped by class): the time of a meta-iteration does not depend on the
pixel values, and data loading is left out, as in the ANIL paper's Table 6.

Timing: ``warmup`` iterations first, then ``repeats`` iterations each timed with
``time.perf_counter`` (on CUDA between ``torch.cuda.synchronize()`` calls);
:func:`summarize` gives median, quartiles, min, max and mean. Peak memory
(:func:`peak_memory`) is measured on the last warm-up iteration (untimed; with no warm-up,
on one more iteration after the timed ones): on CUDA
``torch.cuda.max_memory_allocated`` above what was allocated before; on the CPU the
growth of the process's resident set (Linux ``VmHWM`` after resetting it through
``/proc/self/clear_refs``, above ``VmRSS`` before, after ``malloc_trim`` has returned
freed memory), which counts every allocation torch makes, unlike ``tracemalloc``.

Where the time goes: :func:`profile` runs one iteration of a workload under
``torch.profiler`` and splits its CPU time into operators (self time and calls), phases
(forward; the autograd engine, i.e. the inner loop's gradients and the meta-backward; the
optimizer step) and what lies outside every operator (Python, dispatch);
:func:`profile_setting` does so for our MAML, the lower bound and each peer.

The peers are optional: their pins are pyproject.toml's ``bench`` extra, installed by
``make bench-peers`` (:data:`INSTALL`); without them the benchmark runs without peer rows.

The GPU rows: ``make bench-gpu`` (``python -m metalearn.benchmark``, :func:`main`) times the
``gpu_settings`` of ``params.yaml``'s benchmark section on a CUDA device, every workload above
plus MAML training with the whole iteration captured as a CUDA graph (:data:`GRAPH`), and
writes them to :data:`GPU_TIMINGS` (committed: GPU time is rare, so the stage reads them rather
than measures); it needs only torch, numpy and PyYAML, no notebook machinery. The stage judges
:data:`GPU_TARGETS` on them (:func:`gpu_verdicts`), or says they were not measured.
"""
from __future__ import annotations

import ctypes
import gc
import json
import importlib
import math
import re
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from . import batched, core, distributed, fewshot, hardware, models, paths, papers, results, training
from .tasks import Batch

TRAINING = ("maml", "fomaml", "anil", "reptile")
INFERENCE = ("maml", "anil")
LOWER_BOUND = "lower-bound"
#: the targets (issue 15): our MAML training at least this many times faster than each peer at equal
#: maths, per dataset, with our fastest configuration (one process or several ranks)
PEER_TARGET = {"omniglot": 1.5, "miniimagenet": 1.1}
#: the peers and their pinned versions (pyproject.toml's ``bench`` extra)
PEERS = {"learn2learn": "0.2.0", "higher": "0.2.1"}
#: how to install the peers (learn2learn 0.2.0's C sources predate Python 3.11: it is
#: rebuilt from its sdist with Cython, see the Makefile's ``bench-peers`` target)
INSTALL = "make bench-peers"
#: issue 15's GPU targets: seconds per MAML training meta-iteration on one GPU, our fastest path
GPU_TARGETS = {"miniimagenet 5w1s q15 b4 k5": 0.015, "omniglot 20w1s q1 b16 k5": 0.020}
#: where ``make bench-gpu`` writes the GPU rows (relative to the root; committed)
GPU_TIMINGS = "data/analyses/benchmark_gpu/timings.json"
_SETTING = re.compile(r"^([a-z]+)-(\d+)w(\d+)s-q(\d+)-b(\d+)-k(\d+)$")


@dataclass(frozen=True)
class Setting:
    """One benchmark setting: ``meta_batch`` tasks of ``n_way``-way ``k_shot``-shot with
    ``queries`` query images per class, ``inner_steps`` inner SGD steps of ``inner_lr``
    in training and ``test_steps`` at inference, Conv4 with ``filters`` filters.
    Reptile takes ``inner_steps`` Adam steps on minibatches of ``reptile_batch`` of the
    task's N*(K+Q) images."""

    dataset: str
    n_way: int
    k_shot: int
    queries: int
    meta_batch: int
    inner_steps: int
    inner_lr: float = 0.01
    test_steps: int = 10
    filters: int = 32
    reptile_batch: int = 10

    def __post_init__(self):
        if self.dataset not in fewshot.DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {sorted(fewshot.DATASETS)}")
        for name, least in (("n_way", 2), ("k_shot", 1), ("queries", 1), ("meta_batch", 1), ("inner_steps", 1),
                            ("test_steps", 1), ("filters", 1), ("reptile_batch", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"setting {self.name}: {name} must be an integer >= {least}, got {value!r}")
        if not (isinstance(self.inner_lr, (int, float)) and math.isfinite(self.inner_lr) and self.inner_lr > 0):
            raise ValueError(f"setting {self.name}: inner_lr must be a finite number > 0, got {self.inner_lr!r}")

    @classmethod
    def parse(cls, text: str, **fixed) -> "Setting":
        """``"omniglot-20w1s-q1-b16-k5"`` -> 20-way 1-shot, 1 query per class, meta-batch 16,
        5 inner steps; ``fixed`` sets the other fields (inner_lr, test_steps, filters, ...)."""
        match = _SETTING.match(text) if isinstance(text, str) else None
        if not match:
            raise ValueError(f"setting {text!r} is not '<dataset>-<N>w<K>s-q<queries>-b<meta batch>-k<inner steps>', "
                             "e.g. 'omniglot-20w1s-q1-b16-k5'")
        dataset, *numbers = match.groups()
        return cls(dataset, *map(int, numbers), **fixed)

    @property
    def name(self) -> str:
        """``"omniglot 20w1s q1 b16 k5"``: the setting as results and tables name it."""
        return f"{self.dataset} {self.shots} q{self.queries} b{self.meta_batch} k{self.inner_steps}"

    @property
    def shots(self) -> str:
        return f"{self.n_way}w{self.k_shot}s"

    @property
    def table6(self) -> bool:
        """Whether this is a setting of the ANIL paper's Table 6 (A-time): MiniImageNet,
        task batch 1 and target (query) set 1."""
        return self.dataset == "miniimagenet" and self.meta_batch == 1 and self.queries == 1

    def spec(self, algorithm: str) -> fewshot.Spec:
        return fewshot.Spec(algorithm, "conv", self.n_way, self.k_shot)


def parse_setting(text: str, params) -> Setting:
    """A setting of the benchmark section (``params``: a mapping with its ``filters_<dataset>``,
    ``inner_lr_<dataset>``, ``test_steps_<dataset>`` and ``reptile_batch``), e.g.
    ``parse_setting("omniglot-20w1s-q1-b16-k5", params)``."""
    dataset = text.split("-", 1)[0] if isinstance(text, str) else ""
    fixed = {name: params[f"{name}_{dataset}"] for name in ("filters", "inner_lr", "test_steps")
             if f"{name}_{dataset}" in params}
    return Setting.parse(text, reptile_batch=params["reptile_batch"], **fixed)


# --- data and models --------------------------------------------------------------------

def random_batch(setting: Setting, seed: int = 0, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Batch:
    """Random images of the setting's shapes: support xs [T, N*K, C, H, W], ys [T, N*K]
    (labels grouped by class, as :class:`datasets.EpisodeSampler` makes them), queries
    xq [T, N*Q, C, H, W], yq [T, N*Q]; ``task`` is zeros [T, N, 2]."""
    shape = fewshot.DATASETS[setting.dataset]
    image = (shape["channels"], shape["image_size"], shape["image_size"])
    gen = torch.Generator().manual_seed(seed)
    t, n = setting.meta_batch, setting.n_way

    def images(per_class):
        return torch.rand(t, n * per_class, *image, generator=gen, dtype=dtype).to(device)

    def labels(per_class):
        return torch.arange(n).repeat_interleave(per_class).expand(t, -1).contiguous().to(device)

    return Batch(images(setting.k_shot), labels(setting.k_shot), images(setting.queries), labels(setting.queries),
                 torch.zeros(t, n, 2, dtype=torch.long))


def make_model(setting: Setting, seed: int = 0, device: str = "cpu", dtype: torch.dtype = torch.float32) -> models.Net:
    """The setting's network as :func:`fewshot.build_model` makes it, initialised from ``seed``
    (every workload of a setting starts from these same weights)."""
    model = models.init_model(lambda: fewshot.build_model(setting.spec("maml"), setting.dataset, setting.filters), seed)
    return model.to(device=device, dtype=dtype)


class _Run:
    """What :func:`training.maml_step` and :func:`training.reptile_step` use of a
    :class:`training.Run` (model, optimiser, task generator, extra state), without its
    checkpoint file."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, seed: int = 0):
        self.model, self.optimizer = model, optimizer
        self.gen = torch.Generator().manual_seed(seed)
        self.extra: dict = {}
        self.iteration = 0


Step = Callable[[], object]


def training_step(setting: Setting, algorithm: str, model: nn.Module, batch: Batch, meta_lr: float = 0.001,
                  group: distributed.Group | None = None, path: str = "loop") -> Step:
    """One training meta-iteration of ``algorithm`` on ``batch`` (the same batch every call),
    through the code :func:`fewshot.train` runs: a closure that updates ``model``. ``group``: this
    rank's share of the tasks (:mod:`metalearn.distributed`); ``path``: how the MAML family runs
    the tasks (:data:`fewshot.TRAINING_PATHS`; ``"graph"``: :class:`batched.CapturedStep`, CUDA only,
    as ``fewshot.train`` runs it)."""
    if algorithm not in TRAINING:
        raise ValueError(f"unknown training algorithm {algorithm!r}; choose one of {TRAINING}")
    spec = setting.spec(algorithm)
    if algorithm == "reptile":
        run = _Run(model, None)
        settings = fewshot.Settings(iterations=1, meta_batch=setting.meta_batch, inner_steps=setting.inner_steps,
                                    inner_lr=0.001, test_steps=setting.test_steps)
        optimizer = fewshot.reptile_optimizer(spec, settings)
        x = torch.cat([batch.xs, batch.xq], 1)
        y = torch.cat([batch.ys, batch.yq], 1)
        size = min(setting.reptile_batch, x.shape[1])
        order = torch.rand(len(x), setting.inner_steps, x.shape[1], generator=torch.Generator().manual_seed(0))
        minibatches = order.argsort(-1)[..., :size].to(x.device)
        tasks = list(zip(x, y, minibatches))
        return lambda: training.reptile_step(run, lambda gen: tasks, optimizer, 1.0, keep_state=False,
                                             loss_fn=fewshot.loss_of(spec), group=group)
    run = _Run(model, torch.optim.Adam(model.parameters(), lr=meta_lr, capturable=path == "graph"))
    inner = fewshot.inner_loop(spec, dict(model.named_parameters()), setting.inner_steps, setting.inner_lr)
    captured = batched.CapturedStep(model, run.optimizer, inner, fewshot.loss_of(spec)) if path == "graph" else None
    return lambda: training.maml_step(run, lambda gen: batch, inner, fewshot.loss_of(spec), group=group,
                                      path=path, captured=captured)


def ranks_name(workers: int) -> str:
    """The algorithm column of MAML training on ``workers`` ranks: ``"maml, 2 ranks"``."""
    return f"maml, {workers} ranks"


#: the algorithm column of MAML training with the tasks batched (:mod:`metalearn.batched`), one process
BATCHED = "maml, batched"
#: the same, the whole iteration captured as a CUDA graph and replayed (:class:`batched.CapturedStep`; CUDA only)
GRAPH = "maml, batched, CUDA graph"
#: calls before a captured step replays: its eager warm-up and the capture (:class:`batched.CapturedStep`)
CAPTURED_WARMUP = batched.WARMUP + 1


def measure_ranks(setting: Setting, workers: int, warmup: int, repeats: int, seed: int = 0,
                  meta_lr: float = 0.001) -> dict:
    """:func:`measure` of MAML training on ``workers`` ranks (:func:`distributed.run_ranks`; each
    rank starts from the same weights and batch and computes its share). Every iteration ends in
    the exchange, so the ranks keep step and rank 0's seconds are the iteration's; ``peak_mib``
    is rank 0's (each rank holds as much)."""
    if workers > setting.meta_batch:
        raise ValueError(f"{workers} ranks for {setting.meta_batch} tasks in {setting.name}: a rank would idle")

    def loop(group):
        step = training_step(setting, "maml", make_model(setting, seed), random_batch(setting, seed), meta_lr, group)
        return measure([step], warmup, repeats)[0]
    return distributed.run_ranks(workers, loop)


def inference_step(setting: Setting, algorithm: str, model: nn.Module, batch: Batch) -> Step:
    """Test-time adaptation (``setting.test_steps`` steps) and query prediction for each task
    of ``batch``: a closure returning the query logits [T, N*Q, N]."""
    if algorithm not in INFERENCE:
        raise ValueError(f"unknown inference algorithm {algorithm!r}; choose one of {INFERENCE}")
    spec = setting.spec(algorithm)
    params = models.params_of(model, requires_grad=False)
    inner = fewshot.inner_loop(spec, params, setting.test_steps, setting.inner_lr)
    loss_fn = fewshot.loss_of(spec)

    def step():
        return torch.stack([core.query_outputs(model, params, xs, ys, xq, inner, loss_fn)[-1].detach()
                            for xs, ys, xq in zip(batch.xs, batch.ys, batch.xq)])
    return step


def lower_bound_step(setting: Setting, phase: str, model: nn.Module, batch: Batch, meta_lr: float = 0.001) -> Step:
    """The plain passes one MAML iteration contains, with ordinary autograd on ``model``.

    ``phase="training"``: per task ``inner_steps`` support forward+backward passes and one
    query forward+backward, then one Adam step: T * (k + 1) forward and backward passes.
    ``phase="inference"``: per task ``test_steps`` support forward+backward passes and one
    query forward without gradients: T * (k + 1) forward and T * k backward passes.
    """
    if phase not in ("training", "inference"):
        raise ValueError(f"phase must be 'training' or 'inference', got {phase!r}")
    loss_fn = fewshot.loss_of(setting.spec("maml"))
    optimizer = torch.optim.Adam(model.parameters(), lr=meta_lr)
    steps = setting.inner_steps if phase == "training" else setting.test_steps

    def step():
        optimizer.zero_grad(set_to_none=True)
        for xs, ys, xq, yq in zip(batch.xs, batch.ys, batch.xq, batch.yq):
            for _ in range(steps):
                loss_fn(model(xs), ys).backward()
            if phase == "training":
                loss_fn(model(xq), yq).backward()
            else:
                with torch.no_grad():
                    model(xq)
        if phase == "training":
            optimizer.step()
    return step


# --- peers ------------------------------------------------------------------------------

def peer_status() -> dict[str, str | None]:
    """``{peer: None}`` when it imports at its pinned version, else ``{peer: why not}``."""
    out = {}
    for name, version in PEERS.items():
        try:
            module = importlib.import_module(name)
        except Exception as error:  # an ImportError, or a peer that breaks on import
            out[name] = f"not importable ({type(error).__name__}: {error}); install with `{INSTALL}`"
            continue
        found = getattr(module, "__version__", None) or _dist_version(name)
        out[name] = None if found == version else f"version {found} is installed, the benchmark pins {version}"
    return out


def _dist_version(name: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return None


def require_peers(names) -> None:
    """Raise a clear error unless every peer in ``names`` imports at its pinned version."""
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise ValueError(f"unknown peers {unknown}; the benchmark knows {sorted(PEERS)}")
    problems = {n: why for n, why in peer_status().items() if n in names and why}
    if problems:
        raise ModuleNotFoundError("benchmark peers unavailable: " + "; ".join(f"{n}: {w}" for n, w in problems.items())
                                  + f". Install the pinned peers with `{INSTALL}` "
                                  f"({', '.join(f'{n}=={v}' for n, v in PEERS.items())}), or set peers to false.")


def peer_plan(switch: bool | str) -> tuple[list[str], dict[str, str]]:
    """Which peers to run for the notebook's ``peers`` switch, and why each other is absent.

    ``True``: all of :data:`PEERS`, or a clear error naming the install command
    (:func:`require_peers`); ``False``: none; ``"auto"``: those that import at their pinned
    versions. Returns (peers to run, {absent peer: reason}).
    """
    if switch is True:
        require_peers(list(PEERS))
        return list(PEERS), {}
    if switch is False:
        return [], {name: "not requested (peers: false)" for name in PEERS}
    if switch == "auto":
        status = peer_status()
        return [n for n, why in status.items() if why is None], {n: why for n, why in status.items() if why}
    raise ValueError(f"peers must be true, false or 'auto', got {switch!r}")


def versions() -> str:
    """The software every figure depends on: Python, torch and the peers' versions."""
    import platform
    found = {name: _dist_version(name) for name in PEERS}
    peers = ", ".join(f"{n} {v}" for n, v in found.items() if v) or "no peers"
    return f"python {platform.python_version()}, torch {torch.__version__}, {peers}"


def describe(device: str) -> str:
    """Where a measurement ran: the device, the CPU model (and on a GPU the threads), the software."""
    return (f"{hardware.describe(device)}; CPU {cpu_model()}"
            + (f", {torch.get_num_threads()} threads" if torch.device(device).type == "cuda" else "") + f"; {versions()}")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    import platform
    try:
        with open("/proc/cpuinfo") as handle:
            match = re.search(r"^model name\s*:\s*(.+)$", handle.read(), re.M)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _peer_meta_loss(peer: str, model: nn.Module, batch: Batch, steps: int, lr: float, loss_fn,
                    backward: Callable[[Tensor], None], maml=None) -> None:
    """The MAML meta-loss of ``batch`` written with ``peer``; ``backward(task_loss / T)``
    is called per task (learn2learn: once, on the sum, as its examples do)."""
    n_tasks = len(batch.xs)
    if peer == "learn2learn":
        total = 0.0
        for xs, ys, xq, yq in zip(batch.xs, batch.ys, batch.xq, batch.yq):
            learner = maml.clone()
            for _ in range(steps):
                learner.adapt(loss_fn(learner(xs), ys))
            total = total + loss_fn(learner(xq), yq)
        backward(total / n_tasks)
    elif peer == "higher":
        import higher
        inner_opt = torch.optim.SGD(model.parameters(), lr=lr)
        for xs, ys, xq, yq in zip(batch.xs, batch.ys, batch.xq, batch.yq):
            with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False) as (fmodel, diffopt):
                for _ in range(steps):
                    diffopt.step(loss_fn(fmodel(xs), ys))
                backward(loss_fn(fmodel(xq), yq) / n_tasks)
    else:
        raise ValueError(f"unknown peer {peer!r}; choose one of {sorted(PEERS)}")


def _l2l_maml(model: nn.Module, lr: float):
    import learn2learn
    return learn2learn.algorithms.MAML(model, lr=lr, first_order=False)


def peer_training_step(setting: Setting, peer: str, model: nn.Module, batch: Batch, meta_lr: float = 0.001) -> Step:
    """One MAML training meta-iteration written with ``peer`` (learn2learn or higher): the
    inner loop, meta-loss (MAML's loss, :func:`fewshot.loss_of`), backward, Adam step."""
    require_peers([peer])
    loss_fn = fewshot.loss_of(setting.spec("maml"))
    optimizer = torch.optim.Adam(model.parameters(), lr=meta_lr)
    maml = _l2l_maml(model, setting.inner_lr) if peer == "learn2learn" else None

    def step():
        optimizer.zero_grad(set_to_none=True)
        _peer_meta_loss(peer, model, batch, setting.inner_steps, setting.inner_lr, loss_fn, Tensor.backward, maml)
        optimizer.step()
    return step


def meta_gradients(implementation: str, setting: Setting, model: nn.Module, batch: Batch) -> dict[str, Tensor]:
    """The MAML meta-gradient ``{name: d meta-loss / d parameter}`` of ``model`` on ``batch``
    computed by ``implementation``: ``"ours"`` (:func:`core.meta_loss` with the inner loop of
    :func:`fewshot.inner_loop`), ``"learn2learn"`` or ``"higher"``. ``model`` is not changed."""
    loss_fn = fewshot.loss_of(setting.spec("maml"))
    names, tensors = zip(*model.named_parameters())
    if implementation == "ours":
        params = dict(model.named_parameters())
        inner = fewshot.inner_loop(setting.spec("maml"), params, setting.inner_steps, setting.inner_lr)
        loss, _ = core.meta_loss(model, params, batch.xs, batch.ys, batch.xq, batch.yq, inner, loss_fn)
        return dict(zip(names, torch.autograd.grad(loss, tensors)))
    require_peers([implementation])
    total = [torch.zeros_like(t) for t in tensors]

    def accumulate(loss):
        for acc, g in zip(total, torch.autograd.grad(loss, tensors)):
            acc += g
    maml = _l2l_maml(model, setting.inner_lr) if implementation == "learn2learn" else None
    _peer_meta_loss(implementation, model, batch, setting.inner_steps, setting.inner_lr, loss_fn, accumulate, maml)
    return dict(zip(names, total))


def gradient_difference(ours: dict[str, Tensor], theirs: dict[str, Tensor]) -> float:
    """Largest difference over parameters relative to the largest gradient entry of all,
    ``max |a - b| / max |a|`` (0 when equal; a missing or extra name raises). One scale for
    every tensor: a conv bias before batch norm has a true gradient of zero, so its own
    maximum is rounding noise and would turn equal gradients into a large "relative" error."""
    if set(ours) != set(theirs):
        raise ValueError(f"different parameters: {sorted(set(ours) ^ set(theirs))}")
    scale = max(max(a.abs().max().item() for a in ours.values()), torch.finfo(next(iter(ours.values())).dtype).tiny)
    return max((a - theirs[name]).abs().max().item() for name, a in ours.items()) / scale


def check_meta_gradients(setting: Setting, peers, seed: int = 0, dtype: torch.dtype = torch.float64,
                         tolerance: float = 1e-9) -> dict[str, float]:
    """Each peer's MAML meta-gradient against ours on ``setting`` (same weights and data, in
    ``dtype``): ``{peer: largest relative difference}``; raises AssertionError above
    ``tolerance``."""
    model = make_model(setting, seed, dtype=dtype)
    batch = random_batch(setting, seed, dtype=dtype)
    ours = meta_gradients("ours", setting, model, batch)
    out = {}
    for peer in peers:
        out[peer] = gradient_difference(ours, meta_gradients(peer, setting, model, batch))
        if not out[peer] <= tolerance:
            raise AssertionError(f"{peer}'s MAML meta-gradient differs from ours on {setting.name}: relative "
                                 f"difference {out[peer]:.3g} > {tolerance:g}")
    return out


# --- measuring --------------------------------------------------------------------------

def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_iterations(step: Step, warmup: int, repeats: int, device: str = "cpu",
                    clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``step`` after ``warmup`` untimed calls."""
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got {warmup} and {repeats}")
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = clock()
        step()
        _sync(device)
        times.append(clock() - start)
    return times


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    position = q * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def summarize(times: list[float]) -> dict[str, float]:
    """median, q1, q3 (quartiles, linear interpolation), iqr, min, max, mean and n of ``times``."""
    if not times:
        raise ValueError("no times to summarise")
    values = sorted(float(t) for t in times)
    q1, q3 = _quantile(values, 0.25), _quantile(values, 0.75)
    return {"median": statistics.median(values), "q1": q1, "q3": q3, "iqr": q3 - q1, "min": values[0],
            "max": values[-1], "mean": statistics.fmean(values), "n": len(values)}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        return int(re.search(rf"^{field}:\s+(\d+)\s+kB", handle.read(), re.M).group(1))


def memory_method(device: str) -> str:
    """How :func:`peak_memory` measures on ``device`` (for the report)."""
    if torch.device(device).type == "cuda":
        return "torch.cuda.max_memory_allocated above the allocation before the iteration"
    return "peak resident set (VmHWM, reset via /proc/self/clear_refs) above VmRSS before the iteration"


def peak_memory(step: Step, device: str = "cpu") -> float | None:
    """MiB that one call of ``step`` adds at its peak (:func:`memory_method`); None where the
    CPU measurement is unavailable (not Linux)."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2 ** 20
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        before = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        step()
        return max(_status_kib("VmHWM") - before, 0) / 1024
    except (OSError, AttributeError):
        return None


def measure(steps: Sequence[Step], warmup: int, repeats: int, device: str = "cpu") -> list[dict]:
    """For each of ``steps``: :func:`summarize` of its ``repeats`` timed calls, plus ``peak_mib``:
    :func:`peak_memory` of its last warm-up call (with no warm-up, of one more call after the
    timed ones). The timed calls go round-robin (one call of each step in turn, ``repeats``
    rounds), so a change in the machine's load hits every workload alike instead of
    whichever happened to be running: timing them one after the other made the first ones
    look slower on a busy machine."""
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got {warmup} and {repeats}")
    peaks = []
    for step in steps:
        for _ in range(warmup - 1):
            step()
        peaks.append(peak_memory(step, device) if warmup else None)
    times = [[] for _ in steps]
    for _ in range(repeats):
        for seconds, step in zip(times, steps):
            seconds += time_iterations(step, 0, 1, device)
    out = []
    for step, peak, seconds in zip(steps, peaks, times):
        out.append({**summarize(seconds), "peak_mib": peak_memory(step, device) if not warmup else peak})
    return out


def run_setting(setting: Setting, warmup: int, repeats: int, device: str = "cpu", peers=(), seed: int = 0,
                meta_lr: float = 0.001, progress: Callable[[str], None] | None = None,
                ranks: Sequence[int] = (), batched: bool = False) -> list[dict]:
    """Every workload of ``setting``: training of each of :data:`TRAINING`, inference of each of
    :data:`INFERENCE`, the lower bound of both phases and each peer's MAML training, and with
    ``batched`` MAML training on the batched path (:data:`BATCHED`). Each starts from the same
    weights and data. Then MAML training on each number of ``ranks`` up to
    the meta-batch (:func:`measure_ranks`, CPU only; after the others, as processes cannot take
    turns with them). Returns one dict per workload: setting, phase, algorithm, and :func:`measure`'s numbers."""
    batch = random_batch(setting, seed, device)
    workloads = [("training", a, lambda m, a=a: training_step(setting, a, m, batch, meta_lr)) for a in TRAINING]
    workloads += [("inference", a, lambda m, a=a: inference_step(setting, a, m, batch)) for a in INFERENCE]
    workloads += [(phase, LOWER_BOUND, lambda m, p=phase: lower_bound_step(setting, p, m, batch, meta_lr))
                  for phase in ("training", "inference")]
    workloads += [("training", p, lambda m, p=p: peer_training_step(setting, p, m, batch, meta_lr)) for p in peers]
    if batched:
        workloads.append(("training", BATCHED, lambda m: training_step(setting, "maml", m, batch, meta_lr, path="batched")))
        if torch.device(device).type == "cuda":
            if warmup < CAPTURED_WARMUP:
                raise ValueError(f"warmup must be >= {CAPTURED_WARMUP} on CUDA: the captured step runs {batched.WARMUP} "
                                 f"eager iterations and its capture before it replays, got {warmup}")
            workloads.append(("training", GRAPH, lambda m: training_step(setting, "maml", m, batch, meta_lr, path="graph")))
    if progress:
        progress(f"{setting.name}: {len(workloads)} workloads, round-robin")
    steps = [build(make_model(setting, seed, device)) for _, _, build in workloads]
    rows = [{"setting": setting.name, "phase": phase, "algorithm": algorithm, **numbers}
            for (phase, algorithm, _), numbers in zip(workloads, measure(steps, warmup, repeats, device))]
    for workers in (w for w in ranks if w <= setting.meta_batch):  # more ranks than tasks: nothing to share
        if torch.device(device).type != "cpu":
            raise ValueError("ranks are timed on the CPU (forked gloo processes); set ranks: [] for a GPU")
        if progress:
            progress(f"{setting.name}: MAML training on {workers} ranks")
        rows.append({"setting": setting.name, "phase": "training", "algorithm": ranks_name(workers),
                     **measure_ranks(setting, workers, warmup, repeats, seed, meta_lr)})
    return rows


# --- profile ----------------------------------------------------------------------------

PHASES = ("forward", "autograd engine", "optimizer step")


def _phase(event) -> str:
    """The phase of a profiler event: that of its nearest ancestor (itself included) that is an
    autograd-engine function or an optimizer step; otherwise forward."""
    while event is not None:
        if event.name.startswith("autograd::engine::evaluate_function"):
            return "autograd engine"
        if event.name.startswith("Optimizer."):
            return "optimizer step"
        event = event.cpu_parent
    return "forward"


def profile(step: Step, warmup: int = 1, repeats: int = 3) -> dict:
    """``repeats`` calls of ``step`` under ``torch.profiler`` (CPU activity), after ``warmup``
    untimed calls; every number is per call (the mean over the repeats).

    Returns {"wall": seconds, "op_seconds": self CPU seconds summed over every recorded event,
    "outside_ops": wall - op_seconds (Python and dispatch between operators; the profiler's
    own cost lands in both), "calls": number of ``aten::`` operator calls, "phases": {phase of
    :data:`PHASES`: self seconds}, "ops": [{"op", "calls", "seconds"}] for every event name, by
    self time, largest first}.
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got {warmup} and {repeats}")
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            step()
    wall = (time.perf_counter() - start) / repeats
    phases = dict.fromkeys(PHASES, 0.0)
    for event in prof.events():
        phases[_phase(event)] += event.self_cpu_time_total / 1e6 / repeats
    ops = sorted(({"op": e.key, "calls": e.count / repeats, "seconds": e.self_cpu_time_total / 1e6 / repeats}
                  for e in prof.key_averages()), key=lambda o: -o["seconds"])
    op_seconds = sum(o["seconds"] for o in ops)
    return {"wall": wall, "op_seconds": op_seconds, "outside_ops": wall - op_seconds,
            "calls": sum(o["calls"] for o in ops if o["op"].startswith("aten::")), "phases": phases, "ops": ops}


def profile_setting(setting: Setting, peers=(), seed: int = 0, meta_lr: float = 0.001, warmup: int = 1,
                    repeats: int = 3) -> dict[str, dict]:
    """:func:`profile` of MAML training iterations of ours, of each peer and of the lower bound
    on ``setting``, each from the same weights and data: {"maml" | peer | "lower-bound": profile}."""
    batch = random_batch(setting, seed)
    builds = {"maml": lambda m: training_step(setting, "maml", m, batch, meta_lr)}
    builds.update({p: lambda m, p=p: peer_training_step(setting, p, m, batch, meta_lr) for p in peers})
    builds[LOWER_BOUND] = lambda m: lower_bound_step(setting, "training", m, batch, meta_lr)
    return {name: profile(build(make_model(setting, seed)), warmup, repeats) for name, build in builds.items()}


# --- ratios -----------------------------------------------------------------------------

def speedups(rows: list[dict], statistic: str = "median") -> list[dict]:
    """The ratios the issue asks for, per setting, from ``statistic`` seconds (> 1: faster):
    ``anil over maml`` (training and inference) and ``fomaml over maml`` (training) as
    t(maml) / t(algorithm); ``ours over <peer>`` (MAML training) as t(peer) / t(ours), and
    ``ours (W ranks) over <peer>`` and ``W ranks over one`` likewise for MAML on W ranks;
    ``maml over lower bound`` as t(maml) / t(lower bound) (>= 1: the machinery's cost)."""
    seconds = {(r["setting"], r["phase"], r["algorithm"]): r[statistic] for r in rows}
    out = []

    def add(setting, phase, name, numerator, denominator):
        if numerator in seconds and denominator in seconds:
            out.append({"setting": setting, "phase": phase, "ratio": name,
                        "value": seconds[numerator] / seconds[denominator]})
    for setting in dict.fromkeys(r["setting"] for r in rows):
        for phase in ("training", "inference"):
            maml = (setting, phase, "maml")
            add(setting, phase, "anil over maml", maml, (setting, phase, "anil"))
            if phase == "training":
                add(setting, phase, "fomaml over maml", maml, (setting, phase, "fomaml"))
                for peer in PEERS:
                    add(setting, phase, f"ours over {peer}", (setting, phase, peer), maml)
                for algorithm in sorted({a for s, p, a in seconds if s == setting and a.startswith("maml, ")}):
                    workers = algorithm.removeprefix("maml, ")
                    add(setting, phase, f"{workers} over one", maml, (setting, phase, algorithm))
                    for peer in PEERS:
                        add(setting, phase, f"ours ({workers}) over {peer}", (setting, phase, peer),
                            (setting, phase, algorithm))
            add(setting, phase, "maml over lower bound", maml, (setting, phase, LOWER_BOUND))
    return out


# --- results rows and what they say -------------------------------------------------------

def table6_key(setting: Setting, algorithm: str, phase: str) -> str:
    """The A-time setting of ``reports/results.csv``: ``"miniimagenet anil conv 5w1s training"``."""
    return f"{setting.dataset} {algorithm} conv {setting.shots} {phase}"


def fo_speed_setting(settings: list[Setting]) -> Setting | None:
    """The setting M-fo-speed is measured on: MiniImageNet 5-way 1-shot with the largest
    meta-batch (the MAML paper's training; Table 6's task batch 1 only if it is the sole one)."""
    candidates = [s for s in settings if s.dataset == "miniimagenet" and s.shots == "5w1s"]
    return max(candidates, key=lambda s: (not s.table6, s.meta_batch, s.queries), default=None)


def _by_key(rows: list[dict]) -> dict[tuple[str, str, str], dict]:
    return {(r["setting"], r["phase"], r["algorithm"]): r for r in rows}


def result_rows(rows: list[dict], settings: list[Setting], scale: str) -> list[dict]:
    """``reports/results.csv`` rows from :func:`run_setting`'s rows.

    A-time (Table 6 settings, :attr:`Setting.table6`): mean and median seconds of MAML,
    FOMAML and ANIL training and MAML and ANIL inference, and the speed-up over MAML as the
    paper computes it, a ratio of means. M-fo-speed: ``(t(maml) / t(fomaml) - 1) * 100`` from
    medians on :func:`fo_speed_setting`. A-time: every workload's median and IQR seconds and
    peak MiB (setting ``"<setting> <algorithm> <phase>"``, no paper value), and every ratio of
    :func:`speedups`.
    """
    measured = _by_key(rows)
    out = []
    for s in settings:
        if not s.table6:
            continue
        for phase, algorithms in (("training", ("maml", "fomaml", "anil")), ("inference", INFERENCE)):
            maml = measured.get((s.name, phase, "maml"))
            for algorithm in algorithms:
                r = measured.get((s.name, phase, algorithm))
                if r is None:
                    continue
                key = table6_key(s, algorithm, phase)
                out.append(results.row("A-time", key, "mean seconds", r["mean"], scale))
                out.append(results.row("A-time", key, "median seconds", r["median"], scale))
                if maml is not None:
                    out.append(results.row("A-time", key, "speed-up over maml", maml["mean"] / r["mean"], scale))
    fo = fo_speed_setting(settings)
    if fo is not None and (fo.name, "training", "fomaml") in measured:
        value = (measured[(fo.name, "training", "maml")]["median"] / measured[(fo.name, "training", "fomaml")]["median"]
                 - 1) * 100
        out.append(results.row("M-fo-speed", "miniimagenet fomaml conv training", "speed-up (%)", value,
                               f"{fo.name}; {scale}"))
    for r in rows:
        where = f"{r['setting']} {r['algorithm']} {r['phase']}"
        out.append(results.row("A-time", where, "median seconds", r["median"], scale))
        out.append(results.row("A-time", where, "iqr seconds", r["iqr"], scale))
        if r.get("peak_mib") is not None:
            out.append(results.row("A-time", where, "peak MiB", r["peak_mib"], scale))
    for x in speedups(rows):
        out.append(results.row("A-time", f"{x['setting']} {x['phase']} {x['ratio']}", "speed-up (x)", x["value"],
                               scale))
    return out


def verdicts(rows: list[dict], settings: list[Setting]) -> list[dict]:
    """The targets, each as {claim, ours, target, met}: our MAML training at least
    :data:`PEER_TARGET` (of the setting's dataset) times faster than each peer, with our fastest
    configuration (one process or several ranks; medians, per setting), peers timed on the same
    machine. ANIL's speed-up over MAML (ratio of means, Table 6 settings) and FOMAML's
    (M-fo-speed) are set beside the paper's (read from :mod:`metalearn.papers`) with ``met`` None:
    the papers timed a GPU, this a CPU, so a ratio on other hardware is no verdict."""
    out = []
    best: dict[tuple[str, str], tuple[float, str]] = {}
    for x in speedups(rows):
        if x["ratio"].startswith("ours") and " over " in x["ratio"]:
            config, peer = x["ratio"].removeprefix("ours").split(" over ")
            key = (x["setting"], peer)
            best[key] = max(best.get(key, (-math.inf, "")), (x["value"], config.strip(" ()") or "1 process"))
    for (setting, peer), (value, config) in best.items():
        target = PEER_TARGET[setting.split()[0]]
        out.append({"claim": f"{setting}: MAML training >= {target:g}x faster than {peer} ({config})",
                    "ours": value, "target": target, "met": value >= target})
    for r in result_rows(rows, settings, scale="-"):
        if r["paper"] and (r["metric"] == "speed-up over maml" and " anil " in r["setting"]
                           or r["experiment"] == "M-fo-speed"):
            ours, paper = float(r["value"]), float(r["paper"])
            out.append({"claim": f"{r['experiment']} {r['setting']}: {r['metric']}, ours beside the paper's",
                        "ours": ours, "target": paper, "met": None})
    return out


def finding(v: dict) -> str:
    """One line of findings.md for a :func:`verdicts` entry."""
    if v["met"] is None:
        return (f"- beside the paper (its GPU, our CPU: no verdict): {v['claim']} (ours {v['ours']:.2f}, "
                f"paper {v['target']:.2f})")
    return f"- {'met' if v['met'] else 'NOT met'}: {v['claim']} (ours {v['ours']:.2f}, target {v['target']:.2f})"


# --- the GPU rows (make bench-gpu) --------------------------------------------------------

def gpu_verdicts(rows: list[dict]) -> list[dict]:
    """:data:`GPU_TARGETS` judged on GPU rows (:func:`run_setting`'s, from :data:`GPU_TIMINGS`): per
    target setting {claim, ours, target, met} with our fastest MAML training path (the median
    seconds of ``maml``, :data:`BATCHED` or :data:`GRAPH`); ``ours`` and ``met`` None where the
    setting was not timed (no rows: no GPU measured it)."""
    out = []
    for setting, target in GPU_TARGETS.items():
        ours = [r for r in rows if r["setting"] == setting and r["phase"] == "training"
                and r["algorithm"] in ("maml", BATCHED, GRAPH)]
        best = min(ours, key=lambda r: r["median"]) if ours else None
        out.append({"claim": f"{setting}: MAML training <= {1000 * target:g} ms per meta-iteration on one GPU"
                             + (f" ({best['algorithm']})" if best else ""),
                    "ours": best["median"] if best else None, "target": target,
                    "met": best["median"] <= target if best else None})
    return out


def gpu_finding(v: dict) -> str:
    """One line of findings.md for a :func:`gpu_verdicts` entry (milliseconds)."""
    if v["met"] is None:
        return f"- not measured (no GPU timings in {GPU_TIMINGS}: `make bench-gpu` on a GPU machine): {v['claim']}"
    return (f"- {'met' if v['met'] else 'NOT met'}: {v['claim']} (ours {1000 * v['ours']:.1f} ms, "
            f"target {1000 * v['target']:g} ms)")


def load_gpu_timings() -> dict | None:
    """What ``make bench-gpu`` wrote ({hardware, scale, parameters, rows}), or None before any GPU ran it."""
    found = paths.input(GPU_TIMINGS)
    return json.loads(found.read_text()) if found.is_file() else None


def measure_gpu(params: dict, device: str = "cuda", progress: Callable[[str], None] = print,
                done: Callable[[dict], None] | None = None) -> dict:
    """Time every workload of :func:`run_setting` (``batched``: with the CUDA graph on CUDA; no peers,
    no ranks) on each of the benchmark section's ``gpu_settings`` with ``gpu_warmup`` and ``gpu_repeats``
    (``params``: the section). Returns {hardware, scale, parameters, rows}; ``done`` gets it after each
    setting (so a run cut short keeps the settings it finished)."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device}: torch {torch.__version__} sees no CUDA device")
    torch.manual_seed(params["seed"])
    settings = [parse_setting(text, params) for text in params["gpu_settings"]]
    where = describe(device)
    out = {"hardware": where, "parameters": {k: v for k, v in params.items() if k.startswith("gpu_")},
           "scale": f"{params['gpu_repeats']} timed iterations after {params['gpu_warmup']} warm-up per workload; "
                    f"random inputs; {where}",
           "rows": []}
    for setting in settings:
        out["rows"] += run_setting(setting, params["gpu_warmup"], params["gpu_repeats"], device, seed=params["seed"],
                                   meta_lr=params["meta_lr"], progress=progress, batched=True)
        if done:
            done(out)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """``make bench-gpu``: the GPU rows into :data:`GPU_TIMINGS` (see the module's docstring)."""
    import argparse
    import yaml
    parser = argparse.ArgumentParser(description="Time the benchmark's gpu_settings on a GPU (make bench-gpu).")
    parser.add_argument("--params", default=str(paths.PARAMS), help="the params file with the benchmark section")
    parser.add_argument("--device", default="cuda", help="cuda (cpu only to try the command)")
    parser.add_argument("--out", default=GPU_TIMINGS, help="where the rows go, relative to the root")
    args = parser.parse_args(argv)
    params = yaml.safe_load(open(args.params))["benchmark"]
    target = paths.ROOT / args.out

    def write(measured: dict) -> None:
        with paths.atomic_write(target) as handle:
            json.dump(measured, handle, indent=1)
            handle.write("\n")
        print(f"wrote {len(measured['rows'])} rows to {args.out}", flush=True)

    measure_gpu(params, args.device, lambda what: print("timing", what, flush=True), write)


if __name__ == "__main__":
    main()
