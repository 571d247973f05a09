# SPDX-License-Identifier: GPL-3.0-or-later
"""The C kernel of :mod:`ops.ray_march` (its source, the argument struct and the loader); the op's
meaning, twin and public entry are in ``ops/ray_march.py``.

The source is appended to :data:`ops._native.C_SOURCE` and built as a second library
(:func:`ops._native.load_extension`), so the march calls the fused decode kernel ``triplane_decode``
directly on each tile's gathered samples. Scratch memory (a few hundred kB per call) is allocated per
call; ``ray_march`` returns 1 when that fails (the wrapper raises ``MemoryError``).
"""
from __future__ import annotations

import ctypes

from ops import _native

C_SOURCE = r"""
/* ---- Fused ray march (ops/ray_march.py) ---- */
#include <stdlib.h>
typedef struct {
    const float *sem_planes, *tex_planes;  /* [n_planes, P, P, C] channels-last float32 */
    int64_t sP, sC, tP, tC, n_planes; const int32_t *axes; float box; int32_t agg;
    const float *s_w1t, *s_b1, *s_w2t, *s_b2; int64_t s_hp, s_op, s_o; float density_bias;
    const float *t_w1t, *t_b1, *t_w2t, *t_b2; int64_t t_hp, t_op, t_o;
    const float *swap_planes; const uint8_t *swap_classes;  /* texture swap: NULL, or planes + [K] mask */
    const uint8_t *occupied; int64_t R;
    const float *origins, *dirs, *coarse; int64_t nc, nf; float near, far;
    float stop_optical_depth, min_transmittance, min_weight; int64_t chunk, max_rounds;
    float *features, *probs, *opacity, *depth; int64_t *evaluated;
} rm_args;

#define RM_TILE 16

static inline uint8_t rm_occupied(const rm_args *a, float x, float y, float z) {
    const float half = 0.5f * a->box, scale = (float)a->R / a->box;
    const int64_t R = a->R;
    if (!(fabsf(x) <= half && fabsf(y) <= half && fabsf(z) <= half)) return 0;
    int64_t ix = (int64_t)floorf((x + half) * scale), iy = (int64_t)floorf((y + half) * scale);
    int64_t iz = (int64_t)floorf((z + half) * scale);
    ix = ix < 0 ? 0 : (ix > R - 1 ? R - 1 : ix);
    iy = iy < 0 ? 0 : (iy > R - 1 ? R - 1 : iy);
    iz = iz < 0 ? 0 : (iz > R - 1 ? R - 1 : iz);
    return a->occupied[(ix * R + iy) * R + iz];
}

/* The points of samples idx[0..m) (sample s = t * stride + j of ray r0 + t at depth[s]) -> pts [m, 3]. */
static void rm_points(const rm_args *a, int64_t r0, const float *depth, int64_t stride, const int32_t *idx,
                      int64_t m, float *pts) {
    for (int64_t k = 0; k < m; k++) {
        const int64_t s = idx[k], ray = r0 + s / stride;
        const float t = depth[s];
        for (int c = 0; c < 3; c++) pts[3 * k + c] = a->origins[3 * ray + c] + a->dirs[3 * ray + c] * t;
    }
}

/* Semantic decodes of samples idx[0..m): outputs appended to pool (rows of s_o), sigma and row set. */
static void rm_eval(const rm_args *a, int64_t r0, const float *depth, int64_t stride, const int32_t *idx,
                    int64_t m, float *pts, float *pool, int64_t *pool_n, float *sigma, int32_t *row) {
    if (m == 0) return;
    rm_points(a, r0, depth, stride, idx, m, pts);
    float *out = pool + *pool_n * a->s_o;
    triplane_decode(a->sem_planes, a->sP, a->sC, a->n_planes, a->axes, pts, a->box, a->agg, a->s_w1t, a->s_b1,
                    a->s_hp, a->s_w2t, a->s_b2, a->s_op, a->s_o, 1, a->density_bias, out, NULL, 0, m);
    for (int64_t k = 0; k < m; k++) {
        sigma[idx[k]] = out[k * a->s_o];
        row[idx[k]] = (int32_t)(*pool_n + k);
    }
    *pool_n += m;
}

/* Compositing of n sorted samples: tau_i, transmittance T_i (exclusive, float64 running sum), and the
 * weights T_i (1 - exp(-tau_i)) when w is not NULL. dk_expf (about 1 ulp, vectorised; exp(0) = 1
 * exactly, so unevaluated samples weigh exactly 0) clamps at exp(-80): transmittances below 1.8e-35 are
 * that, far below every threshold. */
static void rm_transmittance(const float *sigma, const float *delta, int64_t n, float *tau, float *tr, float *w) {
    double acc = 0.0;
    for (int64_t j = 0; j < n; j++) {
        tau[j] = sigma[j] * delta[j];
        acc += (double)tau[j];
        tr[j] = tau[j] - (float)acc;
    }
    #pragma omp simd
    for (int64_t j = 0; j < n; j++) tr[j] = dk_expf(tr[j]);
    if (w) {
        #pragma omp simd
        for (int64_t j = 0; j < n; j++) w[j] = tr[j] * (1.0f - dk_expf(-tau[j]));
    }
}

static void rm_deltas(const float *d, int64_t n, float near, float far, float *edges, float *delta) {
    edges[0] = near;
    for (int64_t j = 1; j < n; j++) edges[j] = 0.5f * (d[j] + d[j - 1]);
    edges[n] = far;
    for (int64_t j = 0; j < n; j++) delta[j] = edges[j + 1] - edges[j];
}

/* March rays [start, end). Returns 0, or 1 when scratch memory could not be allocated. */
int ray_march(const rm_args *a, int64_t start, int64_t end) {
#if defined(__x86_64__) || defined(__i386__)
    const unsigned int csr = __builtin_ia32_stmxcsr();
    __builtin_ia32_ldmxcsr(csr | 0x8040u);
#endif
    const int64_t nc = a->nc, nf = a->nf, N = nc + nf, T = RM_TILE, so = a->s_o, K = so - 1, to = a->t_o;
    const int64_t TN = T * N, n1 = N + 1;
    float *fmem = malloc(sizeof(float) * (size_t)(3 * (nc + 1) + 2 * n1 + 12 * TN + TN * so + 2 * TN * to + T + K));
    int32_t *imem = malloc(sizeof(int32_t) * (size_t)(3 * TN));
    uint8_t *occ = malloc((size_t)TN), *cocc = malloc((size_t)TN), *dirty = malloc((size_t)T);
    int status = 0;
    if (!fmem || !imem || !occ || !cocc || !dirty) { status = 1; goto done; }
    float *cedges = fmem, *cdelta = cedges + nc + 1, *cw = cdelta + nc + 1;
    float *cdf = cw + nc + 1, *fine = cdf + n1;
    float *cdep = fine + n1, *csig = cdep + TN, *dep = csig + TN, *sig = dep + TN, *tau = sig + TN, *tr = tau + TN;
    float *delta = tr + TN, *wts = delta + TN, *pts = wts + TN;
    float *pool = pts + 3 * TN, *col = pool + TN * so, *ctau = col + TN * to, *kw = ctau + T, *ex = kw + TN;
    float *col2 = ex + K;
    int32_t *crow = imem, *row = crow + TN, *idx = row + TN;
    rm_deltas(a->coarse, nc, a->near, a->far, cedges, cdelta);
    for (int64_t r0 = start; r0 < end; r0 += T) {
        const int64_t nt = end - r0 < T ? end - r0 : T;
        int64_t pool_n = 0, m = 0;
        /* 1-2: coarse occupancy, coarse decodes chunk by chunk until opaque */
        for (int64_t t = 0; t < nt; t++) {
            const float *o = a->origins + 3 * (r0 + t), *d = a->dirs + 3 * (r0 + t);
            for (int64_t j = 0; j < nc; j++) {
                const float z = a->coarse[j];
                cdep[t * nc + j] = z;
                cocc[t * nc + j] = rm_occupied(a, o[0] + d[0] * z, o[1] + d[1] * z, o[2] + d[2] * z);
                csig[t * nc + j] = 0.0f;
                crow[t * nc + j] = -1;
            }
            ctau[t] = 0.0f;
        }
        for (int64_t j0 = 0; j0 < nc; j0 += a->chunk) {
            const int64_t j1 = j0 + a->chunk < nc ? j0 + a->chunk : nc;
            m = 0;
            for (int64_t t = 0; t < nt; t++)
                if (ctau[t] < a->stop_optical_depth)
                    for (int64_t j = j0; j < j1; j++) if (cocc[t * nc + j]) idx[m++] = (int32_t)(t * nc + j);
            rm_eval(a, r0, cdep, nc, idx, m, pts, pool, &pool_n, csig, crow);
            for (int64_t t = 0; t < nt; t++) {
                float acc = 0.0f;
                for (int64_t j = j0; j < j1; j++) acc += csig[t * nc + j] * cdelta[j];
                ctau[t] += acc;
            }
        }
        /* 3-4: fine depths from the coarse weights, merged in depth order; fine decodes before the stop */
        m = 0;
        for (int64_t t = 0; t < nt; t++) {
            const float *o = a->origins + 3 * (r0 + t), *d = a->dirs + 3 * (r0 + t);
            const float *cs = csig + t * nc;
            float *dp = dep + t * N, *sg = sig + t * N;
            int32_t *rw = row + t * N;
            uint8_t *oc = occ + t * N;
            float stop = a->far;
            if (nf > 0) {
                rm_transmittance(cs, cdelta, nc, tau, tr, cw);
                double acc = 0.0;
                int found = 0;
                float wsum = 0.0f;
                for (int64_t j = 0; j < nc; j++) {
                    acc += (double)tau[j];
                    if (!found && (float)acc > a->stop_optical_depth) { stop = a->coarse[j]; found = 1; }
                    cw[j] += 1e-5f;
                    wsum += cw[j];
                }
                double c = 0.0;
                cdf[0] = 0.0f;
                for (int64_t j = 0; j < nc; j++) {
                    c += (double)(cw[j] / wsum);
                    cdf[j + 1] = (float)c < 1.0f ? (float)c : 1.0f;
                }
                int64_t ab = 0;
                for (int64_t k = 0; k < nf; k++) {
                    const float u = ((float)k + 0.5f) / (float)nf;
                    while (ab <= nc && cdf[ab] <= u) ab++;
                    const int64_t hi = ab < 1 ? 1 : (ab > nc ? nc : ab), lo = hi - 1;
                    const float den = cdf[hi] - cdf[lo];
                    float frac = (u - cdf[lo]) / (den > 1e-12f ? den : 1.0f);
                    frac = frac < 0.0f ? 0.0f : (frac > 1.0f ? 1.0f : frac);
                    float z = cedges[lo] + frac * (cedges[hi] - cedges[lo]);
                    int64_t q = k;  /* insertion: the quantiles are sorted up to rounding */
                    while (q > 0 && fine[q - 1] > z) { fine[q] = fine[q - 1]; q--; }
                    fine[q] = z;
                }
            }
            int64_t i = 0, k = 0;
            for (int64_t j = 0; j < N; j++) {
                if (k >= nf || (i < nc && a->coarse[i] <= fine[k])) {
                    dp[j] = a->coarse[i]; sg[j] = cs[i]; rw[j] = crow[t * nc + i]; oc[j] = cocc[t * nc + i];
                    i++;
                } else {
                    const float z = fine[k++];
                    dp[j] = z; sg[j] = 0.0f; rw[j] = -1;
                    oc[j] = rm_occupied(a, o[0] + d[0] * z, o[1] + d[1] * z, o[2] + d[2] * z);
                    if (oc[j] && z <= stop) idx[m++] = (int32_t)(t * N + j);
                }
            }
            rm_deltas(dp, N, a->near, a->far, cdf, delta + t * N);  /* cdf: free scratch [N + 1] here */
        }
        rm_eval(a, r0, dep, N, idx, m, pts, pool, &pool_n, sig, row);
        /* 5: fix-up of unevaluated occupied samples the over-estimated transmittance still reaches; a
         * ray is recomposited only after decodes changed it, so the last composite of each ray is current */
        for (int64_t t = 0; t < nt; t++) dirty[t] = 1;
        for (int64_t round = 0; round <= a->max_rounds; round++) {
            m = 0;
            for (int64_t t = 0; t < nt; t++) {
                if (!dirty[t]) continue;
                rm_transmittance(sig + t * N, delta + t * N, N, tau + t * N, tr + t * N, wts + t * N);
                const int64_t m0 = m;
                if (round < a->max_rounds)
                    for (int64_t j = 0; j < N; j++) {
                        const int64_t s = t * N + j;
                        if (occ[s] && row[s] < 0 && tr[s] > a->min_transmittance) idx[m++] = (int32_t)s;
                    }
                dirty[t] = m > m0;
            }
            if (m == 0) break;
            rm_eval(a, r0, dep, N, idx, m, pts, pool, &pool_n, sig, row);
        }
        /* 6: weights; colour and class probabilities of the samples that count */
        m = 0;
        for (int64_t t = 0; t < nt; t++) {
            const int64_t ray = r0 + t;
            float op = 0.0f, dsum = 0.0f;
            int64_t count = 0;
            for (int64_t j = 0; j < N; j++) {
                const int64_t s = t * N + j;
                const float w = wts[s];
                op += w;
                dsum += w * dep[s];
                count += row[s] >= 0;
                if (w > a->min_weight && row[s] >= 0) { kw[m] = w; idx[m++] = (int32_t)s; count++; }
            }
            a->opacity[ray] = op;
            a->depth[ray] = dsum + (1.0f - op) * a->far;
            a->evaluated[ray] = count;
            for (int64_t c = 0; c < to; c++) a->features[ray * to + c] = 0.0f;
            for (int64_t c = 0; c < K; c++) a->probs[ray * K + c] = 0.0f;
        }
        if (m > 0) {
            rm_points(a, r0, dep, N, idx, m, pts);
            triplane_decode(a->tex_planes, a->tP, a->tC, a->n_planes, a->axes, pts, a->box, a->agg, a->t_w1t, a->t_b1,
                            a->t_hp, a->t_w2t, a->t_b2, a->t_op, to, 2, 0.0f, col, NULL, 0, m);
        }
        if (m > 0 && a->swap_planes) {  /* samples whose arg-max class is swapped: the other texture */
            int64_t m2 = 0;
            for (int64_t k = 0; k < m; k++) {
                const float *lg = pool + (int64_t)row[idx[k]] * so + 1;
                int64_t best = 0;
                for (int64_t c = 1; c < K; c++) best = lg[c] > lg[best] ? c : best;
                if (!a->swap_classes[best]) continue;
                for (int c = 0; c < 3; c++) pts[3 * m2 + c] = pts[3 * k + c];  /* in place: m2 <= k */
                imem[m2++] = (int32_t)k;  /* crow (the coarse rows) is free scratch here */
            }
            if (m2 > 0) {
                triplane_decode(a->swap_planes, a->tP, a->tC, a->n_planes, a->axes, pts, a->box, a->agg, a->t_w1t,
                                a->t_b1, a->t_hp, a->t_w2t, a->t_b2, a->t_op, to, 2, 0.0f, col2, NULL, 0, m2);
                for (int64_t q = 0; q < m2; q++)
                    for (int64_t c = 0; c < to; c++) col[imem[q] * to + c] = col2[q * to + c];
            }
        }
        for (int64_t k = 0; k < m; k++) {
            const int64_t s = idx[k], ray = r0 + s / N;
            const float w = kw[k], *lg = pool + (int64_t)row[s] * so + 1;
            float *f = a->features + ray * to, *p = a->probs + ray * K, *e = ex;
            for (int64_t c = 0; c < to; c++) f[c] += w * col[k * to + c];
            float mx = lg[0], z = 0.0f;
            for (int64_t c = 1; c < K; c++) mx = lg[c] > mx ? lg[c] : mx;
            #pragma omp simd
            for (int64_t c = 0; c < K; c++) e[c] = dk_expf(lg[c] - mx);
            for (int64_t c = 0; c < K; c++) z += e[c];
            const float wz = w / z;
            for (int64_t c = 0; c < K; c++) p[c] += wz * e[c];
        }
    }
done:
    free(fmem); free(imem); free(occ); free(cocc); free(dirty);
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_ldmxcsr(csr);
#endif
    return status;
}
"""


