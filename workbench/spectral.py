"""Certified upper bounds on spectral norms, at the size of real models.

``spectral_norm(a)`` returns, for each trailing matrix a ∈ R^{m×n}, a number s ≥ ‖a‖₂ that is
close to it (relative excess ~1e-9), without a singular value decomposition:

1. the Gram matrix of the smaller side, G = a aᵀ or aᵀa (k × k, k = min(m, n)), in float64 (BLAS
   ``dsyrk`` on one triangle for a large CPU matrix: half a matrix product);
2. an estimate λ̂ of λ_max(G): ``eigvalsh`` for small k, Lanczos otherwise;
3. the certificate: μ I − G is positive definite exactly when μ > λ_max(G), and a Cholesky
   factorisation that completes proves it (``cholesky_ex``; for a large matrix LAPACK's
   ``dpotrf`` on the column-major view of the one triangle ``dsyrk`` wrote; on failure μ grows and
   we retry);
4. float64 rounding, bounded rather than ignored: the computed Gram Ĝ satisfies
   |Ĝ − G| ≤ γ_p |a||a|ᵀ elementwise (p the inner dimension, γ_p = p u / (1 − p u), for any
   order of summation), so ‖Ĝ − G‖₂ ≤ γ_p ‖a‖_F²; a completed Cholesky of H = μ I − Ĝ gives
   R̂ᵀR̂ = H + E with |E| ≤ γ_{k+1} |R̂ᵀ||R̂|, ‖E‖₂ ≤ γ_{k+1} ‖R̂‖_F² = γ_{k+1} tr(H + E) ≤
   2 γ_{k+1} k (μ + ν) (ν ≥ 0 bounds −Ĝ_ii: 0 for a Gram), and forming the diagonal of H rounds
   by at most 2u(μ + ν). Hence λ_max(G) ≤ (μ + ν)(1 + 2 γ_{k+1} k + 2u) − ν + γ_p ‖a‖_F², and s
   is its square root (rounded up by a further relative 1e-15). The matrix is first divided by a
   power of two near its largest entry (exact), so the Gram neither underflows nor overflows
   (not needed, and skipped, when that entry is within [2^-20, 2^20]: :func:`scale_down`). For a
   large matrix ‖a‖_F² is bounded from the Gram's trace (its terms are ≥ 0), not a pass over a.

The same certificate bounds λ_max of any symmetric matrix known up to an error ε in ‖·‖₂
(:func:`top_eigenvalue_bound`), which ``workbench.bounds_weights`` uses for ‖P D W_V W_O‖ through
a certified factor of W_O W_Oᵀ (:func:`gram_factor`, :func:`congruence`). Large buffers come from
a :class:`Workspace`, reused from matrix to matrix: on a loaded machine, faulting in fresh pages
costs more than the arithmetic done on them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

U64 = 2.0**-53  # unit roundoff of float64
SMALL = 256  # up to this k, the estimate is eigvalsh's


def _gamma(p: int) -> float:
    return p * U64 / (1 - p * U64)


class Workspace:
    """Float64 buffers reused across calls (one per name, grown when too small)."""

    def __init__(self) -> None:
        self._bufs: dict[tuple[str, str], Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], device: torch.device | str = "cpu") -> Tensor:
        key, n = (name, str(device)), math.prod(shape)
        buf = self._bufs.get(key)
        if buf is None or buf.numel() < n:
            self._bufs[key] = buf = torch.empty(n, dtype=torch.float64, device=device)
        return buf[:n].view(shape)


def fro2(a: Float[Tensor, "*batch m n"]) -> Float[Tensor, " *batch"]:
    """An upper bound on ‖a‖_F² per trailing matrix (the sum's rounding, γ_N, included)."""
    n = a.shape[-1] * a.shape[-2]
    return torch.linalg.vector_norm(a, dim=(-2, -1)) ** 2 * (1 + 2 * _gamma(n + 3))


def scale_down(a: Float[Tensor, "*batch m n"]) -> Float[Tensor, " *batch"]:
    """Divide each trailing matrix of the float64 ``a`` in place by a power of two near its
    largest |entry| (exact); return the divisors. A matrix whose largest |entry| lies in
    [2^-20, 2^20] (every weight matrix) is left as it is, divisor 1: nothing in its Gram overflows,
    and what underflows (≤ k p 2^-1074 in ‖·‖₂) is far below the rounding terms already added
    (γ_p ‖a‖_F² ≥ γ_p 2^-40) and the final relative 1e-15. A zero matrix has divisor 1."""
    if a.ndim == 2:  # NaN propagates, inf stays
        lo, hi = torch.aminmax(a)
    else:
        lo, hi = a.amin((-2, -1)), a.amax((-2, -1))
    top = torch.maximum(hi, -lo)
    if not torch.isfinite(top).all():
        raise ArithmeticError("spectral_norm of a matrix with non-finite entries")
    keep = (top == 0) | ((top >= 2.0**-20) & (top <= 2.0**20))
    scale = torch.where(keep, 1.0, torch.exp2(torch.round(torch.log2(top))))
    if not keep.all():
        a.div_(scale[..., None, None])
    return scale


def gram(a: Float[Tensor, "*batch m n"]) -> Float[Tensor, "*batch k k"]:
    """The Gram matrix of the smaller side, float64 (``dsyrk`` for a single CPU matrix)."""
    a = a.detach().double()
    if a.ndim == 2 and a.device.type == "cpu" and min(a.shape) > SMALL:
        g = torch.from_numpy(_dsyrk(a.contiguous(), Workspace()))  # the upper triangle
        return g.triu() + g.triu(1).mT
    return a @ a.mT if a.shape[-2] <= a.shape[-1] else a.mT @ a


def _dsyrk(a: Float[Tensor, "m n"], work: Workspace) -> np.ndarray:
    """One triangle (column-major upper) of the smaller side's Gram of the row-major ``a``."""
    from scipy.linalg.blas import dsyrk

    k = min(a.shape)
    c = work.take("gram", (k, k)).numpy().T  # column-major k × k
    # row-major a is column-major x = aᵀ (no copy): a aᵀ = xᵀx (trans=1), aᵀa = x xᵀ (trans=0)
    x = a.numpy().T
    trans = 1 if a.shape[0] <= a.shape[1] else 0
    out = dsyrk(1.0, x, beta=0.0, c=c, trans=trans, overwrite_c=1)
    assert np.shares_memory(out, c)
    return out


def _lanczos(matvec, k: int, steps: int = 120) -> float:
    """λ_max of a k × k symmetric matrix from below: the top Ritz value of Lanczos with full
    reorthogonalisation (float64), stopped when it no longer moves."""
    steps = min(steps, k)
    gen = torch.Generator(device="cpu").manual_seed(0)
    q = torch.empty((steps, k), dtype=torch.float64)
    v = torch.randn(k, generator=gen, dtype=torch.float64)
    q[0] = v / torch.linalg.vector_norm(v)
    alpha, beta, last = [], [], -math.inf
    for j in range(steps):
        w = matvec(q[j])
        alpha.append(float(q[j] @ w))
        w = w - q[: j + 1].T @ (q[: j + 1] @ w)  # full reorthogonalisation, twice
        w = w - q[: j + 1].T @ (q[: j + 1] @ w)
        b = float(torch.linalg.vector_norm(w))
        if j + 1 == steps or b <= 1e-12 * abs(alpha[0]):
            break
        beta.append(b)
        q[j + 1] = w / b
        if j >= 4:  # converged: the top Ritz value no longer moves (its eigvalsh: ~0.1 ms)
            top = _ritz_top(alpha, beta)
            if top - last <= 1e-9 * abs(top):
                break
            last = top
    return _ritz_top(alpha, beta)


def _estimate(g: Tensor) -> Tensor:
    """λ_max(G), an estimate from below: eigvalsh for small k, else Lanczos per matrix."""
    k = g.shape[-1]
    if k <= SMALL:
        return torch.linalg.eigvalsh(g)[..., -1]
    flat = g.reshape(-1, k, k).cpu()
    tops = [_lanczos(lambda v, x=x: x @ v, k) for x in flat]
    return torch.tensor(tops, dtype=g.dtype).reshape(g.shape[:-2]).to(g.device)


def _ritz_top(alpha: list[float], beta: list[float]) -> float:
    """The largest eigenvalue of the Lanczos tridiagonal matrix."""
    n = len(alpha)
    t = torch.diag(torch.tensor(alpha, dtype=torch.float64))
    if n > 1:
        off = torch.tensor(beta[: n - 1], dtype=torch.float64)
        t += torch.diag(off, 1) + torch.diag(off, -1)
    return float(torch.linalg.eigvalsh(t)[-1])


def _start(diag: Tensor, est: Tensor) -> Tensor:
    """The first μ to try: the estimate plus a slack (eigvalsh is accurate to rounding, Lanczos
    nearly), plus a little of the diagonal so a zero matrix certifies at once."""
    slack = 1e-10 if diag.shape[-1] <= SMALL else 1e-7
    return est * (1 + slack) + 1e-13 * diag.abs().amax(-1).clamp(min=1e-300) + 1e-300


def certified_top_eigenvalue(g: Float[Tensor, "*batch k k"]) -> Float[Tensor, " *batch"]:
    """μ with μ I − G positive definite, proven by a completed Cholesky (float64, G symmetric)."""
    eye = torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)
    mu = _start(g.diagonal(dim1=-2, dim2=-1), _estimate(g))
    for attempt in range(40):
        _, info = torch.linalg.cholesky_ex(mu[..., None, None] * eye - g)
        todo = info != 0
        if not todo.any():
            return mu
        mu = torch.where(todo, mu * (1 + 1e-6 * 4.0**attempt), mu)
    raise ArithmeticError("no certified bound on the top eigenvalue (non-finite matrix?)")


