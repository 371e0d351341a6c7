"""Closed forms and expansions that the core's gradients are checked against.

* A-grad (ANIL paper, Appendix C.1): for the two-layer linear network
  ``y_hat = theta2 * theta1 * x`` with squared error and one inner step of size
  ``alpha``, the outer gradients of MAML, ANIL and first-order MAML written out by hand.
* R-theory (Reptile review, Appendix A.2, eq. 17): for k = 2 inner steps of size
  ``beta`` on minibatches 1 and 2 of one task, the gradients of FOMAML, MAML and
  Reptile to first order in ``beta``, from gradients and Hessian-vector products at
  the initial parameters.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import grad, jvp

from .core import InnerLoop, InnerOptimizer, adapt, mse, optimize
from .models import Params, forward


def two_layer_meta_gradient(theta1: Tensor, theta2: Tensor, x1: Tensor, y1: Tensor, x2: Tensor, y2: Tensor,
                            alpha: float, algorithm: str) -> tuple[Tensor, Tensor]:
    """Outer gradient (d/dtheta1, d/dtheta2) summed over tasks, by hand (ANIL paper C.1).

    theta1, theta2: scalars; x1, y1 (support) and x2, y2 (target): [T], one pair per task.
    Loss ``(theta2 theta1 x - y)^2``; ``algorithm`` in maml, anil, fomaml.
    """
    one, zero = torch.ones_like(x1), torch.zeros_like(x1)
    r1 = theta2 * theta1 * x1 - y1
    cross = -2 * alpha * x1 * (r1 + theta1 * theta2 * x1)   # d a1/d theta2 = d a2/d theta1 (MAML)
    a1 = theta1 - 2 * alpha * r1 * theta2 * x1                # adapted body (MAML, FOMAML)
    a2 = theta2 - 2 * alpha * r1 * theta1 * x1                # adapted head (all three)
    # Jacobians (d a/d theta1, d a/d theta2) of the adapted body a1 and head a2
    if algorithm == "maml":
        da1, da2 = (1 - 2 * alpha * theta2 ** 2 * x1 ** 2, cross), (cross, 1 - 2 * alpha * theta1 ** 2 * x1 ** 2)
    elif algorithm == "anil":
        a1 = theta1 * one
        da1, da2 = (one, zero), (cross, 1 - 2 * alpha * theta1 ** 2 * x1 ** 2)
    elif algorithm == "fomaml":
        da1, da2 = (one, zero), (zero, one)
    else:
        raise ValueError(f"unknown algorithm {algorithm!r}")
    r2 = a2 * a1 * x2 - y2
    dl_da1, dl_da2 = 2 * r2 * a2 * x2, 2 * r2 * a1 * x2
    return ((dl_da1 * da1[0] + dl_da2 * da2[0]).sum(), (dl_da1 * da1[1] + dl_da2 * da2[1]).sum())


def flat(params: Params) -> Tensor:
    """All parameters as one vector [P] (in the dictionary's order)."""
    return torch.cat([v.reshape(-1) for v in params.values()])


def _loss_on(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[Params], Tensor]:
    return lambda p: mse(forward(model, p, x), y)


def hvp(model: nn.Module, params: Params, x: Tensor, y: Tensor, v: Params) -> Params:
    """Hessian of the loss on (x, y) at ``params`` times ``v`` (forward-over-reverse)."""
    with warnings.catch_warnings():  # torch's forward AD scripts a helper on first use and warns about its
        # own deprecated torch.jit.script, naming the install's absolute path in every executed notebook
        warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)
        return jvp(grad(_loss_on(model, x, y)), (params,), (v,))[1]


def reptile_k2_terms(model: nn.Module, params: Params, batch1: tuple[Tensor, Tensor],
                     batch2: tuple[Tensor, Tensor], beta: float) -> dict[str, Tensor]:
    """Exact gradients and their eq.-17 expansions for one task, as vectors [P].

    Exact, with phi_2 = theta - beta g1(theta):
      fomaml  = L2'(phi_2);  maml = d/dtheta L2(phi_2);  reptile = (theta - phi_3) / beta
    Expansions (first order in beta; bars are at theta):
      fomaml ~ g2 - beta H2 g1;  maml ~ g2 - beta H1 g2 - beta H2 g1;  reptile ~ g1 + g2 - beta H2 g1
    Also returns g1, g2, H2g1, H1g2 themselves.
    """
    theta = {k: v.detach() for k, v in params.items()}
    (x1, y1), (x2, y2) = batch1, batch2
    g1 = grad(_loss_on(model, x1, y1))(theta)
    g2 = grad(_loss_on(model, x2, y2))(theta)
    h2g1, h1g2 = hvp(model, theta, x2, y2, g1), hvp(model, theta, x1, y1, g2)

    def query_loss(first_order: bool) -> Callable[[Params], Tensor]:
        inner = InnerLoop(steps=1, lr=beta, first_order=first_order)
        return lambda p: mse(forward(model, adapt(model, p, x1, y1, inner), x2), y2)

    x = torch.cat([x1, x2])
    y = torch.cat([y1, y2])
    batches = torch.arange(len(x)).reshape(2, -1)
    if len(x1) != len(x2):
        raise ValueError("minibatches 1 and 2 must have the same size")
    phi3, _ = optimize(model, theta, x, y, batches, InnerOptimizer("sgd", lr=beta))
    out = {
        "g1": flat(g1), "g2": flat(g2), "H2g1": flat(h2g1), "H1g2": flat(h1g2),
        "fomaml": flat(grad(query_loss(True))(theta)),
        "maml": flat(grad(query_loss(False))(theta)),
        "reptile": (flat(theta) - flat(phi3)) / beta,
    }
    out["fomaml_expansion"] = out["g2"] - beta * out["H2g1"]
    out["maml_expansion"] = out["g2"] - beta * out["H1g2"] - beta * out["H2g1"]
    out["reptile_expansion"] = out["g1"] + out["g2"] - beta * out["H2g1"]
    return out
