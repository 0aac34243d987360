"""The exact answer for MSE: the float64 least-squares optimum, the learning-rate
stability limit of full-batch gradient descent and its predicted contraction.
NumPy only, no training.
"""

from dataclasses import dataclass, replace

import numpy as np

from linfit.history import line_values


@dataclass(frozen=True)
class Reference:
    """The exact answer for MSE on (x, y), in float64.

    Attributes:
      w, b: the least-squares optimum (`numpy.linalg.lstsq` on A = [X 1]);
        for k outputs, w is [d, k] and b is [k], each output's own optimum.
      loss: the mean squared error at the optimum (over every output, as
        Keras's "mse" averages them).
      eigenvalues: of the Hessian H = (2/(N·k))·AᵀA of the MSE with respect
        to one output's weights (each output's block is the same), ascending.
    """

    w: np.ndarray
    b: float | np.ndarray
    loss: float
    eigenvalues: np.ndarray

    @property
    def lr_limit(self) -> float:
        """Full-batch gradient descent diverges at learning rates >= 2 / λmax(H)."""
        return float(2.0 / self.eigenvalues[-1])

    def contraction(self, learning_rate: float) -> float:
        """Predicted factor by which |θ - θ*| shrinks per full-batch GD epoch.

        The error evolves as e ← (I - lr·H) e, so its slowest mode shrinks
        by max |1 - lr·λ|; the loss gap shrinks by the square of that.
        """
        return float(np.max(np.abs(1.0 - learning_rate * self.eigenvalues)))

    def gaps(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per epoch of a run: `loss_gap` (full_loss − optimum; NaN where full_loss was
        not recorded) and `distance` |θ − θ*|."""
        names = line_values(self.w, self.b)
        theta = np.column_stack([columns[name] for name in names])
        optimum = np.array(list(names.values()))
        full_loss = np.asarray(columns.get("full_loss", np.full(len(theta), np.nan)))
        return {"loss_gap": full_loss - self.loss,
                "distance": np.linalg.norm(theta - optimum, axis=1)}

    def stability_warning(self, learning_rate: float) -> str | None:
        """A warning when full-batch GD at this rate will diverge, else None."""
        if learning_rate < self.lr_limit:
            return None
        relation = "at" if learning_rate == self.lr_limit else "above"
        return (f"learning rate {learning_rate:g} is {relation} the stability limit "
                f"{self.lr_limit:.3g} for this data: training will diverge")

    def to_json(self) -> dict:
        return {"w": np.atleast_1d(self.w).tolist(), "b": np.asarray(self.b).tolist(),
                "loss": self.loss,
                "lr_limit": self.lr_limit}


def least_squares_reference(x, y, chunk_rows: int = 65536) -> Reference:
    """The float64 least-squares optimum of f(x) = x·W + b on (x, y).

    x is [N] (the scalar model: `w` is then a number) or [N, d]; y is [N],
    or [N, k] for k outputs (w is then [d, k], d = 1 for a scalar x).
    """
    n = len(y)
    x2 = np.asarray(x).reshape(n, -1)
    chunks = ((x2[start:start + chunk_rows], y[start:start + chunk_rows])
              for start in range(0, n, chunk_rows))
    return reference_from_chunks(chunks, scalar_model=np.ndim(x) == 1)


def reference_from_chunks(chunks, scalar_model: bool = False, trained_as=None) -> Reference:
    """`least_squares_reference` of data given as (x [rows, d], y [rows] or
    [rows, k]) chunks (see `RFactor`).

    Args:
      trained_as: x -> the features as training sees them (standardised, say):
        the eigenvalues, and so the stability limit, are then theirs, from
        the same pass over the chunks.
    """
    read, trained = RFactor(), RFactor()
    for x, y in chunks:
        read.add(x, y)
        if trained_as is not None:
            trained.add(trained_as(x), y)
    reference = read.reference(scalar_model)
    if trained_as is None:
        return reference
    return replace(reference, eigenvalues=trained.reference().eigenvalues)


class RFactor:
    """The R factor of the design matrix [X 1 Y], reduced chunk by chunk (a
    tall-skinny QR: 12×12 for 10 features and one output), so memory stays
    small for millions of rows and the data can be read as it is used.

    `numpy.linalg.lstsq` then solves R θ = QᵀY, which has the same
    (minimum-norm) solution as lstsq on [X 1] itself, one column per output.
    """

    def __init__(self):
        self.r, self.rows, self.outputs = None, 0, None

    def add(self, x, y) -> None:
        y = np.asarray(y, dtype=np.float64)
        self.outputs = None if y.ndim == 1 else y.shape[1]
        block = np.column_stack([np.asarray(x, dtype=np.float64), np.ones(len(y)),
                                 y.reshape(len(y), -1)])
        self.r = np.linalg.qr(block if self.r is None else np.vstack([self.r, block]), mode="r")
        self.rows += len(y)

    def reference(self, scalar_model: bool = False) -> Reference:
        """The optimum, its loss and the Hessian's eigenvalues of the rows added."""
        n, outputs = self.rows, self.outputs
        k = outputs or 1
        columns = self.r.shape[1]
        r = np.vstack([self.r, np.zeros((max(columns - len(self.r), 0), columns))])
        p = columns - k  # parameters per output: d weights and b
        r_a, q_t_y, residual = r[:p, :p], r[:p, p:], r[p:, p:]
        theta, *_ = np.linalg.lstsq(r_a, q_t_y, rcond=None)
        loss = float((np.sum((r_a @ theta - q_t_y) ** 2) + np.sum(residual ** 2)) / (n * k))
        eigenvalues = np.linalg.eigvalsh((2.0 / (n * k)) * r_a.T @ r_a)
        if outputs is not None:
            return Reference(w=theta[:-1], b=theta[-1], loss=loss, eigenvalues=eigenvalues)
        w = theta[0, 0] if scalar_model else theta[:-1, 0]
        return Reference(w=np.asarray(w), b=float(theta[-1, 0]), loss=loss,
                         eigenvalues=eigenvalues)
