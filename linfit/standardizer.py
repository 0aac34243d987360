"""Standardisation: features scaled to zero mean and unit variance, and a linear
model's weights mapped between the two unit systems. NumPy only."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from linfit.data_files import CHUNK_ROWS
from linfit.errors import DataError


@dataclass(frozen=True)
class Standardizer:
    """Scales features to zero mean and unit variance, and maps a linear
    model's weights between the two unit systems.

    With x_s = (x − mean) / std, the model x_s·w_s + b_s equals x·w + b for
    w = w_s / std and b = b_s − Σ w_s·mean / std.
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, feature_names: tuple[str, ...] = ()) -> "Standardizer":
        x = np.asarray(x)
        return cls.from_chunks(lambda: (np.asarray(x[start:start + CHUNK_ROWS], np.float64)
                                        for start in range(0, len(x), CHUNK_ROWS)),
                               feature_names)

    @classmethod
    def from_chunks(cls, chunks: Callable[[], Iterator[np.ndarray]],
                    feature_names: tuple[str, ...] = (),
                    summed: Callable[[np.ndarray], np.ndarray] | None = None) -> "Standardizer":
        """From the features in chunks of CHUNK_ROWS rows (`chunks()` gives them
        again for the second pass): means and deviations in float64, summed chunk
        by chunk, so streamed data and the same data in memory give the same bits.
        On a worker of a cluster reading its share of the rows, `summed` adds each
        pass's sums over the workers."""
        summed = summed or (lambda sums: sums)
        total, rows = 0.0, 0
        for chunk in chunks():
            total, rows = total + chunk.sum(axis=0), rows + len(chunk)
        rows = summed(rows)
        mean = summed(total) / rows
        squares = 0.0
        for chunk in chunks():
            squares = squares + ((chunk - mean) ** 2).sum(axis=0)
        std = np.sqrt(summed(squares) / rows)
        # Below float32's smallest normal number TensorFlow's CPU kernels read values
        # as 0 (a streamed file's too), and the weights in data units, w / std, overflow.
        constant = np.flatnonzero(np.atleast_1d(std) < np.finfo(np.float32).tiny)
        if constant.size:
            names = [feature_names[i] if i < len(feature_names) else str(i) for i in constant]
            raise DataError(f"feature(s) {', '.join(names)} are constant (or vary by less "
                            "than 1.2e-38, float32's smallest normal number): standardisation "
                            "cannot scale them; leave them out with data.features")
        return cls(mean=mean, std=std)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.std).astype(np.float32)

    def to_original(self, w, b):
        """(w_s, b_s) on standardised features -> (w, b) on the original ones.

        w is [], [d] or, for k outputs, [d, k] (b then [k]).
        """
        w_original = np.asarray(w, dtype=np.float64) / self._per_feature(w)
        return w_original, self._bias(b) - self._shift(w_original)

    def from_original(self, w, b):
        """(w, b) on the original features -> (w_s, b_s) on standardised ones."""
        w = np.asarray(w, dtype=np.float64)
        return w * self._per_feature(w), self._bias(b) + self._shift(w)

    def _per_feature(self, w) -> np.ndarray:
        """std, shaped to scale w's rows (its features) whatever its outputs."""
        return np.reshape(self.std, (-1, 1)) if np.ndim(w) == 2 else self.std

    def _shift(self, w: np.ndarray):
        """Σ_features w·mean: a number, or one per output."""
        return np.reshape(self.mean, -1) @ w if np.ndim(w) == 2 else float(np.sum(w * self.mean))

    @staticmethod
    def _bias(b):
        return float(b) if np.ndim(b) == 0 else np.asarray(b, dtype=np.float64)

    def to_json(self) -> dict:
        return {"mean": np.atleast_1d(self.mean).tolist(), "std": np.atleast_1d(self.std).tolist()}
