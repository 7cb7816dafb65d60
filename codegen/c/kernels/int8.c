/*
 * int8.c -- the int8 kernels of the s4c C backend (`--precision int8`): activation
 * quantisation and the int8 Linear with int32 accumulation.  Numbers as s4c/ops/quant.py
 * defines them (QuantizeInt8, LinearInt8); the reference evaluator is the oracle.
 *
 * Quantised activations: "X4" layout, int8 [ceil(K/4)][Tp][4] with Tp = s4c_i8_tokens(T)
 * (T rounded up to 16): quad q holds features 4q..4q+3 of every token, 4 bytes per token,
 * the operand order of a 4-way int8 dot product (vpdpbusd / vpmaddubsw+vpmaddwd / sdot).
 * Features >= K and tokens >= T are 0.
 *
 * (s4c_linear_i8_cols reads the X1 layout instead: int8 [K][Tp], each feature's tokens contiguous;
 * s4c_quantize_i8 writes either or both.)
 *
 * Weights: "quad blocks" of R rows (R = 1 or 4) by one aligned feature quad: for block row
 * g (output rows g*R .. g*R+R-1) the stored quads s in [indptr[g], indptr[g+1]) have quad
 * index qidx[s] (features 4*qidx .. +3) and values vals[s][R][4] (int8, row-major; rows
 * >= out and features >= K are 0).  indptr == NULL: dense, every quad of every block row
 * stored in order (vals[g][q][R][4]); qidx is then unused.  Any sparse layout (CSR, N:M,
 * BSR of any block shape) is stored this way: the compiler regroups its nonzeros.
 *
 *     acc[o][t] = sum_k W[o][k] * Xq[k][t]                          exact int32
 *     Y[o][t]   = act( (float)acc * (xscale[t or 0] * wscale[o]) + bias[o] )   (no FMA)
 *
 * Column groups (s4c_linear_i8_cols, for weights whose nonzeros are single columns: CSR, N:M,
 * r x 1 blocks): for block row g the groups s in [gptr[g], gptr[g+1]) each hold 4 input columns
 * cols[s][0..3] (any order; a padded slot repeats a column with weight 0) and vals[s][R][4]: the
 * R rows' weights at those columns.  The kernel loads the 4 columns' X1 rows and interleaves them
 * into per-token quads (no fill-in: only the nonzeros' columns are read).
 *
 * Y is feature-major float[out][T].  comp[o] = 128 * sum_k W[o][k] (the VNNI paths add 128
 * to the activations to make them unsigned and subtract comp; the others ignore it).
 *
 * Instruction-set paths, chosen when the kernels are compiled (s4c_i8_isa() names it):
 *   "avx512-vnni"  __AVX512VNNI__ + __AVX512BW__ (not with -DS4C_NO_AVX512)   vpdpbusd zmm
 *   "avx-vnni"     __AVXVNNI__, or AVX512-VNNI + VL with -DS4C_NO_AVX512      vpdpbusd ymm
 *   "avx2"         __AVX2__: vpsignb + vpmaddubsw(|w|, sign(x, w)) + vpmaddwd: exact (each
 *                  int16 pair sum is at most 2 * 128 * 127 < 32767, no saturation)
 *   "plain-c"      anything else, -DS4C_PLAIN_C or -DS4C_I8_PLAIN: portable C99
 * -DS4C_I8_NO_VNNI skips the VNNI paths (forces AVX2 on a VNNI machine).
 * -DS4C_I8_EMULATE_VNNI (tests only): the "avx-vnni" path with vpdpbusd emulated in AVX2,
 * so its code (unsigned offset, comp) runs on an AVX2-only machine.
 *
 * How: s4c_linear_i8 walks one block row of R output rows (R = 1 or 4) at a time, over token
 * tiles of NV vectors (VL tokens each): per stored weight quad it loads NV vectors of X4
 * (VL tokens x 4 features) and, for each of the R rows, broadcasts the row's 4 weight bytes
 * and adds their 4-way dot products with every token into int32 accumulators.  The
 * epilogue converts to float, multiplies by xscale * wscale[o] and adds the bias as
 * separate roundings (fp-contract off here), so the results equal the reference
 * evaluator's; the activation is applied per output row afterwards.
 */
#include "s4c_internal.h"

#include <float.h>

/* The public functions (the generated model.c declares them itself: this library has no header,
 * so fp32 builds do not change). */
/* Tokens of an X4 buffer: T rounded up to a multiple of 16. */
int s4c_i8_tokens(int T);

/* The instruction-set path these kernels were built with (see above). */
const char *s4c_i8_isa(void);

