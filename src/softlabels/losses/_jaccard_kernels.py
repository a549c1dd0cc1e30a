"""The Triton kernels of the metric losses (see ``_jaccard_triton`` for how they are used).

Imported on first use only: triton decides when a kernel is decorated whether it is
interpreted (``TRITON_INTERPRET=1``, which runs them on the CPU) or compiled.

Layout: logits and soft targets (B, C, N) contiguous, labels and keep (B, N). A program
holds a (BLOCK_C x BLOCK_N) tile: padded classes get -inf logits, padded pixels are masked.
The forward kernels walk their pixels tile by tile and add into (BLOCK_C x BLOCK_N)
accumulators, reducing over the pixels once at the end (one cross-thread reduction per sum
and program, not per tile).
"""

# ruff: noqa: N803 - kernel arguments follow triton's conventions (C, N, BLOCK_*)

import triton
import triton.language as tl


@triton.jit
def softmax_tile(z_ptr, keep_ptr, b, n, C, N, HAS_KEEP: tl.constexpr,
                 BLOCK_C: tl.constexpr):
    cls = tl.arange(0, BLOCK_C)
    in_c, in_n = cls < C, n < N
    inside = in_c[:, None] & in_n[None, :]
    base = b.to(tl.int64) * C * N
    z = tl.load(z_ptr + base + cls[:, None] * N + n[None, :], mask=inside,
                other=0.0).to(tl.float32)
    bad_z = tl.sum((inside & ((z != z) | (tl.abs(z) == float("inf")))).to(tl.float32), 0)
    z = tl.where(in_c[:, None], z, float("-inf"))
    top = tl.max(z, 0)
    e = tl.exp(z - top[None, :])
    s = tl.sum(e, 0)
    kept = in_n
    if HAS_KEEP:
        kept = kept & (tl.load(keep_ptr + b.to(tl.int64) * N + n, mask=in_n, other=0) != 0)
    return cls, in_c, z, e / s[None, :], top + tl.log(s), kept, bad_z


@triton.jit
def hard_tile(lab_ptr, b, n, N, C, cls, in_c, kept, ignore, HAS_IGNORE: tl.constexpr):
    lab = tl.load(lab_ptr + b.to(tl.int64) * N + n, mask=n < N, other=0)
    real = n < N
    if HAS_IGNORE:
        real = real & (lab != ignore)
    kept = kept & real
    onehot = (cls[:, None] == lab[None, :]) & in_c[:, None] & kept[None, :]
    return onehot, kept, real & ((lab < 0) | (lab >= C))


@triton.jit
def put(out_ptr, b, p, P, row, ROWS: tl.constexpr, cls, value, BLOCK_C: tl.constexpr):
    """Store the pixel-sum of a (BLOCK_C x BLOCK_N) accumulator as row ``row``."""
    tl.store(out_ptr + ((b * P + p) * ROWS + row) * BLOCK_C + cls, tl.sum(value, 1))


@triton.jit
def put_checks(out_ptr, b, p, P, ROWS: tl.constexpr, cls, first, second, third, fourth,
               BLOCK_C: tl.constexpr):
    """Store four per-pixel counts, summed, in the first columns of the last row."""
    value = tl.where(cls == 0, tl.sum(first, 0), 0.0) + tl.where(cls == 1, tl.sum(second, 0),
                                                                 0.0)
    value += tl.where(cls == 2, tl.sum(third, 0), 0.0) + tl.where(cls == 3, tl.sum(fourth, 0),
                                                                  0.0)
    tl.store(out_ptr + ((b * P + p) * ROWS + ROWS - 1) * BLOCK_C + cls, value)


