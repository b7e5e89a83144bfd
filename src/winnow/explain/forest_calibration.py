"""Empirical-Bayes calibration of noisy per-point forest variances (Wager, Hastie & Efron 2014).

With a finite forest of ``B`` trees the bias-corrected IJ estimate ``V_hat(x)`` is the true
sampling variance ``V(x)`` plus Monte-Carlo noise of spread ``sigma``. The noise is large at a
few hundred trees, and intervals built on a noisy variance under-cover (too narrow where the
noise pulls ``V_hat`` down, clipped at 0 where it pulls it below). Calibration treats the test
points' estimates as draws of the hierarchical model (Efron 2014, "g-modeling")::

    V(x) ~ g,    V_hat(x) | V(x) ~ N(V(x), sigma^2)

fits the prior ``g`` on a grid over ``[0, max]`` as a log-polynomial of degree ``p`` mixed with a
uniform slab, by maximum marginal likelihood, and replaces each estimate by its posterior mean
``E[V | V_hat] = sum_j g_j phi((v_j - V_hat) / sigma) v_j / sum_j g_j phi((v_j - V_hat) / sigma)``.
The same model as forestci's ``calibrateEB`` (whose defaults ``p = 2``, 1,000 bins and a 10%
slab are kept), with the posterior computed for all points at once.

``sigma^2`` comes from the forest itself: ``V_half``, the estimate from half of the trees, has
Monte-Carlo noise ``2 sigma^2`` and covariance ``sigma^2`` with ``V_hat`` (the full forest
contains the half), so ``E[(V_half - V_hat)^2] = sigma^2``, averaged over the test points.

The prior is fitted on the batch of test points, so a batch needs at least
:data:`MIN_CALIBRATION_POINTS` of them; the estimate at a point depends (weakly) on the others.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.stats import norm

__all__ = [
    "MIN_CALIBRATION_POINTS",
    "calibrate_variances",
    "fit_variance_prior",
    "monte_carlo_noise",
    "posterior_mean_variance",
]

# forestci skips calibration for 20 or fewer points; a 2-parameter prior needs a few dozen.
MIN_CALIBRATION_POINTS = 20
_GRID_POINTS = 1000
_DEGREE = 2
_SLAB = 0.1
_POSTERIOR_CHUNK = 1 << 22
_LIKELIHOOD_POINTS = 1000


def monte_carlo_noise(full: np.ndarray, half: np.ndarray) -> float:
    """``sigma^2``: mean of ``(V_half - V_hat)^2`` over points (see the module docstring)."""
    return float(np.mean((half - full) ** 2))


def fit_variance_prior(
    estimates: np.ndarray,
    noise_sd: float,
    degree: int = _DEGREE,
    grid_points: int = _GRID_POINTS,
    slab: float = _SLAB,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``g`` by maximum marginal likelihood; returns ``(grid [G], weights [G])``.

    ``g = (1 - slab) * softmax(P eta) + slab * uniform`` on a grid from 0 to 2 sd past the
    largest estimate, where ``P`` holds the powers ``v, v^2, ..., v^p`` (each scaled by its sum
    over the grid, so ``eta`` is of order one). The marginal
    density of an estimate ``x`` is ``f(x) = sum_j g_j phi((x - v_j) / sigma)``; the negative
    log-likelihood ``-sum_i log f(x_i)`` and its gradient in ``eta`` are exact, so BFGS needs a
    few dozen evaluations of one ``[m, G]`` product. Past :data:`_LIKELIHOOD_POINTS` estimates
    the likelihood is taken at that many of their quantiles (the maximiser of an equally
    weighted sum is unchanged by the common weight).
    """
    spread = np.std(estimates, ddof=1)
    grid = np.linspace(0.0, max(float(estimates.max()) + 2 * spread, spread), grid_points)
    powers = np.column_stack([grid**d for d in range(1, degree + 1)])
    powers /= np.abs(powers).sum(axis=0, keepdims=True)
    uniform = np.full(len(grid), 1.0 / len(grid))
    points = estimates
    if len(points) > _LIKELIHOOD_POINTS:
        points = np.quantile(estimates, np.linspace(0, 1, _LIKELIHOOD_POINTS))
    kernel = norm.pdf((points[:, None] - grid[None, :]) / noise_sd)  # [m, G]

    def prior(eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        log_weights = powers @ eta
        main = np.exp(log_weights - log_weights.max())
        main /= main.sum()
        return (1 - slab) * main + slab * uniform, main

    def objective(eta: np.ndarray) -> tuple[float, np.ndarray]:
        weights, main = prior(eta)
        marginal = np.maximum(kernel @ weights, 1e-300)
        pull = kernel.T @ (1.0 / marginal)  # d(-NLL)/dg_j
        # dg/d eta_d = (1 - slab) * main * (P_d - main . P_d)
        centred = powers - main @ powers
        gradient = -(1 - slab) * ((pull * main) @ centred)
        return float(-np.log(marginal).sum()), gradient

    fit = minimize(objective, np.full(degree, -1.0), jac=True, method="BFGS")
    return grid, prior(fit.x)[0]


def posterior_mean_variance(
    estimates: np.ndarray, grid: np.ndarray, weights: np.ndarray, noise_sd: float
) -> np.ndarray:
    """``E[V | V_hat]`` under the fitted prior for each estimate, ``[m]``, in chunks."""
    out = np.empty(len(estimates))
    step = max(1, _POSTERIOR_CHUNK // len(grid))
    for start in range(0, len(estimates), step):
        part = estimates[start : start + step, None]
        # log of g_j * phi((v_j - V_hat) / sigma), shifted per row before exponentiating
        log_post = np.log(np.maximum(weights, 1e-300)) - 0.5 * ((grid - part) / noise_sd) ** 2
        post = np.exp(log_post - log_post.max(axis=1, keepdims=True))
        out[start : start + step] = post @ grid / post.sum(axis=1)
    return out


def calibrate_variances(full: np.ndarray, half: np.ndarray) -> np.ndarray | None:
    """Calibrated sampling variances ``[m]`` from the full- and half-forest IJ estimates.

    ``full`` and ``half`` are the bias-corrected estimates before clipping at zero. Returns None
    when the batch has fewer than :data:`MIN_CALIBRATION_POINTS` points; returns ``full``
    clipped at 0 when there is no Monte-Carlo noise or no spread to fit a prior to.
    """
    if len(full) < MIN_CALIBRATION_POINTS:
        return None
    noise = monte_carlo_noise(full, half)
    if noise <= 0 or np.ptp(full) == 0:
        return np.clip(full, 0.0, None)
    noise_sd = np.sqrt(noise)
    grid, weights = fit_variance_prior(full, noise_sd)
    return posterior_mean_variance(full, grid, weights, noise_sd)