/* saturate[-127,127](round_half_even(X[k][t] / s)) for X float[K][T] (feature-major), with
 * s = *scale (static, per tensor) or, when scale is NULL, s = scale_out[t] = max_k |X[k][t]| / 127
 * (1 for an all-zero token; dynamic, per token), written to Xq (X4 layout, ceil(K/4) *
 * s4c_i8_tokens(T) * 4 bytes) and / or X1 (X1 layout, K * s4c_i8_tokens(T) bytes); either may be
 * NULL.  Returns S4C_OK or S4C_EINVAL. */
int s4c_quantize_i8(int K, int T, const float *X, const float *scale, float *scale_out,
                    int8_t *Xq, int8_t *X1);

/* The int8 Linear (see above).  R: 1 or 4.  xscale: float[T] when xscale_per_token, else
 * float[1].  bias may be NULL.  act: S4C_ACT_*.  Returns S4C_OK or S4C_EINVAL. */
int s4c_linear_i8(int out, int in, int T, int R, const int32_t *indptr, const uint16_t *qidx,
                  const int8_t *vals, const int32_t *comp, const int8_t *Xq,
                  const float *xscale, int xscale_per_token, const float *wscale,
                  const float *bias, int act, float *Y);

/* The int8 Linear on column groups (see above), reading X1.  R: 1 or 4. */
int s4c_linear_i8_cols(int out, int in, int T, int R, const int32_t *gptr, const uint16_t *cols,
                       const int8_t *vals, const int32_t *comp, const int8_t *X1,
                       const float *xscale, int xscale_per_token, const float *wscale,
                       const float *bias, int act, float *Y);

/* The epilogue must round the product and the bias add separately (as numpy does). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

#if !defined(S4C_PLAIN_C) && !defined(S4C_I8_PLAIN) && defined(__GNUC__) && \
    (defined(__x86_64__) || defined(__i386__))
#if defined(S4C_I8_EMULATE_VNNI) && defined(__AVX2__)
#define S4C_I8_PATH 2
#define S4C_I8_EMULATED 1
#elif !defined(S4C_I8_NO_VNNI) && !defined(S4C_NO_AVX512) && defined(__AVX512VNNI__) && \
    defined(__AVX512BW__) && defined(__AVX512VL__)
#define S4C_I8_PATH 3
#elif !defined(S4C_I8_NO_VNNI) && \
    (defined(__AVXVNNI__) || (defined(__AVX512VNNI__) && defined(__AVX512VL__)))
#define S4C_I8_PATH 2
#elif defined(__AVX2__)
#define S4C_I8_PATH 1
#endif
#endif
#ifndef S4C_I8_PATH
#define S4C_I8_PATH 0
#endif

#if S4C_I8_PATH > 0
#include <immintrin.h>
#endif

/* ------------------------------------------------------------ the 4-way dot product
 * i8_v: VL int32 accumulators (one per token); i8_x: VL tokens x 4 int8 features of X4;
 * i8_w: one row's 4 weight bytes, broadcast (and what the path derives from them). */
#if S4C_I8_PATH == 3
#define I8_VL 16
#define I8_OFFSET 1 /* activations + 128 (unsigned), minus comp[o] */
typedef __m512i i8_v;
typedef __m512i i8_x;
typedef __m512i i8_w;
S4C_INLINE i8_v i8_zero(void) { return _mm512_setzero_si512(); }
S4C_INLINE i8_x i8_load(const int8_t *p) {
    return _mm512_xor_si512(_mm512_loadu_si512((const void *)p), _mm512_set1_epi8((char)0x80));
}
S4C_INLINE i8_w i8_wprep(const int8_t *w) {
    int32_t q;
    memcpy(&q, w, 4);
    return _mm512_set1_epi32(q);
}
S4C_INLINE i8_v i8_dot(i8_v a, i8_x x, i8_w w) { return _mm512_dpbusd_epi32(a, x, w); }
S4C_INLINE void i8_store(int32_t *p, i8_v a) { _mm512_storeu_si512((void *)p, a); }
static const char s4c__i8_isa[] = "avx512-vnni";

