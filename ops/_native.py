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
rounding (tests: ``tests/test_ops.py``). Never ``-ffast-math`` itself: a shared object linked with it
carries ``crtfastmath.o``, which switches the whole process to flush-denormals-to-zero when the library
is loaded (hidden global state: measured, MediaPipe's XNNPack selfie segmentation then failed to
allocate its tensors for every later photo in the process).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fno-signed-zeros",
         "-fassociative-math", "-freciprocal-math", "-fopenmp-simd", "-shared", "-fPIC", "-std=c11")

C_SOURCE = r"""
#include <math.h>
#include <stdint.h>

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


def _build(compiler: str) -> Path:
    tag = hashlib.sha256((C_SOURCE + " ".join(FLAGS) + compiler + sys.platform).encode()).hexdigest()[:16]
    target = cache_dir() / f"ide3d_ops_{tag}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "ops.c"
        src.write_text(C_SOURCE)
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
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                lib, reason = None, f"building the C kernels failed: {exc}"
    _STATE["lib"], _STATE["reason"] = lib, reason
    return lib


def unavailable_reason() -> str:
    """Why :func:`load` returned None ("" when the kernels are loaded or not yet asked for)."""
    return str(_STATE.get("reason", ""))


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
