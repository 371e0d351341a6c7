"""Representational similarity of two layers: CCA, SVCCA, PWCCA and CKA.

In the style of google/svcca's cca_core.py, in float64 PyTorch (CPU or CUDA; inputs are
converted on their own device) with data points in rows. Every function takes activations

    X: (n, p1)  n data points x p1 units;   Y: (n, p2)  the same n data points x p2 units.

Conv activations (N, C, H, W) are folded by conv_to_points into (N*H*W, C): each spatial
position is a data point, each channel a unit, as in Raghu et al. 2019, App. B.2. Scores
are in [0, 1], 1 meaning identical up to the measure's invariances. Entry point: compare;
its chance level (the same score with the pairing of data points broken): chance.

Tolerances (module constants, each overridable by keyword):
    EPSILON = 1e-10   CCA drops singular directions of the centred data whose variance is
                      <= EPSILON * the largest variance; what is left is "kept". (Dead
                      units, counted separately, are columns that are exactly constant.)
    KEEP = 0.99       SVCCA keeps the fewest top singular directions explaining >= KEEP of
                      the variance.
    SIGMA_FRAC = 0.8  RBF CKA bandwidth: sigma = SIGMA_FRAC * median pairwise distance
                      (SIGMA_RULES: "pairs", the median distance over pairs i < j; or
                      "kornblith", the square root of the median squared distance over all
                      n^2 entries, diagonal included, as the original CKA code).

The CCA family refuses (ValueError) when a side keeps >= n - 1 directions: centred data live
in n - 1 dimensions, which such a side fills, so every canonical correlation is trivially 1.
Fewer but still many directions bias CCA upwards too: when kx + ky > n - 1, at least
kx + ky - (n - 1) canonical correlations are 1 whatever the data, and compare warns
(ForcedCorrelationWarning). Aim for n >= 10x the units.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

EPSILON = 1e-10
KEEP = 0.99
SIGMA_FRAC = 0.8
SIGMA_RULES = ("pairs", "kornblith")
#: mean CCA, mean squared CCA (R^2_CCA), SVCCA, PWCCA, linear / RBF / debiased linear CKA
METHODS = ("cca", "cca_r2", "svcca", "pwcca", "cka", "cka_rbf", "cka_debiased")


class ForcedCorrelationWarning(UserWarning):
    """The kept directions of X and Y add up to more than n - 1: some correlations are 1 by
    construction."""


@dataclass(frozen=True)
class Similarity:
    """What :func:`compare` returns: the score and what it was computed from."""

    method: str
    value: float
    n: int  # data points (rows, after folding)
    units_x: int  # columns of X
    units_y: int
    dead_x: int  # columns of X constant over all n data points
    dead_y: int
    kept_x: int  # directions of X the score used (see compare)
    kept_y: int


# ----------------------------------------------------------------------------- inputs
def conv_to_points(acts: Tensor) -> Tensor:
    """(N, C, H, W) -> (N*H*W, C), row b*H*W + h*W + w = acts[b, :, h, w]; (n, p) as is."""
    if acts.dim() == 4:
        N, C, H, W = acts.shape
        return acts.permute(0, 2, 3, 1).reshape(N * H * W, C)
    if acts.dim() == 2:
        return acts
    raise ValueError(
        f"activations must be (n, units) or (N, C, H, W), got shape {tuple(acts.shape)}")


def _matrix(A, name: str) -> Tensor:
    """Array-like (n, p) or (N, C, H, W) -> checked (n, p) float64 tensor, same device."""
    A = torch.as_tensor(A).detach()
    try:
        A = conv_to_points(A)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
    if A.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(A.shape)} after folding")
    A = A.to(torch.float64)
    if not torch.isfinite(A).all():
        raise ValueError(f"{name} contains NaN or inf")
    return A


def center(X: Tensor) -> Tensor:
    """(n, p) -> (n, p) with every column's mean subtracted."""
    return X - X.mean(dim=0, keepdim=True)


def dead_units(X: Tensor) -> int:
    """(n, p) -> number of units (columns) that are exactly constant over the n points."""
    return int((X == X[:1]).all(dim=0).sum())


