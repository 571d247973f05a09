# SPDX-License-Identifier: GPL-3.0-or-later
"""Building and loading the CPU kernels: plain C, compiled on first use with the system C compiler,
loaded with ``ctypes`` (no torch headers, no ninja: a build takes well under a second).

``load()`` returns the loaded library, or None when there is no working compiler (most Windows and
many macOS machines without developer tools): every op then runs its plain-PyTorch twin, which gives
the same values. The reason is kept (:func:`unavailable_reason`) for benchmarks and error messages.

The shared object is cached in ``$IDE3D_OPS_CACHE`` (default ``~/.cache/ide3d_ops``) under a name that
includes the hash of the source and the compiler flags, so an edited kernel is rebuilt and concurrent
processes never load a half-written file (it is written under a temporary name and renamed).

*Decision:* ``-march=native -O3`` with the reassociation and no-errno parts of fast-math spelled out
(the build runs on the machine that uses it): the loops vectorise; results match the twins to float32
rounding (tests: ``tests/test_ops.py``). ``-ffp-contract=fast`` lets a product and a sum be one FMA
(``-std=c11`` turns contraction off otherwise; an FMA rounds once, so it is as accurate or more); on x86-64
``-mprefer-vector-width=512`` lets the auto-vectoriser use AVX-512 registers where the CPU has them
(gcc's default is 256 bits; the fused decoder ran about 15 % faster). Never ``-ffast-math`` itself: a shared object linked with it
carries ``crtfastmath.o``, which switches the whole process to flush-denormals-to-zero when the library
is loaded (hidden global state: measured, MediaPipe's XNNPack selfie segmentation then failed to
allocate its tensors for every later photo in the process).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fno-signed-zeros",
         "-fassociative-math", "-freciprocal-math", "-ffp-contract=fast", "-fopenmp-simd", "-shared", "-fPIC",
         "-std=c11") + (("-mprefer-vector-width=512",) if platform.machine().lower() in ("x86_64", "amd64") else ())

C_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Bilinear tri-plane sampling, grid_sample(align_corners=False, padding zeros) semantics.
 * planes: [n_planes, P, P, C] float32 channels-last (row = height coordinate, column = width).
 * points: [N, 3] model-world points; axes: [2 * n_planes] (world axis along width, along height).
 * out: [N, F], F = C for agg 0 (mean) / 1 (sum), n_planes * C for agg 2 (concat). Rows [start, end). */
void triplane_sample(const float *restrict planes, int64_t P, int64_t C, int64_t n_planes,
                     const int32_t *restrict axes, const float *restrict points, float box, int32_t agg,
                     float *restrict out, int64_t start, int64_t end) {
    const int64_t F = agg == 2 ? n_planes * C : C;
    const float inv_box = 1.0f / box;
    for (int64_t i = start; i < end; i++) {
        float *o = out + i * F;
        for (int64_t c = 0; c < F; c++) o[c] = 0.0f;
        for (int64_t k = 0; k < n_planes; k++) {
            float *restrict acc = agg == 2 ? o + k * C : o;
            const float *restrict plane = planes + k * P * P * C;
            /* grid_sample: g = x * 2 / box; pixel = ((g + 1) * P - 1) / 2 */
            float g0 = points[i * 3 + axes[2 * k]] * 2.0f * inv_box;
            float g1 = points[i * 3 + axes[2 * k + 1]] * 2.0f * inv_box;
            float u = ((g0 + 1.0f) * (float)P - 1.0f) * 0.5f;
            float v = ((g1 + 1.0f) * (float)P - 1.0f) * 0.5f;
            if (!(fabsf(u) < 1e7f && fabsf(v) < 1e7f)) continue;
            float fu = floorf(u), fv = floorf(v);
            int64_t x0 = (int64_t)fu, y0 = (int64_t)fv;
            float ax = u - fu, ay = v - fv;
            float w[4] = {(1.0f - ax) * (1.0f - ay), ax * (1.0f - ay), (1.0f - ax) * ay, ax * ay};
            int64_t xs[4] = {x0, x0 + 1, x0, x0 + 1}, ys[4] = {y0, y0, y0 + 1, y0 + 1};
            for (int t = 0; t < 4; t++) {
                if (xs[t] < 0 || xs[t] >= P || ys[t] < 0 || ys[t] >= P) continue;
                const float *restrict texel = plane + (ys[t] * P + xs[t]) * C;
                const float wt = w[t];
                #pragma omp simd
                for (int64_t c = 0; c < C; c++) acc[c] += wt * texel[c];
            }
        }
        if (agg == 0) {
            const float s = 1.0f / (float)n_planes;
            for (int64_t c = 0; c < F; c++) o[c] *= s;
        }
    }
}

/* In-place softplus log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), elements [start, end). */
void softplus_inplace(float *restrict x, int64_t start, int64_t end) {
    #pragma omp simd
    for (int64_t i = start; i < end; i++) {
        float v = x[i];
        x[i] = fmaxf(v, 0.0f) + log1pf(expf(-fabsf(v)));
    }
}

/* ---- Occupancy of ray samples (ops/ray_occupancy.py) ----
 * occupied: [R, R, R] uint8 (axes x, y, z) of the box [-box/2, box/2]^3; rays [start, end) of origins
 * [n, 3], dirs [n, 3], depths [n, S]; out [n, S] uint8: the point o + t d is inside the box and in an
 * occupied cell. */
void ray_occupancy(const uint8_t *restrict occupied, int64_t R, float box, const float *restrict origins,
                   const float *restrict dirs, const float *restrict depths, int64_t S,
                   uint8_t *restrict out, int64_t start, int64_t end) {
    const float half = 0.5f * box, scale = (float)R / box;
    for (int64_t i = start; i < end; i++) {
        const float ox = origins[3 * i], oy = origins[3 * i + 1], oz = origins[3 * i + 2];
        const float dx = dirs[3 * i], dy = dirs[3 * i + 1], dz = dirs[3 * i + 2];
        for (int64_t j = 0; j < S; j++) {
            const float t = depths[i * S + j];
            const float x = ox + dx * t, y = oy + dy * t, z = oz + dz * t;
            uint8_t o = 0;
            if (fabsf(x) <= half && fabsf(y) <= half && fabsf(z) <= half) {
                int64_t ix = (int64_t)floorf((x + half) * scale), iy = (int64_t)floorf((y + half) * scale);
                int64_t iz = (int64_t)floorf((z + half) * scale);
                ix = ix < 0 ? 0 : (ix > R - 1 ? R - 1 : ix);
                iy = iy < 0 ? 0 : (iy > R - 1 ? R - 1 : iy);
                iz = iz < 0 ? 0 : (iz > R - 1 ? R - 1 : iz);
                o = occupied[(ix * R + iy) * R + iz];
            }
            out[i * S + j] = o;
        }
    }
}

/* ---- Fused tri-plane sample + decoder MLP (ops/triplane_decode.py) ---- */

/* exp(x), x clamped to [-80, 80]: Cody-Waite reduction by ln 2 and the Cephes degree-7 polynomial, about
 * 1 ulp. The clamp keeps every intermediate (and 1 / (1 + exp(x))) a normal float: a denormal costs a
 * microcode assist of ~100 cycles on x86, and the decoders' pre-activations reach |x| > 100. Plain
 * arithmetic so that the loops calling it vectorise (no libm calls). */
static inline float dk_expf(float x) {
    x = x < -80.0f ? -80.0f : x;  /* ternaries, not fminf/fmaxf: those only vectorise with finite-math */
    x = x > 80.0f ? 80.0f : x;
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* softplus(v) = max(v, 0) + log1p(e), e = exp(-|v|) in (0, 1]; log1p(e) = 2 atanh(s), s = e / (2 + e)
 * in (0, 1/3]: the odd series to s^13 (truncation < 2e-8 relative), accurate for tiny e too. For
 * v < -80 this returns exp(-80) = 1.8e-35 instead of exp(v) (an absolute error below 2e-35). */
static inline float dk_softplus(float v) {
    float e = dk_expf(-fabsf(v));
    float s = e / (2.0f + e);
    float sc = s > 1e-15f ? s : 1e-15f;  /* s * s stays normal (the series term is 1 there anyway) */
    float z = sc * sc;
    float q = 1.0f / 13.0f;
    q = q * z + 1.0f / 11.0f;
    q = q * z + 1.0f / 9.0f;
    q = q * z + 1.0f / 7.0f;
    q = q * z + 1.0f / 5.0f;
    q = q * z + 1.0f / 3.0f;
    q = q * z + 1.0f;
    return (v > 0.0f ? v : 0.0f) + 2.0f * s * q;
}

/* 16 floats: GCC/Clang vector extensions (one AVX-512 register, two AVX2 or four NEON registers). */
typedef float dk_v16 __attribute__((vector_size(64)));
static inline dk_v16 dk_load(const float *p) { dk_v16 v; memcpy(&v, p, sizeof v); return v; }
static inline void dk_store(float *p, dk_v16 v) { memcpy(p, &v, sizeof v); }

/* y[b, j] = bias[j] + sum_k x[b, k] wt[k, j] for rows b < nb, columns j < J (a multiple of 16); x [nb, K],
 * wt [K, J], y [nb, J], row-major. Eight rows by 16 columns accumulate in registers (eight independent
 * FMA chains; each weight vector is loaded once for the eight rows); k runs in order for every output. */
static void dk_matmul(const float *restrict x, int64_t nb, int64_t K, const float *restrict wt,
                      const float *restrict bias, int64_t J, float *restrict y) {
    int64_t b0 = 0;
    for (; b0 + 8 <= nb; b0 += 8) {
        const float *x0 = x + b0 * K;
        for (int64_t j0 = 0; j0 < J; j0 += 16) {
            const dk_v16 bv = dk_load(bias + j0);
            dk_v16 a0 = bv, a1 = bv, a2 = bv, a3 = bv, a4 = bv, a5 = bv, a6 = bv, a7 = bv;
            for (int64_t k = 0; k < K; k++) {
                const dk_v16 w = dk_load(wt + k * J + j0);
                a0 += x0[k] * w;
                a1 += x0[K + k] * w;
                a2 += x0[2 * K + k] * w;
                a3 += x0[3 * K + k] * w;
                a4 += x0[4 * K + k] * w;
                a5 += x0[5 * K + k] * w;
                a6 += x0[6 * K + k] * w;
                a7 += x0[7 * K + k] * w;
            }
            float *y0 = y + b0 * J + j0;
            dk_store(y0, a0); dk_store(y0 + J, a1); dk_store(y0 + 2 * J, a2); dk_store(y0 + 3 * J, a3);
            dk_store(y0 + 4 * J, a4); dk_store(y0 + 5 * J, a5); dk_store(y0 + 6 * J, a6); dk_store(y0 + 7 * J, a7);
        }
    }
    for (; b0 < nb; b0++) {
        for (int64_t j0 = 0; j0 < J; j0 += 16) {
            dk_v16 a = dk_load(bias + j0);
            for (int64_t k = 0; k < K; k++) a += x[b0 * K + k] * dk_load(wt + k * J + j0);
            dk_store(y + b0 * J + j0, a);
        }
    }
}

#define DK_MAXF 512
#define DK_MAXH 512
#define DK_MAXO 512
#define DK_BLOCK 16
#define DK_MAXPLANES 8

/* For each point i in [start, end): the aggregated tri-plane feature f (as triplane_sample), then
 * y = W2 softplus(W1 f + b1) + b2 and the head: 0 linear y; 1 semantic (y[0] -> softplus(y[0] + bias),
 * the rest as is); 2 colour (2 sigmoid(y) - 1).
 * w1t: [F, Hp] (W1 transposed, hidden zero-padded to Hp), b1 [Hp], w2t: [Hp, Op] (zero rows/cols),
 * b2 [Op]; out [N, O] (O <= Op); feat_out [N, F] or NULL. Points go in blocks of DK_BLOCK: the block's
 * hidden activations ([DK_BLOCK, Hp], in L1) go through softplus as one long vectorised loop. */
void triplane_decode(const float *restrict planes, int64_t P, int64_t C, int64_t n_planes,
                     const int32_t *restrict axes, const float *restrict points, float box, int32_t agg,
                     const float *restrict w1t, const float *restrict b1, int64_t Hp,
                     const float *restrict w2t, const float *restrict b2, int64_t Op, int64_t O,
                     int32_t head, float density_bias, float *restrict out, float *restrict feat_out,
                     int64_t start, int64_t end) {
#if defined(__x86_64__) || defined(__i386__)
    /* Flush denormals to zero in this thread for the duration of the call, restored on return: the
     * decoders' softplus outputs reach 1e-35, and their products with small weights are denormal, each
     * a ~100-cycle microcode assist (measured: 77 -> 12 ms per 1e5 points of the bundled model). Only
     * values below 1.2e-38 change. (Unlike -ffast-math's crtfastmath.o, nothing outlives the call.) */
    const unsigned int csr = __builtin_ia32_stmxcsr();
    __builtin_ia32_ldmxcsr(csr | 0x8040u);
#endif
    const int64_t F = agg == 2 ? n_planes * C : C;
    const float inv_box = 1.0f / box;
    static _Thread_local float fb[DK_BLOCK * DK_MAXF] __attribute__((aligned(64)));
    static _Thread_local float hb[DK_BLOCK * DK_MAXH] __attribute__((aligned(64)));
    static _Thread_local float yb[DK_BLOCK * DK_MAXO] __attribute__((aligned(64)));
    for (int64_t i0 = start; i0 < end; i0 += DK_BLOCK) {
        const int64_t nb = end - i0 < DK_BLOCK ? end - i0 : DK_BLOCK;
        for (int64_t b = 0; b < nb; b++) {
            const int64_t i = i0 + b;
            float *restrict f = fb + b * F;
            /* the 4 taps of each plane: texel offsets and bilinear weights (weight 0 off the plane) */
            int64_t off[4 * DK_MAXPLANES];
            float tw[4 * DK_MAXPLANES];
            for (int64_t k = 0; k < n_planes; k++) {
                float g0 = points[i * 3 + axes[2 * k]] * 2.0f * inv_box;
                float g1 = points[i * 3 + axes[2 * k + 1]] * 2.0f * inv_box;
                float u = ((g0 + 1.0f) * (float)P - 1.0f) * 0.5f;
                float v = ((g1 + 1.0f) * (float)P - 1.0f) * 0.5f;
                if (!(fabsf(u) < 1e7f && fabsf(v) < 1e7f)) u = v = -1e7f;
                float fu = floorf(u), fv = floorf(v);
                int64_t x0 = (int64_t)fu, y0 = (int64_t)fv;
                float ax = u - fu, ay = v - fv;
                float w[4] = {(1.0f - ax) * (1.0f - ay), ax * (1.0f - ay), (1.0f - ax) * ay, ax * ay};
                int64_t xs[4] = {x0, x0 + 1, x0, x0 + 1}, ys[4] = {y0, y0, y0 + 1, y0 + 1};
                for (int t = 0; t < 4; t++) {
                    int ok = xs[t] >= 0 && xs[t] < P && ys[t] >= 0 && ys[t] < P;
                    off[4 * k + t] = k * P * P * C + (ok ? (ys[t] * P + xs[t]) * C : 0);
                    tw[4 * k + t] = ok ? w[t] : 0.0f;
                }
            }
            const float scale = agg == 0 ? 1.0f / (float)n_planes : 1.0f;
            int64_t c0 = 0;
            for (; c0 + 16 <= C; c0 += 16) {  /* 16 channels at a time in a register */
                dk_v16 a = {0.0f};
                for (int64_t k = 0; k < n_planes; k++) {
                    for (int t = 0; t < 4; t++) a += tw[4 * k + t] * dk_load(planes + off[4 * k + t] + c0);
                    if (agg == 2) { dk_store(f + k * C + c0, a); a = (dk_v16){0.0f}; }
                }
                if (agg != 2) dk_store(f + c0, a * scale);
            }
            for (; c0 < C; c0++) {
                float a = 0.0f;
                for (int64_t k = 0; k < n_planes; k++) {
                    for (int t = 0; t < 4; t++) a += tw[4 * k + t] * planes[off[4 * k + t] + c0];
                    if (agg == 2) { f[k * C + c0] = a; a = 0.0f; }
                }
                if (agg != 2) f[c0] = a * scale;
            }
            if (feat_out) for (int64_t c = 0; c < F; c++) feat_out[i * F + c] = f[c];
        }
        dk_matmul(fb, nb, F, w1t, b1, Hp, hb);
        const int64_t nh = nb * Hp;
        #pragma omp simd
        for (int64_t j = 0; j < nh; j++) hb[j] = dk_softplus(hb[j]);
        dk_matmul(hb, nb, Hp, w2t, b2, Op, yb);
        const int64_t ny = nb * Op;
        if (head == 2) {
            #pragma omp simd
            for (int64_t j = 0; j < ny; j++) yb[j] = 1.0f / (1.0f + dk_expf(-yb[j])) * 2.0f - 1.0f;
        } else if (head == 1) {
            for (int64_t b = 0; b < nb; b++) yb[b * Op] = dk_softplus(yb[b * Op] + density_bias);
        }
        for (int64_t b = 0; b < nb; b++)
            for (int64_t j = 0; j < O; j++) out[(i0 + b) * O + j] = yb[b * Op + j];
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_ldmxcsr(csr);
#endif
}
"""