def _certified_top_upper(c: np.ndarray, work: Workspace) -> float:
    """:func:`certified_top_eigenvalue` for one large matrix given by its column-major upper
    triangle ``c`` (the other triangle is never read: ``dsymv`` for Lanczos, and ``dpotrf`` with
    ``lower=0`` reads only that triangle, as ``tests/test_spectral.py`` checks)."""
    from scipy.linalg.blas import dsymv
    from scipy.linalg.lapack import dpotrf

    k = c.shape[0]
    est = _lanczos(lambda v: torch.from_numpy(dsymv(1.0, c, v.numpy())), k)
    mu = float(_start(torch.from_numpy(np.diagonal(c).copy()), torch.tensor(est)))
    g = torch.from_numpy(c.T)  # row-major: the lower triangle holds the Gram
    h = work.take("chol", (k, k))
    for attempt in range(40):
        torch.neg(g, out=h).diagonal().add_(mu)
        # hᵀ is column-major as LAPACK wants it (no copy); its upper triangle is h's lower, and
        # dpotrf factors it in place (torch's cholesky_ex took twice as long at k = 2560)
        out, info = dpotrf(h.numpy().T, lower=0, clean=0, overwrite_a=1)
        assert np.shares_memory(out, h.numpy())
        if info == 0:
            return mu
        mu *= 1 + 1e-6 * 4.0**attempt
    raise ArithmeticError("no certified bound on the top eigenvalue (non-finite matrix?)")


