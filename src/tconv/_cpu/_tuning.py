"""The CPU path's measured choices (how big a piece of the input is, which products layout the
forward places) as one value the entry points take; ``None`` fields take the measured rules here,
tests set them to reach every path on small shapes."""

from __future__ import annotations

import math
from dataclasses import dataclass

from array_api_compat import is_jax_namespace, is_numpy_namespace, is_torch_namespace

from .._spec import ConvTransposeSpec

# Workspace per forward piece. A piece's products stay in cache while they are placed: with the
# products of the whole batch in memory, placing them cost more than the GEMM on the benchmark
# layers; in cache-sized pieces the GEMM runs as fast (or faster) and placing costs a fraction.
CACHE_BYTES = 8 * 2**20
# Products of a forward piece on NumPy worth a thread of their own (see forward_budget): from
# this up, two pieces a turn placed on two threads beat one piece whose adds run on one thread
# while the other waits; smaller pieces cost more in calls and turns than they share.
SHARED_PIECE_BYTES = 2**20
# A taps-outermost layer with at most this many filters copies one filter at a time (see
# few_filters).
FEW_FILTERS = 8
# JAX cannot add into a buffer in place (outside jit each piece would copy the whole output), so
# it runs in one piece unless the products exceed this memory bound.
WORKSPACE_BYTES = 256 * 2**20
# Windows per piece of the forward by phase: each phase's GEMM reads them again, so they should
# stay in cache, and each piece is one GEMM call per phase (each a 2-thread BLAS barrier, slow
# on a loaded machine). HiFi-GAN's up3/up4 (1 thread, CPU time) took the same with 1, 2 and 4
# MiB pieces, a fifth more with 8; on 2 threads at load 6, 4 MiB ran 1.1-2.3x faster than 1 MiB
# (wall, best of 10).
PHASE_WINDOW_BYTES = 4 * 2**20
# Rank-1 inputs at least this long go by phase (see by_phase).
PHASE_MIN_ROWS = 1024
# Rank-1 inputs at least this long take the backward by shifts (see backward_by_shifts).
SHIFTS_MIN_ROWS = 1024
# torch's strided adds of short runs beat NumPy's (see taps_outermost): by cells, torch needs the
# placements' adds to move this many times more values than NumPy does (see by_cells).
TORCH_ADDS_SPEEDUP = 1.25


@dataclass(frozen=True)
class Tuning:
    """``piece_pixels``: input pixels per piece (runs of whole images when one fits, else bands
    along the first spatial axis of one image; by phase, windows instead of input pixels);
    ``taps_outermost``: the forward's products layout (and, with a few filters, the backward's
    windows: :func:`few_filters`); ``by_phase``: the forward by stride phase
    (:mod:`._phases`) instead of multiply-then-place; ``by_cells``: the forward by cells
    (:mod:`._cells`; by cells, ``piece_pixels`` counts cells); ``backward_by_cells``: the
    backward over cells of ``dy`` instead of windows (:mod:`._backward`); ``backward_by_shifts``:
    the rank-1 backward by cell shifts where it applies (:func:`backward_by_shifts`). ``None``:
    measured."""

    piece_pixels: int | None = None
    taps_outermost: bool | None = None
    by_phase: bool | None = None
    by_cells: bool | None = None
    backward_by_cells: bool | None = None
    backward_by_shifts: bool | None = None


def by_phase(xp, spec: ConvTransposeSpec, tuning: Tuning) -> bool:
    """Whether the forward goes by stride phase (:mod:`._phases`).

    Each phase's GEMM multiplies one image's windows at a time (``W`` rows along the last
    axis), so it wins where those runs are long: HiFi-GAN's up3 and up4 (k4 s2, 2048 and 4096
    samples; one thread, CPU time on the loaded 2-core VM, best of 5-8, five runs) took
    0.62-0.82x of multiply-then-place's time on NumPy and 0.64-0.93x on torch; up2 (k16 s8, 256
    samples) broke even (0.95-1.06x) and up1 (32 samples) took 1.4x, as did the 2-D and 3-D
    layers (pix2pix_u6 1.1-1.25x, dcgan_g2's 7-wide images 1.5-3.6x, unet3d_k3 1.2-1.35x; fcn_x8
    0.9x on NumPy, 1.4x on torch), where a phase's rows are one image row each. On 2 threads at
    load 5-6 the wall times went the other way (up3 1.2-1.5x, up4 1.1-1.3x, best of 10): each
    piece is one GEMM call per phase, a 2-thread barrier that a loaded machine stalls. On the idle
    VM (2 threads, wall, best of 8, interleaved) the phases won: up3 41.5 -> 22.1 ms on NumPy,
    40.6 -> 30.5 on torch; up4 23.9 -> 21.4 and 24.9 -> 20.3; up2 forced by phase 48.6 -> 44.3
    on NumPy but 48.7 -> 50.3 on torch, so it stays below the length threshold. Unmeasured on
    JAX (whose placement runs in one piece) and for groups or dilation, which take the
    placements."""
    if tuning.by_phase is not None:
        return tuning.by_phase
    return ((is_numpy_namespace(xp) or is_torch_namespace(xp)) and spec.rank == 1
            and spec.groups == 1 and spec.dilation_rate == (1,)
            and spec.in_spatial[-1] >= PHASE_MIN_ROWS)


