"""NumPy's GEMMs, with bits that do not depend on the thread count.

OpenBLAS shares a GEMM out among its threads by their number, and the pieces' edges round
differently (0.3.31, Haswell kernels: ``(3000, 64) @ (64, 64)`` in float32 differs between 1 and
2 threads, in rows in the middle of M), so NumPy results would change with the caller's
``threadpoolctl`` limit or ``OPENBLAS_NUM_THREADS``. Inside :func:`one_blas_thread`, every GEMM
that :func:`matmul` takes is cut into blocks fixed by its shape alone, each block computed by
BLAS on one thread, and the blocks are shared out over as many threads as the caller lets BLAS
use (the calling thread and workers of a pool made here): the same blocks, so the same bits, at
any thread count, and under a limit of one the calling thread does all of the work.

OpenBLAS' limit is one for the whole process (also where it is set "locally"), so NumPy calls
from several threads take turns, and each sets the limit to one and back through
``threadpoolctl``, which lets one thread at a time set it: while another thread holds it (inside
its own ``threadpool_limits``), BLAS keeps that thread's limit and only the calling thread
computes, with the same bits only if that limit is one. torch's matmul gives the same bits at any
``set_num_threads`` already; other namespaces, and NumPy on a BLAS ``threadpoolctl`` cannot set
(Apple's Accelerate), multiply as they are.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from array_api_compat import array_namespace, is_numpy_namespace

# FLOPs per block: big enough that handing a block to a worker (tens of microseconds) costs a
# few percent of it, small enough that two threads share a GEMM of a few blocks evenly.
BLOCK_FLOPS = 2**23
# Rows and columns per block are multiples of these (wider than the tiles of OpenBLAS' x86 GEMM
# kernels, so only a GEMM's last block has a ragged edge), and at least the minimums: each block
# packs its share of the other matrix again, a cost of about 1/rows of its FLOPs in memory reads.
ROW_TILE = COLUMN_TILE = 64
MIN_ROWS = MIN_COLUMNS = 256
# The same for a run of the reduction, where a GEMM's output is one block (a kernel's gradient).
MIN_DEPTH = 1024

_turn = threading.Lock()      # one NumPy call at a time computes (see the module docstring)
# Per thread: ``threads``, the threads share() hands work out over, set while the thread computes
# a NumPy call (the caller's BLAS limit) or work handed out to it (its share of those: 1, so
# nested work stays on it, unless there were fewer items than threads).
_local = threading.local()
_pool = None
_pool_workers = 0
_DONE = object()


@functools.cache
def _blas():
    import threadpoolctl

    controller = threadpoolctl.ThreadpoolController().select(user_api="blas")
    return controller, controller.lib_controllers


@contextlib.contextmanager
def one_blas_thread(xp):
    """Limit BLAS to one thread while NumPy computes here, the caller's limit kept as the number
    of threads :func:`matmul` shares blocks over, and set back afterwards."""
    if not is_numpy_namespace(xp):
        yield
        return
    if _threads_here():                             # nested in this thread's own call
        yield
        return
    controller, libraries = _blas()
    with _turn:
        callers = min((library.get_num_threads() for library in libraries), default=1)
        with controller.limit(limits=1):
            limited = all(library.get_num_threads() == 1 for library in libraries)
            _local.threads = callers if limited else 1
            try:
                yield
            finally:
                _local.threads = None


def _threads_here():
    return getattr(_local, "threads", None)


def on_one_blas_thread(entry):
    """``entry`` (an entry point whose first argument is an array) run inside
    :func:`one_blas_thread`."""

    @functools.wraps(entry)
    def run(a, *args, **kwargs):
        with one_blas_thread(array_namespace(a)):
            return entry(a, *args, **kwargs)

    return run


def matmul(xp, a, b, out=None):
    """``xp.matmul(a, b)``, into ``out`` when given (NumPy and torch only); on NumPy inside
    :func:`one_blas_thread`, in blocks of rows fixed by the shapes (see the module docstring).
    ``b`` is a matrix, or a stack as long as ``a``'s."""
    if not (is_numpy_namespace(xp) and _threads_here()):
        return xp.matmul(a, b) if out is None else xp.matmul(a, b, out=out)
    if out is None:
        out = xp.empty((*a.shape[:-1], b.shape[-1]), dtype=xp.result_type(a, b))
    blocks = _blocks(out.shape, a.shape[-1])
    if len(blocks) == 1:
        _multiply_by_depth(xp, a, b, out)
        return out

    def multiply(block):
        lead, rows, columns = block
        xp.matmul(a[(*lead, ..., rows, slice(None))],
                  (b if b.ndim == 2 else b[(*lead, ...)])[..., columns],
                  out=out[(*lead, ..., rows, columns)])

    share(multiply, blocks)
    return out


