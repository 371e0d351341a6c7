"""Maths checks for metalearn.similarity (CCA, SVCCA, PWCCA, linear/RBF/debiased CKA)."""
import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm
from scipy.spatial.distance import pdist, squareform

from metalearn import similarity as sim
from metalearn.similarity import compare

F64 = torch.float64
ALL = sim.METHODS
CKAS = ("cka", "cka_rbf", "cka_debiased")


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=gen(seed), dtype=F64)


def related_pair(n=200, p1=8, p2=6, seed=0):
    """X (n, p1) and a noisy nonlinear function of it, Y (n, p2)."""
    X = randn(n, p1, seed=seed)
    Y = torch.tanh(X @ randn(p1, p2, seed=seed + 1)) + 0.5 * randn(n, p2, seed=seed + 2)
    return X, Y


def whitened(n, k, seed=0):
    """(n, k) exactly orthonormal, exactly centred columns (whitened sample sources)."""
    A = randn(n, k, seed=seed)
    Q, _ = torch.linalg.qr(A - A.mean(0))
    return Q


def orthogonal(p, seed=0):
    Q, _ = torch.linalg.qr(randn(p, p, seed=seed))
    return Q


# ------------------------------------------------------------------ folding
def test_conv_to_points_shape_and_order():
    N, C, H, W = 2, 3, 4, 5
    acts = torch.arange(N * C * H * W, dtype=F64).reshape(N, C, H, W)
    pts = sim.conv_to_points(acts)
    assert pts.shape == (N * H * W, C)
    for b, c, h, w in [(0, 0, 0, 0), (1, 2, 3, 4), (0, 1, 2, 3), (1, 0, 3, 1)]:
        assert pts[b * H * W + h * W + w, c] == acts[b, c, h, w]


def test_conv_to_points_2d_unchanged_and_bad_rank():
    X = randn(7, 3)
    assert sim.conv_to_points(X) is X
    for shape in [(5,), (2, 3, 4), (1, 2, 3, 4, 5)]:
        with pytest.raises(ValueError, match="shape"):
            sim.conv_to_points(torch.zeros(shape))


def test_compare_folds_conv_activations():
    A = randn(10, 4, 3, 3, seed=1)
    B = torch.relu(A) + 0.1 * randn(10, 4, 3, 3, seed=2)
    for m in ALL:
        r4, r2 = compare(A, B, m), compare(sim.conv_to_points(A), sim.conv_to_points(B), m)
        assert r4.n == 90 and r4.units_x == 4 and r4.units_y == 4
        assert r4.value == pytest.approx(r2.value, abs=1e-12)


# ------------------------------------------------------ self-similarity, invariances
@pytest.mark.parametrize("method", ALL)
def test_self_similarity_is_one(method):
    X = randn(300, 9)
    X = torch.cat([X, X[:, :2] @ randn(2, 2, seed=3), torch.full((300, 1), 2.5)], 1)
    r = compare(X, X, method)  # rank-deficient, with a dead unit: still exactly 1
    assert abs(r.value - 1) < 1e-10
    assert r.dead_x == r.dead_y == 1
    if method != "svcca":
        assert r.kept_x == r.kept_y == 9


@pytest.mark.parametrize("method", ALL)
def test_translation_invariance(method):
    X, Y = related_pair(seed=4)
    moved = compare(X + 100 * randn(1, 8, seed=5), Y - 30 * randn(1, 6, seed=6), method)
    assert moved.value == pytest.approx(compare(X, Y, method).value, abs=1e-9)


def test_cca_invariant_to_invertible_linear_maps():
    X, Y = related_pair(seed=7)
    A, B = randn(8, 8, seed=8), randn(6, 6, seed=9)  # generic, hence invertible
    assert torch.linalg.cond(A) < 1e4 and torch.linalg.cond(B) < 1e4
    rho, rho_mapped = sim.cca(X, Y), sim.cca(X @ A, Y @ B)
    assert torch.allclose(rho, rho_mapped, atol=1e-9)
    assert sim.mean_cca(X @ A, Y @ B) == pytest.approx(sim.mean_cca(X, Y), abs=1e-9)
    # ... which CKA is not: a non-orthogonal map changes linear CKA
    D = torch.diag(torch.tensor([10.0, 1, 1, 1, 1, 1, 1, 0.1], dtype=F64))
    assert abs(sim.linear_cka(X @ D, Y) - sim.linear_cka(X, Y)) > 1e-2


