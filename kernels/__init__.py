"""Triton GPU kernels of tconv, shipped as ``tconv.kernels``."""
