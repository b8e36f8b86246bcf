"""Keras' weight constraints MaxNorm, MinMaxNorm, NonNeg and UnitNorm, for any array-API array.

A constraint is a callable ``w -> constrained w`` (a new array; ``w`` is never modified). The norm
constraints take the L2 norm over ``axis`` (an int or a list of ints, Keras' default 0: for a
``Conv2DTranspose`` kernel ``(kh, kw, filters, in_channels)`` that is the kernel-height axis) and
rescale by ``desired / (EPSILON + norm)``, EPSILON being Keras' ``backend.epsilon()``.
"""

from __future__ import annotations

import array_api_compat

from .initializers import Configurable, get_from, serialize_config

__all__ = ["MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm", "get", "serialize"]

EPSILON = 1e-7


def _norms(w, axis):
    xp = array_api_compat.array_namespace(w)
    axis = tuple(axis) if isinstance(axis, (list, tuple)) else axis
    return xp.sqrt(xp.sum(w * w, axis=axis, keepdims=True))


class Constraint(Configurable):
    """A Keras constraint: ``__call__(w)`` returns the projected weights."""


class MaxNorm(Constraint):
    """Norms above ``max_value`` are scaled down to it."""

    def __init__(self, max_value=2, axis=0):
        self.max_value, self.axis = max_value, axis

    def __call__(self, w):
        xp = array_api_compat.array_namespace(w)
        norms = _norms(w, self.axis)
        return w * (xp.clip(norms, 0.0, float(self.max_value)) / (EPSILON + norms))

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}


class MinMaxNorm(Constraint):
    """Norms moved into ``[min_value, max_value]`` at ``rate`` (1: all the way)."""

    def __init__(self, min_value=0.0, max_value=1.0, rate=1.0, axis=0):
        self.min_value, self.max_value, self.rate, self.axis = min_value, max_value, rate, axis

    def __call__(self, w):
        xp = array_api_compat.array_namespace(w)
        norms = _norms(w, self.axis)
        desired = (self.rate * xp.clip(norms, float(self.min_value), float(self.max_value))
                   + (1 - self.rate) * norms)
        return w * (desired / (EPSILON + norms))

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value, "rate": self.rate,
                "axis": self.axis}


class NonNeg(Constraint):
    """Negative weights set to zero."""

    def __call__(self, w):
        xp = array_api_compat.array_namespace(w)
        return xp.maximum(w, xp.zeros((), dtype=w.dtype, device=array_api_compat.device(w)))


class UnitNorm(Constraint):
    """Weights divided by their norm (plus EPSILON)."""

    def __init__(self, axis=0):
        self.axis = axis

    def __call__(self, w):
        return w / (EPSILON + _norms(w, self.axis))

    def get_config(self):
        return {"axis": self.axis}


_CLASSES = (MaxNorm, MinMaxNorm, NonNeg, UnitNorm)
CONSTRAINTS = {cls.__name__: cls for cls in _CLASSES}
CONSTRAINTS.update(max_norm=MaxNorm, min_max_norm=MinMaxNorm, non_neg=NonNeg,
                   unit_norm=UnitNorm)


def get(identifier):
    """None, a Keras name, a Keras config dict, or a callable ``array -> array``."""
    return get_from(CONSTRAINTS, identifier, "constraint")


def serialize(constraint):
    return serialize_config(constraint, CONSTRAINTS, "keras.constraints")