_STATE: dict[str, object] = {}


def cache_dir() -> Path:
    return Path(os.environ.get("IDE3D_OPS_CACHE", Path.home() / ".cache" / "ide3d_ops"))


def find_compiler() -> str | None:
    """The C compiler to build with: ``$CC``, else ``cc``, ``gcc`` or ``clang`` on the PATH; None if none."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _build(compiler: str, source: str = C_SOURCE, stem: str = "ide3d_ops") -> Path:
    tag = hashlib.sha256((source + " ".join(FLAGS) + compiler + sys.platform).encode()).hexdigest()[:16]
    target = cache_dir() / f"{stem}_{tag}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "ops.c"
        src.write_text(source)
        out = Path(tmp) / "ops.so"
        proc = subprocess.run([compiler, *FLAGS, str(src), "-o", str(out), "-lm"], capture_output=True,
                              text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(compiler).name} failed: {proc.stderr.strip()[:500]}")
        os.replace(out, target)
    return target


def load() -> ctypes.CDLL | None:
    """The compiled kernels (built on the first call of the process), or None without a compiler."""
    if "lib" in _STATE:
        return _STATE["lib"]  # type: ignore[return-value]
    lib, reason = None, ""
    if sys.platform == "win32":
        reason = "no C kernels on Windows"
    else:
        compiler = find_compiler()
        if compiler is None:
            reason = "no C compiler found (set CC or install gcc/clang)"
        else:
            try:
                lib = ctypes.CDLL(str(_build(compiler)))
                i64, vp = ctypes.c_int64, ctypes.c_void_p
                lib.triplane_sample.argtypes = [vp, i64, i64, i64, vp, vp, ctypes.c_float, ctypes.c_int32,
                                                vp, i64, i64]
                lib.triplane_sample.restype = None
                lib.softplus_inplace.argtypes = [vp, i64, i64]
                lib.softplus_inplace.restype = None
                lib.triplane_decode.argtypes = [vp, i64, i64, i64, vp, vp, ctypes.c_float, ctypes.c_int32,
                                                vp, vp, i64, vp, vp, i64, i64, ctypes.c_int32, ctypes.c_float,
                                                vp, vp, i64, i64]
                lib.triplane_decode.restype = None
                lib.ray_occupancy.argtypes = [vp, i64, ctypes.c_float, vp, vp, vp, i64, vp, i64, i64]
                lib.ray_occupancy.restype = None
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                lib, reason = None, f"building the C kernels failed: {exc}"
    _STATE["lib"], _STATE["reason"] = lib, reason
    return lib


def unavailable_reason(name: str = "") -> str:
    """Why :func:`load` (or :func:`load_extension` ``name``) returned None ("" when the kernels are
    loaded or not yet asked for)."""
    return str(_STATE.get(f"reason:{name}" if name else "reason", ""))


def load_extension(name: str, source: str, declare) -> ctypes.CDLL | None:
    """A second library built from :data:`C_SOURCE` followed by an op's own ``source`` (which may call
    the kernels above), with the same flags and cache; ``declare(lib)`` sets its ctypes signatures.
    Built once per process; None, with the reason kept (:func:`unavailable_reason` ``name``), where
    :func:`load` has no compiler or the build fails."""
    if f"lib:{name}" in _STATE:
        return _STATE[f"lib:{name}"]  # type: ignore[return-value]
    lib, reason = None, ""
    if load() is None:
        reason = unavailable_reason()
    else:
        try:
            lib = ctypes.CDLL(str(_build(find_compiler(), C_SOURCE + source, f"ide3d_{name}")))
            declare(lib)
        except (OSError, RuntimeError, AttributeError, subprocess.SubprocessError) as exc:
            lib, reason = None, f"building the {name} kernel failed: {exc}"
    _STATE[f"lib:{name}"], _STATE[f"reason:{name}"] = lib, reason
    return lib


def reset() -> None:
    """Forget the loaded library (tests simulate a machine without a compiler)."""
    _STATE.clear()


def parallel_rows(fn, n: int, threads: int, min_rows: int = 4096) -> None:
    """Call ``fn(start, end)`` on ``threads`` contiguous slices of ``range(n)`` (ctypes releases the GIL,
    so the slices run in parallel); serially when ``n`` is small."""
    threads = max(1, min(threads, n // min_rows))
    if threads == 1:
        fn(0, n)
        return
    from concurrent.futures import ThreadPoolExecutor

    bounds = [n * t // threads for t in range(threads + 1)]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda t: fn(bounds[t], bounds[t + 1]), range(threads)))
