/*
 * s4c_extra.h -- helpers of the s4c C code generator that are not part of the
 * kernel library (codegen/c/kernels): float16 conversion, NaN-propagating
 * min/max, int8 weight dequantisation at init, and a generic attention for
 * additive biases the fused kernel cannot take.  C99 + libm, no allocation.
 */
#ifndef S4C_EXTRA_H
#define S4C_EXTRA_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------ float16
 * IEEE binary16 values are stored as uint16_t and computed in float (as numpy
 * does): s4cx_h2f widens exactly, s4cx_d2h rounds to nearest even. */
static inline float s4cx_h2f(uint16_t h) {
    unsigned e = (unsigned)(h >> 10) & 0x1fu, m = (unsigned)h & 0x3ffu;
    float v;
    if (e == 0)
        v = ldexpf((float)m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexpf((float)(m | 0x400u), (int)e - 25);
    return (h & 0x8000u) ? -v : v;
}

static inline uint16_t s4cx_d2h(double x) {
    unsigned sign = signbit(x) ? 0x8000u : 0u;
    double a = fabs(x), s;
    int e;
    if (isnan(x)) return (uint16_t)(sign | 0x7e00u);
    if (a >= 65520.0) return (uint16_t)(sign | 0x7c00u);
    if (a < 6.103515625e-05) /* subnormal range: units of 2^-24 (1024 rounds up to the smallest normal) */
        return (uint16_t)(sign | (unsigned)rint(a * 16777216.0));
    s = rint(ldexp(frexp(a, &e), 11)); /* a = s * 2^(e-11), s in [1024, 2048] */
    if (s >= 2048.0) {
        s = 1024.0;
        e += 1;
    }
    return (uint16_t)(sign | ((unsigned)(e + 14) << 10) | ((unsigned)s - 1024u));
}

/* ------------------------------------------------------------ min / max
 * numpy.maximum / numpy.minimum: a NaN operand gives NaN. */
static inline float s4cx_maxf(float a, float b) { return (a > b || a != a) ? a : b; }
static inline float s4cx_minf(float a, float b) { return (a < b || a != a) ? a : b; }
static inline double s4cx_max(double a, double b) { return (a > b || a != a) ? a : b; }
static inline double s4cx_min(double a, double b) { return (a < b || a != a) ? a : b; }

/* ------------------------------------------------------------ int8 weights
 * Dequantise packed int8 weight values to float once, at model init:
 * y = q * scale[s], where s is 0 for a per-tensor scale (per = 0), the output
 * row (per = 1) or the input column (per = 2) of the value.  Values in the
 * padding of an edge block / group get scale 0.  `index_bytes` is 2 (uint16
 * indices) or 4 (int32). */
#define S4CX_SCALE_TENSOR 0
#define S4CX_SCALE_ROW 1
#define S4CX_SCALE_COL 2
/* dense [rows][cols] (any rank as rows = product of the leading dims: per = 2
 * means the last axis, per = 1 the axis before it when rows = out) */
void s4cx_dequant_dense(int rows, int cols, const int8_t *q, const float *scale, int per, float *y);
void s4cx_dequant_csr(int out, const int32_t *indptr, const void *indices, int index_bytes,
                      const int8_t *q, const float *scale, int per, float *y);
void s4cx_dequant_bsr(int out, int in, int br, int bc, const int32_t *indptr, const void *indices,
                      int index_bytes, const int8_t *q, const float *scale, int per, float *y);
void s4cx_dequant_nm(int out, int in, int n, int m, const uint8_t *indices, const int8_t *q,
                     const float *scale, int per, float *y);

/* ------------------------------------------------------------ attention
 * Multi-head self attention over a feature-major packed qkv[3*H*D][T]
 * (T = batch*seq), like s4c_attention_qkv, but with an additive bias of any
 * broadcast shape: the bias of (sentence b, head h, query i, key j) is
 * bias[b*sb + h*sh + i*sq + j*sk] (strides in floats, 0 to broadcast; bias
 * may be NULL).  A query whose biased scores are all -INFINITY gets zeros.
 * out: float[H*D][T], must not alias qkv.  Returns 0. */
int s4cx_attention_bias(int batch, int seq, int heads, int head_dim, float scale, const float *qkv,
                        const float *bias, ptrdiff_t sb, ptrdiff_t sh, ptrdiff_t sq, ptrdiff_t sk,
                        float *out);

#endif /* S4C_EXTRA_H */