#elif S4C_I8_PATH == 2
#define I8_VL 8
#define I8_OFFSET 1
typedef __m256i i8_v;
typedef __m256i i8_x;
typedef __m256i i8_w;
S4C_INLINE i8_v i8_zero(void) { return _mm256_setzero_si256(); }
S4C_INLINE i8_x i8_load(const int8_t *p) {
    return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(const void *)p),
                            _mm256_set1_epi8((char)0x80));
}
S4C_INLINE i8_w i8_wprep(const int8_t *w) {
    int32_t q;
    memcpy(&q, w, 4);
    return _mm256_set1_epi32(q);
}
#if defined(S4C_I8_EMULATED)
/* vpdpbusd in AVX2 (tests): even / odd bytes as 16-bit (x unsigned, w signed), vpmaddwd. */
S4C_INLINE i8_v i8_dot(i8_v a, i8_x x, i8_w w) {
    const __m256i lo = _mm256_set1_epi16(0x00ff);
    __m256i xe = _mm256_and_si256(x, lo), xo = _mm256_srli_epi16(x, 8);
    __m256i we = _mm256_srai_epi16(_mm256_slli_epi16(w, 8), 8), wo = _mm256_srai_epi16(w, 8);
    a = _mm256_add_epi32(a, _mm256_madd_epi16(xe, we));
    return _mm256_add_epi32(a, _mm256_madd_epi16(xo, wo));
}
static const char s4c__i8_isa[] = "avx-vnni (emulated)";
#elif defined(__AVXVNNI__)
S4C_INLINE i8_v i8_dot(i8_v a, i8_x x, i8_w w) { return _mm256_dpbusd_avx_epi32(a, x, w); }
static const char s4c__i8_isa[] = "avx-vnni";
#else
S4C_INLINE i8_v i8_dot(i8_v a, i8_x x, i8_w w) { return _mm256_dpbusd_epi32(a, x, w); }
static const char s4c__i8_isa[] = "avx-vnni";
#endif
S4C_INLINE void i8_store(int32_t *p, i8_v a) { _mm256_storeu_si256((__m256i *)(void *)p, a); }

#elif S4C_I8_PATH == 1
#define I8_VL 8
#define I8_OFFSET 0
typedef __m256i i8_v;
typedef __m256i i8_x;
typedef struct {
    __m256i w;   /* the 4 bytes broadcast: their signs */
    __m256i abs; /* |w| as unsigned bytes */
} i8_w;
S4C_INLINE i8_v i8_zero(void) { return _mm256_setzero_si256(); }
S4C_INLINE i8_x i8_load(const int8_t *p) { return _mm256_loadu_si256((const __m256i *)(const void *)p); }
S4C_INLINE i8_w i8_wprep(const int8_t *w) {
    int32_t q;
    i8_w r;
    memcpy(&q, w, 4);
    r.w = _mm256_set1_epi32(q);
    r.abs = _mm256_abs_epi8(r.w);
    return r;
}
/* x * w = |w| * (x with w's sign): vpmaddubsw(unsigned |w|, signed sign(x, w)) sums pairs
 * into int16 without saturating (|x| <= 127, |w| <= 128: at most 32512), vpmaddwd by 1
 * sums the pairs into int32. */
S4C_INLINE i8_v i8_dot(i8_v a, i8_x x, i8_w w) {
    __m256i p = _mm256_maddubs_epi16(w.abs, _mm256_sign_epi8(x, w.w));
    return _mm256_add_epi32(a, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}
S4C_INLINE void i8_store(int32_t *p, i8_v a) { _mm256_storeu_si256((__m256i *)(void *)p, a); }
static const char s4c__i8_isa[] = "avx2";

#else /* portable C99: i8_tile below is plain loops */
#define I8_VL 8
#define I8_OFFSET 0
static const char s4c__i8_isa[] = "plain-c";
#endif

#define I8_TILE_MAX (4 * I8_VL) /* tokens of the widest tile */

const char *s4c_i8_isa(void) { return s4c__i8_isa; }

int s4c_i8_tokens(int T) { return (T + 15) / 16 * 16; }

/* ------------------------------------------------------------ quantisation */
S4C_INLINE int8_t i8_quantize1(float x, float s) {
    float r = nearbyintf(x / s);
    r = r > 127.0f ? 127.0f : r;
    r = r < -127.0f ? -127.0f : r;
    return (int8_t)(r == r ? r : 0.0f);
}

/* dst[4t + j] = quantize(rows[j][t]) for t < T (a NULL row: feature >= K, zeros), 0 for T <= t < Tp;
 * the scale is s[t] (s != NULL, per token) or s0. */
static void i8_quantize_quad(const float *const rows[4], const float *s, float s0, int T, int Tp,
                             int8_t *S4C_RESTRICT dst) {
    int t = 0, j;
#if S4C_I8_PATH > 0
    /* 8 tokens x 4 features: divide, round half to even, clamp, convert, pack to bytes, and
     * transpose each 4x4 byte block into token order */
    const __m256i order = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                           0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m256 hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
    for (; t + 8 <= T; t += 8) {
        const __m256 sv = s ? _mm256_loadu_ps(s + t) : _mm256_set1_ps(s0);
        __m256i v[4];
        for (j = 0; j < 4; j++) {
            __m256 r = rows[j] ? _mm256_div_ps(_mm256_loadu_ps(rows[j] + t), sv) : _mm256_setzero_ps();
            r = _mm256_round_ps(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            v[j] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi));
        }
        _mm256_storeu_si256((__m256i *)(void *)(dst + 4 * t),
                            _mm256_shuffle_epi8(_mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]),
                                                                   _mm256_packs_epi32(v[2], v[3])),
                                                order));
    }
