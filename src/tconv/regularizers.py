"""Keras' weight regularizers L1, L2 and L1L2: a penalty computed in the weight's own namespace.

Names as Keras 3 has them (``l1``, ``l2``, ``l1l2`` and the class names), plus tf.keras 2's
``l1_l2``, which Keras 3 no longer knows. Beware Keras' defaults: ``"l1"`` and ``"l2"`` mean a
factor of 0.01, Keras 3's ``"l1l2"`` means ``L1L2()``, whose factors are 0 (a zero penalty), and
tf.keras 2's ``"l1_l2"`` means 0.01 for both.
"""

from __future__ import annotations

import math
import numbers

import array_api_compat

from .initializers import Configurable, get_from, serialize_config

__all__ = ["L1", "L1L2", "L2", "get", "serialize"]


def _factor(value, name: str) -> float:
    if (not isinstance(value, numbers.Real) or isinstance(value, bool) or math.isnan(value)
            or math.isinf(value) or value < 0):
        raise ValueError(f"{name} must be a non-negative float, got {value!r}")
    return float(value)


class L1L2(Configurable):
    """``l1 * sum(|x|) + l2 * sum(x**2)``, a scalar array of ``x``'s namespace and dtype."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1, self.l2 = _factor(l1, "l1"), _factor(l2, "l2")

    def __call__(self, x):
        xp = array_api_compat.array_namespace(x)
        penalty = xp.zeros((), dtype=x.dtype, device=array_api_compat.device(x))
        if self.l1:
            penalty = penalty + self.l1 * xp.sum(xp.abs(x))
        if self.l2:
            penalty = penalty + self.l2 * xp.sum(x * x)
        return penalty

    def get_config(self) -> dict:
        return {"l1": self.l1, "l2": self.l2}


class L1(L1L2):
    def __init__(self, l1=0.01):
        super().__init__(l1=l1)

    def get_config(self):
        return {"l1": self.l1}


class L2(L1L2):
    def __init__(self, l2=0.01):
        super().__init__(l2=l2)

    def get_config(self):
        return {"l2": self.l2}


def _tf_keras_l1_l2():
    return L1L2(l1=0.01, l2=0.01)


REGULARIZERS = {"L1": L1, "L2": L2, "L1L2": L1L2, "l1": L1, "l2": L2, "l1l2": L1L2,
                "l1_l2": _tf_keras_l1_l2}


def get(identifier):
    """None, a Keras name, a Keras config dict, or a callable ``array -> scalar array``."""
    return get_from(REGULARIZERS, identifier, "regularizer")


def serialize(regularizer):
    return serialize_config(regularizer, REGULARIZERS, "keras.regularizers")
