# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A-grad and R-theory: the core's gradients against closed forms and expansions
#
# * **A-grad** (ANIL paper, Appendix C.1): for `y_hat = theta2 * theta1 * x` with squared
#   error and one inner step, the MAML, ANIL and first-order MAML outer gradients written
#   out by hand (`metalearn.theory.two_layer_meta_gradient`) against the core's autograd
#   meta-gradients, over many random draws of parameters and tasks.
# * **R-theory** (Reptile review, Appendix A.2, eq. 17 and 20): with k = 2 inner steps of
#   size beta, the exact FOMAML, MAML and Reptile gradients against their first-order
#   expansions in beta. The expansion error must shrink as beta^2 (slope 2 on a log-log
#   plot), and over tasks and minibatches E[H2 g1] = E[H1 g2] (AvgGradInner), so that
#   E[g_MAML] ~ AvgGrad - 2 beta AvgGradInner, E[g_FOMAML] ~ AvgGrad - beta AvgGradInner,
#   E[g_Reptile] ~ 2 AvgGrad - beta AvgGradInner.

# %% tags=["parameters"]
seed = 0                  # seed of every random draw
grad_draws = 200          # A-grad: random (theta, tasks) draws
grad_tasks = 5            # A-grad: tasks per draw
grad_alpha = 0.05         # A-grad: inner step size
hidden = [16, 16]         # R-theory: MLP hidden sizes (sinusoid regression, float64)
batch_size = 10           # R-theory: points per minibatch
betas = [0.1, 0.03, 0.01, 0.003, 0.001]  # R-theory: inner step sizes for the convergence check
theory_tasks = 20         # R-theory: tasks for the per-task expansion check
expectation_tasks = 200   # R-theory: tasks x minibatch draws for the expectation identity
expectation_beta = 0.01   # R-theory: beta of the expectation check

# %%
from metalearn.params import check, Int, Float, List, require

P = check(globals(), seed=Int(min=0), grad_draws=Int(min=1), grad_tasks=Int(min=1),
          grad_alpha=Float(min=0, strict=True), hidden=List(Int(min=1)), batch_size=Int(min=1),
          betas=List(Float(min=0, strict=True), min_len=2, unique=True), theory_tasks=Int(min=1),
          expectation_tasks=Int(min=2), expectation_beta=Float(min=0, strict=True))

# %%
import math
from collections import OrderedDict

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import nn

from metalearn import core, hardware, models, report, results, tasks, theory

torch.set_default_dtype(torch.float64)
STAGE = "theory"
gen = torch.Generator().manual_seed(P.seed)
HW = hardware.describe()

# %% [markdown]
# ## A-grad: two-layer linear network, closed form vs autograd through the core

# %%
linear = models.Net(nn.Sequential(OrderedDict(layer1=nn.Linear(1, 1, bias=False))), nn.Linear(1, 1, bias=False))
errors = {alg: [] for alg in core.ALGORITHMS}
anil_vs_maml = []
for _ in range(P.grad_draws):
    t1, t2 = torch.randn(2, generator=gen)
    x1, y1, x2, y2 = torch.randn(4, P.grad_tasks, generator=gen)
    params = {"body.layer1.weight": t1.reshape(1, 1).requires_grad_(), "head.weight": t2.reshape(1, 1).requires_grad_()}
    grads = {}
    for alg in core.ALGORITHMS:
        inner = core.inner_loop(alg, params, steps=1, lr=P.grad_alpha)
        loss, _ = core.meta_loss(linear, params, x1[:, None, None], y1[:, None, None], x2[:, None, None],
                                 y2[:, None, None], inner)
        auto = torch.autograd.grad(loss * P.grad_tasks, list(params.values()))  # the closed form sums over tasks
        closed = theory.two_layer_meta_gradient(t1, t2, x1, y1, x2, y2, P.grad_alpha, alg)
        auto, closed = torch.stack([a.reshape(()) for a in auto]), torch.stack(closed)
        errors[alg].append(((auto - closed).abs().max() / closed.abs().max().clamp_min(1e-12)).item())
        grads[alg] = closed
    anil_vs_maml.append((grads["maml"][0].item(), grads["anil"][0].item()))

agrad = pd.DataFrame({alg: [max(e), float(np.median(e))] for alg, e in errors.items()},
                     index=["max relative error", "median relative error"]).T
agrad

# %%
a = np.array(anil_vs_maml)
fig, ax = plt.subplots(figsize=(4, 4))
ax.scatter(a[:, 0], a[:, 1], s=6)
lim = np.abs(a).max()
ax.plot([-lim, lim], [-lim, lim], "k:", lw=0.8)
ax.set(xlabel="MAML d/dtheta1", ylabel="ANIL d/dtheta1", title=f"A-grad: body gradient, alpha={P.grad_alpha}")
report.save_figure(fig, f"reports/{STAGE}/agrad_anil_vs_maml.png")

# %% [markdown]
# ## R-theory: exact gradients vs eq. 17 expansions, per task, as beta shrinks

# %%
family = tasks.SineFamily()
net = models.init_model(lambda: models.mlp([1, *P.hidden, 1]), P.seed).double()
theta = models.params_of(net, requires_grad=False)


