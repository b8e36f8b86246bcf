"""Shared fixtures: the ``xp`` namespace fixture and the hypothesis profile.

``xp`` runs a test once per installed array namespace (array-api-strict always, since it catches
non-standard code); a namespace that is not installed is skipped, with the reason.
"""

import importlib
import os
import sys

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))  # tests/reference.py, shared by test modules

# CI must be stable: the same examples every run, no deadline on a loaded 2-core machine.
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=40,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

NAMESPACES = ["numpy", "array_api_strict", "torch", "jax.numpy"]


def _import_namespace(name):
    if name == "jax.numpy":
        jax = pytest.importorskip("jax", reason="jax is not installed")
        jax.config.update("jax_enable_x64", True)
        return importlib.import_module("jax.numpy")
    module = pytest.importorskip(name, reason=f"{name} is not installed")
    if name == "torch":
        import array_api_compat.torch as xp_torch

        return xp_torch
    return module


@pytest.fixture(params=NAMESPACES, scope="session")
def xp(request):
    """An array namespace: the tests build inputs with ``xp.asarray`` and read back by NumPy."""
    return _import_namespace(request.param)


@pytest.fixture
def no_compute(monkeypatch):
    """The CPU backend made to fail loudly if reached: validation must refuse bad input first."""
    from tconv import _cpu

    def reached(*args, **kwargs):
        raise AssertionError("compute reached before validation refused the input")

    monkeypatch.setattr(_cpu, "conv2d_transpose", reached)
    monkeypatch.setattr(_cpu, "conv2d_transpose_backward", reached)
