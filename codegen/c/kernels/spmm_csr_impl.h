/* spmm_csr_impl.h -- CSR linear kernel body, included by spmm_csr.c once per
 * column-index type.  Expects CSR_ITYPE (index type) and CSR_SFX(name). */

/* acc[0..NV) (NV vectors = NV*S4C_VW tokens, NV <= 8) of one output row. */
S4C_INLINE void CSR_SFX(csr_chunk)(const int NV, int32_t j0, int32_t j1,
                                   const CSR_ITYPE *S4C_RESTRICT idx,
                                   const float *S4C_RESTRICT val, const float *X, size_t T,
                                   float b, float *y) {
    s4c_vf a0 = s4c_vset1(b), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    int32_t j;
    for (j = j0; j < j1; j++) {
        const float *x = X + (size_t)idx[j] * T;
        s4c_vf v = s4c_vset1(val[j]);
#if S4C_SPARSE_PF > 0
        if (j + S4C_SPARSE_PF < j1) { /* this pass's slice of a later nonzero's X row */
            const char *xp = (const char *)(X + (size_t)idx[j + S4C_SPARSE_PF] * T);
            int l;
            for (l = 0; l < NV * S4C_VW * (int)sizeof(float); l += 64) S4C_PREFETCH(xp + l);
        }
#endif
        S4C_VACC8(NV, a, v, x);
    }
    S4C_VSTORE8(NV, a, y);
}

#ifdef S4C_WIDE
/* NV (<= 8) 16-float vectors of one output row: 8 x 16 = 128 tokens, so a row
 * of T = 128 takes one pass over its (value, column) pairs, each X row read as
 * 8 contiguous cache lines (AVX-512 has 32 vector registers). */
S4C_INLINE void CSR_SFX(csr_wchunk)(const int NV, int32_t nnz,
                                    const CSR_ITYPE *S4C_RESTRICT idx,
                                    const float *S4C_RESTRICT val, const float *X, size_t T,
                                    float b, float *y) {
    s4c_wf a0 = s4c_wset1(b), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    int32_t j;
    for (j = 0; j < nnz; j++) {
        const float *x = X + (size_t)idx[j] * T;
        s4c_wf v = s4c_wset1(val[j]);
        S4C_WACC(NV, a, v, x);
    }
    S4C_WSTORE(NV, a, y);
}
#endif

/* One vector of tokens with two interleaved accumulators (hides FMA latency). */
S4C_INLINE void CSR_SFX(csr_chunk1)(int32_t j0, int32_t j1, const CSR_ITYPE *S4C_RESTRICT idx,
                                    const float *S4C_RESTRICT val, const float *X, size_t T,
                                    float b, float *y) {
    s4c_vf a0 = s4c_vset1(b), a1 = s4c_vset1(0.0f);
    int32_t j;
    for (j = j0; j + 1 < j1; j += 2) {
        a0 = s4c_vfma(a0, s4c_vset1(val[j]), s4c_vload(X + (size_t)idx[j] * T));
        a1 = s4c_vfma(a1, s4c_vset1(val[j + 1]), s4c_vload(X + (size_t)idx[j + 1] * T));
    }
    if (j < j1) a0 = s4c_vfma(a0, s4c_vset1(val[j]), s4c_vload(X + (size_t)idx[j] * T));
    s4c_vstore(y, s4c_vadd(a0, a1));
}

#ifndef S4C_VMASK
/* Fewer than S4C_VW tokens (with AVX, csr_chunk_m takes them). */
static void CSR_SFX(csr_tail)(int n, int32_t j0, int32_t j1, const CSR_ITYPE *idx,
                              const float *val, const float *X, size_t T, float b, float *y) {
    float acc[S4C_VW];
    int32_t j;
    int t;
    for (t = 0; t < n; t++) acc[t] = b;
    for (j = j0; j < j1; j++) {
        const float *x = X + (size_t)idx[j] * T;
        float v = val[j];
        for (t = 0; t < n; t++) acc[t] += v * x[t];
    }
    for (t = 0; t < n; t++) y[t] = acc[t];
}
#endif