def prepare(X, Y, min_n: int = 2, centre: bool = True) -> tuple[Tensor, Tensor]:
    """Check, fold, convert and centre a pair -> Xc (n, p1), Yc (n, p2), float64 (``centre``
    False: not centred). ValueError if: not 2-D after folding, empty, NaN/inf, n differs,
    devices differ, n < min_n, or a side has every unit dead."""
    X, Y = _matrix(X, "X"), _matrix(Y, "Y")
    n = X.shape[0]
    if Y.shape[0] != n:
        raise ValueError(f"X and Y must share data points: X has n={n}, Y has n={Y.shape[0]}")
    if X.device != Y.device:
        raise ValueError(f"X is on {X.device} but Y is on {Y.device}")
    if n < min_n:
        raise ValueError(f"need at least {min_n} data points, got n={n}")
    for name, A in (("X", X), ("Y", Y)):
        if dead_units(A) == A.shape[1]:
            raise ValueError(f"{name} has no variance: all {A.shape[1]} units are constant "
                             f"over the n={n} data points")
    return (center(X), center(Y)) if centre else (X, Y)


# -------------------------------------------------------------------------------- CCA
def basis(Xc: Tensor, epsilon: float = EPSILON) -> Tensor:
    """Centred (n, p) -> Q (n, k), orthonormal (whitened) basis of the column space,
    without singular directions of variance <= epsilon * the largest variance."""
    U, S, _ = torch.linalg.svd(Xc, full_matrices=False)
    return U[:, S**2 > epsilon * S[0] ** 2]


def svd_reduce(Xc: Tensor, keep: float = KEEP) -> Tensor:
    """Centred (n, p) -> (n, k) coordinates on the fewest top singular directions that
    explain at least a fraction `keep` (0 < keep <= 1) of the variance (SVCCA step 1)."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    U, S, _ = torch.linalg.svd(Xc, full_matrices=False)
    explained = torch.cumsum(S**2, 0) / (S**2).sum()
    k = min(int((explained < keep).sum()) + 1, S.numel())
    return U[:, :k] * S[:k]


def _cca(Xc: Tensor, Yc: Tensor, epsilon: float) -> tuple[Tensor, Tensor, int, int]:
    """Centred X (n, p1), Y (n, p2) -> (rho (m,), H (n, m), kx, ky), m = min(kx, ky):
    rho the canonical correlations (singular values of Qx^T Qy, descending), H the
    matching canonical variates of X (unit-norm columns)."""
    n = Xc.shape[0]
    Qx, Qy = basis(Xc, epsilon), basis(Yc, epsilon)
    kx, ky = Qx.shape[1], Qy.shape[1]
    if max(kx, ky) >= n - 1:
        raise ValueError(
            f"CCA refused: n={n} data points, but X keeps {kx} directions of {Xc.shape[1]} "
            f"units and Y keeps {ky} of {Yc.shape[1]} units; a side keeping >= n-1={n - 1} "
            "fills the centred data space, so every canonical correlation is trivially 1. "
            "Use more data points or fewer units (e.g. svcca).")
    if kx + ky > n - 1:
        warnings.warn(f"CCA: X keeps {kx} and Y {ky} directions of n={n} data points: at least {kx + ky - (n - 1)} "
                      "canonical correlations are 1 whatever the data; use more data points or fewer units",
                      ForcedCorrelationWarning, stacklevel=3)
    U, rho, _ = torch.linalg.svd(Qx.T @ Qy, full_matrices=False)
    return rho.clamp(0.0, 1.0), Qx @ U, kx, ky


def cca(X, Y, epsilon: float = EPSILON) -> Tensor:
    """X (n, p1), Y (n, p2) -> canonical correlations (min(kx, ky),), descending, in [0, 1]."""
    return _cca(*prepare(X, Y), epsilon)[0]


def _pwcca(rho: Tensor, H: Tensor, Xc: Tensor) -> Tensor:
    """rho (m,), H (n, m), centred X (n, p) -> sum_i alpha_i rho_i (Morcos et al. 2018),
    alpha_i proportional to sum_j |<h_i, x_j>| over X's centred units x_j (n,)."""
    alpha = (H.T @ Xc).abs().sum(dim=1)
    return alpha / alpha.sum() @ rho


def mean_cca(X, Y, epsilon: float = EPSILON) -> float:
    """X (n, p1), Y (n, p2) -> mean canonical correlation."""
    return compare(X, Y, "cca", epsilon=epsilon).value


