/*
 * s4c_internal.h -- private helpers shared by the kernel sources (not part of
 * the API): a tiny portable SIMD layer, threading helpers, vectorisable math.
 *
 * SIMD layer.  With GCC/Clang (and not -DS4C_PLAIN_C) s4c_vf is a GNU vector
 * extension type of S4C_VW floats (8 with AVX, else 4) so that accumulators
 * stay in registers; loads/stores go through memcpy (no alignment or aliasing
 * assumptions, -pedantic / UBSan clean, compiled to vmovups).  Otherwise s4c_vf
 * is a struct of S4C_VW floats with loop-based operations (plain C99).
 */
#ifndef S4C_INTERNAL_H
#define S4C_INTERNAL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "s4c_kernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* -std=c99 makes GCC default to -ffp-contract=off; the kernels want a*b+c fused
 * (FMA) wherever the target has it.  Clang already contracts within an
 * expression, which is all the kernels rely on. */
#if defined(__GNUC__) && !defined(__clang__) && !defined(S4C_NO_CONTRACT)
#pragma GCC optimize("fp-contract=fast")
#endif

#if defined(__GNUC__)
#define S4C_INLINE static inline __attribute__((always_inline))
#define S4C_NOINLINE __attribute__((noinline))
#define S4C_RESTRICT __restrict__
#else
#define S4C_INLINE static inline
#define S4C_NOINLINE
#define S4C_RESTRICT
#endif

#if defined(__GNUC__) && !defined(S4C_PLAIN_C)
#define S4C_VECEXT 1
#if defined(__AVX__)
#define S4C_VW 8
typedef float s4c_vf __attribute__((vector_size(32)));
S4C_INLINE s4c_vf s4c_vset1(float s) {
    s4c_vf v = {s, s, s, s, s, s, s, s};
    return v;
}
#else
#define S4C_VW 4
typedef float s4c_vf __attribute__((vector_size(16)));
S4C_INLINE s4c_vf s4c_vset1(float s) {
    s4c_vf v = {s, s, s, s};
    return v;
}
#endif
/* 16-float vectors for the kernels that gain from AVX-512 (CSR): only when the
 * compiler targets AVX-512F and vector extensions are on; -DS4C_NO_AVX512
 * turns them off. */
#if defined(__AVX512F__) && !defined(S4C_NO_AVX512)
#define S4C_WIDE 1
#define S4C_WW 16
typedef float s4c_wf __attribute__((vector_size(64)));
S4C_INLINE s4c_wf s4c_wset1(float s) {
    s4c_wf v = {s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s};
    return v;
}
S4C_INLINE s4c_wf s4c_wload(const float *p) {
    s4c_wf v;
    memcpy(&v, p, sizeof v);
    return v;
}
S4C_INLINE void s4c_wstore(float *p, s4c_wf v) { memcpy(p, &v, sizeof v); }
/* The row-at-a-time sparse kernels' NV (<= 8, a constant after inlining)
 * accumulators a0..a7 of one output row: a_k += v * x[k*16 ..], then stored. */
#define S4C_WACC(NV, a, v, x)                                                   \
    do {                                                                        \
        a##0 += (v) * s4c_wload(x);                                             \
        if ((NV) > 1) a##1 += (v) * s4c_wload((x) + S4C_WW);                    \
        if ((NV) > 2) a##2 += (v) * s4c_wload((x) + 2 * S4C_WW);                \
        if ((NV) > 3) a##3 += (v) * s4c_wload((x) + 3 * S4C_WW);                \
        if ((NV) > 4) a##4 += (v) * s4c_wload((x) + 4 * S4C_WW);                \
        if ((NV) > 5) a##5 += (v) * s4c_wload((x) + 5 * S4C_WW);                \
        if ((NV) > 6) a##6 += (v) * s4c_wload((x) + 6 * S4C_WW);                \
        if ((NV) > 7) a##7 += (v) * s4c_wload((x) + 7 * S4C_WW);                \
    } while (0)
