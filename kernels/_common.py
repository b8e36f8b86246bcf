"""Device helpers shared by the kernels."""

import triton
import triton.language as tl


@triton.jit
def grouped_tile(pid, GEMM_M, GEMM_N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 GROUP_M: tl.constexpr):
    """(tile row, tile column) of program ``pid``, GROUP_M tile rows at a time so that programs
    running together share their operand tiles in L2 (the Triton matmul tutorial's ordering)."""
    tiles_m = tl.cdiv(GEMM_M, BLOCK_M)
    tiles_n = tl.cdiv(GEMM_N, BLOCK_N)
    tiles_per_group = GROUP_M * tiles_n
    first_m = (pid // tiles_per_group) * GROUP_M
    group_rows = min(tiles_m - first_m, GROUP_M)
    tile_m = first_m + ((pid % tiles_per_group) % group_rows)
    tile_n = (pid % tiles_per_group) // group_rows
    return tile_m, tile_n


@triton.jit
def multiply_accumulate(acc, a, b, ACC: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """acc + a @ b: tensor cores through ``tl.dot``, or for float64 a broadcast FMA (no fp64
    ``tl.dot`` is relied on)."""
    if ACC == tl.float64:
        acc += tl.sum(a.to(tl.float64)[:, :, None] * b.to(tl.float64)[None, :, :], axis=1)
    else:
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
    return acc
