/* spmm_nm.c -- Y[out][T] = W_nm X[in][T] (+ bias, GELU, residual) for N:M
 * sparsity along `in`.
 *
 * Like CSR, one output row at a time with 4 vectors of tokens in registers,
 * but the column of entry e of group g is g*M + offset (uint8): no column
 * array, one byte of index per nonzero.  N and M are compile-time constants in
 * the instantiated fast paths (2:4, 1:4, 2:8, 1:8, 1:16, 1:32); other N:M use
 * the same code with runtime N, M. */
#include "s4c_internal.h"

/* Full groups [0, g1) then, when in % M != 0, the last group with a column check. */
S4C_INLINE void nm_chunk(const int N, const int M, const int NV, int in, int G,
                         const float *S4C_RESTRICT val, const uint8_t *S4C_RESTRICT off,
                         const float *X, size_t T, float b, float *y) {
    s4c_vf a0 = s4c_vset1(b), a1 = a0, a2 = a0, a3 = a0;
    const int g1 = in / M;
    const size_t gstride = (size_t)M * T;
    const float *xg = X;
    int g, e;
    for (g = 0; g < g1; g++, xg += gstride, val += N, off += N) {
        for (e = 0; e < N; e++) {
            const float *x = xg + (size_t)off[e] * T;
            s4c_vf w = s4c_vset1(val[e]);
            S4C_VACC4(NV, a, w, x);
        }
    }
    if (g1 < G) {
        for (e = 0; e < N; e++) {
            const float *x = xg + (size_t)off[e] * T;
            s4c_vf w;
            if (g1 * M + off[e] >= in) continue;
            w = s4c_vset1(val[e]);
            S4C_VACC4(NV, a, w, x);
        }
    }
    S4C_VSTORE4(NV, a, y);
}

#ifdef S4C_WIDE
/* NV (<= 8) 16-float vectors of one output row, as CSR's csr_wchunk: a row of
 * T = 128 takes one pass over its groups, each X row read as 8 contiguous
 * cache lines, so the row's values and offsets are loaded once, not 4 times. */
S4C_INLINE void nm_wchunk(const int N, const int M, const int NV, int in, int G,
                          const float *S4C_RESTRICT val, const uint8_t *S4C_RESTRICT off,
                          const float *X, size_t T, float b, float *y) {
    s4c_wf a0 = s4c_wset1(b), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    const int g1 = in / M;
    const size_t gstride = (size_t)M * T;
    const float *xg = X;
    int g, e;
    for (g = 0; g < G; g++, xg += gstride, val += N, off += N) {
        for (e = 0; e < N; e++) {
            const float *x = xg + (size_t)off[e] * T;
            s4c_wf v;
            if (g == g1 && g1 * M + off[e] >= in) continue; /* padding of the short last group */
            v = s4c_wset1(val[e]);
            S4C_WACC(NV, a, v, x);
        }
    }
    S4C_WSTORE(NV, a, y);
}
#endif

/* Fewer than S4C_VW tokens: masked vectors where there are some. */
static void nm_tail(int N, int M, int n, int in, int G, const float *val, const uint8_t *off,
                    const float *X, size_t T, float b, float *y) {
#ifdef S4C_VMASK
    const s4c_vmask m = s4c_vmask_n(n);
    s4c_vf a = s4c_vset1(b);
    int g, e;
    for (g = 0; g < G; g++)
        for (e = 0; e < N; e++) {
            const int col = g * M + off[g * N + e];
            if (col >= in) continue;
            a = s4c_vfma(a, s4c_vset1(val[g * N + e]), s4c_vload_m(X + (size_t)col * T, m));
        }
    s4c_vstore_m(y, m, a);
#else
    float acc[S4C_VW];
    int g, e, t;
    for (t = 0; t < n; t++) acc[t] = b;
    for (g = 0; g < G; g++)
        for (e = 0; e < N; e++) {
            const int col = g * M + off[g * N + e];
            const float w = val[g * N + e];
            if (col >= in) continue;
            for (t = 0; t < n; t++) acc[t] += w * X[(size_t)col * T + t];
        }
    for (t = 0; t < n; t++) y[t] = acc[t];
#endif
}