def svcca(X, Y, keep: float = KEEP, epsilon: float = EPSILON) -> float:
    """X (n, p1), Y (n, p2) -> mean CCA of the top singular directions explaining `keep`."""
    return compare(X, Y, "svcca", keep=keep, epsilon=epsilon).value


def pwcca(X, Y, epsilon: float = EPSILON) -> float:
    """X (n, p1), Y (n, p2) -> projection-weighted CCA. Not symmetric: the weights come
    from X's units (google/svcca's pwcca.py weights by the side with fewer units)."""
    return compare(X, Y, "pwcca", epsilon=epsilon).value


# -------------------------------------------------------------------------------- CKA
def _linear_cka(Xc: Tensor, Yc: Tensor) -> Tensor:
    """Centred (n, p1), (n, p2) -> ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), in p x p."""
    norm = torch.linalg.matrix_norm
    return norm(Yc.T @ Xc) ** 2 / (norm(Xc.T @ Xc) * norm(Yc.T @ Yc))


def rbf_gram(Xc: Tensor, sigma_frac: float = SIGMA_FRAC, sigma_rule: str = "pairs") -> Tensor:
    """(n, p) -> (n, n) K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2)), with sigma = sigma_frac * a
    median distance: ``sigma_rule="pairs"``, the (lower) median of ||x_i - x_j|| over pairs
    i < j; ``"kornblith"``, the square root of the median of ||x_i - x_j||^2 over all n^2
    entries, diagonal included (the original CKA code, Kornblith et al. 2019)."""
    if sigma_rule not in SIGMA_RULES:
        raise ValueError(f"unknown sigma_rule {sigma_rule!r}; choose from {SIGMA_RULES}")
    D2 = torch.cdist(Xc, Xc, compute_mode="donot_use_mm_for_euclid_dist") ** 2  # exact zeros
    if sigma_rule == "kornblith":
        median = D2.flatten().quantile(0.5).sqrt()  # numpy's median: the mean of the middle two
    else:
        pairs = torch.ones_like(D2, dtype=torch.bool).triu(diagonal=1)
        median = D2[pairs].sqrt().median()
    if median == 0:
        raise ValueError("RBF CKA: the median pairwise distance is 0 (most data points "
                         "coincide), so the bandwidth is undefined")
    return torch.exp(-D2 / (2 * (sigma_frac * median) ** 2))


def _centre_gram(K: Tensor) -> Tensor:
    """(n, n) -> H K H, with H = I - 11^T / n."""
    return K - K.mean(0, keepdim=True) - K.mean(1, keepdim=True) + K.mean()


def _rbf_cka(Xc: Tensor, Yc: Tensor, sigma_frac: float, sigma_rule: str = "pairs") -> Tensor:
    """Centred (n, p1), (n, p2) -> <HKH, HLH>_F / (||HKH||_F ||HLH||_F); O(n^2) memory."""
    K, L = (_centre_gram(rbf_gram(A, sigma_frac, sigma_rule)) for A in (Xc, Yc))
    return (K * L).sum() / torch.sqrt((K * K).sum() * (L * L).sum())


def hsic_unbiased_linear(X: Tensor, Y: Tensor) -> Tensor:
    """(n, p1), (n, p2) -> unbiased HSIC (Song et al. 2012) of K = X X^T, L = Y Y^T.

    With K~, L~ the grams with zeroed diagonals d_K, d_L (n x n never formed):
        tr(K~ L~) = ||Y^T X||_F^2 - d_K . d_L,    K~ 1 = X (X^T 1) - d_K
        HSIC = [tr(K~ L~) + (1'K~1)(1'L~1) / ((n-1)(n-2)) - 2 (K~1).(L~1) / (n-2)] / (n(n-3))
    """
    n = X.shape[0]
    dK, dL = (X * X).sum(dim=1), (Y * Y).sum(dim=1)
    K1, L1 = X @ X.sum(dim=0) - dK, Y @ Y.sum(dim=0) - dL
    trace = torch.linalg.matrix_norm(Y.T @ X) ** 2 - dK @ dL
    return (trace + K1.sum() * L1.sum() / ((n - 1) * (n - 2)) - 2 * (K1 @ L1) / (n - 2)) / (
        n * (n - 3))