#endif
    for (; t < T; t++)
        for (j = 0; j < 4; j++) dst[4 * t + j] = rows[j] ? i8_quantize1(rows[j][t], s ? s[t] : s0) : 0;
    memset(dst + 4 * t, 0, (size_t)(Tp - t) * 4);
}

/* dst[t] = quantize(x[t]) for t < T, 0 for T <= t < Tp (X1 layout); scale s[t] (s != NULL) or s0. */
static void i8_quantize_row(const float *S4C_RESTRICT x, const float *s, float s0, int T, int Tp,
                            int8_t *S4C_RESTRICT dst) {
    int t = 0;
#if S4C_I8_PATH > 0
    const __m256 hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (; t + 32 <= T; t += 32) {
        __m256i v[4];
        int j;
        for (j = 0; j < 4; j++) {
            const __m256 sv = s ? _mm256_loadu_ps(s + t + 8 * j) : _mm256_set1_ps(s0);
            __m256 r = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x + t + 8 * j), sv),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            v[j] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi));
        }
        _mm256_storeu_si256((__m256i *)(void *)(dst + t),
                            _mm256_permutevar8x32_epi32(_mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]),
                                                                           _mm256_packs_epi32(v[2], v[3])),
                                                        order));
    }
#endif
    if (s)
        for (; t < T; t++) dst[t] = i8_quantize1(x[t], s[t]);
    else
        for (; t < T; t++) dst[t] = i8_quantize1(x[t], s0);
    memset(dst + T, 0, (size_t)(Tp - T));
}

int s4c_quantize_i8(int K, int T, const float *X, const float *scale, float *scale_out,
                    int8_t *Xq, int8_t *X1) {
    int Tp, Kq, q;
    if (K < 0 || T < 0 || (!Xq && !X1) || (!scale && !scale_out) || ((size_t)K * T > 0 && !X))
        return S4C_EINVAL;
    Tp = s4c_i8_tokens(T);
    Kq = (K + 3) / 4;
    if (!scale) {
        int t, k;
        for (t = 0; t < T; t++) scale_out[t] = 0.0f;
        for (k = 0; k < K; k++) {
            const float *x = X + (size_t)k * T;
            for (t = 0; t < T; t++) {
                float a = fabsf(x[t]);
                scale_out[t] = a > scale_out[t] ? a : scale_out[t];
            }
        }
        for (t = 0; t < T; t++) {
            float a = scale_out[t];
            scale_out[t] = (a > 0.0f && a <= FLT_MAX) ? a / 127.0f : 1.0f;
        }
    }
#ifdef _OPENMP
#pragma omp parallel for num_threads(s4c__threads_for((double)K * T, 32768.0)) schedule(static)
#endif
    for (q = 0; q < Kq; q++) {
        const float *rows[4];
        int j;
        for (j = 0; j < 4; j++) rows[j] = 4 * q + j < K ? X + (size_t)(4 * q + j) * T : NULL;
        if (Xq)
            i8_quantize_quad(rows, scale ? NULL : scale_out, scale ? scale[0] : 0.0f, T, Tp,
                             Xq + (size_t)q * Tp * 4);
        if (X1)
            for (j = 0; j < 4 && rows[j]; j++)
                i8_quantize_row(rows[j], scale ? NULL : scale_out, scale ? scale[0] : 0.0f, T, Tp,
                                X1 + (size_t)(4 * q + j) * Tp);
    }
    return S4C_OK;
}

/* ------------------------------------------------------------ the int8 Linear */
typedef struct {
    int out, in, T, Tp, R, kq, act, per_token;
    const int32_t *indptr;
    const uint16_t *qidx;
    const int8_t *vals;
    const int32_t *comp;
    const int8_t *X;
    const float *xscale, *wscale, *bias;
    float *Y;
} i8_args;

/* acc[r][0 .. NV*VL) for block row g, tokens t0 .. t0 + NV*VL (R, NV, DENSE constants). */
#if S4C_I8_PATH == 0
/* portable: per-byte int32 partial sums p[r][4*l + j] += x[l][j] * w[r][j] over the tile (contiguous,
 * so the compiler vectorises it as widening multiply-adds, e.g. NEON smlal), then the 4 partial
 * sums of each token are added (exact: int32 throughout). */