@pytest.mark.parametrize("method", CKAS)
def test_cka_invariant_to_orthogonal_maps_and_isotropic_scaling(method):
    X, Y = related_pair(seed=10)
    base = compare(X, Y, method).value
    assert compare(X @ orthogonal(8, 11), Y @ orthogonal(6, 12), method).value == pytest.approx(base, abs=1e-10)
    assert compare(37.0 * X, 0.01 * Y, method).value == pytest.approx(base, abs=1e-10)


# ------------------------------------------------------------------ CCA known answers
def test_cca_exact_prescribed_correlations():
    n, rho = 200, torch.tensor([0.95, 0.7, 0.4, 0.1], dtype=F64)
    Q = whitened(n, 9, seed=13)
    z, e, extra = Q[:, :4], Q[:, 4:8], Q[:, 8:]
    X = torch.cat([z, extra], 1) @ randn(5, 5, seed=14)  # mixed, plus an unrelated source
    Y = (rho * z + torch.sqrt(1 - rho**2) * e) @ randn(4, 4, seed=15)
    assert torch.allclose(sim.cca(X, Y), rho, atol=1e-10)
    assert sim.mean_cca(X, Y) == pytest.approx(rho.mean().item(), abs=1e-10)


def test_cca_recovers_correlations_of_gaussian_sources():
    n, rho = 50_000, torch.tensor([0.9, 0.6, 0.3], dtype=F64)
    z, e, noise = randn(n, 3, seed=16), randn(n, 3, seed=17), randn(n, 2, seed=18)
    X = torch.cat([z, noise], 1) @ randn(5, 5, seed=19) + 3.0
    Y = (rho * z + torch.sqrt(1 - rho**2) * e) @ randn(3, 3, seed=20) - 1.0
    assert torch.allclose(sim.cca(X, Y), rho, atol=1e-2)


def test_cca_matches_classical_formula():
    X, Y = related_pair(n=300, seed=21)
    Xc, Yc = (X - X.mean(0)).numpy(), (Y - Y.mean(0)).numpy()
    Sxx, Syy, Sxy = Xc.T @ Xc, Yc.T @ Yc, Xc.T @ Yc
    M = np.linalg.inv(sqrtm(Sxx)) @ Sxy @ np.linalg.inv(sqrtm(Syy))
    expected = np.linalg.svd(M.real, compute_uv=False)
    assert np.allclose(sim.cca(X, Y).numpy(), expected, atol=1e-8)


def test_svcca_drops_low_variance_directions():
    r1, r2 = 0.9, 0.5
    Q = whitened(300, 6, seed=22)
    z1, z2, e1, e2, w, v = Q.T
    X = torch.stack([10 * z1, 10 * z2, 0.01 * w], 1)
    Y = torch.stack([10 * (r1 * z1 + math.sqrt(1 - r1**2) * e1),
                     10 * (r2 * z2 + math.sqrt(1 - r2**2) * e2), 0.01 * (0.99 * w + math.sqrt(1 - 0.99**2) * v)], 1)
    r = compare(X, Y, "svcca")
    assert (r.kept_x, r.kept_y) == (2, 2)
    assert r.value == pytest.approx((r1 + r2) / 2, abs=1e-10)
    assert sim.mean_cca(X, Y) == pytest.approx((r1 + r2 + 0.99) / 3, abs=1e-10)  # CCA keeps all
    assert sim.svcca(X, Y, keep=1.0) == pytest.approx((r1 + r2 + 0.99) / 3, abs=1e-10)


def test_pwcca_weights_by_projection_on_x_units():
    r1, r2, a, b, c = 0.9, 0.3, 5.0, 1.0, 2.0
    Q = whitened(300, 6, seed=23)
    z1, z2, w, e1, e2, e3 = Q.T
    X = torch.stack([a * z1, b * z2, c * w], 1)  # canonical variates z1, z2, w; <h_i, x_j> = diag(a, b, c)
    Y = torch.stack([r1 * z1 + math.sqrt(1 - r1**2) * e1, r2 * z2 + math.sqrt(1 - r2**2) * e2, e3], 1)
    assert sim.pwcca(X, Y) == pytest.approx((a * r1 + b * r2) / (a + b + c), abs=1e-10)
    assert sim.mean_cca(X, Y) == pytest.approx((r1 + r2) / 3, abs=1e-10)