#ifdef S4C_VMASK
/* The last NV (1..4) vectors of a row's tokens in one pass over its nonzeros,
 * vector NV-1 masked by m: a short T (e.g. 17 = 2 vectors + 1 token) costs
 * one pass, as T rounded up to a vector would, not one per vector size.  Even
 * and odd nonzeros feed separate accumulators (a, c): with NV <= 4 chains a
 * pass is bound by the FMA latency, not its throughput. */
#define S4C_CSR_LOADM(k, x) (NV == (k) + 1 ? s4c_vload_m((x) + (k) * S4C_VW, m) : s4c_vload((x) + (k) * S4C_VW))
#define S4C_CSR_ACCM(a, v, x)                                          \
    do {                                                               \
        a##0 = s4c_vfma(a##0, v, S4C_CSR_LOADM(0, x));                 \
        if (NV > 1) a##1 = s4c_vfma(a##1, v, S4C_CSR_LOADM(1, x));     \
        if (NV > 2) a##2 = s4c_vfma(a##2, v, S4C_CSR_LOADM(2, x));     \
        if (NV > 3) a##3 = s4c_vfma(a##3, v, S4C_CSR_LOADM(3, x));     \
    } while (0)
S4C_INLINE void CSR_SFX(csr_chunk_m)(const int NV, int32_t nnz, const CSR_ITYPE *S4C_RESTRICT idx,
                                     const float *S4C_RESTRICT val, const float *X, size_t T,
                                     float b, float *y, s4c_vmask m) {
    s4c_vf a0 = s4c_vset1(b), a1 = a0, a2 = a0, a3 = a0;
    s4c_vf c0 = s4c_vset1(0.0f), c1 = c0, c2 = c0, c3 = c0;
    int32_t j;
    for (j = 0; j + 1 < nnz; j += 2) {
        const float *x = X + (size_t)idx[j] * T, *xn = X + (size_t)idx[j + 1] * T;
        const s4c_vf v = s4c_vset1(val[j]), vn = s4c_vset1(val[j + 1]);
        S4C_CSR_ACCM(a, v, x);
        S4C_CSR_ACCM(c, vn, xn);
    }
    if (j < nnz) {
        const float *x = X + (size_t)idx[j] * T;
        const s4c_vf v = s4c_vset1(val[j]);
        S4C_CSR_ACCM(a, v, x);
    }
    a0 = s4c_vadd(a0, c0);
    if (NV == 1) s4c_vstore_m(y, m, a0); else s4c_vstore(y, a0);
    if (NV > 1) a1 = s4c_vadd(a1, c1);
    if (NV == 2) s4c_vstore_m(y + S4C_VW, m, a1); else if (NV > 2) s4c_vstore(y + S4C_VW, a1);
    if (NV > 2) a2 = s4c_vadd(a2, c2);
    if (NV == 3) s4c_vstore_m(y + 2 * S4C_VW, m, a2); else if (NV > 3) s4c_vstore(y + 2 * S4C_VW, a2);
    if (NV > 3) a3 = s4c_vadd(a3, c3);
    if (NV == 4) s4c_vstore_m(y + 3 * S4C_VW, m, a3);
}
#undef S4C_CSR_ACCM
#undef S4C_CSR_LOADM
#endif