@triton.jit
def hard_forward(z_ptr, lab_ptr, keep_ptr, out_ptr, C, N, ignore, chunk,
                 HAS_KEEP: tl.constexpr, HAS_IGNORE: tl.constexpr,
                 BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr):
    b, p, P = tl.program_id(0), tl.program_id(1), tl.num_programs(1)
    cls = tl.arange(0, BLOCK_C)
    zero = tl.zeros([BLOCK_C, BLOCK_N], tl.float32)
    hits, total, count, ce = zero, zero, zero, zero
    bad_labels = tl.zeros([BLOCK_N], tl.float32)
    bad_logits = bad_labels
    for start in range(p * chunk, p * chunk + chunk, BLOCK_N):
        n = start + tl.arange(0, BLOCK_N)
        cls, in_c, z, x, lse, kept, bad_z = softmax_tile(z_ptr, keep_ptr, b, n, C, N,
                                                          HAS_KEEP, BLOCK_C)
        onehot, kept, wrong = hard_tile(lab_ptr, b, n, N, C, cls, in_c, kept, ignore,
                                        HAS_IGNORE)
        hits += tl.where(onehot, x, 0.0)
        total += tl.where(kept[None, :], x, 0.0)
        count += onehot.to(tl.float32)
        ce += tl.where(onehot, lse[None, :] - z, 0.0)
        bad_labels += wrong.to(tl.float32)
        bad_logits += bad_z
    put(out_ptr, b, p, P, 0, 5, cls, hits, BLOCK_C)
    put(out_ptr, b, p, P, 1, 5, cls, total, BLOCK_C)
    put(out_ptr, b, p, P, 2, 5, cls, count, BLOCK_C)
    put(out_ptr, b, p, P, 3, 5, cls, ce, BLOCK_C)
    unused = tl.zeros([BLOCK_N], tl.float32)
    put_checks(out_ptr, b, p, P, 5, cls, bad_labels, bad_logits, unused, unused, BLOCK_C)


@triton.jit
def hard_backward(z_ptr, lab_ptr, keep_ptr, g_ptr, dz_ptr, C, N, ignore,
                  HAS_KEEP: tl.constexpr, HAS_IGNORE: tl.constexpr,
                  BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr):
    b = tl.program_id(1)  # images on the second axis: CUDA caps it at 65,535, not pixels
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cls, in_c, _z, x, _lse, kept, _bad_z = softmax_tile(z_ptr, keep_ptr, b, n, C, N,
                                                      HAS_KEEP, BLOCK_C)
    onehot, kept, _wrong = hard_tile(lab_ptr, b, n, N, C, cls, in_c, kept, ignore,
                                    HAS_IGNORE)
    g_row = g_ptr + b * 3 * C
    g_hits = tl.load(g_row + cls, mask=in_c, other=0.0)
    g_total = tl.load(g_row + C + cls, mask=in_c, other=0.0)
    g_ce = tl.load(g_row + 2 * C)
    g = tl.where(kept[None, :], g_total[:, None], 0.0) + tl.where(onehot, g_hits[:, None],
                                                                   0.0)
    inner = tl.sum(x * g, 0)
    ce_w = tl.where(kept, g_ce, 0.0)
    dz = x * (g - inner[None, :]) + ce_w[None, :] * (x - onehot.to(tl.float32))
    base = b.to(tl.int64) * C * N
    tl.store(dz_ptr + base + cls[:, None] * N + n[None, :],
             dz.to(dz_ptr.dtype.element_ty), mask=in_c[:, None] & (n < N)[None, :])