S4C_INLINE void nm_row(const int N, const int M, int in, const float *val, const uint8_t *off,
                       const float *X, size_t T, int tn, float b, float *y) {
    const int G = (in + M - 1) / M;
    int t = 0;
#ifdef S4C_WIDE
    for (; t + 8 * S4C_WW <= tn; t += 8 * S4C_WW) nm_wchunk(N, M, 8, in, G, val, off, X + t, T, b, y + t);
    if (t + 4 * S4C_WW <= tn) {
        nm_wchunk(N, M, 4, in, G, val, off, X + t, T, b, y + t);
        t += 4 * S4C_WW;
    }
    if (t + 2 * S4C_WW <= tn) {
        nm_wchunk(N, M, 2, in, G, val, off, X + t, T, b, y + t);
        t += 2 * S4C_WW;
    }
#endif
    for (; t + 4 * S4C_VW <= tn; t += 4 * S4C_VW)
        nm_chunk(N, M, 4, in, G, val, off, X + t, T, b, y + t);
    for (; t + S4C_VW <= tn; t += S4C_VW) nm_chunk(N, M, 1, in, G, val, off, X + t, T, b, y + t);
    if (t < tn) nm_tail(N, M, tn - t, in, G, val, off, X + t, T, b, y + t);
}

typedef void (*nm_row_fn)(int N, int M, int in, const float *val, const uint8_t *off,
                          const float *X, size_t T, int tn, float b, float *y);
#define S4C_NM_ROW(NN, MM)                                                                    \
    static S4C_NOINLINE void nm_row_##NN##_##MM(int N, int M, int in, const float *val,        \
                                                const uint8_t *off, const float *X, size_t T,  \
                                                int tn, float b, float *y) {                   \
        nm_row(NN ? NN : N, MM ? MM : M, in, val, off, X, T, tn, b, y);                       \
    }
S4C_NM_ROW(0, 0)
S4C_NM_ROW(2, 4)
S4C_NM_ROW(1, 4)
S4C_NM_ROW(2, 8)
S4C_NM_ROW(1, 8)
S4C_NM_ROW(1, 16)
S4C_NM_ROW(1, 32)
#undef S4C_NM_ROW

static nm_row_fn nm_pick(int n, int m) {
    if (n == 2 && m == 4) return nm_row_2_4;
    if (n == 1 && m == 4) return nm_row_1_4;
    if (n == 2 && m == 8) return nm_row_2_8;
    if (n == 1 && m == 8) return nm_row_1_8;
    if (n == 1 && m == 16) return nm_row_1_16;
    if (n == 1 && m == 32) return nm_row_1_32;
    return nm_row_0_0;
}

static void nm_part(nm_row_fn fn, int r0, int r1, int in, int T, int n, int m,
                    const float *val, const uint8_t *off, const float *X, const float *bias,
                    int act, const float *res, float *Y) {
    const int tb_len = s4c__token_block(in, T);
    const size_t rowlen = (size_t)((in + m - 1) / m) * n;
    int tb, row;
    for (tb = 0; tb < T; tb += tb_len) {
        const int tn = T - tb < tb_len ? T - tb : tb_len;
        for (row = r0; row < r1; row++) {
            float *y = Y + (size_t)row * T + tb;
            fn(n, m, in, val + row * rowlen, off + row * rowlen, X + tb, (size_t)T, tn,
               bias ? bias[row] : 0.0f, y);
            if (act != S4C_ACT_NONE || res)
                s4c__epilogue(y, res ? res + (size_t)row * T + tb : NULL, tn, act);
        }
    }
}

int s4c_linear_nm(int out, int in, int T, int n, int m, const float *values,
                  const uint8_t *indices, const float *X, const float *bias, int act,
                  const float *residual, float *Y) {
    nm_row_fn fn;
    if (out < 0 || in < 0 || T < 0 || n < 1 || m < n || m > 256) return S4C_EINVAL;
    if (out == 0 || T == 0) return S4C_OK;
    fn = nm_pick(n, m);
#ifdef _OPENMP
    {
        double work = (double)out * ((double)in * n / m + 1) * T;
        const int nt = s4c__threads_for(work, 65536.0);
        const int nc = s4c__nchunks(out, nt, 8);
        int c;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
        for (c = 0; c < nc; c++) {
            int b, e;
            s4c__split_even(out, nc, c, &b, &e);
            nm_part(fn, b, e, in, T, n, m, values, indices, X, bias, act, residual, Y);
        }
    }
#else
    nm_part(fn, 0, out, in, T, n, m, values, indices, X, bias, act, residual, Y);
#endif
    return S4C_OK;
}