#define S4C_WSTORE(NV, a, y)                                                    \
    do {                                                                        \
        s4c_wstore((y), a##0);                                                  \
        if ((NV) > 1) s4c_wstore((y) + S4C_WW, a##1);                           \
        if ((NV) > 2) s4c_wstore((y) + 2 * S4C_WW, a##2);                       \
        if ((NV) > 3) s4c_wstore((y) + 3 * S4C_WW, a##3);                       \
        if ((NV) > 4) s4c_wstore((y) + 4 * S4C_WW, a##4);                       \
        if ((NV) > 5) s4c_wstore((y) + 5 * S4C_WW, a##5);                       \
        if ((NV) > 6) s4c_wstore((y) + 6 * S4C_WW, a##6);                       \
        if ((NV) > 7) s4c_wstore((y) + 7 * S4C_WW, a##7);                       \
    } while (0)
#endif
S4C_INLINE s4c_vf s4c_vload(const float *p) {
    s4c_vf v;
    memcpy(&v, p, sizeof v);
    return v;
}
S4C_INLINE void s4c_vstore(float *p, s4c_vf v) { memcpy(p, &v, sizeof v); }
S4C_INLINE s4c_vf s4c_vfma(s4c_vf acc, s4c_vf a, s4c_vf b) { return acc + a * b; }
S4C_INLINE s4c_vf s4c_vadd(s4c_vf a, s4c_vf b) { return a + b; }
S4C_INLINE s4c_vf s4c_vsub(s4c_vf a, s4c_vf b) { return a - b; }
S4C_INLINE s4c_vf s4c_vmul(s4c_vf a, s4c_vf b) { return a * b; }

#else /* plain C99 fallback */
#define S4C_VW 8
typedef struct {
    float v[S4C_VW];
} s4c_vf;
S4C_INLINE s4c_vf s4c_vset1(float s) {
    s4c_vf r;
    int i;
    for (i = 0; i < S4C_VW; i++) r.v[i] = s;
    return r;
}
S4C_INLINE s4c_vf s4c_vload(const float *p) {
    s4c_vf r;
    memcpy(r.v, p, sizeof r.v);
    return r;
}
S4C_INLINE void s4c_vstore(float *p, s4c_vf v) { memcpy(p, v.v, sizeof v.v); }
S4C_INLINE s4c_vf s4c_vfma(s4c_vf acc, s4c_vf a, s4c_vf b) {
    int i;
    for (i = 0; i < S4C_VW; i++) acc.v[i] += a.v[i] * b.v[i];
    return acc;
}
S4C_INLINE s4c_vf s4c_vadd(s4c_vf a, s4c_vf b) {
    int i;
    for (i = 0; i < S4C_VW; i++) a.v[i] += b.v[i];
    return a;
}
S4C_INLINE s4c_vf s4c_vsub(s4c_vf a, s4c_vf b) {
    int i;
    for (i = 0; i < S4C_VW; i++) a.v[i] -= b.v[i];
    return a;
}
S4C_INLINE s4c_vf s4c_vmul(s4c_vf a, s4c_vf b) {
    int i;
    for (i = 0; i < S4C_VW; i++) a.v[i] *= b.v[i];
    return a;
}
#endif

/* The row-at-a-time sparse kernels' NV (a constant after inlining) S4C_VW-float
 * accumulators of one output row: a_k = a_k + v * x[k*S4C_VW ..], then stored.
 * ..4 for kernels with accumulators a0..a3 (NV <= 4), ..8 for a0..a7. */
#define S4C_VACC4(NV, a, v, x)                                                  \
    do {                                                                        \
        a##0 = s4c_vfma(a##0, (v), s4c_vload(x));                               \
        if ((NV) > 1) a##1 = s4c_vfma(a##1, (v), s4c_vload((x) + S4C_VW));      \
        if ((NV) > 2) a##2 = s4c_vfma(a##2, (v), s4c_vload((x) + 2 * S4C_VW));  \
        if ((NV) > 3) a##3 = s4c_vfma(a##3, (v), s4c_vload((x) + 3 * S4C_VW));  \
    } while (0)
#define S4C_VACC8(NV, a, v, x)                                                  \
    do {                                                                        \
        S4C_VACC4(NV, a, v, x);                                                 \
        if ((NV) > 4) a##4 = s4c_vfma(a##4, (v), s4c_vload((x) + 4 * S4C_VW));  \
        if ((NV) > 5) a##5 = s4c_vfma(a##5, (v), s4c_vload((x) + 5 * S4C_VW));  \
        if ((NV) > 6) a##6 = s4c_vfma(a##6, (v), s4c_vload((x) + 6 * S4C_VW));  \
        if ((NV) > 7) a##7 = s4c_vfma(a##7, (v), s4c_vload((x) + 7 * S4C_VW));  \
    } while (0)
#define S4C_VSTORE4(NV, a, y)                                                   \
    do {                                                                        \
        s4c_vstore((y), a##0);                                                  \
        if ((NV) > 1) s4c_vstore((y) + S4C_VW, a##1);                           \
        if ((NV) > 2) s4c_vstore((y) + 2 * S4C_VW, a##2);                       \
        if ((NV) > 3) s4c_vstore((y) + 3 * S4C_VW, a##3);                       \
    } while (0)
#define S4C_VSTORE8(NV, a, y)                                                   \
    do {                                                                        \
        S4C_VSTORE4(NV, a, y);                                                  \
        if ((NV) > 4) s4c_vstore((y) + 4 * S4C_VW, a##4);                       \
        if ((NV) > 5) s4c_vstore((y) + 5 * S4C_VW, a##5);                       \
        if ((NV) > 6) s4c_vstore((y) + 6 * S4C_VW, a##6);                       \
        if ((NV) > 7) s4c_vstore((y) + 7 * S4C_VW, a##7);                       \
    } while (0)

/* ------------------------------------------------------------ threading */
S4C_INLINE int s4c__max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* Threads worth using for `work` units when one thread should get at least
 * `min_per_thread` units. */
S4C_INLINE int s4c__threads_for(double work, double min_per_thread) {
    int nt = s4c__max_threads();
    double lim = work / min_per_thread;
    if (lim < 1.0) return 1;
    if ((double)nt > lim) nt = (int)lim;
    return nt < 1 ? 1 : nt;
}

/* Even split of [0, n) into nparts; part p gets [*b, *e). */
S4C_INLINE void s4c__split_even(int n, int nparts, int p, int *b, int *e) {
    *b = (int)(((int64_t)n * p) / nparts);
    *e = (int)(((int64_t)n * (p + 1)) / nparts);
}

/* Split rows [0, n) by the prefix sums ptr[0..n] (e.g. CSR indptr) into nparts
 * of nearly equal weight ptr[e] - ptr[b] + rows * row_cost. */
void s4c__split_weighted(const int32_t *ptr, int n, int64_t row_cost, int nparts, int p,
                         int *b, int *e);

/* Dynamic work chunks.  The linear kernels cut their rows into about
 * S4C_CHUNKS_PER_THREAD chunks per thread (of equal weight, each at least
 * `min_rows` rows) handed out first come, first served (OpenMP dynamic
 * schedule): on a shared machine a thread that lost its core to another
 * process no longer holds every other thread up at the end of the call.  Each
 * chunk owns its output rows, so the result does not depend on the schedule. */
#ifndef S4C_CHUNKS_PER_THREAD
#define S4C_CHUNKS_PER_THREAD 8
#endif
S4C_INLINE int s4c__nchunks(int n, int nthreads, int min_rows) {
    int c = nthreads > 1 ? nthreads * S4C_CHUNKS_PER_THREAD : 1;
    int lim = n / (min_rows > 0 ? min_rows : 1);
    if (c > lim) c = lim;
    return c < 1 ? 1 : c;
}

/* Tokens per block for the sparse kernels: the X[in][block] slice they stream
 * should stay in L2 (S4C_XBLOCK_BYTES, default 2 MiB).  A multiple of
 * 4*S4C_VW, at least that, at most T. */
#ifndef S4C_XBLOCK_BYTES
#define S4C_XBLOCK_BYTES (2048 * 1024)
#endif
S4C_INLINE int s4c__token_block(int in, int T) {
    int64_t tb = (int64_t)S4C_XBLOCK_BYTES / ((int64_t)(in > 0 ? in : 1) * 4);
    tb -= tb % (4 * S4C_VW);
    if (tb < 4 * S4C_VW) tb = 4 * S4C_VW;
    return tb >= T ? (T > 0 ? T : 1) : (int)tb;
}

/* ------------------------------------------------------------ prefetch
 * The X rows a sparse pass reads are its column (block) indices, scattered
 * over X: the hardware prefetchers cannot guess them and each nonzero waited
 * on L2.  The CSR and BSR register-block passes prefetch the X slice of the
 * nonzero S4C_SPARSE_PF ahead (AVX2 EPYC, T=128, one thread: CSR 3072x768
 * 2.00 -> 1.90 ms, 768x3072 2.55 -> 2.17; BSR 4x1 768x3072 1.18 -> 0.99).
 * -DS4C_SPARSE_PF=0 turns it off. */
#ifndef S4C_SPARSE_PF
#if defined(__GNUC__)
#define S4C_SPARSE_PF 8
#else
#define S4C_SPARSE_PF 0
#endif
#endif
#if defined(__GNUC__)
#define S4C_PREFETCH(p) __builtin_prefetch(p)
#else
#define S4C_PREFETCH(p) ((void)(p))
#endif

/* ------------------------------------------------------------ epilogue */
/* y[0..n) = act(y) + res[0..n) (res may be NULL).  bias is added by the callers
 * (they initialise the accumulators with it). */
void s4c__epilogue(float *y, const float *res, int n, int act);

/* ------------------------------------------------------------ dense GEMM core
 * C[M][N] = A . B (+ bias[m]) then act / + res[m][n] per row, where
 * A(m, k) = A[m*rsa + k*csa], B[k][n] = B[k*ldb + n], C[m*ldc + n],
 * res[m*ldr + n] (bias, res may be NULL).  Serial; callers split M. */
void s4c__gemm(int M, int N, int K, const float *A, ptrdiff_t rsa, ptrdiff_t csa,
               const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, const float *bias,
               int act, const float *res, ptrdiff_t ldr);

/* ------------------------------------------------------------ reductions
 * Strict C does not let the compiler reassociate a float sum, so a plain
 * `s += x[i]` loop is one serial dependency chain; these keep 16 partial sums
 * (vectorisable lanes) instead. */
S4C_INLINE float s4c__sum(const float *x, int n) {
    float acc[16] = {0.0f};
    float s = 0.0f;
    int i = 0, j;
    for (; i + 16 <= n; i += 16)
        for (j = 0; j < 16; j++) acc[j] += x[i + j];
    for (; i < n; i++) s += x[i];
    for (j = 0; j < 16; j++) s += acc[j];
    return s;
}

/* sum over i of (x[i] - m)^2 */
S4C_INLINE float s4c__sumsq_dev(const float *x, int n, float m) {
    float acc[16] = {0.0f};
    float s = 0.0f;
    int i = 0, j;
    for (; i + 16 <= n; i += 16)
        for (j = 0; j < 16; j++) acc[j] += (x[i + j] - m) * (x[i + j] - m);
    for (; i < n; i++) s += (x[i] - m) * (x[i] - m);
    for (j = 0; j < 16; j++) s += acc[j];
    return s;
}

/* max over x[0..n), -INFINITY for n == 0 */
S4C_INLINE float s4c__max(const float *x, int n) {
    float acc[16];
    float m = -INFINITY;
    int i = 0, j;
    for (j = 0; j < 16; j++) acc[j] = -INFINITY;
    for (; i + 16 <= n; i += 16)
        for (j = 0; j < 16; j++) acc[j] = x[i + j] > acc[j] ? x[i + j] : acc[j];
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    for (j = 0; j < 16; j++) m = acc[j] > m ? acc[j] : m;
    return m;
}

/* ------------------------------------------------------------ math
 * Branch-free float approximations written so that loops calling them
 * auto-vectorise (no libm calls): |error| < 2e-7 relative for exp over its
 * range, < 1e-6 absolute for erf / tanh. */
S4C_INLINE float s4c__as_float(int32_t i) {
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}

/* exp(x) for x in [-87, 88]; clamped outside (exp(-inf) -> ~1.6e-38). */
S4C_INLINE float s4c__expf(float x) {
    const float magic = 12582912.0f; /* 1.5 * 2^23: round-to-nearest trick */
    float n, r, p;
    int32_t ni;
    x = x < 88.0f ? x : 88.0f;
    x = x > -87.0f ? x : -87.0f;
    n = (x * 1.44269504088896341f + magic) - magic;
    r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * r * r + r + 1.0f;
    ni = (int32_t)n;
    return p * s4c__as_float((ni + 127) * (1 << 23));
}

/* erf(x): rational minimax approximation on [-4, 4] (+-1 outside). */
S4C_INLINE float s4c__erff(float x) {
    float x2, p, q;
    x = x < 4.0f ? x : 4.0f;
    x = x > -4.0f ? x : -4.0f;
    x2 = x * x;
    p = -2.72614225801306e-10f;
    p = p * x2 + 2.77068142495902e-08f;
    p = p * x2 + -2.10102402082508e-06f;
    p = p * x2 + -5.69250639462346e-05f;
    p = p * x2 + -7.34990630326855e-04f;
    p = p * x2 + -2.95459980854025e-03f;
    p = p * x2 + -1.60960333262415e-02f;
    q = -1.45660718464996e-05f;
    q = q * x2 + -2.13374055278905e-04f;
    q = q * x2 + -1.68282697438203e-03f;
    q = q * x2 + -7.37332916720468e-03f;
    q = q * x2 + -1.42647390514189e-02f;
    return x * p / q;
}

/* GELU, erf form. */
S4C_INLINE float s4c__gelu_erf(float x) {
    return 0.5f * x * (1.0f + s4c__erff(x * 0.70710678118654752f));
}

/* GELU, tanh form: 0.5 x (1 + tanh(u)) == x / (1 + exp(-2u)). */
S4C_INLINE float s4c__gelu_tanh(float x) {
    float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
    return x / (1.0f + s4c__expf(-2.0f * u));
}

/* exp(x), but exactly 0 for x == -INFINITY (masked scores). */
S4C_INLINE float s4c__exp0(float x) { return x == -INFINITY ? 0.0f : s4c__expf(x); }

/* ------------------------------------------------------------ vector math
 * The same approximations on whole vectors.  With vector extensions the
 * clamps are compare + bitwise select, so every loop built on these runs
 * S4C_VW lanes at a time whatever the compiler's if-conversion does (the
 * scalar forms above stay scalar in GCC 12 -mavx2 loops: the clamp turns into
 * branches around a constant-folded polynomial). */
#ifdef S4C_VECEXT
#if S4C_VW == 8
typedef int32_t s4c_vi __attribute__((vector_size(32)));
#else
typedef int32_t s4c_vi __attribute__((vector_size(16)));
#endif
S4C_INLINE s4c_vf s4c_vsel(s4c_vi m, s4c_vf a, s4c_vf b) { /* m ? a : b */
    return (s4c_vf)((m & (s4c_vi)a) | (~m & (s4c_vi)b));
}
S4C_INLINE s4c_vf s4c_vmin(s4c_vf a, s4c_vf b) { return s4c_vsel(a < b, a, b); }
S4C_INLINE s4c_vf s4c_vmax(s4c_vf a, s4c_vf b) { return s4c_vsel(a > b, a, b); }

S4C_INLINE s4c_vf s4c_vexp(s4c_vf x) {
    const s4c_vf magic = s4c_vset1(12582912.0f);
    s4c_vf t, n, r, p;
    s4c_vi ni;
    x = s4c_vmin(x, s4c_vset1(88.0f));
    x = s4c_vmax(x, s4c_vset1(-87.0f));
    t = x * s4c_vset1(1.44269504088896341f) + magic; /* n in the low mantissa bits */
    n = t - magic;
    r = x - n * s4c_vset1(0.693359375f);
    r = r - n * s4c_vset1(-2.12194440e-4f);
    p = s4c_vset1(1.9875691500E-4f);
    p = p * r + s4c_vset1(1.3981999507E-3f);
    p = p * r + s4c_vset1(8.3334519073E-3f);
    p = p * r + s4c_vset1(4.1665795894E-2f);
    p = p * r + s4c_vset1(1.6666665459E-1f);
    p = p * r + s4c_vset1(5.0000001201E-1f);
    p = p * r * r + r + s4c_vset1(1.0f);
    ni = (s4c_vi)t - (s4c_vi)magic;
    return p * (s4c_vf)((ni + 127) << 23);
}
S4C_INLINE s4c_vf s4c_vexp0(s4c_vf x) {
    return s4c_vsel(x == s4c_vset1(-INFINITY), s4c_vset1(0.0f), s4c_vexp(x));
}
S4C_INLINE s4c_vf s4c_verf(s4c_vf x) {
    s4c_vf x2, p, q;
    x = s4c_vmin(x, s4c_vset1(4.0f));
    x = s4c_vmax(x, s4c_vset1(-4.0f));
    x2 = x * x;
    p = s4c_vset1(-2.72614225801306e-10f);
    p = p * x2 + s4c_vset1(2.77068142495902e-08f);
    p = p * x2 + s4c_vset1(-2.10102402082508e-06f);
    p = p * x2 + s4c_vset1(-5.69250639462346e-05f);
    p = p * x2 + s4c_vset1(-7.34990630326855e-04f);
    p = p * x2 + s4c_vset1(-2.95459980854025e-03f);
    p = p * x2 + s4c_vset1(-1.60960333262415e-02f);
    q = s4c_vset1(-1.45660718464996e-05f);
    q = q * x2 + s4c_vset1(-2.13374055278905e-04f);
    q = q * x2 + s4c_vset1(-1.68282697438203e-03f);
    q = q * x2 + s4c_vset1(-7.37332916720468e-03f);
    q = q * x2 + s4c_vset1(-1.42647390514189e-02f);
    return x * p / q;
}
S4C_INLINE s4c_vf s4c_vgelu_erf(s4c_vf x) {
    return s4c_vset1(0.5f) * x * (s4c_vset1(1.0f) + s4c_verf(x * s4c_vset1(0.70710678118654752f)));
}
S4C_INLINE s4c_vf s4c_vgelu_tanh(s4c_vf x) {
    s4c_vf u = s4c_vset1(0.7978845608028654f) * (x + s4c_vset1(0.044715f) * x * x * x);
    return x / (s4c_vset1(1.0f) + s4c_vexp(s4c_vset1(-2.0f) * u));
}
S4C_INLINE s4c_vf s4c_vrelu(s4c_vf x) { return s4c_vmax(x, s4c_vset1(0.0f)); }
#else
S4C_INLINE float s4c__relu(float x) { return x > 0.0f ? x : 0.0f; }
#define S4C_VMAP(name, fn)                  \
    S4C_INLINE s4c_vf name(s4c_vf x) {      \
        int i_;                             \
        for (i_ = 0; i_ < S4C_VW; i_++) x.v[i_] = fn(x.v[i_]); \
        return x;                           \
    }
S4C_VMAP(s4c_vexp0, s4c__exp0)
S4C_VMAP(s4c_vgelu_erf, s4c__gelu_erf)
S4C_VMAP(s4c_vgelu_tanh, s4c__gelu_tanh)
S4C_VMAP(s4c_vrelu, s4c__relu)
#undef S4C_VMAP
#endif

/* Partial vectors (n < S4C_VW lanes) through a zero-padded copy. */
S4C_INLINE s4c_vf s4c_vload_n(const float *p, int n) {
    float t[S4C_VW] = {0.0f};
    memcpy(t, p, (size_t)n * sizeof *p);
    return s4c_vload(t);
}
S4C_INLINE void s4c_vstore_n(float *p, s4c_vf v, int n) {
    float t[S4C_VW];
    s4c_vstore(t, v);
    memcpy(p, t, (size_t)n * sizeof *p);
}

/* Masked partial vectors for the sparse kernels' token tails (n < S4C_VW tokens,
 * e.g. T = 15 under a shape range): lanes [0, n) of p, the others 0, touching no
 * memory past p + n (AVX vmaskmovps: masked-off lanes do not fault), so a tail
 * costs one vector FMA per nonzero instead of n scalar ones (T = 15 took 3x
 * T = 16 with scalar tails).  Without AVX S4C_VMASK is undefined and the tails
 * stay scalar. */
#if defined(S4C_VECEXT) && defined(__AVX__)
#include <immintrin.h>
#define S4C_VMASK 1
typedef int s4c_vmask __attribute__((vector_size(32)));
S4C_INLINE s4c_vmask s4c_vmask_n(int n) {
    const s4c_vmask lane = {0, 1, 2, 3, 4, 5, 6, 7}, nn = {n, n, n, n, n, n, n, n};
    return lane < nn;
}
S4C_INLINE s4c_vf s4c_vload_m(const float *p, s4c_vmask m) {
    return (s4c_vf)_mm256_maskload_ps(p, (__m256i)m);
}
S4C_INLINE void s4c_vstore_m(float *p, s4c_vmask m, s4c_vf v) {
    _mm256_maskstore_ps(p, (__m256i)m, (__m256)v);
}
#endif

/* y[i] = exp0(scale * (x[i] - m[i])), acc[i] += y[i] for i < n (y may be x). */
S4C_INLINE void s4c__exp_sub_acc(const float *x, const float *m, float scale, float *y,
                                 float *acc, int n) {
    const s4c_vf sv = s4c_vset1(scale);
    int i = 0;
    for (; i + S4C_VW <= n; i += S4C_VW) {
        s4c_vf d = s4c_vsub(s4c_vload(x + i), s4c_vload(m + i));
        s4c_vf e = s4c_vexp0(s4c_vmul(sv, d));
        s4c_vstore(y + i, e);
        s4c_vstore(acc + i, s4c_vadd(s4c_vload(acc + i), e));
    }
    for (; i < n; i++) {
        const float e = s4c__exp0(scale * (x[i] - m[i]));
        y[i] = e;
        acc[i] += e;
    }
}

#endif /* S4C_INTERNAL_H */