class Args(ctypes.Structure):
    """The C struct ``rm_args`` (same fields, same order)."""

    _vp, _i64, _f = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    _fields_ = [("sem_planes", _vp), ("tex_planes", _vp), ("sP", _i64), ("sC", _i64), ("tP", _i64), ("tC", _i64),
                ("n_planes", _i64), ("axes", _vp), ("box", _f), ("agg", ctypes.c_int32),
                ("s_w1t", _vp), ("s_b1", _vp), ("s_w2t", _vp), ("s_b2", _vp), ("s_hp", _i64), ("s_op", _i64),
                ("s_o", _i64), ("density_bias", _f),
                ("t_w1t", _vp), ("t_b1", _vp), ("t_w2t", _vp), ("t_b2", _vp), ("t_hp", _i64), ("t_op", _i64),
                ("t_o", _i64), ("swap_planes", _vp), ("swap_classes", _vp), ("occupied", _vp), ("R", _i64),
                ("origins", _vp), ("dirs", _vp), ("coarse", _vp),
                ("nc", _i64), ("nf", _i64), ("near", _f), ("far", _f), ("stop_optical_depth", _f),
                ("min_transmittance", _f), ("min_weight", _f), ("chunk", _i64), ("max_rounds", _i64),
                ("features", _vp), ("probs", _vp), ("opacity", _vp), ("depth", _vp), ("evaluated", _vp)]


def _declare(lib) -> None:
    lib.ray_march.argtypes = [ctypes.POINTER(Args), ctypes.c_int64, ctypes.c_int64]
    lib.ray_march.restype = ctypes.c_int


def load():
    """The ray-march library (built on first use), or None (reason:
    ``_native.unavailable_reason("ray_march")``)."""
    return _native.load_extension("ray_march", C_SOURCE, _declare)