S4C_INLINE void i8_tile(const i8_args *A, int R, int NV, int DENSE, int g, int t0,
                        int32_t *S4C_RESTRICT acc) {
    int32_t part[4][4 * I8_TILE_MAX];
    const int n = NV * I8_VL;
    int r, l, s, s0, s1;
    for (r = 0; r < R; r++)
        for (l = 0; l < 4 * n; l++) part[r][l] = 0;
    s0 = DENSE ? g * A->kq : A->indptr[g];
    s1 = DENSE ? s0 + A->kq : A->indptr[g + 1];
    for (s = s0; s < s1; s++) {
        const int q = DENSE ? s - s0 : (int)A->qidx[s];
        const int8_t *S4C_RESTRICT xp = A->X + ((size_t)q * A->Tp + t0) * 4;
        const int8_t *w = A->vals + (size_t)s * R * 4;
        for (r = 0; r < R; r++) {
            const int32_t w0 = w[4 * r], w1 = w[4 * r + 1], w2 = w[4 * r + 2], w3 = w[4 * r + 3];
            int32_t *S4C_RESTRICT pr = part[r];
            for (l = 0; l < 4 * n; l += 4) {
                pr[l] += xp[l] * w0;
                pr[l + 1] += xp[l + 1] * w1;
                pr[l + 2] += xp[l + 2] * w2;
                pr[l + 3] += xp[l + 3] * w3;
            }
        }
    }
    for (r = 0; r < R; r++)
        for (l = 0; l < n; l++)
            acc[r * I8_TILE_MAX + l] = part[r][4 * l] + part[r][4 * l + 1] + part[r][4 * l + 2] + part[r][4 * l + 3];
}
#else
S4C_INLINE void i8_tile(const i8_args *A, int R, int NV, int DENSE, int g, int t0,
                        int32_t *S4C_RESTRICT acc) {
    i8_v a0[4], a1[4], a2[4], a3[4];
    int v, s, s0, s1;
    for (v = 0; v < NV; v++) a0[v] = a1[v] = a2[v] = a3[v] = i8_zero();
    if (DENSE) {
        s0 = g * A->kq;
        s1 = s0 + A->kq;
    } else {
        s0 = A->indptr[g];
        s1 = A->indptr[g + 1];
    }
    for (s = s0; s < s1; s++) {
        const int q = DENSE ? s - s0 : (int)A->qidx[s];
        const int8_t *xp = A->X + ((size_t)q * A->Tp + t0) * 4;
        const int8_t *w = A->vals + (size_t)s * R * 4;
        const i8_w w0 = i8_wprep(w);
        if (R == 4) {
            const i8_w w1 = i8_wprep(w + 4), w2 = i8_wprep(w + 8), w3 = i8_wprep(w + 12);
            for (v = 0; v < NV; v++) {
                const i8_x x = i8_load(xp + v * I8_VL * 4);
                a0[v] = i8_dot(a0[v], x, w0);
                a1[v] = i8_dot(a1[v], x, w1);
                a2[v] = i8_dot(a2[v], x, w2);
                a3[v] = i8_dot(a3[v], x, w3);
            }
        } else {
            for (v = 0; v < NV; v++) a0[v] = i8_dot(a0[v], i8_load(xp + v * I8_VL * 4), w0);
        }
    }
    for (v = 0; v < NV; v++) {
        i8_store(acc + v * I8_VL, a0[v]);
        if (R == 4) {
            i8_store(acc + I8_TILE_MAX + v * I8_VL, a1[v]);
            i8_store(acc + 2 * I8_TILE_MAX + v * I8_VL, a2[v]);
            i8_store(acc + 3 * I8_TILE_MAX + v * I8_VL, a3[v]);
        }
    }
}
#endif

/* Y[o][t0 .. t0+n) from acc (rows o0 .. o0+nr); one loop per case so that each vectorises. */
static void i8_epilogue_offset(const i8_args *A, int o0, int nr, int t0, int n, const int32_t *acc,
                               int offset) {
    int r, j;
    for (r = 0; r < nr; r++) {
        const int o = o0 + r;
        const float ws = A->wscale[o];
        const uint32_t c = offset ? (uint32_t)A->comp[o] : 0u;
        const int32_t *S4C_RESTRICT ar = acc + r * I8_TILE_MAX;
        float *S4C_RESTRICT y = A->Y + (size_t)o * A->T + t0;
        const float b = A->bias ? A->bias[o] : 0.0f;
        const float *S4C_RESTRICT xs = A->per_token ? A->xscale + t0 : A->xscale;
        j = 0;
#if S4C_I8_PATH > 0
        {   /* 8 at a time: int32 - comp, to float, * (xscale * wscale), + bias: two roundings */
            const __m256i cv = _mm256_set1_epi32((int32_t)c);
            const __m256 wv = _mm256_set1_ps(ws), bv = _mm256_set1_ps(b);
            const __m256 sv = _mm256_set1_ps(xs[0] * ws);
            for (; j + 8 <= n; j += 8) {
                const __m256i a = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(ar + j)), cv);
                const __m256 s = A->per_token ? _mm256_mul_ps(_mm256_loadu_ps(xs + j), wv) : sv;
                __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(a), s);
                if (A->bias) v = _mm256_add_ps(v, bv);
                _mm256_storeu_ps(y + j, v);
            }
        }