# ------------------------------------------------------------------ CKA against references
def test_linear_cka_matches_numpy():
    X, Y = related_pair(seed=24)
    Xc, Yc = (X - X.mean(0)).numpy(), (Y - Y.mean(0)).numpy()
    expected = np.linalg.norm(Yc.T @ Xc) ** 2 / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))
    assert sim.linear_cka(X, Y) == pytest.approx(expected, abs=1e-12)


def _centred_gram_cka(K, L):
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    Kc, Lc = H @ K @ H, H @ L @ H
    return np.trace(Kc @ Lc) / np.sqrt(np.trace(Kc @ Kc) * np.trace(Lc @ Lc))


def test_rbf_cka_matches_scipy_reference():
    X, Y = related_pair(n=150, seed=25)

    def gram(A, frac):
        d = pdist(A.numpy())
        sigma = frac * np.sort(d)[(d.size - 1) // 2]  # lower median of pairwise distances
        return np.exp(-squareform(d) ** 2 / (2 * sigma**2))

    for frac in (0.8, 0.3):
        expected = _centred_gram_cka(gram(X, frac), gram(Y, frac))
        assert sim.rbf_cka(X, Y, sigma_frac=frac) == pytest.approx(expected, abs=1e-9)
    assert sim.rbf_cka(X, Y, 0.3) != pytest.approx(sim.rbf_cka(X, Y, 0.8), abs=1e-3)


def test_rbf_cka_tends_to_linear_cka_for_wide_kernels():
    X, Y = related_pair(n=150, seed=26)
    assert sim.rbf_cka(X, Y, sigma_frac=1e3) == pytest.approx(sim.linear_cka(X, Y), abs=1e-5)


def test_debiased_cka_matches_gram_reference():
    X, Y = related_pair(n=60, seed=27)
    Xc, Yc = (X - X.mean(0)).numpy(), (Y - Y.mean(0)).numpy()

    def hsic1(K, L):  # Song et al. 2012, eq. 5, on n x n grams
        n = K.shape[0]
        K, L, one = K - np.diag(np.diag(K)), L - np.diag(np.diag(L)), np.ones(n)
        return (np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * one @ K @ L @ one) / (n * (n - 3))

    K, L = Xc @ Xc.T, Yc @ Yc.T
    expected = hsic1(K, L) / np.sqrt(hsic1(K, K) * hsic1(L, L))
    assert sim.debiased_linear_cka(X, Y) == pytest.approx(expected, abs=1e-10)


def test_debiased_cka_close_to_linear_for_large_n_and_unbiased_for_small_n():
    X, Y = related_pair(n=5000, seed=28)
    assert sim.debiased_linear_cka(X, Y) == pytest.approx(sim.linear_cka(X, Y), abs=1e-2)
    X, Y = randn(40, 30, seed=29), randn(40, 30, seed=30)  # independent, few points
    assert sim.linear_cka(X, Y) > 0.3  # the biased estimator sees similarity
    assert abs(sim.debiased_linear_cka(X, Y)) < 0.1


# ------------------------------------------------------------------ record, dead units, tolerances
def test_record_and_dead_units():
    X, Y = related_pair(n=200, seed=31)
    Xd = torch.cat([X[:, :3], torch.zeros(200, 1), X[:, 3:], torch.full((200, 2), -4.2)], 1)
    r = compare(Xd, Y, "cca")
    assert (r.method, r.n, r.units_x, r.units_y, r.dead_x, r.dead_y, r.kept_x, r.kept_y) == (
        "cca", 200, 11, 6, 3, 0, 8, 6)
    for m in ALL:  # dead units change nothing
        assert compare(Xd, Y, m).value == pytest.approx(compare(X, Y, m).value, abs=1e-10)
    assert sim.dead_units(torch.tensor([[1.0, 0, 3], [1.0, 0, 3 + 1e-12]], dtype=F64)) == 2


def test_epsilon_drops_tiny_directions():
    X, Y = related_pair(n=200, seed=32)
    Xt = torch.cat([X, 1e-7 * randn(200, 1, seed=33)], 1)  # variance ~1e-14 of the others
    assert compare(Xt, Y).kept_x == 8
    assert compare(Xt, Y, epsilon=1e-20).kept_x == 9
    assert sim.mean_cca(Xt, Y) == pytest.approx(sim.mean_cca(X, Y), abs=1e-10)


# ------------------------------------------------------------------ refusals and bad inputs
@pytest.mark.parametrize("method", ["cca", "pwcca", "svcca"])
@pytest.mark.parametrize("p", [40, 30, 29])  # centred, 29 units already fill the data space
def test_cca_refuses_when_units_reach_data_points(method, p):
    X, Y = randn(30, p, seed=34), randn(30, 5, seed=35)
    with pytest.raises(ValueError, match=r"n=30.*units"):
        compare(X, Y, method, keep=1.0)
    with pytest.raises(ValueError, match=r"n=30.*units"):
        compare(Y, X, method, keep=1.0)


def test_cca_allowed_just_below_limit_and_cka_never_refuses():
    X, Y = randn(30, 28, seed=36), randn(30, 5, seed=37)
    with pytest.warns(sim.ForcedCorrelationWarning):  # allowed, but 28 + 5 > 29 forces 4 correlations to 1
        assert compare(X, Y, "cca").kept_x == 28
    Xw = randn(30, 40, seed=38)
    for m in CKAS:
        assert 0 <= compare(Xw, Y, m).value <= 1
    assert compare(Xw, Y, "svcca", keep=0.5).kept_x < 29  # few kept directions: allowed


BAD = {
    "different n": (randn(10, 3), randn(11, 3), "n=10.*n=11"),
    "1-D": (randn(10), randn(10, 3), "shape"),
    "3-D": (randn(10, 3, 2), randn(10, 3), "shape"),
    "5-D": (randn(2, 3, 2, 2, 2), randn(2, 3), "shape"),
    "NaN": (randn(10, 3).index_put_((torch.tensor([2]), torch.tensor([1])), torch.tensor(float("nan"), dtype=F64)), randn(10, 3), "NaN"),
    "inf": (randn(10, 3), torch.cat([randn(9, 3), torch.full((1, 3), float("inf"), dtype=F64)]), "inf"),
    "no rows": (torch.zeros(0, 3), torch.zeros(0, 3), "empty"),
    "no columns": (torch.zeros(10, 0), randn(10, 3), "empty"),
    "empty conv": (torch.zeros(0, 3, 2, 2), torch.zeros(0, 3), "empty"),
    "all dead": (torch.ones(10, 3), randn(10, 3), "no variance"),
    "one point": (randn(1, 3), randn(1, 3), "at least"),
}


@pytest.mark.parametrize("case", BAD)
@pytest.mark.parametrize("method", ALL)
def test_bad_inputs_raise(case, method):
    X, Y, msg = BAD[case]
    with pytest.raises(ValueError, match=msg):
        compare(X, Y, method)


def test_other_bad_arguments():
    X, Y = related_pair(n=50)
    with pytest.raises(ValueError, match="unknown method"):
        compare(X, Y, "cosine")
    with pytest.raises(ValueError, match="at least 4"):
        compare(X[:3], Y[:3], "cka_debiased")
    with pytest.raises(ValueError, match="keep"):
        sim.svcca(X, Y, keep=1.5)
    clumped = torch.cat([torch.zeros(40, 3, dtype=F64), randn(10, 3)])  # median distance 0
    with pytest.raises(ValueError, match="median"):
        sim.rbf_cka(clumped, Y)


# ------------------------------------------------------------------ dtype, device, imports
def test_accepts_float32_and_numpy():
    X, Y = related_pair(n=100, seed=39)
    for m in ALL:
        ref = compare(X, Y, m).value
        assert compare(X.float(), Y.float(), m).value == pytest.approx(ref, abs=1e-5)
        assert compare(X.numpy(), Y.numpy(), m).value == pytest.approx(ref, abs=1e-12)
    assert sim.cca(X.float(), Y.float()).dtype == F64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    X, Y = related_pair(n=300, seed=40)
    for m in ALL:
        assert compare(X.cuda().float(), Y.cuda(), m).value == pytest.approx(
            compare(X.float(), Y, m).value, abs=1e-9)
    assert sim.cca(X.cuda(), Y.cuda()).device.type == "cuda"
    with pytest.raises(ValueError, match="cuda"):
        compare(X.cuda(), Y, "cka")


def test_module_imports_only_torch_and_stdlib():
    tree = ast.parse(Path(sim.__file__).read_text())
    roots = {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    roots |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert roots <= {"__future__", "dataclasses", "typing", "torch", "warnings"}


# ------------------------------------------------------------------ R^2_CCA, centring, bandwidth rule, forced correlations
def test_mean_squared_cca_of_prescribed_correlations():
    n, rho = 200, torch.tensor([0.95, 0.7, 0.4, 0.1], dtype=F64)
    Q = whitened(n, 8, seed=40)
    X = Q[:, :4] @ randn(4, 4, seed=41)
    Y = (rho * Q[:, :4] + torch.sqrt(1 - rho**2) * Q[:, 4:]) @ randn(4, 4, seed=42)
    assert compare(X, Y, "cca_r2").value == pytest.approx((rho**2).mean().item(), abs=1e-10)
    assert compare(X, Y, "cca_r2").value < compare(X, Y, "cca").value  # squares of numbers below 1


def test_uncentred_scores_count_a_shared_offset_and_agree_on_centred_data():
    X, Y = randn(300, 5, seed=43), randn(300, 4, seed=44)  # independent
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    for method in ("cca", "cka"):
        assert compare(Xc, Yc, method, centre=False).value == pytest.approx(compare(Xc, Yc, method).value, abs=1e-10)
    shifted = compare(X + 50.0, Y + 50.0, "cka", centre=False).value
    assert shifted > 0.99 and compare(X + 50.0, Y + 50.0, "cka").value < 0.1  # the offset is all they share
    assert compare(X + 50.0, Y + 50.0, "cca", centre=False).kept_x == 5


def test_rbf_bandwidth_rule_of_the_original_cka_code():
    X = randn(9, 3, seed=45)  # odd n^2 = 81 entries: numpy's median is the middle one
    D2 = squareform(pdist(X.numpy(), "sqeuclidean"))
    sigma = 0.8 * np.sqrt(np.median(D2))
    expected = np.exp(-D2 / (2 * sigma**2))
    assert np.allclose(sim.rbf_gram(X, 0.8, "kornblith").numpy(), expected, atol=1e-12)
    assert not np.allclose(sim.rbf_gram(X, 0.8, "pairs").numpy(), expected, atol=1e-3)
    with pytest.raises(ValueError, match="unknown sigma_rule"):
        sim.rbf_gram(X, 0.8, "mean")


def test_cca_warns_when_kept_directions_force_correlations_to_one():
    X, Y = randn(20, 10, seed=46), randn(20, 10, seed=47)  # independent; 10 + 10 > n - 1 = 19
    with pytest.warns(sim.ForcedCorrelationWarning, match="at least 1 canonical correlations are 1"):
        rho = sim.cca(X, Y)
    assert rho[0] == pytest.approx(1.0, abs=1e-8)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compare(randn(200, 10, seed=48), randn(200, 10, seed=49), "cca")  # far below: silent


# ------------------------------------------------------------------ chance levels
def test_chance_of_independent_data_is_the_score_itself_and_far_below_a_real_relation():
    X, Y = randn(100, 20, seed=50), randn(100, 20, seed=51)
    level = sim.chance(X, Y, "cca", permutations=30, seed=3)
    assert level == sim.chance(X, Y, "cca", permutations=30, seed=3)  # seeded
    assert len(level.values) == 30 and level.std > 0
    assert abs(compare(X, Y, "cca").value - level.mean) < 4 * level.std  # no relation: indistinguishable
    assert 0.3 < level.mean < 0.5  # mean CCA of independent 100 x 20 pairs is far from 0 (about 0.39)
    related = X @ randn(20, 20, seed=52)  # the same information
    assert compare(X, related, "cca").value == pytest.approx(1.0)
    assert sim.chance(X, related, "cca").mean < 0.5
    wide = sim.chance(randn(100, 64, seed=53), randn(100, 64, seed=54), "cka", permutations=5)
    assert wide.mean > 0.3  # CKA of independent wide matrices: far from 0 as well
    with pytest.raises(ValueError, match="at least 2 permutations"):
        sim.chance(X, Y, permutations=1)