def _multiply_by_depth(xp, a, b, out):
    """``a @ b`` into ``out`` where the output is one block but the reduction is long (a
    kernel's gradient: taps x filters by channels, over every pixel): partial products over runs
    of :data:`MIN_DEPTH` or more of the reduction, summed in their order."""
    k = a.shape[-1]
    depth = max(MIN_DEPTH, _multiple(BLOCK_FLOPS // max(1, 2 * math.prod(out.shape)), MIN_DEPTH))
    if depth >= k:
        xp.matmul(a, b, out=out)
        return
    runs = [slice(k0, k0 + depth) for k0 in range(0, k, depth)]
    partial = xp.empty((len(runs), *out.shape), dtype=out.dtype)
    share(lambda i: xp.matmul(a[..., runs[i]], b[..., runs[i], :], out=partial[i, ...]),
           range(len(runs)))
    out[...] = partial[0, ...]
    for i in range(1, len(runs)):
        out += partial[i, ...]


def _blocks(shape, k: int):
    """Blocks of a GEMM into ``shape`` (a stack of ``M x N`` matrices) reducing over ``k``, as
    (index into the stack's leading axes, rows, columns) of about :data:`BLOCK_FLOPS`: runs of
    rows, and of columns too where :data:`MIN_ROWS` rows are more; where a whole matrix is
    less, runs of whole matrices along the first leading axis longer than one."""
    *lead, m, n = shape
    rows = max(MIN_ROWS, _multiple(BLOCK_FLOPS // max(1, 2 * k * n), ROW_TILE))
    if rows >= m and any(length > 1 for length in lead):
        axis = next(axis for axis, length in enumerate(lead) if length > 1)
        run = max(1, BLOCK_FLOPS // max(1, 2 * k * n * m * math.prod(lead[axis + 1:])))
        before = (slice(None),) * axis
        return [((*before, slice(i, i + run)), slice(None), slice(None))
                for i in range(0, lead[axis], run)]
    columns = n if rows < m else max(MIN_COLUMNS, _multiple(BLOCK_FLOPS // max(1, 2 * k * m),
                                                             COLUMN_TILE))
    return [(tuple(slice(i, i + 1) for i in index), slice(r, r + rows), slice(c, c + columns))
            for index in itertools.product(*map(range, lead))
            for r in range(0, m, rows) for c in range(0, n, columns)]


def _multiple(count: int, tile: int) -> int:
    return -(-max(1, count) // tile) * tile


def share(work, items):
    """``work(item)`` for every item (blocks of a GEMM, or pieces of a layer whose writes do not
    meet), on the calling thread and as many workers as its NumPy call allows more, each taking
    the next item when done with one; outside a NumPy call on the calling thread alone. Work
    handed out shares its own nested work over the threads its share leaves (none, where there
    are at least as many items as threads)."""
    items = list(items)
    threads = _threads_here() or 1
    helpers = min(threads, len(items)) - 1
    if helpers <= 0:
        for item in items:
            work(item)
        return
    # Fewer items than threads (two pieces of a layer on many cores): each item's own work
    # (its GEMM's blocks) goes over its share of the threads left.
    nested = threads // (helpers + 1)
    remaining = iter(items)
    take = threading.Lock()

    def drain():
        before, _local.threads = _threads_here(), nested
        try:
            while True:
                with take:
                    item = next(remaining, _DONE)
                if item is _DONE:
                    return
                work(item)
        finally:
            _local.threads = before

    pool = _workers(threads - 1)
    futures = [pool.submit(drain) for _ in range(helpers)]
    try:
        drain()
    finally:
        for future in futures:
            if not future.cancel():         # one that never started has nothing left to do
                future.result()


class InOrder:
    """A sum of parts numbered 0, 1, 2, ... handed in from any thread in any order, added as
    ``(p0 + p1) + p2 ...`` as soon as the next is in (into part 0, in place where the namespace
    allows): the same bits whichever thread computed which part, each part kept only until its
    turn."""

    def __init__(self):
        self.total, self._next, self._waiting, self._lock = None, 0, {}, threading.Lock()

    def add(self, number: int, part):
        with self._lock:
            self._waiting[number] = part
            while self._next in self._waiting:
                part = self._waiting.pop(self._next)
                if self.total is None:
                    self.total = part
                else:
                    self.total += part
                self._next += 1


def _workers(count: int) -> ThreadPoolExecutor:
    """The pool, with at least ``count`` workers (called while holding the turn: a top-level
    :func:`share` sizes it for every thread of the call, so nested ones never grow it)."""
    global _pool, _pool_workers
    if _pool_workers < count:
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool, _pool_workers = ThreadPoolExecutor(count, thread_name_prefix="tconv"), count
    return _pool


def _forget_threads():
    """In a forked child: the pool's workers and a turn held by another thread stayed behind."""
    global _turn, _pool, _pool_workers, _local
    _turn, _pool, _pool_workers, _local = threading.Lock(), None, 0, threading.local()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads)