#endif
        if (A->per_token) {
            if (A->bias)
                for (; j < n; j++) y[j] = (float)(int32_t)((uint32_t)ar[j] - c) * (xs[j] * ws) + b;
            else
                for (; j < n; j++) y[j] = (float)(int32_t)((uint32_t)ar[j] - c) * (xs[j] * ws);
        } else {
            const float s = xs[0] * ws;
            if (A->bias)
                for (; j < n; j++) y[j] = (float)(int32_t)((uint32_t)ar[j] - c) * s + b;
            else
                for (; j < n; j++) y[j] = (float)(int32_t)((uint32_t)ar[j] - c) * s;
        }
    }
}

static void i8_epilogue(const i8_args *A, int o0, int nr, int t0, int n, const int32_t *acc) {
    i8_epilogue_offset(A, o0, nr, t0, n, acc, I8_OFFSET);
}

S4C_INLINE void i8_rows(const i8_args *A, int R, int DENSE, int g0, int g1) {
    int32_t acc[4 * I8_TILE_MAX];
    const int NV = R == 4 ? 2 : 4;
    int g;
    for (g = g0; g < g1; g++) {
        const int o0 = g * R;
        const int nr = A->out - o0 < R ? A->out - o0 : R;
        int t0 = 0, r;
        for (; t0 + NV * I8_VL <= A->Tp && t0 < A->T; t0 += NV * I8_VL) {
            const int n = A->T - t0 < NV * I8_VL ? A->T - t0 : NV * I8_VL;
            if (R == 4) {
                if (DENSE) i8_tile(A, 4, 2, 1, g, t0, acc); else i8_tile(A, 4, 2, 0, g, t0, acc);
            } else {
                if (DENSE) i8_tile(A, 1, 4, 1, g, t0, acc); else i8_tile(A, 1, 4, 0, g, t0, acc);
            }
            i8_epilogue(A, o0, nr, t0, n, acc);
        }
        for (; t0 < A->T; t0 += I8_VL) { /* the last tokens, one vector at a time */
            const int n = A->T - t0 < I8_VL ? A->T - t0 : I8_VL;
            if (R == 4) {
                if (DENSE) i8_tile(A, 4, 1, 1, g, t0, acc); else i8_tile(A, 4, 1, 0, g, t0, acc);
            } else {
                if (DENSE) i8_tile(A, 1, 1, 1, g, t0, acc); else i8_tile(A, 1, 1, 0, g, t0, acc);
            }
            i8_epilogue(A, o0, nr, t0, n, acc);
        }
        if (A->act != S4C_ACT_NONE)
            for (r = 0; r < nr; r++) {
                float *y = A->Y + (size_t)(o0 + r) * A->T;
                s4c_activation(A->act, (size_t)A->T, y, y);
            }
    }
}

static void i8_part(const i8_args *A, int g0, int g1) {
    if (A->R == 4) {
        if (A->indptr) i8_rows(A, 4, 0, g0, g1); else i8_rows(A, 4, 1, g0, g1);
    } else {
        if (A->indptr) i8_rows(A, 1, 0, g0, g1); else i8_rows(A, 1, 1, g0, g1);
    }
}

int s4c_linear_i8(int out, int in, int T, int R, const int32_t *indptr, const uint16_t *qidx,
                  const int8_t *vals, const int32_t *comp, const int8_t *Xq,
                  const float *xscale, int xscale_per_token, const float *wscale,
                  const float *bias, int act, float *Y) {
    i8_args A;
    int G;
    if (out < 0 || in < 0 || T < 0 || (R != 1 && R != 4) || !xscale || !wscale || !Y || !comp ||
        (indptr && !qidx))
        return S4C_EINVAL;
    if (out == 0 || T == 0) return S4C_OK;
    A.out = out;
    A.in = in;
    A.T = T;
    A.Tp = s4c_i8_tokens(T);
    A.R = R;
    A.kq = (in + 3) / 4;
    A.act = act;
    A.per_token = xscale_per_token != 0;
    A.indptr = indptr;
    A.qidx = qidx;
    A.vals = vals;
    A.comp = comp;
    A.X = Xq;
    A.xscale = xscale;
    A.wscale = wscale;
    A.bias = bias;
    A.Y = Y;
    G = (out + R - 1) / R;
#ifdef _OPENMP
    {
        const double quads = indptr ? (double)(indptr[G] - indptr[0]) : (double)G * A.kq;
        const double work = (quads * R * 4 + out) * (double)T;
        const int nt = s4c__threads_for(work, 262144.0);
        const int nc = s4c__nchunks(G, nt, R >= 4 ? 1 : 4);
        int c;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
        for (c = 0; c < nc; c++) {
            int b, e;
            if (indptr)
                s4c__split_weighted(indptr, G, 1, nc, c, &b, &e);
            else
                s4c__split_even(G, nc, c, &b, &e);
            i8_part(&A, b, e);
        }
    }
#else
    i8_part(&A, 0, G);
#endif
    return S4C_OK;
}

