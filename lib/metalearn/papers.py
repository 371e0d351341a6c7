"""The papers' own numbers, for the ``paper`` column of ``reports/results.csv`` only.

Keyed by (experiment id, setting, metric) exactly as the stages write their rows.
Nothing in the pipeline reads these values except to print them beside ours;
no computation, default or tuning uses them.
Sources: ``shared/papers/`` and ``shared/STUDY.md``.
"""
from __future__ import annotations

PAPER: dict[tuple[str, str, str], float] = {}

# MAML paper, Appendix C, Table 2: sinusoid, 5-shot MSE after 1 / 5 / 10 gradient steps.
for _method, _values in {
    "maml": (0.67, 0.38, 0.35),
    "pretrained": (2.41, 2.23, 2.19),
    "multitask-noreg": (4.19, 3.85, 3.69),
    "multitask-l2": (7.18, 5.69, 5.60),
    "multitask-regmean": (2.91, 2.72, 2.71),
}.items():
    for _steps, _value in zip((1, 5, 10), _values):
        PAPER[("M-sine", f"{_method} K=5 steps={_steps}", "mse")] = _value


# Settings name the dataset, algorithm, model and N-way K-shot: "omniglot maml conv 5w1s";
# a NIL head at test time adds " nil-head".
# MAML paper, Table 1: Omniglot accuracy (%), convolutional MAML and the non-conv MLP.
for _setting, _value in {"5w1s": 98.7, "5w5s": 99.9, "20w1s": 95.8, "20w5s": 98.9}.items():
    PAPER[("M-omni", f"omniglot maml conv {_setting}", "accuracy")] = _value
for _setting, _value in {"5w1s": 89.7, "5w5s": 97.5}.items():
    PAPER[("M-omni-mlp", f"omniglot maml mlp {_setting}", "accuracy")] = _value

# MAML paper, Table 1: MiniImageNet 5-way accuracy (%), MAML and first-order MAML.
for _algorithm, _values in {"maml": (48.70, 63.11), "fomaml": (48.07, 63.15)}.items():
    for _setting, _value in zip(("5w1s", "5w5s"), _values):
        PAPER[("M-mini", f"miniimagenet {_algorithm} conv {_setting}", "accuracy")] = _value

# ANIL paper, Table 2 (mean over three seeds): MAML vs ANIL.
for _algorithm, _values in {"maml": (93.7, 96.4, 46.9, 63.1), "anil": (96.2, 98.0, 46.7, 61.5)}.items():
    for _where, _value in zip(("omniglot 20w1s", "omniglot 20w5s", "miniimagenet 5w1s", "miniimagenet 5w5s"),
                              _values):
        _dataset, _setting = _where.split()
        PAPER[("A-anil", f"{_dataset} {_algorithm} conv {_setting}", "accuracy")] = _value

# ANIL paper, Table 4: NIL at test time after ANIL training.
for _where, _value in {"omniglot 20w1s": 96.7, "omniglot 20w5s": 98.0,
                       "miniimagenet 5w1s": 48.0, "miniimagenet 5w5s": 62.2}.items():
    _dataset, _setting = _where.split()
    PAPER[("A-nil", f"{_dataset} anil conv {_setting} nil-head", "accuracy")] = _value

# Reptile review: Omniglot 5-way 1-shot with the Adam inner loop (97.7 %) or SGD (97.4 %); MiniImageNet
# 5-way 1/5-shot, transductive (Table 4).
PAPER[("R-omni", "omniglot reptile conv 5w1s", "accuracy")] = 97.7
PAPER[("R-omni", "omniglot reptilesgd conv 5w1s", "accuracy")] = 97.4  # Table 3: the inner loop with SGD
for _setting, _value in {"5w1s": 51.6, "5w5s": 67.4}.items():
    PAPER[("R-mini", f"miniimagenet reptile conv {_setting}", "accuracy")] = _value


# Reptile review, Table 5: Reptile from scratch and from a multiclass-pretrained classifier,
# 5-way 1-shot.
for _dataset, (_scratch, _pretrained) in {"omniglot": (97.7, 97.7), "miniimagenet": (51.6, 49.4)}.items():
    PAPER[("R-pretrain", f"{_dataset} reptile conv 5w1s", "accuracy")] = _scratch
    PAPER[("R-pretrain", f"{_dataset} reptile conv 5w1s from multiclass", "accuracy")] = _pretrained

# ANIL paper, Table 1: MiniImageNet MAML models tested with layers frozen during adaptation.
for _setting, _values in {"5w1s": (44.5, 44.8, 44.8, 44.7, 44.7), "5w5s": (61.7, 61.7, 61.4, 60.2, 60.2)}.items():
    for _frozen, _value in zip(("none", "1", "1-2", "1-3", "1-4"), _values):
        PAPER[("A-freeze", f"miniimagenet maml conv {_setting} freeze {_frozen}", "accuracy")] = _value

