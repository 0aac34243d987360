"""Independent references for the tests: float64 NumPy, no TensorFlow."""

import numpy as np


def gradient_descent_reference(x, y, init_w, init_b, learning_rate, epochs, batch_size=None):
    """Gradient descent on MSE in float64, batch by batch, independent of TensorFlow.

    theta <- theta - lr * (2/n) * A^T (A theta - y), A = [X 1], per batch of n rows.

    Returns:
      dict with `w` and `b` per epoch from 0 (before training), `full_loss`
      per epoch from 0, and `loss` per epoch (Keras's: the batch-size
      weighted mean of each batch's loss before its update).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    a = np.column_stack([x.reshape(n, -1), np.ones(n)])
    theta = np.append(np.asarray(init_w, dtype=np.float64).ravel(), init_b)
    batch_size = batch_size or n
    thetas, losses = [theta.copy()], []
    for _ in range(epochs):
        weighted = 0.0
        for start in range(0, n, batch_size):
            a_batch, y_batch = a[start:start + batch_size], y[start:start + batch_size]
            residual = a_batch @ theta - y_batch
            weighted += np.mean(residual ** 2) * len(y_batch)
            theta = theta - learning_rate * (2 / len(y_batch)) * a_batch.T @ residual
        losses.append(weighted / n)
        thetas.append(theta.copy())
    thetas = np.array(thetas)
    full_loss = [float(np.mean((a @ t - y) ** 2)) for t in thetas]
    w = thetas[:, :-1]
    return {"w": w[:, 0] if x.ndim == 1 else w, "b": thetas[:, -1], "full_loss": full_loss,
            "loss": losses}


def assert_matches_reference(history, reference, rtol=1e-5):
    np.testing.assert_allclose(np.array(history.w, dtype=np.float64), reference["w"], rtol=rtol)
    np.testing.assert_allclose(history.b, reference["b"], rtol=rtol, atol=1e-6)
    np.testing.assert_allclose(history.full_loss, reference["full_loss"], rtol=rtol)
    np.testing.assert_allclose(history.loss, reference["loss"], rtol=rtol)


def normal_equations(x, y):
    """The least-squares optimum the textbook way: solve (AᵀA) θ = Aᵀy in float64.

    Returns:
      θ = [w..., b] and the design matrix A = [X 1].
    """
    a = np.column_stack([np.asarray(x, np.float64).reshape(len(y), -1), np.ones(len(y))])
    return np.linalg.solve(a.T @ a, a.T @ np.asarray(y, np.float64)), a