/* ------------------------------------------------------------ the int8 Linear on column groups */
#define G8_TILE 16 /* tokens per tile: two 8-lane vectors */

#if S4C_I8_PATH > 0
typedef __m256i g8_v;
#if S4C_I8_PATH == 1
#define G8_OFFSET 0
typedef i8_w g8_w;
S4C_INLINE g8_w g8_wprep(const int8_t *w) { return i8_wprep(w); }
S4C_INLINE g8_v g8_dot(g8_v a, g8_v x, g8_w w) { return i8_dot(a, x, w); }
#else
#define G8_OFFSET 1
typedef __m256i g8_w;
S4C_INLINE g8_w g8_wprep(const int8_t *w) {
    int32_t q;
    memcpy(&q, w, 4);
    return _mm256_set1_epi32(q);
}
#if defined(S4C_I8_EMULATED)
S4C_INLINE g8_v g8_dot(g8_v a, g8_v x, g8_w w) { return i8_dot(a, x, w); }
#elif S4C_I8_PATH == 2 && defined(__AVXVNNI__)
S4C_INLINE g8_v g8_dot(g8_v a, g8_v x, g8_w w) { return _mm256_dpbusd_avx_epi32(a, x, w); }
#else
S4C_INLINE g8_v g8_dot(g8_v a, g8_v x, g8_w w) { return _mm256_dpbusd_epi32(a, x, w); }
#endif
#endif

/* acc[r][0..16) for block row g, tokens t0..t0+16: per group, the 4 columns' 16 tokens interleaved
 * into per-token quads (tokens 0-7 in v0, 8-15 in v1), then each row's 4 weights dotted in. */
S4C_INLINE void g8_tile(const i8_args *A, int R, int g, int t0, int32_t *S4C_RESTRICT acc) {
    g8_v a0[2], a1[2], a2[2], a3[2];
    int v, s;
    const size_t Tp = (size_t)A->Tp;
    for (v = 0; v < 2; v++) a0[v] = a1[v] = a2[v] = a3[v] = _mm256_setzero_si256();
    for (s = A->indptr[g]; s < A->indptr[g + 1]; s++) {
        const uint16_t *c = A->qidx + (size_t)s * 4;
        const int8_t *X = A->X + t0;
        const __m128i x0 = _mm_loadu_si128((const __m128i *)(const void *)(X + c[0] * Tp));
        const __m128i x1 = _mm_loadu_si128((const __m128i *)(const void *)(X + c[1] * Tp));
        const __m128i x2 = _mm_loadu_si128((const __m128i *)(const void *)(X + c[2] * Tp));
        const __m128i x3 = _mm_loadu_si128((const __m128i *)(const void *)(X + c[3] * Tp));
        const __m128i p01l = _mm_unpacklo_epi8(x0, x1), p01h = _mm_unpackhi_epi8(x0, x1);
        const __m128i p23l = _mm_unpacklo_epi8(x2, x3), p23h = _mm_unpackhi_epi8(x2, x3);
        g8_v v0 = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi16(p01l, p23l)),
                                          _mm_unpackhi_epi16(p01l, p23l), 1);
        g8_v v1 = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi16(p01h, p23h)),
                                          _mm_unpackhi_epi16(p01h, p23h), 1);
        const int8_t *w = A->vals + (size_t)s * R * 4;
        const g8_w w0 = g8_wprep(w);
        if (G8_OFFSET) {
            v0 = _mm256_xor_si256(v0, _mm256_set1_epi8((char)0x80));
            v1 = _mm256_xor_si256(v1, _mm256_set1_epi8((char)0x80));
        }
        a0[0] = g8_dot(a0[0], v0, w0);
        a0[1] = g8_dot(a0[1], v1, w0);
        if (R == 4) {
            const g8_w w1 = g8_wprep(w + 4), w2 = g8_wprep(w + 8), w3 = g8_wprep(w + 12);
            a1[0] = g8_dot(a1[0], v0, w1);
            a1[1] = g8_dot(a1[1], v1, w1);
            a2[0] = g8_dot(a2[0], v0, w2);
            a2[1] = g8_dot(a2[1], v1, w2);
            a3[0] = g8_dot(a3[0], v0, w3);
            a3[1] = g8_dot(a3[1], v1, w3);
        }
    }
    for (v = 0; v < 2; v++) {
        _mm256_storeu_si256((__m256i *)(void *)(acc + 8 * v), a0[v]);
        if (R == 4) {
            _mm256_storeu_si256((__m256i *)(void *)(acc + I8_TILE_MAX + 8 * v), a1[v]);
            _mm256_storeu_si256((__m256i *)(void *)(acc + 2 * I8_TILE_MAX + 8 * v), a2[v]);
            _mm256_storeu_si256((__m256i *)(void *)(acc + 3 * I8_TILE_MAX + 8 * v), a3[v]);
        }
    }
}
#else
#define G8_OFFSET 0
S4C_INLINE void g8_tile(const i8_args *A, int R, int g, int t0, int32_t *S4C_RESTRICT acc) {
    int r, l, s;
    const size_t Tp = (size_t)A->Tp;
    for (r = 0; r < R; r++)
        for (l = 0; l < G8_TILE; l++) acc[r * I8_TILE_MAX + l] = 0;
    for (s = A->indptr[g]; s < A->indptr[g + 1]; s++) {
        const uint16_t *c = A->qidx + (size_t)s * 4;
        const int8_t *S4C_RESTRICT x0 = A->X + c[0] * Tp + t0;
        const int8_t *S4C_RESTRICT x1 = A->X + c[1] * Tp + t0;
        const int8_t *S4C_RESTRICT x2 = A->X + c[2] * Tp + t0;
        const int8_t *S4C_RESTRICT x3 = A->X + c[3] * Tp + t0;
        const int8_t *w = A->vals + (size_t)s * R * 4;
        for (r = 0; r < R; r++) {
            const int32_t w0 = w[4 * r], w1 = w[4 * r + 1], w2 = w[4 * r + 2], w3 = w[4 * r + 3];
            int32_t *S4C_RESTRICT ar = acc + r * I8_TILE_MAX;
            for (l = 0; l < G8_TILE; l++) ar[l] += x0[l] * w0 + x1[l] * w1 + x2[l] * w2 + x3[l] * w3;
        }
    }
}
#endif

