"""Keras 3's activations, by name, with Keras' formulas and defaults, for any array-API array.

Each function takes the array (and Keras' keyword arguments) and returns an array of the same
namespace, device and dtype. ``get(name)`` is what ``Conv2DTranspose(activation=...)`` uses.
Axis-wise activations (softmax, log_softmax, sparsemax, glu) work on the last axis as Keras' do,
whatever the layer's ``data_format``.

Keras' ``threshold`` is left out: it has no defaults for its arguments, so Keras cannot run it as a
layer activation either.
"""

from __future__ import annotations

import math
import struct

import array_api_compat

__all__ = ["get", "serialize"]

# tf.nn.selu's constants (Klambauer et al., 2017).
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

# erfc below: the series serves |x| < 2, the continued fraction |x| >= 2; these counts reach
# float64's last bits on either side (checked against math.erfc in the tests).
_ERFC_SWITCH = 2.0
_ERFC_SERIES_TERMS = 40
_ERFC_FRACTION_TERMS = 40


def _xp(x):
    return array_api_compat.array_namespace(x)


def _scalar(xp, x, value):
    return xp.asarray(value, dtype=x.dtype, device=array_api_compat.device(x))


def _float32(value: float) -> float:
    """The float32 nearest ``value``: TensorFlow makes some of its constants float32 before
    casting them to the input's dtype, so Keras (on TF) uses these in float64 too."""
    return struct.unpack("f", struct.pack("f", value))[0]


def _erfc(x):
    """The complementary error function, which the array API standard lacks.

    Below the switch: ``erf(a) = 2/sqrt(pi) exp(-a^2) sum_n (2a^2)^n a / (2n+1)!!`` (all terms
    positive, so no cancellation); above: Laplace's continued fraction for ``erfc``.
    """
    xp = _xp(x)
    magnitude = xp.abs(x)
    near = xp.minimum(magnitude, _scalar(xp, x, _ERFC_SWITCH))
    term, total, ratio = near, near, 2 * near * near
    for n in range(1, _ERFC_SERIES_TERMS):
        term = term * ratio / (2 * n + 1)
        total = total + term
    erfc_near = 1 - (2 / math.sqrt(math.pi)) * xp.exp(-near * near) * total
    far = xp.maximum(magnitude, _scalar(xp, x, _ERFC_SWITCH))
    fraction = far
    for k in range(_ERFC_FRACTION_TERMS, 0, -1):
        fraction = far + (k / 2) / fraction
    erfc_far = xp.exp(-far * far) / (math.sqrt(math.pi) * fraction)
    erfc_magnitude = xp.where(magnitude < _ERFC_SWITCH, erfc_near, erfc_far)
    return xp.where(x < 0, 2 - erfc_magnitude, erfc_magnitude)


def linear(x):
    return x


def relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """Keras' ``relu``: ``x`` above ``threshold`` (clipped to ``max_value``), 0 below, minus
    ``negative_slope * max(threshold - x, 0)``."""
    if negative_slope != 0.0 and max_value is None and threshold == 0:
        return leaky_relu(x, negative_slope)
    xp = _xp(x)
    zero = _scalar(xp, x, 0.0)
    if threshold != 0:
        activated = xp.where(x > threshold, x, zero)
    else:
        activated = xp.maximum(x, zero)
    if max_value is not None:
        activated = xp.clip(activated, 0.0, max_value)
    if negative_slope != 0.0:
        activated = activated - negative_slope * xp.maximum(threshold - x, zero)
    return activated


def leaky_relu(x, negative_slope=0.2):
    """TensorFlow's LeakyRelu holds its slope as a float32 attribute."""
    xp = _xp(x)
    return xp.where(x > 0, x, _float32(negative_slope) * x)


def relu6(x):
    xp = _xp(x)
    return xp.clip(x, 0.0, 6.0)


def elu(x, alpha=1.0):
    xp = _xp(x)
    return xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, _scalar(xp, x, 0.0))))


def selu(x):
    return SELU_SCALE * elu(x, SELU_ALPHA)


def celu(x, alpha=1.0):
    xp = _xp(x)
    zero = _scalar(xp, x, 0.0)
    return xp.maximum(x, zero) + alpha * xp.expm1(xp.minimum(x, zero) / alpha)


def gelu(x, approximate=False):
    """Keras 3's default is the exact form, ``x * Phi(x)``; ``approximate`` is the tanh form.
    Constants as tf.nn.gelu has them (two of them float32)."""
    xp = _xp(x)
    if approximate:
        inner = 0.7978845608028654 * (x + _float32(0.044715) * x ** 3)
        return 0.5 * x * (1.0 + xp.tanh(inner))
    return 0.5 * x * _erfc(-x * _float32(0.7071067811865476))


def sigmoid(x):
    xp = _xp(x)
    decay = xp.exp(-xp.abs(x))  # never overflows
    return xp.where(x >= 0, 1 / (1 + decay), decay / (1 + decay))


