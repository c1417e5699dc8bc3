"""The invertible-in-distribution encoding of zero-suppressed showers that the two flows of
:class:`~pyroflows.calo.TwoStepGenerator` are trained on.

A zero-suppressed voxel is either exactly 0 (its true value fell below the threshold ``t``)
or at least ``t``. Flows need continuous, positive inputs, so:

1. **dequantise**: every exact zero is replaced by ``t * u`` with ``u ~ U(floor, 1 - 2r)``
   (or log-uniform on that range; a value below the threshold, where the suppressed voxel's
   energy lay), ``r = ROUNDING`` a relative margin of 1e-5; voxels ``>= t`` are kept.
   :func:`threshold` undoes this exactly, also after a float32 round trip: values below
   ``t (1 - r)`` -> exactly 0, values in ``[t (1 - r), t)`` (a kept voxel on the threshold
   that rounding moved below it) -> ``t``. A model of the dequantised showers so gives exact
   zeros where it puts mass below the threshold;
2. **layer energies** ``E_l`` are the sums of the dequantised voxels of each layer (all > 0),
   encoded for flow I as ``log(sum_l E_l / E_inc)`` and, for each layer but the last,
   ``logit(E_l / sum_{k >= l} E_k)`` (the share of what is left deposited in layer ``l``): a
   bijection between ``(0, inf)^L`` and ``R^L`` given ``E_inc``;
3. **voxel shares** ``v / E_l`` of the dequantised voxels (in ``(0, 1)``), encoded for flow II
   as ``logit(share)``. Decoding renormalises the shares of each layer to sum 1 (a flow's
   draws need not) and multiplies by the layer's energy.

All maps work on float64 numpy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "ROUNDING",
    "decode_layer_energies",
    "decode_voxels",
    "dequantise",
    "encode_layer_energies",
    "encode_voxels",
    "layer_sums",
    "threshold",
]


#: relative margin below the threshold: dequantised zeros stay under ``t (1 - 2 ROUNDING)``,
#: and :func:`threshold` keeps values from ``t (1 - ROUNDING)`` up (float32 rounds to ~6e-8)
ROUNDING = 1e-5


def _bounds(layer_sizes: Sequence[int]) -> np.ndarray:
    return np.cumsum((0, *layer_sizes))


def layer_sums(voxels: np.ndarray, layer_sizes: Sequence[int]) -> np.ndarray:
    """Per-layer sums of ``voxels`` ``(n, sum(layer_sizes))`` -> ``(n, len(layer_sizes))``."""
    b = _bounds(layer_sizes)
    return np.stack([voxels[:, b[i] : b[i + 1]].sum(1) for i in range(len(layer_sizes))], 1)


def dequantise(
    voxels: np.ndarray,
    cut: float,
    rng: np.random.Generator,
    floor: float = 1e-3,
    log: bool = False,
) -> np.ndarray:
    """Exact zeros -> ``cut * U(floor, 1 - 2 ROUNDING)`` (``log=True``: log-uniform on that
    range); other voxels kept (they must be 0 or ``>= cut``).

    Example:
        >>> v = np.array([[0.0, 0.5, 0.02]])
        >>> d = dequantise(v, 0.01, np.random.default_rng(0))
        >>> bool(0 < d[0, 0] < 0.01), d[0, 1:].tolist()
        (True, [0.5, 0.02])
    """
    if (voxels < 0).any() or ((voxels > 0) & (voxels < cut)).any():
        raise ValueError(
            f"voxels must be exactly 0 or at least the threshold {cut}: got values in (0, "
            f"{cut}) or negative ones (were the showers zero-suppressed at this threshold?)"
        )
    out = voxels.astype(np.float64, copy=True)
    zero = out == 0
    if not 0 < floor < 1 - 2 * ROUNDING:
        raise ValueError(f"floor must lie in (0, {1 - 2 * ROUNDING}), got {floor!r}")
    top = 1 - 2 * ROUNDING
    if log:
        u = np.exp(rng.uniform(np.log(floor), np.log(top), int(zero.sum())))
    else:
        u = rng.uniform(floor, top, int(zero.sum()))
    out[zero] = cut * u
    return out


def threshold(voxels: np.ndarray, cut: float) -> np.ndarray:
    """The inverse of :func:`dequantise`: values below ``cut (1 - ROUNDING)`` -> exactly 0,
    values in ``[cut (1 - ROUNDING), cut)`` -> ``cut``; the result is 0 or ``>= cut``.

    Example:
        >>> threshold(np.array([0.0099, 0.01 * (1 - 1e-7), 0.01, 0.5]), 0.01).tolist()
        [0.0, 0.01, 0.01, 0.5]
    """
    out = np.where(voxels < cut * (1 - ROUNDING), 0.0, voxels)
    return np.where((out > 0) & (out < cut), cut, out)


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def encode_layer_energies(layer_energies: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """Positive layer energies ``(n, L)`` and incident energies ``(n,)`` -> ``(n, L)`` reals."""
    if (layer_energies <= 0).any():
        raise ValueError("layer energies must be > 0 (dequantise the voxels first)")
    left = np.cumsum(layer_energies[:, ::-1], axis=1)[:, ::-1]  # sum_{k >= l} E_k
    share = layer_energies[:, :-1] / left[:, :-1]
    return np.column_stack([np.log(left[:, 0] / energy), _logit(share)])


def decode_layer_energies(features: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """The inverse of :func:`encode_layer_energies`."""
    left = energy * np.exp(features[:, 0])
    out = np.empty_like(features)
    for i in range(features.shape[1] - 1):
        out[:, i] = _sigmoid(features[:, i + 1]) * left
        left = left - out[:, i]
    out[:, -1] = left
    return out


def encode_voxels(voxels: np.ndarray, layer_sizes: Sequence[int]) -> np.ndarray:
    """Positive (dequantised) voxels -> logits of their shares of their layer's energy."""
    sums = np.repeat(layer_sums(voxels, layer_sizes), layer_sizes, axis=1)
    return _logit(voxels / sums)


def decode_voxels(
    features: np.ndarray, layer_energies: np.ndarray, layer_sizes: Sequence[int]
) -> np.ndarray:
    """Logits of shares and layer energies -> voxels: the shares of each layer renormalised
    to sum 1, times the layer's energy (the inverse of :func:`encode_voxels` on its image)."""
    share = _sigmoid(features)
    sums = np.maximum(layer_sums(share, layer_sizes), np.finfo(np.float64).tiny)
    share = share / np.repeat(sums, layer_sizes, axis=1)
    return share * np.repeat(layer_energies, layer_sizes, axis=1)