def _debiased_cka(Xc: Tensor, Yc: Tensor) -> Tensor:
    """Centred (n, p1), (n, p2), n >= 4 -> HSIC_1(K, L) / sqrt(HSIC_1(K, K) HSIC_1(L, L))."""
    xx, yy = hsic_unbiased_linear(Xc, Xc), hsic_unbiased_linear(Yc, Yc)
    if xx <= 0 or yy <= 0:
        raise ValueError(f"debiased CKA undefined: self-HSIC estimates {xx.item():.3g}, "
                         f"{yy.item():.3g} are not positive (too few data points, n={Xc.shape[0]})")
    return hsic_unbiased_linear(Xc, Yc) / torch.sqrt(xx * yy)


def linear_cka(X, Y) -> float:
    """X (n, p1), Y (n, p2) -> linear CKA (Kornblith et al. 2019)."""
    return compare(X, Y, "cka").value


def rbf_cka(X, Y, sigma_frac: float = SIGMA_FRAC) -> float:
    """X (n, p1), Y (n, p2) -> RBF CKA; builds n x n grams, so subsample large n."""
    return compare(X, Y, "cka_rbf", sigma_frac=sigma_frac).value


def debiased_linear_cka(X, Y) -> float:
    """X (n, p1), Y (n, p2), n >= 4 -> linear CKA with the unbiased HSIC estimator."""
    return compare(X, Y, "cka_debiased").value


# ---------------------------------------------------------------------------- compare
def compare(X, Y, method: str = "cca", *, epsilon: float = EPSILON, keep: float = KEEP,
            sigma_frac: float = SIGMA_FRAC, sigma_rule: str = "pairs", centre: bool = True) -> Similarity:
    """X (n, p1) or (N, C, H, W), Y likewise -> Similarity for one of METHODS.

    kept_x / kept_y: for "svcca" the top singular directions kept; for "cca" / "cca_r2" /
    "pwcca" the directions above epsilon; for the CKAs, which drop nothing, the numerical rank
    (above epsilon), for information. ``centre`` False: the units are not centred first
    (uncentred CCA / CKA: a constant offset then counts as a shared direction).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    Xc, Yc = prepare(X, Y, min_n=4 if method == "cka_debiased" else 2, centre=centre)
    if method == "svcca":
        rho, _, kx, ky = _cca(svd_reduce(Xc, keep), svd_reduce(Yc, keep), epsilon)
        value = rho.mean()
    elif method in ("cca", "cca_r2", "pwcca"):
        rho, H, kx, ky = _cca(Xc, Yc, epsilon)
        value = {"cca": rho.mean, "cca_r2": lambda: (rho ** 2).mean(), "pwcca": lambda: _pwcca(rho, H, Xc)}[method]()
    else:
        kx, ky = basis(Xc, epsilon).shape[1], basis(Yc, epsilon).shape[1]
        if method == "cka":
            value = _linear_cka(Xc, Yc)
        elif method == "cka_rbf":
            value = _rbf_cka(Xc, Yc, sigma_frac, sigma_rule)
        else:
            value = _debiased_cka(Xc, Yc)
    return Similarity(method, float(value), Xc.shape[0], Xc.shape[1], Yc.shape[1],
                      dead_units(Xc), dead_units(Yc), kx, ky)


# ----------------------------------------------------------------------------- chance
@dataclass(frozen=True)
class Chance:
    """The chance level of a score: its mean and standard deviation over ``permutations``
    random re-pairings of the data points (:func:`chance`), and every value."""

    mean: float
    std: float
    values: tuple[float, ...]


def chance(X, Y, method: str = "cca", permutations: int = 20, seed: int = 0, **options) -> Chance:
    """The score of :func:`compare` (``method`` and its ``options``) when X's data points are
    paired with Y's at random: X (n, p1) against Y's rows permuted, ``permutations`` times
    (seeded). Same shapes, same marginal statistics of each side, no correspondence: what the
    score is worth by chance (for conv activations the folded points are permuted). A score
    means something only as far as it stands above this."""
    if permutations < 2:
        raise ValueError(f"need at least 2 permutations for a mean and a spread, got {permutations}")
    Yp = _matrix(Y, "Y")
    gen = torch.Generator().manual_seed(seed)
    values = tuple(compare(X, Yp[torch.randperm(len(Yp), generator=gen).to(Yp.device)], method, **options).value
                   for _ in range(permutations))
    scores = torch.tensor(values, dtype=torch.float64)
    return Chance(float(scores.mean()), float(scores.std()), values)
