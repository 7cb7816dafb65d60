/* s4c_extra.c -- see s4c_extra.h. */
#include "s4c_extra.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static float scale_of(const float *scale, int per, int row, int col, int rows, int cols) {
    if (per == S4CX_SCALE_ROW) return row < rows ? scale[row] : 0.0f;
    if (per == S4CX_SCALE_COL) return col < cols ? scale[col] : 0.0f;
    return scale[0];
}

static int index_at(const void *indices, int index_bytes, int32_t k) {
    if (index_bytes == 2) return ((const uint16_t *)indices)[k];
    return ((const int32_t *)indices)[k];
}

void s4cx_dequant_dense(int rows, int cols, const int8_t *q, const float *scale, int per, float *y) {
    int r, c;
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c++)
            y[(size_t)r * cols + c] = (float)q[(size_t)r * cols + c] * scale_of(scale, per, r, c, rows, cols);
}

void s4cx_dequant_csr(int out, const int32_t *indptr, const void *indices, int index_bytes,
                      const int8_t *q, const float *scale, int per, float *y) {
    int r;
    int32_t k;
    for (r = 0; r < out; r++)
        for (k = indptr[r]; k < indptr[r + 1]; k++) {
            int c = index_at(indices, index_bytes, k);
            y[k] = (float)q[k] * scale_of(scale, per, r, c, out, c + 1);
        }
}

void s4cx_dequant_bsr(int out, int in, int br, int bc, const int32_t *indptr, const void *indices,
                      int index_bytes, const int8_t *q, const float *scale, int per, float *y) {
    int nbr = (out + br - 1) / br, b, i, j;
    int32_t k;
    for (b = 0; b < nbr; b++)
        for (k = indptr[b]; k < indptr[b + 1]; k++) {
            int c0 = index_at(indices, index_bytes, k) * bc;
            for (i = 0; i < br; i++)
                for (j = 0; j < bc; j++) {
                    size_t e = ((size_t)k * br + i) * bc + j;
                    y[e] = (float)q[e] * scale_of(scale, per, b * br + i, c0 + j, out, in);
                }
        }
}

void s4cx_dequant_nm(int out, int in, int n, int m, const uint8_t *indices, const int8_t *q,
                     const float *scale, int per, float *y) {
    int groups = (in + m - 1) / m, r, s;
    for (r = 0; r < out; r++)
        for (s = 0; s < groups * n; s++) {
            size_t e = (size_t)r * groups * n + s;
            int col = (s / n) * m + indices[e];
            y[e] = (float)q[e] * scale_of(scale, per, r, col, out, in);
        }
}

int s4cx_attention_bias(int batch, int seq, int heads, int head_dim, float scale, const float *qkv,
                        const float *bias, ptrdiff_t sb, ptrdiff_t sh, ptrdiff_t sq, ptrdiff_t sk,
                        float *out) {
    const ptrdiff_t T = (ptrdiff_t)batch * seq, HD = (ptrdiff_t)heads * head_dim;
    ptrdiff_t item, items = (ptrdiff_t)batch * heads * seq;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (items * seq * head_dim > 65536)
#endif
    for (item = 0; item < items; item++) {
        const ptrdiff_t b = item / ((ptrdiff_t)heads * seq), h = (item / seq) % heads, i = item % seq;
        const float *q = qkv + h * head_dim * T + b * seq + i;
        const float *k = qkv + (HD + h * head_dim) * T + b * seq;
        const float *v = qkv + (2 * HD + h * head_dim) * T + b * seq;
        float *o = out + h * head_dim * T + b * seq + i;
        float mx = -INFINITY, sum = 0.0f;
        ptrdiff_t j, d;
        for (j = 0; j < seq; j++) {
            float s = 0.0f;
            for (d = 0; d < head_dim; d++) s += q[d * T] * k[d * T + j];
            s *= scale;
            if (bias) s += bias[b * sb + h * sh + i * sq + j * sk];
            if (s > mx) mx = s;
        }
        for (d = 0; d < head_dim; d++) o[d * T] = 0.0f;
        if (mx == -INFINITY) continue; /* every key masked: zeros */
        for (j = 0; j < seq; j++) {
            float s = 0.0f, p;
            for (d = 0; d < head_dim; d++) s += q[d * T] * k[d * T + j];
            s *= scale;
            if (bias) s += bias[b * sb + h * sh + i * sq + j * sk];
            p = expf(s - mx);
            sum += p;
            for (d = 0; d < head_dim; d++) o[d * T] += p * v[d * T + j];
        }
        for (d = 0; d < head_dim; d++) o[d * T] /= sum;
    }
    return 0;
}
