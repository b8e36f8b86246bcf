"""Autotuning of the implicit-GEMM kernels: the candidate tiles, the pruning, the decorator.

Every GEMM kernel here names its tile ``BLOCK_M x BLOCK_N`` (output) by ``BLOCK_K`` (reduction),
and receives its GEMM extents as the arguments ``GEMM_M``, ``GEMM_N``, ``GEMM_K``, its
accumulator through ``ACC`` (float64 runs the multiply-accumulate path, everything else
``tl.dot``) and its float32 product precision through ``INPUT_PRECISION``. Why these tiles and
limits: CONTRIBUTING.md, "Tuning notes".

Under ``TRITON_INTERPRET=1`` there is no driver to time configs on (``triton.autotune`` with more
than one config fails with "0 active drivers"), so one small fixed tile is used: it also makes
tiny test shapes hang off every tile edge.
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path

import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction


# Whether triton was imported with its interpreter on (TRITON_INTERPRET=1): that is decided once,
# when triton.language decorates its own helpers (tl.cdiv, tl.sum, ...), so it must be set before
# triton is first imported, and these kernels must be built the same way.
INTERPRETED = isinstance(tl.standard.cdiv, InterpretedFunction)
if INTERPRETED != bool(triton.knobs.runtime.interpret):
    raise RuntimeError(
        "TRITON_INTERPRET changed after triton was imported (triton.language was built "
        f"{'for its interpreter' if INTERPRETED else 'for the GPU'}); set it before the first "
        "import of triton (torch may import triton, e.g. when a torch custom op is registered)"
    )


def _config(block_m, block_n, block_k, num_stages, num_warps):
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k,
                          "GROUP_M": 8}, num_stages=num_stages, num_warps=num_warps)


def config_name(config) -> str:
    """``BLOCK_MxBLOCK_NxBLOCK_K s<stages> w<warps>``, as the static kernel report names it."""
    k = config.kwargs
    return f"{k['BLOCK_M']}x{k['BLOCK_N']}x{k['BLOCK_K']} s{config.num_stages} w{config.num_warps}"


def precision_name(dtype, input_precision) -> str:
    """The operand dtype and float32 product precision as the static report and the roofline
    name them: float16, bfloat16, float32-tf32, float32-ieee, float64."""
    name = str(dtype).removeprefix("torch.")
    return f"{name}-{input_precision}" if name == "float32" else name


# Tensor-core tiles (fp16, bf16, fp32), (BLOCK_M, BLOCK_N, BLOCK_K, num_stages, num_warps).
DOT_CONFIGS = [_config(*tile) for tile in [
    (128, 128, 64, 3, 8),
    (128, 128, 32, 4, 8),
    (128, 64, 32, 4, 4),
    (64, 128, 32, 4, 4),
    (128, 64, 64, 3, 4),
    (64, 64, 64, 4, 4),
    (128, 32, 32, 4, 4),
    (64, 32, 32, 5, 2),
    (32, 64, 32, 5, 2),
    (32, 32, 32, 5, 2),
]]
# float64 has no tensor-core tl.dot here: a broadcast multiply-accumulate over a thin K slice,
# whose BLOCK_M x BLOCK_K x BLOCK_N products are all in registers: 64 float64 values a thread.
FMA_CONFIGS = [_config(*tile) for tile in [
    (64, 64, 4, 2, 8),
    (64, 32, 4, 2, 4),
    (32, 32, 8, 2, 4),
]]
INTERPRETER_CONFIG = _config(32, 16, 16, 1, 4)
GEMM_CONFIGS = [INTERPRETER_CONFIG] if INTERPRETED else DOT_CONFIGS + FMA_CONFIGS

UNFIT_FILE = Path(__file__).with_name("unfit_configs.json")


def load_unfit_configs() -> dict:
    """``{(kernel, precision, arch): config names}`` that spill registers or exceed shared memory
    in the static kernel report (``unfit_configs.json``, which tools/kernel_report.py writes)."""
    listed = json.loads(UNFIT_FILE.read_text())["configs"]
    return {tuple(key.split()): frozenset(names) for key, names in listed.items()}


# Shared memory a config may stage (H100 allows 227 KiB per block; keep room for the epilogue).
_SHARED_MEMORY_BUDGET = 160 * 1024
# What every GEMM kernel is tuned per (triton adds the argument dtypes itself).
_GEMM_KEY = ("GEMM_M", "GEMM_N", "GEMM_K", "KD", "KH", "KW", "STRIDE_D", "STRIDE_H", "STRIDE_W",
             "DEPTH", "INPUT_PRECISION")


def _fits(extent: int, block: int, smallest: int) -> bool:
    """A block twice the (power-of-two rounded) extent only computes padding, unless it is the
    smallest block offered."""
    return block == smallest or block < 2 * triton.next_power_of_2(extent)


def _argument(named_args, kwargs, name):
    return named_args.get(name, kwargs.get(name))


def gpu_arch(device) -> str | None:
    """The static report's name for the GPU of ``device`` (sm_80 for compute capability 8.x,
    sm_90a for 9.x), None for another GPU or none."""
    if getattr(device, "type", None) != "cuda":
        return None
    import torch

    return {8: "sm_80", 9: "sm_90a"}.get(torch.cuda.get_device_capability(device)[0])


def prune_gemm_configs(configs, named_args, *, kernel, unfit, arch=None, **kwargs):
    """Keep the configs of the operand dtype's path that ``unfit`` (``{(kernel, precision,
    arch): config names}``, :func:`load_unfit_configs`) does not list for this
    ``kernel`` (``kernel + "3d"`` when it walks depth), precision and ``arch`` (default: the
    operands' GPU), and whose tiles fit the GEMM and shared memory."""
    path = FMA_CONFIGS if _argument(named_args, kwargs, "ACC") == tl.float64 else DOT_CONFIGS
    operand = next(arg for arg in named_args.values() if hasattr(arg, "element_size"))
    element_bytes = operand.element_size()
    precision = precision_name(operand.dtype, _argument(named_args, kwargs, "INPUT_PRECISION"))
    # a kernel walking depth is listed apart (its own compiles in the report): kernel + "3d"
    geometry = "3d" if _argument(named_args, kwargs, "DEPTH") else ""
    excluded = unfit.get((kernel + geometry, precision, arch or gpu_arch(operand.device)), ())
    candidates = ([c for c in configs if c in path and config_name(c) not in excluded]
                  or [c for c in configs if c in path] or configs)
    extents = {axis: _argument(named_args, kwargs, f"GEMM_{axis}") for axis in "MNK"}
    smallest = {axis: min(c.kwargs[f"BLOCK_{axis}"] for c in candidates) for axis in "MNK"}
    kept = [
        c for c in candidates
        if all(_fits(extents[axis], c.kwargs[f"BLOCK_{axis}"], smallest[axis]) for axis in "MNK")
        and (c.kwargs["BLOCK_M"] + c.kwargs["BLOCK_N"]) * c.kwargs["BLOCK_K"] * element_bytes
        * max(c.num_stages, 1) <= _SHARED_MEMORY_BUDGET
    ]
    return kept or candidates[-1:]


def supports_disk_cache() -> bool:
    return "cache_results" in inspect.signature(triton.autotune).parameters


def autotune_gemm(kernel: str, *extra_key: str):
    """``triton.autotune`` of GEMM kernel ``kernel`` (forward, dgrad, wgrad) over
    :data:`GEMM_CONFIGS`, pruned, keyed on the GEMM geometry and ``extra_key`` (the operand dtypes
    are part of every key), results cached on disk where this triton can."""
    options = {"cache_results": True} if supports_disk_cache() else {}
    prune = functools.partial(prune_gemm_configs, kernel=kernel, unfit=load_unfit_configs())
    return triton.autotune(configs=GEMM_CONFIGS, key=[*_GEMM_KEY, *extra_key],
                           prune_configs_by={"early_config_prune": prune}, **options)