def _rounding(mu: Tensor, diag: Tensor) -> Tensor:
    """From the certified μ to a bound on λ_max(Ĝ): the Cholesky and diagonal rounding terms."""
    k = diag.shape[-1]
    nu = (-diag).clamp(min=0).amax(-1)
    return (mu.clamp(min=0) + nu) * (1 + 2 * _gamma(k + 1) * k + 2 * U64) - nu


def top_eigenvalue_bound(
    g: Float[Tensor, "*batch k k"], err: Float[Tensor, " *batch"]
) -> Float[Tensor, " *batch"]:
    """An upper bound on λ_max(G) for every symmetric G with ‖G − g‖₂ ≤ err (module docstring)."""
    return _rounding(certified_top_eigenvalue(g), g.diagonal(dim1=-2, dim2=-1)) + err


def spectral_norm(
    a: Float[Tensor, "*batch m n"], work: Workspace | None = None, overwrite: bool = False
) -> Float[Tensor, " *batch"]:
    """A certified upper bound on ‖a‖₂ per trailing matrix, float64 (module docstring).

    ``overwrite``: ``a`` is a contiguous float64 tensor the caller no longer needs (it is
    rescaled in place, by powers of two); ``work`` lends the large buffers."""
    a = a.detach()
    m, n = a.shape[-2:]
    if min(m, n) == 0:
        return torch.zeros(a.shape[:-2], dtype=torch.float64, device=a.device)
    big = a.ndim == 2 and a.device.type == "cpu" and min(m, n) > SMALL
    work = work or Workspace()
    if not (overwrite and a.dtype == torch.float64 and a.is_contiguous()):
        a = work.take("a", (m, n), a.device).copy_(a) if big else a.double().clone()
    scale = scale_down(a)
    k, p = min(m, n), max(m, n)
    if big:
        c = _dsyrk(a, work)
        diag = torch.from_numpy(np.diagonal(c).copy())
        # ‖a‖_F² = tr G ≤ fl(tr Ĝ) / ((1 − γ_k)(1 − γ_p)): every term is ≥ 0 (no pass over a)
        f = diag.sum() * (1 + 2 * _gamma(k) + 2 * _gamma(p) + 8 * U64)
        mu = torch.tensor(_certified_top_upper(c, work), dtype=torch.float64)
        lam = _rounding(mu, diag) + _gamma(p) * f
    else:
        f = fro2(a)
        lam = top_eigenvalue_bound(gram(a), _gamma(p) * f)
    return torch.where(f > 0, torch.sqrt(lam) * (1 + 1e-15) * scale, 0.0)


