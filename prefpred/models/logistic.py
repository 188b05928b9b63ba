"""Multinomial logistic regression on soft targets and two-class rows (:mod:`prefpred.targets`).

scikit-learn's ``LogisticRegression`` takes hard labels only. This fits the same model (L2 on
the weights, intercept unpenalised, strength ``C``) to target distributions with each row's
softmax restricted to its allowed classes, by L-BFGS on the exact gradient. On one-hot targets
with every class allowed it reaches scikit-learn's solution (a test checks that).
"""

from __future__ import annotations

import numpy as np

from prefpred.labels import N_CLASSES
from prefpred.targets import Targets, masked_cross_entropy


def fit_softmax_regression(x, targets: Targets, *, C: float, max_iter: int = 300,
                           tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """(coef (3, d), intercept (3,)) minimising
    ``sum_i w_i CE_i / sum(w) + ||coef||^2 / (2 C sum(w))`` (scikit-learn's scaling)."""
    from scipy.optimize import minimize

    n, d = x.shape
    w = np.asarray(targets.weight, dtype=np.float64)
    sw = w.sum()
    xt = x.T.tocsr() if hasattr(x, "tocsr") else np.asarray(x).T

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        coef = theta[: N_CLASSES * d].reshape(N_CLASSES, d)
        intercept = theta[N_CLASSES * d:]
        z = np.asarray(x @ coef.T) + intercept
        loss, grad = masked_cross_entropy(z, targets)
        gw = grad * (w / sw)[:, None]
        f = float(loss @ w / sw + 0.5 * (coef * coef).sum() / (C * sw))
        g_coef = np.asarray(xt @ gw).T + coef / (C * sw)
        return f, np.concatenate([g_coef.ravel(), gw.sum(0)])

    theta0 = np.zeros(N_CLASSES * (d + 1))
    res = minimize(objective, theta0, jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "gtol": tol, "maxcor": 20})
    theta = res.x
    coef = theta[: N_CLASSES * d].reshape(N_CLASSES, d)
    intercept = theta[N_CLASSES * d:]
    # the softmax is unchanged by a constant per feature across classes: centre as sklearn does
    return coef - coef.mean(0), intercept - intercept.mean()