# ANIL paper, Tables 5 and 7: MiniImageNet bodies of each training regime, tested with a NIL
# head and with a MAML head (for MAML/ANIL their own adapted head; for the others a new head
# meta-trained with MAML on the frozen body). NIL-training has no MAML-head entry.
for _regime, _values in {
    "maml": (46.9, 63.1, 48.4, 61.5), "anil": (46.7, 61.5, 48.0, 62.2),
    "multiclass": (38.4, 54.6, 39.7, 54.4), "multitask": (26.5, 32.8, 26.5, 34.2),
    "random": (32.1, 43.1, 32.9, 43.2), "niltrain": (None, None, 38.3, 43.0),
}.items():
    for _head, _pair in (("maml", _values[:2]), ("nil", _values[2:])):
        for _setting, _value in zip(("5w1s", "5w5s"), _pair):
            if _value is not None:
                PAPER[("A-regimes", f"miniimagenet {_regime} conv {_setting} {_head}-head", "accuracy")] = _value

# ANIL paper, Table 3 (MAML vs ANIL, mean over the body, across seeds) and Table 8 (each
# regime's body against MAML's, mean over the first three conv layers). The paper names
# neither the dataset nor the setting; its analyses are on MiniImageNet, and we key them
# to our MiniImageNet 5-way 1-shot comparisons.
for _pair, (_cca, _cka) in {"maml vs maml": (0.51, 0.83), "anil vs anil": (0.51, 0.86),
                             "anil vs maml": (0.50, 0.83)}.items():
    PAPER[("A-repr", f"miniimagenet {_pair} conv 5w1s", "cca")] = _cca
    PAPER[("A-repr", f"miniimagenet {_pair} conv 5w1s", "cka")] = _cka
for _regime, (_cca, _cka) in {"maml": (0.51, 0.83), "multiclass": (0.48, 0.79), "random": (0.40, 0.72),
                              "multitask": (0.28, 0.65)}.items():
    PAPER[("A-regime-sim", f"miniimagenet {_regime} vs maml conv 5w1s", "cca")] = _cca
    PAPER[("A-regime-sim", f"miniimagenet {_regime} vs maml conv 5w1s", "cka")] = _cka


# Reinforcement learning. Settings name the environment, the algorithm and, for curves, the
# number of policy-gradient steps at test time: "nav maml steps=1"; returns are average
# returns per episode. MAML paper, Appendix C.2, Tables 4 and 5 (MAML row): 2D point
# navigation and HalfCheetah forward/backward after 0..3 steps.
for _env, _values in {"nav": (-40.41, -11.68, -3.33, -3.23),
                      "cheetah-direction": (-50.69, 293.19, 313.48, 315.65)}.items():
    for _steps, _value in enumerate(_values):
        PAPER[("M-nav" if _env == "nav" else "M-cheetah", f"{_env} maml steps={_steps}", "return")] = _value
# ANIL paper, Table 2 (mean over three seeds, after one step): MAML vs ANIL.
for _algorithm, _values in {"maml": (170.4, -139.0, -20.3), "anil": (363.2, -120.9, -20.1)}.items():
    for _env, _value in zip(("cheetah-direction", "cheetah-velocity", "nav"), _values):
        PAPER[("A-anil-rl", f"{_env} {_algorithm} steps=1", "return")] = _value

# ANIL paper, Appendix C.5, Table 6: seconds per iteration on MiniImageNet (TensorFlow, their GPU),
# training (meta-iteration) and inference (adapting to a task), and the speed-up over MAML.
for _phase, _table in {
    "training": {"maml": ((0.15, 0.13, 1.0), (0.68, 0.67, 1.0)), "fomaml": ((0.089, 0.083, 1.69), (0.40, 0.39, 1.7)),
                 "anil": ((0.084, 0.072, 1.79), (0.37, 0.36, 1.84))},
    "inference": {"maml": ((0.083, 0.078, 1.0), (0.37, 0.36, 1.0)), "anil": ((0.020, 0.017, 4.15), (0.076, 0.071, 4.87))},
}.items():
    for _algorithm, _settings in _table.items():
        for _setting, (_mean, _median, _speedup) in zip(("5w1s", "5w5s"), _settings):
            _key = f"miniimagenet {_algorithm} conv {_setting} {_phase}"
            PAPER[("A-time", _key, "mean seconds")] = _mean
            PAPER[("A-time", _key, "median seconds")] = _median
            PAPER[("A-time", _key, "speed-up over maml")] = _speedup
# MAML paper, Sec. 5.2: the first-order approximation gave "roughly 33% speed-up in network computation".
PAPER[("M-fo-speed", "miniimagenet fomaml conv training", "speed-up (%)")] = 33.0

def paper_value(experiment: str, setting: str, metric: str) -> float | None:
    """The paper's number for this cell of the results table, or None where it gives none."""
    return PAPER.get((experiment, setting, metric))


def final_accuracies(setting: str) -> dict[str, float]:
    """Every paper's final test accuracy (%) for ``setting`` (e.g. ``"omniglot maml conv 20w1s"``),
    by experiment id: ``{"M-omni": 95.8, "A-anil": 93.7}``."""
    return {experiment: value for (experiment, where, metric), value in PAPER.items()
            if where == setting and metric == "accuracy"}