def gram_factor(
    b: Float[Tensor, "*batch e n"], work: Workspace | None = None
) -> Float[Tensor, "*batch e e"]:
    """L, lower triangular, with b bᵀ ≼ L Lᵀ proven: ‖x b‖ ≤ ‖x L‖ for every x, equal up to a
    relative ~1e-13 (b rank-deficient or not).

    L Lᵀ is the Cholesky factorisation of fl(Ĝ + δI), Ĝ = fl(b bᵀ): L Lᵀ = b bᵀ + δI + E₀ + D + E
    with ‖E₀‖ ≤ γ_n ‖b‖_F² (the Gram), ‖D‖ ≤ u (‖b‖_F²(1 + γ_n) + δ) (the diagonal sum) and
    ‖E‖ ≤ γ_{e+1} ‖L‖_F² (the Cholesky), so L Lᵀ ≽ b bᵀ once δ exceeds their sum, which is checked
    after the factorisation (δ grows otherwise)."""
    e, n = b.shape[-2:]
    b = (work or Workspace()).take("factor", tuple(b.shape), b.device).copy_(b.detach())
    scale = scale_down(b)
    g = b @ b.mT
    f = fro2(b)
    delta = 2 * (_gamma(n) + _gamma(e + 1) + 2 * U64) * f + 1e-280
    eye = torch.eye(e, dtype=torch.float64, device=b.device)
    for _ in range(40):
        lo, info = torch.linalg.cholesky_ex(g + delta[..., None, None] * eye)
        need = _gamma(n) * f + U64 * (f * (1 + _gamma(n)) + delta) + _gamma(e + 1) * fro2(lo)
        ok = (info == 0) & (need <= delta)
        if ok.all():  # a zero b has the exact factor 0 (b bᵀ = 0), not δ's √δ I
            return torch.where((f > 0)[..., None, None], lo * scale[..., None, None], 0.0)
        delta = torch.where(ok, delta, 8 * delta)
    raise ArithmeticError("no certified factor (non-finite matrix?)")


def factored_norm(
    a: Float[Tensor, "*batch m e"], lo: Float[Tensor, "*batch e r"], overwrite: bool = False
) -> Float[Tensor, " *batch"]:
    """A certified upper bound on ‖a b‖₂ from L with b bᵀ ≼ L Lᵀ (``lo``, :func:`gram_factor`):
    ‖a b‖² = λ_max(a b bᵀ aᵀ) ≤ λ_max(a L Lᵀ aᵀ) = λ_max(Lᵀ (aᵀa) L), bounded from the Gram of
    a's e side and :func:`congruence` (``overwrite`` as in :func:`spectral_norm`)."""
    a = a.detach()
    if not (overwrite and a.dtype == torch.float64 and a.is_contiguous()):
        a = a.double().clone()
    lo = lo.double().clone()
    scale = scale_down(a) * scale_down(lo)
    f = fro2(a)
    s, eps = congruence(a.mT @ a, _gamma(a.shape[-2]) * f, lo)
    bound = torch.sqrt(top_eigenvalue_bound(s, eps)) * (1 + 1e-15) * scale
    return torch.where((f > 0) & (fro2(lo) > 0), bound, 0.0)  # a = 0 or L = 0: a b = 0 exactly


def congruence(
    g: Float[Tensor, "*batch e e"], err: Float[Tensor, " *batch"], lo: Float[Tensor, "*batch e r"]
) -> tuple[Float[Tensor, "*batch r r"], Float[Tensor, " *batch"]]:
    """S, symmetric, and ε with ‖Lᵀ G L − S‖₂ ≤ ε for every G with ‖G − g‖₂ ≤ err (L = ``lo``).

    T = fl(g L) and fl(Lᵀ T) err by at most γ_e |g||L| and γ_e |Lᵀ||T| elementwise (e the inner
    dimension), S = fl(½(S + Sᵀ)) by u|S|, and ‖Lᵀ(G − g)L‖ ≤ ‖L‖_F² err; each |·| is bounded in
    ‖·‖₂ by its Frobenius norm."""
    e = g.shape[-1]

    def fro(x):
        return fro2(x).sqrt() * (1 + 4 * U64)

    t = g @ lo
    s = lo.mT @ t
    s = (s + s.mT) * 0.5
    lf = fro(lo)
    eps = lf**2 * err + _gamma(e) * lf * (fro(t) + fro(g) * lf) + U64 * fro(s)
    return s, eps * (1 + 1e-12)


def log_sum(logs: list[float]) -> float:
    """log Σ exp(logs), finite whenever the logs are (the weight tier's arithmetic)."""
    top = max(logs)
    if math.isinf(top):
        return top
    return top + math.log(sum(math.exp(x - top) for x in logs))