def hard_sigmoid(x):
    """Keras 3's: ``relu6(x + 3) / 6`` (Keras 2's slope was 0.2)."""
    return relu6(x + 3.0) / 6.0


def hard_silu(x):
    return x * hard_sigmoid(x)


def sparse_sigmoid(x):
    xp = _xp(x)
    return xp.clip(0.5 * (x + 1), 0.0, 1.0)


def log_sigmoid(x):
    return -softplus(-x)


def softplus(x):
    xp = _xp(x)
    return xp.maximum(x, _scalar(xp, x, 0.0)) + xp.log1p(xp.exp(-xp.abs(x)))


def softsign(x):
    xp = _xp(x)
    return x / (1 + xp.abs(x))


def silu(x):
    return x * sigmoid(x)


def squareplus(x, b=4):
    xp = _xp(x)
    return (x + xp.sqrt(x * x + b)) / 2


def sparse_plus(x):
    xp = _xp(x)
    zero = _scalar(xp, x, 0.0)
    return xp.where(x <= -1, zero, xp.where(x < 1, 0.25 * (x + 1) ** 2, x))


def soft_shrink(x, threshold=0.5):
    xp = _xp(x)
    return xp.where(x > threshold, x - threshold,
                    xp.where(x < -threshold, x + threshold, _scalar(xp, x, 0.0)))


def hard_shrink(x, threshold=0.5):
    xp = _xp(x)
    return xp.where(xp.abs(x) > threshold, x, _scalar(xp, x, 0.0))


def hard_tanh(x):
    xp = _xp(x)
    return xp.clip(x, -1.0, 1.0)


def tanh(x):
    return _xp(x).tanh(x)


def tanh_shrink(x):
    return x - tanh(x)


def exponential(x):
    return _xp(x).exp(x)


def mish(x):
    return x * tanh(softplus(x))


def softmax(x, axis=-1):
    xp = _xp(x)
    shifted = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return shifted / xp.sum(shifted, axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    xp = _xp(x)
    shifted = x - xp.max(x, axis=axis, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


def sparsemax(x, axis=-1):
    """Martins & Astudillo's sparsemax, as Keras computes it."""
    xp = _xp(x)
    descending = xp.sort(x, axis=axis, descending=True)
    cumulative = xp.cumulative_sum(descending, axis=axis)
    rank_shape = [1] * x.ndim
    rank_shape[axis] = x.shape[axis]
    ranks = xp.reshape(xp.arange(1, x.shape[axis] + 1, dtype=x.dtype,
                                 device=array_api_compat.device(x)), tuple(rank_shape))
    support = descending - (cumulative - 1) / ranks > 0
    support_size = xp.sum(xp.astype(support, x.dtype), axis=axis, keepdims=True)
    support_sum = xp.sum(xp.where(support, cumulative, _scalar(xp, x, 0.0)), axis=axis,
                         keepdims=True)
    # Keras' tau sums the cumulative sums over the support, where Martins & Astudillo take the
    # last one; the output then need not sum to 1. Kept: Keras is the reference.
    tau = (support_sum - 1) / support_size
    return xp.maximum(x - tau, _scalar(xp, x, 0.0))


def glu(x, axis=-1):
    """The gated linear unit: the first half of ``axis`` times the sigmoid of the second."""
    xp = _xp(x)
    size = x.shape[axis]
    if size % 2:
        raise ValueError(f"glu needs an even size along axis {axis}, got shape {x.shape}")
    first = xp.take(x, xp.arange(size // 2, device=array_api_compat.device(x)), axis=axis)
    second = xp.take(x, xp.arange(size // 2, size, device=array_api_compat.device(x)),
                     axis=axis)
    return first * sigmoid(second)


ACTIVATIONS = {fn.__name__: fn for fn in (
    linear, relu, leaky_relu, relu6, elu, selu, celu, gelu, sigmoid, hard_sigmoid, hard_silu,
    sparse_sigmoid, log_sigmoid, softplus, softsign, silu, squareplus, sparse_plus, soft_shrink,
    hard_shrink, hard_tanh, tanh, tanh_shrink, exponential, mish, softmax, log_softmax,
    sparsemax, glu)}
ACTIVATIONS.update(swish=silu, hard_swish=hard_silu)


def get(identifier):
    """None (-> linear), a Keras activation name, or a callable taking and returning an array."""
    if identifier is None:
        return linear
    if isinstance(identifier, str):
        if identifier not in ACTIVATIONS:
            raise ValueError(f"activation must be a callable or one of {sorted(ACTIVATIONS)}, "
                             f"got {identifier!r}")
        return ACTIVATIONS[identifier]
    if callable(identifier):
        return identifier
    raise TypeError(f"activation must be None, a name or a callable, got {identifier!r}")


def serialize(activation):
    """The name Keras' configs carry for one of these activations; other callables as they are."""
    name = getattr(activation, "__name__", None)
    return name if ACTIVATIONS.get(name) is activation else activation