S4C_INLINE void g8_rows(const i8_args *A, int R, int g0, int g1) {
    int32_t acc[4 * I8_TILE_MAX];
    int g;
    for (g = g0; g < g1; g++) {
        const int o0 = g * R;
        const int nr = A->out - o0 < R ? A->out - o0 : R;
        int t0, r;
        for (t0 = 0; t0 < A->T; t0 += G8_TILE) { /* Tp is a multiple of 16: every tile is whole */
            const int n = A->T - t0 < G8_TILE ? A->T - t0 : G8_TILE;
            if (R == 4) g8_tile(A, 4, g, t0, acc); else g8_tile(A, 1, g, t0, acc);
            i8_epilogue_offset(A, o0, nr, t0, n, acc, G8_OFFSET);
        }
        if (A->act != S4C_ACT_NONE)
            for (r = 0; r < nr; r++) {
                float *y = A->Y + (size_t)(o0 + r) * A->T;
                s4c_activation(A->act, (size_t)A->T, y, y);
            }
    }
}

static void g8_part(const i8_args *A, int g0, int g1) {
    if (A->R == 4) g8_rows(A, 4, g0, g1); else g8_rows(A, 1, g0, g1);
}

int s4c_linear_i8_cols(int out, int in, int T, int R, const int32_t *gptr, const uint16_t *cols,
                       const int8_t *vals, const int32_t *comp, const int8_t *X1,
                       const float *xscale, int xscale_per_token, const float *wscale,
                       const float *bias, int act, float *Y) {
    i8_args A;
    int G;
    if (out < 0 || in < 0 || T < 0 || (R != 1 && R != 4) || !gptr || !xscale || !wscale || !Y || !comp)
        return S4C_EINVAL;
    if (out == 0 || T == 0) return S4C_OK;
    memset(&A, 0, sizeof A);
    A.out = out;
    A.in = in;
    A.T = T;
    A.Tp = s4c_i8_tokens(T);
    A.R = R;
    A.act = act;
    A.per_token = xscale_per_token != 0;
    A.indptr = gptr;
    A.qidx = cols;
    A.vals = vals;
    A.comp = comp;
    A.X = X1;
    A.xscale = xscale;
    A.wscale = wscale;
    A.bias = bias;
    A.Y = Y;
    G = (out + R - 1) / R;
#ifdef _OPENMP
    {
        const double work = ((double)(gptr[G] - gptr[0]) * R * 4 + out) * (double)T;
        const int nt = s4c__threads_for(work, 262144.0);
        const int nc = s4c__nchunks(G, nt, R >= 4 ? 1 : 4);
        int c;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
        for (c = 0; c < nc; c++) {
            int b, e;
            s4c__split_weighted(gptr, G, 1, nc, c, &b, &e);
            g8_part(&A, b, e);
        }
    }
#else
    g8_part(&A, 0, G);
#endif
    return S4C_OK;
}