@triton.jit
def soft_forward(z_ptr, y_ptr, keep_ptr, out_ptr, C, N, threshold, tolerance, chunk,
                 VARIANT: tl.constexpr, HAS_KEEP: tl.constexpr, CHECK_SUM: tl.constexpr,
                 BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr):
    """Sums of a soft target; VARIANT 0 (jml1), 1 (jml2), 2 (sjl) picks the ones it needs,
    the others stay zero (fewer live accumulators, fewer registers)."""
    b, p, P = tl.program_id(0), tl.program_id(1), tl.num_programs(1)
    cls = tl.arange(0, BLOCK_C)
    zero = tl.zeros([BLOCK_C, BLOCK_N], tl.float32)
    total, prod, dist, excess, shortfall, y_total, above, ce = (zero, zero, zero, zero, zero,
                                                                zero, zero, zero)
    not_finite = tl.zeros([BLOCK_N], tl.float32)
    out_of_range, off_sum, bad_logits = not_finite, not_finite, not_finite
    for start in range(p * chunk, p * chunk + chunk, BLOCK_N):
        n = start + tl.arange(0, BLOCK_N)
        cls, in_c, z, x, lse, kept, bad_z = softmax_tile(z_ptr, keep_ptr, b, n, C, N,
                                                          HAS_KEEP, BLOCK_C)
        inside = in_c[:, None] & (n < N)[None, :]
        y = tl.load(y_ptr + b.to(tl.int64) * C * N + cls[:, None] * N + n[None, :],
                    mask=inside, other=0.0).to(tl.float32)
        w = kept[None, :] & in_c[:, None]
        d = x - y
        if VARIANT != 1:
            total += tl.where(w, x, 0.0)
            y_total += tl.where(w, y, 0.0)
        if VARIANT != 0:
            prod += tl.where(w, x * y, 0.0)
        if VARIANT == 0:
            dist += tl.where(w, tl.abs(d), 0.0)
        if VARIANT == 1:
            excess += tl.where(w, tl.maximum(d, 0.0), 0.0)
            shortfall += tl.where(w, tl.maximum(-d, 0.0), 0.0)
        above += (w & (y > threshold)).to(tl.float32)
        # z is -inf on padded classes, where y is 0: keep 0 * inf out of the product.
        ce += tl.where(w, y * (lse[None, :] - tl.where(w, z, 0.0)), 0.0)
        # Checks per kept pixel: a finite sum, values in [0, 1], a sum of 1 (multiclass).
        sums = tl.sum(y, 0)
        low = tl.min(tl.where(in_c[:, None], y, float("inf")), 0)
        high = tl.max(tl.where(in_c[:, None], y, float("-inf")), 0)
        not_finite += (kept & ((sums != sums) | (tl.abs(sums) == float("inf")))).to(tl.float32)
        out_of_range += (kept & ((low < 0.0) | (high > 1.0))).to(tl.float32)
        if CHECK_SUM:
            off_sum += (kept & (tl.abs(sums - 1.0) > tolerance)).to(tl.float32)
        bad_logits += bad_z
    put(out_ptr, b, p, P, 0, 9, cls, total, BLOCK_C)
    put(out_ptr, b, p, P, 1, 9, cls, prod, BLOCK_C)
    put(out_ptr, b, p, P, 2, 9, cls, dist, BLOCK_C)
    put(out_ptr, b, p, P, 3, 9, cls, excess, BLOCK_C)
    put(out_ptr, b, p, P, 4, 9, cls, shortfall, BLOCK_C)
    put(out_ptr, b, p, P, 5, 9, cls, y_total, BLOCK_C)
    put(out_ptr, b, p, P, 6, 9, cls, above, BLOCK_C)
    put(out_ptr, b, p, P, 7, 9, cls, ce, BLOCK_C)
    put_checks(out_ptr, b, p, P, 9, cls, not_finite, out_of_range, off_sum, bad_logits,
               BLOCK_C)


@triton.jit
def soft_backward(z_ptr, y_ptr, keep_ptr, g_ptr, dz_ptr, C, N, HAS_KEEP: tl.constexpr,
                  BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr):
    b = tl.program_id(1)  # images on the second axis: CUDA caps it at 65,535, not pixels
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cls, in_c, _z, x, _lse, kept, _bad_z = softmax_tile(z_ptr, keep_ptr, b, n, C, N,
                                                      HAS_KEEP, BLOCK_C)
    inside = in_c[:, None] & (n < N)[None, :]
    base = b.to(tl.int64) * C * N
    y = tl.load(y_ptr + base + cls[:, None] * N + n[None, :], mask=inside,
                other=0.0).to(tl.float32)
    g_row = g_ptr + b * 6 * C
    g_total = tl.load(g_row + cls, mask=in_c, other=0.0)[:, None]
    g_prod = tl.load(g_row + C + cls, mask=in_c, other=0.0)[:, None]
    g_dist = tl.load(g_row + 2 * C + cls, mask=in_c, other=0.0)[:, None]
    g_excess = tl.load(g_row + 3 * C + cls, mask=in_c, other=0.0)[:, None]
    g_short = tl.load(g_row + 4 * C + cls, mask=in_c, other=0.0)[:, None]
    g_ce = tl.load(g_row + 5 * C)
    d = x - y
    pos, neg = (d > 0).to(tl.float32), (d < 0).to(tl.float32)
    g = g_total + g_prod * y + g_dist * (pos - neg) + g_excess * pos - g_short * neg
    g = tl.where(kept[None, :], g, 0.0)
    inner = tl.sum(x * g, 0)
    ce_w = tl.where(kept, g_ce, 0.0)
    dz = x * (g - inner[None, :]) + ce_w[None, :] * (x * tl.sum(y, 0)[None, :] - y)
    tl.store(dz_ptr + base + cls[:, None] * N + n[None, :],
             dz.to(dz_ptr.dtype.element_ty), mask=inside)
