/* spmm_bsr_impl.h -- BSR linear kernel body, included by spmm_bsr.c once per
 * block-column index type.  Expects BSR_ITYPE and BSR_SFX(name). */

/* Fast path for 4 consecutive rows (sub-group q of a block row with r % 4 == 0)
 * and NVB vectors of tokens: acc[4][NVB] in registers; per block and per
 * block column k, NVB loads of X feed 4*NVB FMAs.  C = block columns. */
S4C_INLINE void BSR_SFX(rows4)(const int C, const int NVB, int32_t nb,
                               const BSR_ITYPE *S4C_RESTRICT idx, const float *S4C_RESTRICT val,
                               ptrdiff_t bstride, const float *X, size_t T, const float *b4,
                               float *y, size_t ldy) {
    s4c_vf a00, a01, a02, a10, a11, a12, a20, a21, a22, a30, a31, a32;
    int32_t blk;
    int k;
    a00 = a01 = a02 = s4c_vset1(b4[0]);
    a10 = a11 = a12 = s4c_vset1(b4[1]);
    a20 = a21 = a22 = s4c_vset1(b4[2]);
    a30 = a31 = a32 = s4c_vset1(b4[3]);
    /* k outside the block loop: with k inside, compilers unroll it and
     * interleave the X loads of several k, which spills with 16 registers. */
    for (k = 0; k < C; k++) {
        for (blk = 0; blk < nb; blk++) {
            const float *v = val + blk * bstride;
            const float *x = X + ((size_t)idx[blk] * (size_t)C + (size_t)k) * T;
            s4c_vf x0 = s4c_vload(x), x1 = x0, x2 = x0, w;
#if S4C_SPARSE_PF > 0
            if (blk + S4C_SPARSE_PF < nb) { /* first and last line of a later block's slice */
                const char *xp =
                    (const char *)(X + ((size_t)idx[blk + S4C_SPARSE_PF] * (size_t)C + (size_t)k) * T);
                S4C_PREFETCH(xp);
                if (NVB > 1) S4C_PREFETCH(xp + (NVB * S4C_VW - 1) * (int)sizeof(float));
            }
#endif
            if (NVB > 1) x1 = s4c_vload(x + S4C_VW);
            if (NVB > 2) x2 = s4c_vload(x + 2 * S4C_VW);
#define S4C_BSR_ROW(i)                                              \
    w = s4c_vset1(v[(i) * C + k]);                                  \
    a##i##0 = s4c_vfma(a##i##0, w, x0);                             \
    if (NVB > 1) a##i##1 = s4c_vfma(a##i##1, w, x1);                \
    if (NVB > 2) a##i##2 = s4c_vfma(a##i##2, w, x2);
            S4C_BSR_ROW(0)
            S4C_BSR_ROW(1)
            S4C_BSR_ROW(2)
            S4C_BSR_ROW(3)
#undef S4C_BSR_ROW
        }
    }
#define S4C_BSR_ST(i)                                                       \
    s4c_vstore(y + (i) * ldy, a##i##0);                                     \
    if (NVB > 1) s4c_vstore(y + (i) * ldy + S4C_VW, a##i##1);               \
    if (NVB > 2) s4c_vstore(y + (i) * ldy + 2 * S4C_VW, a##i##2);
    S4C_BSR_ST(0)
    S4C_BSR_ST(1)
    S4C_BSR_ST(2)
    S4C_BSR_ST(3)
#undef S4C_BSR_ST
}

/* Token tail (< S4C_VW tokens) for 4 rows: masked vectors where there are some. */
static void BSR_SFX(rows4_tail)(int C, int n, int32_t nb, const BSR_ITYPE *idx,
                                const float *val, ptrdiff_t bstride, const float *X, size_t T,
                                const float *b4, float *y, size_t ldy) {
#ifdef S4C_VMASK
    const s4c_vmask m = s4c_vmask_n(n);
    s4c_vf a0 = s4c_vset1(b4[0]), a1 = s4c_vset1(b4[1]), a2 = s4c_vset1(b4[2]), a3 = s4c_vset1(b4[3]);
    int32_t blk;
    int k;
    for (blk = 0; blk < nb; blk++) {
        const float *xb = X + (size_t)idx[blk] * (size_t)C * T;
        const float *v = val + blk * bstride;
        for (k = 0; k < C; k++) {
            const s4c_vf x = s4c_vload_m(xb + (size_t)k * T, m);
            a0 = s4c_vfma(a0, s4c_vset1(v[k]), x);
            a1 = s4c_vfma(a1, s4c_vset1(v[C + k]), x);
            a2 = s4c_vfma(a2, s4c_vset1(v[2 * C + k]), x);
            a3 = s4c_vfma(a3, s4c_vset1(v[3 * C + k]), x);
        }
    }
    s4c_vstore_m(y, m, a0);
    s4c_vstore_m(y + ldy, m, a1);
    s4c_vstore_m(y + 2 * ldy, m, a2);
    s4c_vstore_m(y + 3 * ldy, m, a3);
#else
    float acc[4][S4C_VW];
    int32_t blk;
    int i, k, t;
    for (i = 0; i < 4; i++)
        for (t = 0; t < n; t++) acc[i][t] = b4[i];
    for (blk = 0; blk < nb; blk++) {
        const float *xb = X + (size_t)idx[blk] * (size_t)C * T;
        const float *v = val + blk * bstride;
        for (k = 0; k < C; k++)
            for (i = 0; i < 4; i++) {
                float w = v[i * C + k];
                for (t = 0; t < n; t++) acc[i][t] += w * xb[(size_t)k * T + t];
            }
    }
    for (i = 0; i < 4; i++)
        for (t = 0; t < n; t++) y[i * ldy + t] = acc[i][t];
#endif
}

/* One block row (rows r4*4 .. of a block row with R % 4 == 0, all < out, and
 * in % C == 0) over tn tokens. */
S4C_INLINE void BSR_SFX(blockrow4)(const int C, int R, int32_t nb,
                                            const BSR_ITYPE *idx, const float *val,
                                            const float *X, size_t T, int tn, const float *bias,
                                            float *y) {
    const ptrdiff_t bstride = (ptrdiff_t)R * C;
    /* 3 vectors of tokens per pass reuse each X vector best, but a 3-vector
     * slice straddles cache lines that the next pass needs again; when the
     * block row's X footprint (nb*C rows x 2 lines) would not stay in L1 until
     * then, use 2-vector passes (16 tokens = one line with AVX). */
    const int wide = (size_t)nb * C * 2 * 64 > S4C_L1_BYTES / 2;
    int q;
    for (q = 0; q < R / 4; q++) {
        const float *vq = val + q * 4 * C;
        float *yq = y + (size_t)q * 4 * T;
        float b4[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        int t = 0;
        if (bias) memcpy(b4, bias + q * 4, sizeof b4);
        if (wide) {
            for (; t + 2 * S4C_VW <= tn; t += 2 * S4C_VW)
                BSR_SFX(rows4)(C, 2, nb, idx, vq, bstride, X + t, T, b4, yq + t, T);
        } else {
            for (; t + 3 * S4C_VW <= tn; t += 3 * S4C_VW)
                BSR_SFX(rows4)(C, 3, nb, idx, vq, bstride, X + t, T, b4, yq + t, T);
        }
        for (; t + S4C_VW <= tn; t += S4C_VW)
            BSR_SFX(rows4)(C, 1, nb, idx, vq, bstride, X + t, T, b4, yq + t, T);
        if (t < tn) BSR_SFX(rows4_tail)(C, tn - t, nb, idx, vq, bstride, X + t, T, b4, yq + t, T);
    }
}

/* One output row (row i of its block row) over tn tokens, for any R, C:
 * blocks contribute columns idx*C + k for k < min(C, in - idx*C). */
S4C_INLINE void BSR_SFX(row_chunk)(const int C, const int NV, int in, int32_t nb,
                                   const BSR_ITYPE *S4C_RESTRICT idx,
                                   const float *S4C_RESTRICT val, ptrdiff_t bstride,
                                   const float *X, size_t T, float b, float *y) {
    s4c_vf a0 = s4c_vset1(b), a1 = a0, a2 = a0, a3 = a0;
    int32_t blk;
    int k;
    for (blk = 0; blk < nb; blk++) {
        const int col = (int)idx[blk] * C;
        const int kc = in - col < C ? in - col : C;
        const float *v = val + blk * bstride;
        for (k = 0; k < kc; k++) {
            const float *x = X + (size_t)(col + k) * T;
            s4c_vf w = s4c_vset1(v[k]);
            S4C_VACC4(NV, a, w, x);
        }
    }
    S4C_VSTORE4(NV, a, y);
}

static void BSR_SFX(row_tail)(int C, int n, int in, int32_t nb, const BSR_ITYPE *idx,
                              const float *val, ptrdiff_t bstride, const float *X, size_t T,
                              float b, float *y) {
#ifdef S4C_VMASK
    const s4c_vmask m = s4c_vmask_n(n);
    s4c_vf a = s4c_vset1(b);
    int32_t blk;
    int k;
    for (blk = 0; blk < nb; blk++) {
        const int col = (int)idx[blk] * C;
        const int kc = in - col < C ? in - col : C;
        for (k = 0; k < kc; k++)
            a = s4c_vfma(a, s4c_vset1(val[blk * bstride + k]), s4c_vload_m(X + (size_t)(col + k) * T, m));
    }
    s4c_vstore_m(y, m, a);
#else
    float acc[S4C_VW];
    int32_t blk;
    int k, t;
    for (t = 0; t < n; t++) acc[t] = b;
    for (blk = 0; blk < nb; blk++) {
        const int col = (int)idx[blk] * C;
        const int kc = in - col < C ? in - col : C;
        for (k = 0; k < kc; k++) {
            const float *x = X + (size_t)(col + k) * T;
            float w = val[blk * bstride + k];
            for (t = 0; t < n; t++) acc[t] += w * x[t];
        }
    }
    for (t = 0; t < n; t++) y[t] = acc[t];
#endif
}

/* Row-at-a-time path: 1 x C blocks, edge block rows, any (R, C). */
S4C_INLINE void BSR_SFX(row_any)(const int C, int R, int in, int32_t nb,
                                          const BSR_ITYPE *idx, const float *val, const float *X,
                                          size_t T, int tn, float b, float *y) {
    const ptrdiff_t bstride = (ptrdiff_t)R * C;
    int t = 0;
    for (; t + 4 * S4C_VW <= tn; t += 4 * S4C_VW)
        BSR_SFX(row_chunk)(C, 4, in, nb, idx, val, bstride, X + t, T, b, y + t);
    for (; t + S4C_VW <= tn; t += S4C_VW)
        BSR_SFX(row_chunk)(C, 1, in, nb, idx, val, bstride, X + t, T, b, y + t);
    if (t < tn) BSR_SFX(row_tail)(C, tn - t, in, nb, idx, val, bstride, X + t, T, b, y + t);
}

/* Out-of-line instances with a constant block width (C = 0: runtime width). */
#define S4C_BSR_WRAP(CV)                                                                   \
    static S4C_NOINLINE void BSR_SFX(blockrow4_c##CV)(int C, int R, int32_t nb,            \
                                                      const BSR_ITYPE *idx, const float *val, \
                                                      const float *X, size_t T, int tn,       \
                                                      const float *bias, float *y) {          \
        BSR_SFX(blockrow4)(CV ? CV : C, R, nb, idx, val, X, T, tn, bias, y);                \
    }                                                                                      \
    static S4C_NOINLINE void BSR_SFX(row_any_c##CV)(int C, int R, int in, int32_t nb,      \
                                                    const BSR_ITYPE *idx, const float *val, \
                                                    const float *X, size_t T, int tn,       \
                                                    float b, float *y) {                    \
        BSR_SFX(row_any)(CV ? CV : C, R, in, nb, idx, val, X, T, tn, b, y);                 \
    }
S4C_BSR_WRAP(0)
S4C_BSR_WRAP(1)
S4C_BSR_WRAP(2)
S4C_BSR_WRAP(4)
S4C_BSR_WRAP(8)
#undef S4C_BSR_WRAP

static void BSR_SFX(bsr_part)(int br0, int br1, int out, int in, int T, int R, int C,
                              const int32_t *indptr, const BSR_ITYPE *idx, const float *val,
                              const float *X, const float *bias, int act, const float *res,
                              float *Y) {
    const int tb_len = s4c__token_block(in, T);
    const int fast4 = R % 4 == 0 && in % C == 0 && C <= 8;
    int tb, br;
    for (tb = 0; tb < T; tb += tb_len) {
        const int tn = T - tb < tb_len ? T - tb : tb_len;
        for (br = br0; br < br1; br++) {
            const int32_t j0 = indptr[br], nb = indptr[br + 1] - j0;
            const int row0 = br * R, nrows = out - row0 < R ? out - row0 : R;
            const BSR_ITYPE *ib = idx + j0;
            const float *vb = val + (size_t)j0 * R * C;
            float *y = Y + (size_t)row0 * T + tb;
            int i;
            if (fast4 && nrows == R) {
                const float *bb = bias ? bias + row0 : NULL;
                switch (C) { /* constant C for the common block widths */
                case 1: BSR_SFX(blockrow4_c1)(C, R, nb, ib, vb, X + tb, (size_t)T, tn, bb, y); break;
                case 2: BSR_SFX(blockrow4_c2)(C, R, nb, ib, vb, X + tb, (size_t)T, tn, bb, y); break;
                case 4: BSR_SFX(blockrow4_c4)(C, R, nb, ib, vb, X + tb, (size_t)T, tn, bb, y); break;
                case 8: BSR_SFX(blockrow4_c8)(C, R, nb, ib, vb, X + tb, (size_t)T, tn, bb, y); break;
                default: BSR_SFX(blockrow4_c0)(C, R, nb, ib, vb, X + tb, (size_t)T, tn, bb, y); break;
                }
            } else {
                for (i = 0; i < nrows; i++) {
                    const float b = bias ? bias[row0 + i] : 0.0f;
                    const float *vi = vb + (size_t)i * C;
                    float *yi = y + (size_t)i * T;
                    switch (C) {
                    case 1: BSR_SFX(row_any_c1)(C, R, in, nb, ib, vi, X + tb, (size_t)T, tn, b, yi); break;
                    case 2: BSR_SFX(row_any_c2)(C, R, in, nb, ib, vi, X + tb, (size_t)T, tn, b, yi); break;
                    case 4: BSR_SFX(row_any_c4)(C, R, in, nb, ib, vi, X + tb, (size_t)T, tn, b, yi); break;
                    case 8: BSR_SFX(row_any_c8)(C, R, in, nb, ib, vi, X + tb, (size_t)T, tn, b, yi); break;
                    default: BSR_SFX(row_any_c0)(C, R, in, nb, ib, vi, X + tb, (size_t)T, tn, b, yi); break;
                    }
                }
            }
            if (act != S4C_ACT_NONE || res)
                for (i = 0; i < nrows; i++)
                    s4c__epilogue(y + (size_t)i * T, res ? res + (size_t)(row0 + i) * T + tb : NULL,
                                  tn, act);
        }
    }
}

static int BSR_SFX(bsr_run)(int out, int in, int T, int R, int C, const int32_t *indptr,
                            const BSR_ITYPE *idx, const float *val, const float *X,
                            const float *bias, int act, const float *res, float *Y) {
    int nbr;
    if (out < 0 || in < 0 || T < 0 || R < 1 || C < 1 || !indptr) return S4C_EINVAL;
    if (out == 0 || T == 0) return S4C_OK;
    nbr = (out + R - 1) / R;
#ifdef _OPENMP
    {
        double work = ((double)(indptr[nbr] - indptr[0]) * R * C + out) * (double)T;
        const int nt = s4c__threads_for(work, 65536.0);
        const int nc = s4c__nchunks(nbr, nt, R >= 8 ? 1 : 8 / R);
        int c;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
        for (c = 0; c < nc; c++) {
            int b, e;
            s4c__split_weighted(indptr, nbr, 1, nc, c, &b, &e);
            BSR_SFX(bsr_part)(b, e, out, in, T, R, C, indptr, idx, val, X, bias, act, res, Y);
        }
    }
#else
    BSR_SFX(bsr_part)(0, nbr, out, in, T, R, C, indptr, idx, val, X, bias, act, res, Y);
#endif
    return S4C_OK;
}