/* One output row over tn tokens (kept out of line: few live registers). */
static S4C_NOINLINE void CSR_SFX(csr_row)(int32_t nnz, const CSR_ITYPE *idx, const float *val,
                                          const float *X, size_t T, int tn, float b, float *y) {
    int t = 0;
#ifdef S4C_WIDE
    for (; t + 8 * S4C_WW <= tn; t += 8 * S4C_WW)
        CSR_SFX(csr_wchunk)(8, nnz, idx, val, X + t, T, b, y + t);
    if (t + 4 * S4C_WW <= tn) {
        CSR_SFX(csr_wchunk)(4, nnz, idx, val, X + t, T, b, y + t);
        t += 4 * S4C_WW;
    }
    if (t + 2 * S4C_WW <= tn) {
        CSR_SFX(csr_wchunk)(2, nnz, idx, val, X + t, T, b, y + t);
        t += 2 * S4C_WW;
    }
#endif
    for (; t + S4C_CSR_NV * S4C_VW <= tn; t += S4C_CSR_NV * S4C_VW)
        CSR_SFX(csr_chunk)(S4C_CSR_NV, 0, nnz, idx, val, X + t, T, b, y + t);
    if (S4C_CSR_NV > 4 && t + 4 * S4C_VW <= tn) {
        CSR_SFX(csr_chunk)(4, 0, nnz, idx, val, X + t, T, b, y + t);
        t += 4 * S4C_VW;
    }
#ifdef S4C_VMASK
    if (t < tn) { /* < 4 * S4C_VW tokens left: one pass */
        const int nv = (tn - t + S4C_VW - 1) / S4C_VW;
        const s4c_vmask m = s4c_vmask_n(tn - t - (nv - 1) * S4C_VW);
        switch (nv) {
        case 1: CSR_SFX(csr_chunk_m)(1, nnz, idx, val, X + t, T, b, y + t, m); break;
        case 2: CSR_SFX(csr_chunk_m)(2, nnz, idx, val, X + t, T, b, y + t, m); break;
        case 3: CSR_SFX(csr_chunk_m)(3, nnz, idx, val, X + t, T, b, y + t, m); break;
        default: CSR_SFX(csr_chunk_m)(4, nnz, idx, val, X + t, T, b, y + t, m); break;
        }
    }
#else
    if (t + 2 * S4C_VW <= tn) {
        CSR_SFX(csr_chunk)(2, 0, nnz, idx, val, X + t, T, b, y + t);
        t += 2 * S4C_VW;
    }
    if (t + S4C_VW <= tn) {
        CSR_SFX(csr_chunk1)(0, nnz, idx, val, X + t, T, b, y + t);
        t += S4C_VW;
    }
    if (t < tn) CSR_SFX(csr_tail)(tn - t, 0, nnz, idx, val, X + t, T, b, y + t);
#endif
}

static void CSR_SFX(csr_part)(int r0, int r1, int in, int T, const int32_t *indptr,
                              const CSR_ITYPE *idx, const float *val, const float *X,
                              const float *bias, int act, const float *res, float *Y) {
    const int tb_len = s4c__token_block(in, T);
    int tb, row;
    for (tb = 0; tb < T; tb += tb_len) {
        const int tn = T - tb < tb_len ? T - tb : tb_len;
        for (row = r0; row < r1; row++) {
            const int32_t j0 = indptr[row];
            float *y = Y + (size_t)row * T + tb;
            CSR_SFX(csr_row)(indptr[row + 1] - j0, idx + j0, val + j0, X + tb, (size_t)T, tn,
                             bias ? bias[row] : 0.0f, y);
            if (act != S4C_ACT_NONE || res)
                s4c__epilogue(y, res ? res + (size_t)row * T + tb : NULL, tn, act);
        }
    }
}

static int CSR_SFX(csr_run)(int out, int in, int T, const int32_t *indptr,
                            const CSR_ITYPE *idx, const float *val, const float *X,
                            const float *bias, int act, const float *res, float *Y) {
    if (out < 0 || in < 0 || T < 0 || !indptr || (out > 0 && T > 0 && !Y)) return S4C_EINVAL;
    if (out == 0 || T == 0) return S4C_OK;
#ifdef _OPENMP
    {
        double work = ((double)(indptr[out] - indptr[0]) + out) * (double)T;
        const int nt = s4c__threads_for(work, 65536.0);
        const int nc = s4c__nchunks(out, nt, 8);
        int c;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
        for (c = 0; c < nc; c++) {
            int b, e;
            s4c__split_weighted(indptr, out, 8, nc, c, &b, &e);
            CSR_SFX(csr_part)(b, e, in, T, indptr, idx, val, X, bias, act, res, Y);
        }
    }
#else
    CSR_SFX(csr_part)(0, out, in, T, indptr, idx, val, X, bias, act, res, Y);
#endif
    return S4C_OK;
}