def task_batches(n):
    b = family.batch(n, P.batch_size, P.batch_size, gen)
    return [((b.xs[i], b.ys[i]), (b.xq[i], b.yq[i])) for i in range(n)]


per_task = task_batches(P.theory_tasks)
rows = []
for beta in P.betas:
    for i, (b1, b2) in enumerate(per_task):
        terms = theory.reptile_k2_terms(net, theta, b1, b2, beta)
        for alg in ["fomaml", "maml", "reptile"]:
            exact, expansion = terms[alg], terms[f"{alg}_expansion"]
            zeroth = terms["g2"] if alg != "reptile" else terms["g1"] + terms["g2"]
            rows.append(dict(algorithm=alg, beta=beta, task=i,
                             error=((exact - expansion).norm() / exact.norm()).item(),
                             zeroth_order_error=((exact - zeroth).norm() / exact.norm()).item()))
conv = pd.DataFrame(rows)
summary = conv.groupby(["algorithm", "beta"])[["error", "zeroth_order_error"]].median().reset_index()
slopes = {}
for alg, t in summary.groupby("algorithm"):
    slopes[alg] = (np.polyfit(np.log(t.beta), np.log(t.error), 1)[0],
                   np.polyfit(np.log(t.beta), np.log(t.zeroth_order_error), 1)[0])
pd.DataFrame(slopes, index=["slope of eq. 17 error (expect 2)", "slope without the beta term (expect 1)"]).T

# %%
fig, ax = plt.subplots(figsize=(5, 3.8))
for alg, t in summary.groupby("algorithm"):
    ax.loglog(t.beta, t.error, "o-", label=f"{alg}: eq. 17 (slope {slopes[alg][0]:.2f})")
    ax.loglog(t.beta, t.zeroth_order_error, "x:", label=f"{alg}: without beta term")
ax.set(xlabel="inner step beta", ylabel="median relative error", title="R-theory: expansions to first order in beta")
ax.legend(fontsize=7)
report.save_figure(fig, f"reports/{STAGE}/rtheory_convergence.png")

# %% [markdown]
# ## R-theory: expectations over tasks and minibatches (eq. 18-20)

# %%
sums = {}
for b1, b2 in task_batches(P.expectation_tasks):
    terms = theory.reptile_k2_terms(net, theta, b1, b2, P.expectation_beta)
    for key, value in terms.items():
        sums.setdefault(key, []).append(value)
E = {k: torch.stack(v) for k, v in sums.items()}
avg_grad = (E["g1"].mean(0) + E["g2"].mean(0)) / 2
avg_inner = (E["H2g1"].mean(0) + E["H1g2"].mean(0)) / 2
b = P.expectation_beta
predicted = {"fomaml": avg_grad - b * avg_inner, "maml": avg_grad - 2 * b * avg_inner,
             "reptile": 2 * avg_grad - b * avg_inner}


def rel(vectors, reference):
    """Per-draw relative deviations don't average; compare means, with a CI from the draws."""
    diff = vectors - reference
    return (diff.mean(0).norm() / reference.norm()).item()


expect = pd.DataFrame({
    "relative gap of E[exact] to eq. 20": {alg: rel(E[alg], predicted[alg]) for alg in predicted},
}).assign(**{"relative gap of E[H2 g1] to E[H1 g2]": (E["H2g1"].mean(0) - E["H1g2"].mean(0)).norm().item()
             / avg_inner.norm().item()})
# the Monte-Carlo noise floor: how far apart two halves of the draws are
half = P.expectation_tasks // 2
noise = ((E["maml"][:half].mean(0) - E["maml"][half:].mean(0)).norm() / E["maml"].mean(0).norm()).item()
print(f"Monte-Carlo noise floor (two halves of the MAML draws differ by): {noise:.3g}")
expect

# %%
scale_g = f"{P.grad_draws} draws x {P.grad_tasks} tasks; float64; {HW}"
scale_t = (f"{P.theory_tasks} tasks x {len(P.betas)} betas; MLP 1-{'-'.join(map(str, P.hidden))}-1; "
           f"sinusoids; float64; {HW}")
scale_e = f"{P.expectation_tasks} tasks x minibatch pairs; beta {b}; float64; {HW}"
out = [results.row("A-grad", f"{alg} closed form vs core", "max relative error", agrad.loc[alg].iloc[0], scale_g)
       for alg in core.ALGORITHMS]
out += [results.row("R-theory", f"{alg} eq. 17", "error slope in beta", slopes[alg][0], scale_t) for alg in slopes]
out += [results.row("R-theory", f"{alg} eq. 20", "relative gap", expect.iloc[i, 0], scale_e)
        for i, alg in enumerate(expect.index)]
out.append(results.row("R-theory", "E[H2 g1] vs E[H1 g2]", "relative gap", expect.iloc[0, 1], scale_e))
out.append(results.row("R-theory", "Monte-Carlo noise floor", "relative gap", noise, scale_e))
results.write(out, STAGE)
report.save_metrics({"agrad_max_rel_error": {k: float(agrad.loc[k].iloc[0]) for k in agrad.index},
                     "rtheory_slope": {k: float(v[0]) for k, v in slopes.items()}}, f"reports/metrics/{STAGE}.json")
pd.DataFrame(out)[["experiment", "setting", "metric", "value"]]