def by_cells(xp, spec: ConvTransposeSpec, tuning: Tuning) -> bool:
    """Whether the forward goes by cells (:mod:`._cells`): where the values it moves besides its
    GEMM are fewer than the placements' adds move.

    For a kernel a whole number of strides long, undilated (no zero rows in the cells' kernel,
    so the same FLOPs as multiply-then-place), per cell (about one input pixel) the placements add
    ``prod(k) * F = span^rank * s^rank * F`` products into the output, while the cells copy a
    window of ``span^rank * Cin`` values, the products' ``s^rank * F`` into the output and their
    share of the gathered kernel (``prod(k) * F * Cin`` over every cell). On one thread (CPU time,
    best of 3 interleaved rounds of 3, the VM at load 5, 2026-11-26 05:03; main's path / cells,
    ms, NumPy; torch) that picks fcn_x8 (17.0 / 9.8; 17.7 / 10.5: 1630 values moved against
    5376) and HiFi-GAN's up2 on NumPy (77.1 / 71.5, 0.85-0.93x in three more runs: 1664 against
    2048), not on torch (75.0 / 78.2; 0.82-1.22x over four runs: torch adds faster). It leaves up1
    (34.8 / 35.6; 38.4 / 39.6: its 8 MB kernel gathered for 528 cells, 7044 against 4096),
    pix2pix_u6 (34.7 / 36.8; 37.1 / 37.9: 1342 against 1024) and up3, up4 to the phases (43.1 /
    43.8, 26.2 / 30.1; 55.3 / 58.7, 32.2 / 33.3). Kernels off the stride grid (zero rows: 1.4-2.4x
    the FLOPs) lost on cvae_d1 (1.89 / 2.17; 1.81 / 2.29), seg_up4 (70 / 86; 62 / 109), dcgan_g2
    (116 / 169; 99 / 167), dcgan_g3 and pix2pix_out (windows of 64-128 channels for 1-3 filters:
    2.6-7x), as did kernel == stride on unet_up1 (175 / 182; 195 / 212), which the placements set
    once; unet3d_k3 (1643 / 1463; 1597 / 1762) and unet3d_k2 (305 / 362; 581 / 553) won on one
    namespace each, within this load's noise, so they keep main's path. Unmeasured on JAX, and for
    groups (block-diagonal kernel)."""
    if tuning.by_cells is not None:
        return tuning.by_cells
    if not (is_numpy_namespace(xp) or is_torch_namespace(xp)) or spec.groups != 1:
        return False
    if not all(k % s == 0 and d == 1 for k, s, d
               in zip(spec.kernel_size, spec.strides, spec.dilation_rate)):
        return False
    spans, residues = (math.prod(k // s for k, s in zip(spec.kernel_size, spec.strides)),
                       math.prod(spec.strides))
    cells = spec.batch * math.prod(-(-(pad + out) // s) - pad // s for pad, out, s
                                   in zip(spec.pad_before, spec.out_spatial, spec.strides))
    kernel_values = math.prod(spec.kernel_size) * spec.filters * spec.in_channels
    moved = spans * spec.in_channels + residues * spec.filters + kernel_values / max(1, cells)
    adds = spans * residues * spec.filters
    return moved < (adds / TORCH_ADDS_SPEEDUP if is_torch_namespace(xp) else adds)


def backward_by_cells(xp, spec: ConvTransposeSpec, tuning: Tuning) -> bool:
    """Whether the backward goes over cells of ``dy`` instead of gathering each pixel's windows
    (``k^R`` tap slices of ``F`` values) (:mod:`._backward`).

    The cells copy ``s^R*F`` values per pixel in runs of ``s*F``, but compute on a grid padded
    by ``span - 1`` cells per axis, and where ``k`` is not a multiple of ``s`` their weights
    hold zeros. Measured against the windows on the loaded 2-core VM (one thread, CPU time,
    best of 3, interleaved, ms), they win only where the gather is the cost, many taps per
    shift of few filters: fcn_x8 (k16 s8, 21 filters) backward 46.3 -> 23.7 on NumPy, 41.2 ->
    28.6 on torch, forward+backward 77.0 -> 47.2 and 73.1 -> 46.4 (2 threads, wall, best of 25
    at load 2: backward 22.2 -> 10.1 and 18.8 -> 8.9, forward+backward 29.8 -> 16.9 and 26.8
    -> 16.4; at load 4-6 torch's many small parallel ops stalled, 131 -> 288). The backward
    elsewhere, NumPy / torch: even or worse on kernels that are multiples of the stride
    (hifigan_up2, k16 s8 in 1-D, 157 -> 145 / 160 -> 179; hifigan_up1 64 -> 73 / 76 -> 96;
    pix2pix_u6 74 -> 88 / 80 -> 94; unet_up1 386 -> 395 / 449 -> 443; unet3d_k2 760 -> 804 /
    864 -> 856), worse off it (seg_up4 155 -> 253 / 178 -> 365; dcgan_g2 212 -> 433 / 272 ->
    594; cvae_d1 4.9 -> 7.0 / 5.1 -> 8.7; hifigan_up3 84 -> 120 / 101 -> 140; hifigan_up4 65
    -> 97 / 64 -> 113; unet3d_k3 2912 -> 4951 / 2850 -> 5188), most of all with 1-3 filters
    (dcgan_g3 16 -> 207 / 17 -> 300; pix2pix_out 16 -> 53 / 14 -> 87). Hence: undilated,
    ungrouped, ``k`` a multiple of ``s`` but not ``s`` itself (there the windows are one
    reordering copy of ``dy``'s cells already: k4 s4, 8 x 32^2 x 64 -> 32 filters, 37.2 -> 38.7
    / 32.2 -> 36.2; k8 s8 on fcn_x8's input 9.5 -> 9.4 / 6.8 -> 8.2), at least 16 taps per cell
    shift (``prod(strides)``); NumPy and torch (JAX unmeasured)."""
    if tuning.backward_by_cells is not None:
        return tuning.backward_by_cells
    return ((is_numpy_namespace(xp) or is_torch_namespace(xp)) and spec.groups == 1
            and spec.dilation_rate == (1,) * spec.rank and math.prod(spec.strides) >= 16
            and spec.kernel_size != spec.strides
            and all(k % s == 0 for k, s in zip(spec.kernel_size, spec.strides)))


def backward_by_shifts(xp, spec: ConvTransposeSpec, tuning: Tuning) -> bool:
    """Whether the rank-1 backward goes by cell shifts (:mod:`._backward`): GEMMs straight on
    views of ``dy``, no windows gathered.

    It applies to rank 1, undilated, ungrouped, ``k`` a multiple of ``s`` (a :class:`Tuning`
    asks for it there only). Measured against the windows on the shared 2-core VM, 2026-11-26
    07:10-07:51 (load 3-5: another agent's A/B and test runs; backward, ms, windows -> shifts):
    one thread, CPU time, best of 5-7, two runs: HiFi-GAN up4 (k4 s2, 4096 samples) NumPy 61 ->
    55 and 69 -> 50, torch 60 -> 44 and 77 -> 49; up3 (k4 s2, 2048) NumPy 78 -> 76 and 82 ->
    78, torch 83 -> 72 and 93 -> 72; up2 (k16 s8, 256) NumPy 128 -> 126 and 129 -> 121, torch
    142 -> 131 and 163 -> 128; up1 (32 samples: short GEMMs) lost, 57 -> 74 / 60 -> 92.
    Forward+backward on torch inputs (one thread, CPU time, best of 7): up4 113 -> 73 (torch's
    conv_transpose1d 115), up3 149 -> 120 (178); two threads, wall, best of 20 at load 2-3
    (08:00): up4 71 -> 48 (torch's best 68), up3 114 -> 89 (119).
    Two threads, wall, best of 15-20, interleaved: torch up4 73 -> 42 and 139 -> 96 (torch's own
    conv_transpose1d 41, 121), up3 110 -> 69 and 221 -> 144 (69, 150), up2 121 -> 119, 242 ->
    271, 103 -> 262 (even to worse); NumPy lost at that load (up4 47 -> 41 once, then 96 -> 185
    and 196 -> 264; up3 90 -> 131, 116 -> 238): its four 2-thread OpenBLAS calls (against the
    windows' two; the gather they save is one-threaded) each stall when the other agents hold a
    core (at load 3, 08:01, best of 15 even, up4 99 -> 98, up3 65 -> 64, but up4's median 129 ->
    3244: single calls of its dkernel GEMM, 64 x 64 reducing over 65534 rows, stalled for
    seconds), while one-threaded it won (NumPy alone, wall: up4 122 -> 67, up2 219 -> 203).
    Under NumPy's fixed row blocks (:mod:`._blas`, no OpenBLAS barriers) on the idle VM (2
    threads, wall, best of 8, 3 interleaved rounds, 08:29 and 08:31, default -> shifts): up4 45.0
    -> 40.5 and 58.1 -> 39.3, up3 61.1 -> 58.2 and 69.5 -> 64.7 (up2 92.7 -> 84.9 and 76.3 -> 71.9,
    below the length rule). Hence NumPy and torch from 1024 samples (SHIFTS_MIN_ROWS) and ``k >
    s``; JAX and the other namespaces are unmeasured."""
    applies = (spec.rank == 1 and spec.groups == 1 and spec.dilation_rate == (1,)
               and spec.kernel_size[0] % spec.strides[0] == 0)
    if tuning.backward_by_shifts is not None:
        return tuning.backward_by_shifts and applies
    return ((is_numpy_namespace(xp) or is_torch_namespace(xp)) and applies
            and spec.kernel_size != spec.strides and spec.in_spatial[0] >= SHIFTS_MIN_ROWS)


def backward_cells_budget(xp, spec: ConvTransposeSpec, spans, bytes_per_pixel: int,
                          itemsize: int) -> int:
    """Cells per piece of the backward over cells, in bytes: :func:`backward_budget`'s, but a
    band of rows holds at least 8 rows per row of cells it carries past its own (``span - 1``
    along the first axis), which it would otherwise multiply again."""
    row_bytes = bytes_per_pixel * math.prod(spec.in_spatial[1:])
    return max(backward_budget(xp, spec, bytes_per_pixel, itemsize),
               8 * (spans[0] - 1) * row_bytes)


def taps_outermost(xp, spec: ConvTransposeSpec, tuning: Tuning) -> bool:
    """Which products layout places faster: an add moves runs of ``taps per block x filters``
    contiguous values with filters innermost, or of ``in_width`` values (the last spatial axis)
    with taps outermost.
    NumPy's strided add is slow on runs of a few values, so image outputs (1-3 filters) take the
    latter there (pix2pix's 3-filter output: 6.0 -> 4.0 ms); torch's add vectorizes short runs
    and the taps-outermost GEMM and adds cost it more (2.9 -> 4.3 ms), so torch never does."""
    if tuning.taps_outermost is not None:
        return tuning.taps_outermost
    return (not is_torch_namespace(xp)
            and spec.filters_per_group * spec.strides[-1] < spec.in_spatial[-1])


def few_filters(spec: ConvTransposeSpec) -> bool:
    """Whether a taps-outermost layer (:func:`taps_outermost`) copies its result, gathers its
    backward's windows and sums its bias gradient one filter at a time: a copy or sum with a few
    filters innermost moves runs of those few values. NumPy, ``(1, 256, 256, F)`` float32, ms,
    one pass with filters innermost / one per filter: result copy F=3 0.34 / 0.08, F=8 0.53 /
    0.34, F=16 0.75 / 1.33; bias gradient F=3 1.34 / 0.10, F=16 1.85 / 1.11; window gather (16
    taps) F=3 2.2 / 0.7, F=16 10.1 / 7.3; at 64 filters (cvae_d1 on 256^2 images) the per-filter
    copies' strided writes took the forward from 135 to 280 ms."""
    return spec.filters <= FEW_FILTERS


def multiplies_into_output(xp, spec: ConvTransposeSpec) -> bool:
    """Whether a set-once forward lets NumPy's ``matmul(out=)`` write the products straight into
    the output (one small GEMM per row of the first axes, ``W`` rows each) instead of one GEMM
    per piece and a copy. With few input channels the GEMM is bound by writing its output, and
    skipping the copy wins (unet3d's k2 s2, 32 channels: about 3x); with many, BLAS re-packs
    the kernel for every small GEMM and loses (unet_up1, 1024 channels: 274 -> 855 ms). Groups
    take the array-API path."""
    return is_numpy_namespace(xp) and spec.groups == 1 and spec.in_channels <= 64


def phase_budget(xp) -> int:
    return WORKSPACE_BYTES if is_jax_namespace(xp) else PHASE_WINDOW_BYTES


def cells_budget(xp) -> int:
    """Windows and products per piece of the forward by cells."""
    return WORKSPACE_BYTES if is_jax_namespace(xp) else CACHE_BYTES


def multiplies_into_scratch(xp, spec: ConvTransposeSpec) -> bool:
    """Whether torch multiplies each piece of a placement with filters innermost into one reused
    products buffer (``mm(out=)``; a set-once forward, the other side of
    :func:`multiplies_into_output`, with the bias in the GEMM: ``addmm(out=)``) instead of the
    array-API way, a products array per piece (and the bias in a pass of its own): a fresh tensor
    per piece took new heap each piece (:class:`._arrays.Scratch`; dcgan_g2's forward+backward 114
    -> 81 MB with the backward's reused windows). Groups take the array-API path."""
    return is_torch_namespace(xp) and spec.groups == 1


def forward_budget(xp, spec: ConvTransposeSpec, bytes_per_pixel: int) -> int:
    """Products per forward piece: a cache size; on NumPy, whose pieces go over the caller's
    threads in turns (:func:`disjoint_turns`), at most the size that puts two pieces in every
    turn where those hold :data:`SHARED_PIECE_BYTES` or more: a layer of one piece (or of bands
    meeting their neighbours, one a turn) adds its products on one thread while the others
    wait. NumPy, 2 threads, wall, median of 12-25 interleaved round bests, ms, one cache size
    -> two a turn: dcgan_g3 7.1 -> 6.3 and 8.4 -> 6.8, pix2pix_u6 31.3 -> 25.4, cvae_d1 and
    hifigan_up1 even; with pieces of 0.4-0.6 MB, bands of dcgan_g2 on 16^2 images (1.6-2.1 ->
    2.7-3.3) and cvae_d1 on 32^2 (1.5-1.6 -> 1.6-2.2) lost."""
    if is_jax_namespace(xp):
        return WORKSPACE_BYTES
    shared = bytes_per_pixel * _two_a_turn(spec)
    if is_numpy_namespace(xp) and shared >= SHARED_PIECE_BYTES:
        return min(CACHE_BYTES, shared)
    return CACHE_BYTES


def _two_a_turn(spec: ConvTransposeSpec) -> int:
    """Input pixels per piece that put two pieces in every turn: half the images, else bands of
    half an image's rows where bands meet nothing, of a quarter (at least ``reach`` rows, so
    that even and odd bands go in two turns) where they meet their neighbours."""
    image = math.prod(spec.in_spatial)
    if spec.batch > 1:
        return -(-spec.batch // 2) * image
    rows = spec.in_spatial[0]
    reach = _reach(spec)
    band = -(-rows // 2) if reach == 0 else max(reach, -(-rows // 4))
    return band * (image // rows)


def backward_budget(xp, spec: ConvTransposeSpec, bytes_per_pixel: int, itemsize: int) -> int:
    """Windows of a few cache sizes go in one piece: each further piece costs a copy of its dx
    rows and a slice per tap (fcn_x8's 256 taps), which outweighs the cache. Above that, a piece's
    windows are read by two GEMMs next to its dx rows: half the forward's budget; and each piece
    adds a partial dkernel, so pieces hold at least 16 of those to keep the adds a small share."""
    windows_bytes = bytes_per_pixel * spec.batch * math.prod(spec.in_spatial)
    if is_jax_namespace(xp):
        return WORKSPACE_BYTES
    if windows_bytes <= 4 * CACHE_BYTES:
        return windows_bytes
    kernel_bytes = math.prod(spec.kernel_size) * spec.filters * itemsize
    return max(CACHE_BYTES // 2, 16 * kernel_bytes * spec.channels_per_group)


def pieces_make_no_tensors(xp, spec: ConvTransposeSpec) -> bool:
    """Whether the backward by windows takes its pieces with no tensor made per piece (torch, one
    group: :func:`._backward._torch_piece`): each piece's ``dx`` rows go straight into ``dx`` (or
    a reused buffer) and ``dkernel`` sums by ``addmm_``, not by adding partials."""
    return is_torch_namespace(xp) and spec.groups == 1


def backward_windows_budget(xp, spec: ConvTransposeSpec, bytes_per_pixel: int,
                            itemsize: int) -> int:
    """Windows per piece of the backward by windows: :func:`backward_budget`'s, at most
    :data:`CACHE_BYTES` where the pieces make no tensors (:func:`pieces_make_no_tensors`). There
    neither a copy of each piece's ``dx`` rows nor partial ``dkernel`` adds pay for whole windows
    of up to 4 cache sizes or pieces of 16 partial kernels, and those windows were most of a
    layer's memory above torch's own convolution (forward+backward, MB above the inputs, tconv
    / torch's best layout, 4 cache sizes -> 1: pix2pix_u6 71 -> 61 / 62, unet_up1 118 -> 97 /
    108, HiFi-GAN's up2 107 -> 75 / 97, up4 110 -> 85 / 101: the windows were 16-32 MB). One
    thread, CPU time, best of 6-8, interleaved, on the loaded VM, whole windows -> pieces of a
    cache size, ms: hifigan_up2 131 -> 127, hifigan_up4 58.5 -> 51.0, pix2pix_u6 66.6 -> 64.6,
    unet_up1 (4 pieces of one image) 345 -> 353; half a cache size gave about the same, but each
    piece is two more GEMM calls, whose 2-thread barriers a loaded machine stalls (2 threads,
    wall, at load 4-5: too noisy to rank, dcgan_g2's 21 pieces of 4 MB once 895 against 584 ms
    for its 7 of 13 MB)."""
    budget = backward_budget(xp, spec, bytes_per_pixel, itemsize)
    return min(budget, CACHE_BYTES) if pieces_make_no_tensors(xp, spec) else budget


def input_pieces(spec: ConvTransposeSpec, pixels: int):
    """``(n0, n1, r0, r1)`` pieces of the input of at most ``pixels`` pixels (at least one row:
    one index of the first spatial axis, with all of the others): runs of whole images when one
    fits, else bands of rows of one image."""
    return grid_pieces(spec.batch, spec.in_spatial[0], math.prod(spec.in_spatial[1:]), pixels)


def grid_pieces(batch: int, rows: int, row_pixels: int, pixels: int):
    """``(n0, n1, r0, r1)`` pieces of ``batch`` images of ``rows`` rows of ``row_pixels`` pixels,
    of at most ``pixels`` pixels (at least one row)."""
    pixels = max(1, pixels)
    if pixels >= rows * row_pixels:
        images = pixels // (rows * row_pixels)
        return [(n0, min(batch, n0 + images), 0, rows) for n0 in range(0, batch, images)]
    band = max(1, pixels // row_pixels)
    return [(n, n + 1, r0, min(rows, r0 + band))
            for n in range(batch) for r0 in range(0, rows, band)]


def pieces(spec: ConvTransposeSpec, tuning: Tuning, bytes_per_pixel: int, budget: int):
    """The pieces ``tuning`` asks for, else those whose workspace fits ``budget`` bytes."""
    pixels = tuning.piece_pixels
    if pixels is None:
        pixels = budget // bytes_per_pixel
    return input_pieces(spec, pixels)


def disjoint_turns(spec: ConvTransposeSpec, chosen):
    """The forward's pieces ``chosen`` in turns of pieces whose outputs do not meet, to be
    placed at the same time. Runs of whole images never meet. A band of input rows writes output
    rows up to ``(k - 1)*d`` past its last row's ``s``, as far as the next band's first ``reach =
    (k - 1)*d // s`` rows write: bands meet nothing where that is 0, only their neighbours where
    they are at least ``reach`` rows tall (two turns: even and odd bands), else they go one at a
    time."""
    if not chosen:
        return []
    band = chosen[0][3] - chosen[0][2]
    reach = _reach(spec)
    if band == spec.in_spatial[0] or reach == 0:
        return [chosen]
    if band < reach:
        return [[piece] for piece in chosen]
    return [[piece for piece in chosen if piece[2] // band % 2 == parity] for parity in (0, 1)]


def _reach(spec: ConvTransposeSpec) -> int:
    """How many input rows after a band's last row write outputs that row writes too: ``(k -
    1)*d // s`` along the first spatial axis."""
    return (spec.kernel_size[0] - 1) * spec.dilation_rate[0] // spec.strides[0]
