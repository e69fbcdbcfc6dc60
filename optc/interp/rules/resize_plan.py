"""Per-axis resampling plans for Resize: source coordinates, neighbours and weights.

Follows the vectorized ONNX reference implementation (``onnx.reference.ops.op_resize``)
in float64 numpy; only sizes and attributes go in, so plans never touch tensor data.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Resize attributes that decide how one axis is resampled."""

    mode: str = "nearest"
    transform: str = "half_pixel"
    nearest: str = "round_prefer_floor"
    cubic_a: float = -0.75
    exclude_outside: bool = False
    antialias: bool = False
    extrapolation: float = 0.0


@dataclasses.dataclass(frozen=True)
class AxisPlan:
    """``indices`` (out, taps) into the input axis; ``weights`` per tap (None: nearest,
    one tap); ``outside`` marks outputs set to the extrapolation value."""

    indices: np.ndarray
    weights: np.ndarray | None
    outside: np.ndarray | None


def plan_axis(sampling: Sampling, in_n: int, out_n: int, scale: float,
              roi: tuple[float, float] | None) -> AxisPlan:
    coords, outside = _source_coords(sampling.transform, in_n, out_n, scale, roi)
    if sampling.mode == "nearest":
        picked = _nearest(sampling.nearest, coords, scale)
        return AxisPlan(np.clip(picked, 0, in_n - 1)[:, None], None, outside)
    floor = np.floor(coords)
    # Like the reference, an exact integer coordinate uses ratio 1 on its left pair.
    ratios = np.where(coords == floor, 1.0, coords - floor)
    weights = _weights(sampling, ratios, scale)
    indices = _neighbours(coords, weights.shape[1])
    if sampling.exclude_outside:
        weights = np.where((indices < 0) | (indices >= in_n), 0.0, weights)
        total = weights.sum(axis=1, keepdims=True)
        weights = weights / np.where(total == 0, 1.0, total)
    return AxisPlan(np.clip(indices, 0, in_n - 1), weights, outside)


def _source_coords(transform: str, in_n: int, out_n: int, scale: float,
                   roi: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Input coordinate of every output position along one axis.

    ``length_resized`` of the ONNX formulas is the integer output length, and the
    arithmetic is float32, both as in onnxruntime: a coordinate landing a rounding
    error away from an integer decides which pixel ``floor``/``ceil`` pick.
    """
    y = np.arange(out_n, dtype=np.float32)
    scale = np.float32(scale)
    coords, outside = _transform(transform, y, np.float32(in_n), out_n, scale, roi)
    return coords.astype(np.float64), outside


def _transform(transform: str, y: np.ndarray, in_n: np.float32, out_n: int, scale: np.float32,
               roi: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray | None]:
    one, half = np.float32(1), np.float32(0.5)
    if transform == "align_corners":
        if out_n == 1:
            return np.zeros(1, np.float32), None
        return y * (in_n - one) / np.float32(out_n - 1), None
    if transform == "asymmetric":
        return y / scale, None
    if transform == "pytorch_half_pixel":
        return (np.zeros(1, np.float32) if out_n == 1 else (y + half) / scale - half), None
    if transform == "half_pixel":
        return (y + half) / scale - half, None
    if transform == "half_pixel_symmetric":
        offset = in_n / 2 * (one - np.float32(out_n) / (scale * in_n))
        return offset + (y + half) / scale - half, None
    if transform == "tf_crop_and_resize":
        lo, hi = (np.float32(v) for v in (roi or (0.0, 1.0)))
        if out_n == 1:
            coords = np.full(1, (lo + hi) * half * (in_n - one), np.float32)
        else:
            coords = lo * (in_n - one) + y * (hi - lo) * (in_n - one) / np.float32(out_n - 1)
        return coords, (coords < 0) | (coords > in_n - one)
    raise ValueError(f"unknown coordinate_transformation_mode {transform!r}")


def _nearest(mode: str, coords: np.ndarray, scale: float) -> np.ndarray:
    floor = np.floor(coords)
    frac = coords - floor
    if mode == "simple":  # Upsample / Resize-10, as onnxruntime keeps them
        picked = np.ceil(coords) if scale < 1 else floor
    elif mode == "round_prefer_floor":
        picked = np.where(frac <= 0.5, floor, floor + 1)
    elif mode == "round_prefer_ceil":
        picked = np.where(frac < 0.5, floor, floor + 1)
    elif mode == "floor":
        picked = floor
    elif mode == "ceil":
        picked = np.ceil(coords)
    else:
        raise ValueError(f"unknown nearest_mode {mode!r}")
    return picked.astype(np.int64)


def _weights(sampling: Sampling, ratios: np.ndarray, scale: float) -> np.ndarray:
    """(out, taps) interpolation weights for each output's fractional position."""
    a = sampling.cubic_a
    if sampling.antialias and scale < 1:
        # Downsampling with antialias widens the kernel by 1/scale and renormalizes.
        reach = 1 if sampling.mode == "linear" else 2
        start = int(np.floor(-reach / scale) + 1)
        offsets = np.arange(start, 2 - start)
        args = (offsets[None, :] - ratios[:, None]) * scale
        if sampling.mode == "linear":
            weights = np.clip(1 - np.abs(args), 0, 1)
        else:
            weights = _cubic_kernel(np.abs(args), a)
        return weights / weights.sum(axis=1, keepdims=True)
    if sampling.mode == "linear":
        return np.stack([1 - ratios, ratios], axis=1)
    if sampling.mode == "cubic":
        r = ratios
        return np.stack([
            ((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
            ((a + 2) * r - (a + 3)) * r * r + 1,
            ((a + 2) * (1 - r) - (a + 3)) * (1 - r) * (1 - r) + 1,
            ((a * (2 - r) - 5 * a) * (2 - r) + 8 * a) * (2 - r) - 4 * a,
        ], axis=1)
    raise ValueError(f"unknown resize mode {sampling.mode!r}")


def _cubic_kernel(x: np.ndarray, a: float) -> np.ndarray:
    near = (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1
    far = a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _neighbours(coords: np.ndarray, taps: int) -> np.ndarray:
    """The ``taps`` input positions nearest each coordinate, ties to the smaller ones."""
    pad = int(np.ceil(taps / 2))
    shifted = coords + pad
    base = np.floor(shifted).astype(np.int64)
    frac = shifted - base
    if taps % 2 == 0:
        offset = np.where(frac == 0, -(taps // 2), -(taps // 2) + 1)
    else:
        first = -((taps - 1) // 2)
        offset = np.where(frac <= 0.5, first, first + 1)
    start = base + offset
    return start[:, None] + np.arange(taps)[None, :] - pad
