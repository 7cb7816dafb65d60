/* gemm_dense.c -- dense GEMM core and the dense linear kernel.
 *
 * s4c__gemm computes C[M][N] (+)= A(M x K) . B[K][N] with A addressed by two
 * strides (A(m,k) = A[m*rsa + k*csa]), so the same micro-kernel serves
 * W[out][in] . X[in][T] (rsa = in, csa = 1) and the two products inside
 * attention (K^T Q with rsa = 1, csa = T; V P with rsa = T, csa = 1).
 *
 * Register blocking: MR = 6 rows x NR = 2 vectors (16 tokens with AVX): 12
 * accumulators, 2 B vectors, 1 broadcast = 15 of the 16 ymm registers; per k
 * 6 broadcasts + 2 loads feed 12 FMAs.  Cache blocking (BLIS order): NC = 512
 * columns, MC = 96 rows (the C block stays in cache across the K blocks),
 * KC = 256; each KC x NR panel of B is copied to a 16 KiB stack buffer (L1)
 * and reused by all MC/6 micro-panels, A is read in place (strided).  No heap
 * scratch. */
#include "s4c_internal.h"

#define MR 6
#define NV 2
#define NR (NV * S4C_VW)
#ifndef S4C_GEMM_KC
#define S4C_GEMM_KC 256
#endif
#ifndef S4C_GEMM_MC
#define S4C_GEMM_MC 96 /* rows per block: the C block (MC x NC) stays in L1/L2 across K */
#endif
#ifndef S4C_GEMM_NC
#define S4C_GEMM_NC 512
#endif

/* acc[mr][nv] = (first ? bias-or-0 : C) + A[0..mr)[0..K) B[0..K)[0..nv*VW). */
S4C_INLINE void ukr(const int mr, const int nv, int K, const float *S4C_RESTRICT a,
                    ptrdiff_t rsa, ptrdiff_t csa, const float *S4C_RESTRICT b, ptrdiff_t ldb,
                    float *S4C_RESTRICT c, ptrdiff_t ldc, int first, const float *bias) {
    s4c_vf c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    int k;
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = s4c_vset1(0.0f);
    if (first) {
        if (bias) {
            c00 = c01 = s4c_vset1(bias[0]);
            if (mr > 1) c10 = c11 = s4c_vset1(bias[1]);
            if (mr > 2) c20 = c21 = s4c_vset1(bias[2]);
            if (mr > 3) c30 = c31 = s4c_vset1(bias[3]);
            if (mr > 4) c40 = c41 = s4c_vset1(bias[4]);
            if (mr > 5) c50 = c51 = s4c_vset1(bias[5]);
        }
    } else {
#define LDC(r, v) s4c_vload(c + (r) * ldc + (v) * S4C_VW)
        c00 = LDC(0, 0);
        if (nv > 1) c01 = LDC(0, 1);
        if (mr > 1) { c10 = LDC(1, 0); if (nv > 1) c11 = LDC(1, 1); }
        if (mr > 2) { c20 = LDC(2, 0); if (nv > 1) c21 = LDC(2, 1); }
        if (mr > 3) { c30 = LDC(3, 0); if (nv > 1) c31 = LDC(3, 1); }
        if (mr > 4) { c40 = LDC(4, 0); if (nv > 1) c41 = LDC(4, 1); }
        if (mr > 5) { c50 = LDC(5, 0); if (nv > 1) c51 = LDC(5, 1); }
#undef LDC
    }
    for (k = 0; k < K; k++) {
        const float *ak = a + k * csa;
        const float *bk = b + k * ldb;
        s4c_vf b0 = s4c_vload(bk), b1 = b0, av;
        if (nv > 1) b1 = s4c_vload(bk + S4C_VW);
        av = s4c_vset1(ak[0]);
        c00 = s4c_vfma(c00, av, b0);
        if (nv > 1) c01 = s4c_vfma(c01, av, b1);
        if (mr > 1) {
            av = s4c_vset1(ak[rsa]);
            c10 = s4c_vfma(c10, av, b0);
            if (nv > 1) c11 = s4c_vfma(c11, av, b1);
        }
        if (mr > 2) {
            av = s4c_vset1(ak[2 * rsa]);
            c20 = s4c_vfma(c20, av, b0);
            if (nv > 1) c21 = s4c_vfma(c21, av, b1);
        }
        if (mr > 3) {
            av = s4c_vset1(ak[3 * rsa]);
            c30 = s4c_vfma(c30, av, b0);
            if (nv > 1) c31 = s4c_vfma(c31, av, b1);
        }
        if (mr > 4) {
            av = s4c_vset1(ak[4 * rsa]);
            c40 = s4c_vfma(c40, av, b0);
            if (nv > 1) c41 = s4c_vfma(c41, av, b1);
        }
        if (mr > 5) {
            av = s4c_vset1(ak[5 * rsa]);
            c50 = s4c_vfma(c50, av, b0);
            if (nv > 1) c51 = s4c_vfma(c51, av, b1);
        }
    }
#define STC(r, v, x) s4c_vstore(c + (r) * ldc + (v) * S4C_VW, x)
    STC(0, 0, c00);
    if (nv > 1) STC(0, 1, c01);
    if (mr > 1) { STC(1, 0, c10); if (nv > 1) STC(1, 1, c11); }
    if (mr > 2) { STC(2, 0, c20); if (nv > 1) STC(2, 1, c21); }
    if (mr > 3) { STC(3, 0, c30); if (nv > 1) STC(3, 1, c31); }
    if (mr > 4) { STC(4, 0, c40); if (nv > 1) STC(4, 1, c41); }
    if (mr > 5) { STC(5, 0, c50); if (nv > 1) STC(5, 1, c51); }
#undef STC
}

/* Out-of-line instantiations: one per (mr, nv). */
typedef void (*ukr_fn)(int K, const float *a, ptrdiff_t rsa, ptrdiff_t csa, const float *b,
                       ptrdiff_t ldb, float *c, ptrdiff_t ldc, int first, const float *bias);
#define S4C_UKR(MRV, NVV)                                                                  \
    static S4C_NOINLINE void ukr_##MRV##_##NVV(int K, const float *a, ptrdiff_t rsa,      \
                                               ptrdiff_t csa, const float *b, ptrdiff_t ldb, \
                                               float *c, ptrdiff_t ldc, int first,          \
                                               const float *bias) {                         \
        ukr(MRV, NVV, K, a, rsa, csa, b, ldb, c, ldc, first, bias);                         \
    }
S4C_UKR(1, 1)
S4C_UKR(2, 1)
S4C_UKR(3, 1)
S4C_UKR(4, 1)
S4C_UKR(5, 1)
S4C_UKR(6, 1)
S4C_UKR(1, 2)
S4C_UKR(2, 2)
S4C_UKR(3, 2)
S4C_UKR(4, 2)
S4C_UKR(5, 2)
S4C_UKR(6, 2)
static const ukr_fn ukr_table[2][MR] = {
    {ukr_1_1, ukr_2_1, ukr_3_1, ukr_4_1, ukr_5_1, ukr_6_1},
    {ukr_1_2, ukr_2_2, ukr_3_2, ukr_4_2, ukr_5_2, ukr_6_2},
};

/* Columns [n0, n0+nn) with nn < S4C_VW: B / C go through zero-padded copies. */
static void tail_cols(int mr, int nn, int K, const float *a, ptrdiff_t rsa, ptrdiff_t csa,
                      const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc, int first,
                      const float *bias) {
    float bp[S4C_GEMM_KC * S4C_VW];
    float cp[MR * S4C_VW];
    int k, r, j;
    for (k = 0; k < K; k++)
        for (j = 0; j < S4C_VW; j++) bp[k * S4C_VW + j] = j < nn ? b[k * ldb + j] : 0.0f;
    for (r = 0; r < mr; r++)
        for (j = 0; j < S4C_VW; j++) cp[r * S4C_VW + j] = (!first && j < nn) ? c[r * ldc + j] : 0.0f;
    ukr_table[0][mr - 1](K, a, rsa, csa, bp, S4C_VW, cp, S4C_VW, first, bias);
    for (r = 0; r < mr; r++)
        for (j = 0; j < nn; j++) c[r * ldc + j] = cp[r * S4C_VW + j];
}

void s4c__gemm(int M, int N, int K, const float *A, ptrdiff_t rsa, ptrdiff_t csa,
               const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, const float *bias,
               int act, const float *res, ptrdiff_t ldr) {
    int n0, k0, m0, mc0;
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { /* C = bias */
        int m, n;
        for (m = 0; m < M; m++) {
            for (n = 0; n < N; n++) C[m * ldc + n] = bias ? bias[m] : 0.0f;
            if (act != S4C_ACT_NONE || res)
                s4c__epilogue(C + m * ldc, res ? res + m * ldr : NULL, N, act);
        }
        return;
    }
    for (n0 = 0; n0 < N; n0 += S4C_GEMM_NC) {
        const int nc = N - n0 < S4C_GEMM_NC ? N - n0 : S4C_GEMM_NC;
        for (mc0 = 0; mc0 < M; mc0 += S4C_GEMM_MC) {
            const int mc1 = M - mc0 < S4C_GEMM_MC ? M : mc0 + S4C_GEMM_MC;
            for (k0 = 0; k0 < K; k0 += S4C_GEMM_KC) {
                const int kc = K - k0 < S4C_GEMM_KC ? K - k0 : S4C_GEMM_KC;
                const int first = k0 == 0, last = k0 + kc >= K;
                const float *bk = B + k0 * ldb + n0;
                int n = 0;
                /* Full NR-column panels: copy the KC x NR panel of B into a
                 * contiguous buffer (16 KiB, stays in L1: rows of B a power of
                 * two apart would otherwise fall into a few L1 sets), then run
                 * every MR-row micro-panel of the MC block over it. */
                for (; n + NR <= nc; n += NR) {
                    float bp[S4C_GEMM_KC * NR];
                    int k;
                    for (k = 0; k < kc; k++) memcpy(bp + k * NR, bk + k * ldb + n, sizeof(float) * NR);
                    for (m0 = mc0; m0 < mc1; m0 += MR) {
                        const int mr = mc1 - m0 < MR ? mc1 - m0 : MR;
                        ukr_table[1][mr - 1](kc, A + m0 * rsa + k0 * csa, rsa, csa, bp, NR,
                                             C + m0 * ldc + n0 + n, ldc, first,
                                             bias ? bias + m0 : NULL);
                    }
                }
                for (m0 = mc0; m0 < mc1; m0 += MR) {
                    const int mr = mc1 - m0 < MR ? mc1 - m0 : MR;
                    const float *a = A + m0 * rsa + k0 * csa;
                    const float *bb = bias ? bias + m0 : NULL;
                    float *c = C + m0 * ldc + n0;
                    int nn = n;
                    if (nn + S4C_VW <= nc) {
                        ukr_table[0][mr - 1](kc, a, rsa, csa, bk + nn, ldb, c + nn, ldc, first, bb);
                        nn += S4C_VW;
                    }
                    if (nn < nc)
                        tail_cols(mr, nc - nn, kc, a, rsa, csa, bk + nn, ldb, c + nn, ldc, first, bb);
                    if (last && (act != S4C_ACT_NONE || res)) {
                        int r;
                        for (r = 0; r < mr; r++)
                            s4c__epilogue(c + r * ldc, res ? res + (m0 + r) * ldr + n0 : NULL, nc,
                                          act);
                    }
                }
            }
        }
    }
}

int s4c_linear_dense(int out, int in, int T, const float *W, const float *X,
                     const float *bias, int act, const float *residual, float *Y) {
    if (out < 0 || in < 0 || T < 0) return S4C_EINVAL;
    if (out == 0 || T == 0) return S4C_OK;
#ifdef _OPENMP
#pragma omp parallel num_threads(s4c__threads_for((double)out * in * T, 262144.0))
    {
        int p = omp_get_thread_num(), np = omp_get_num_threads();
        /* split in units of MR rows (static: every call of s4c__gemm packs its X panels) */
        int units = (out + MR - 1) / MR, b, e;
        s4c__split_even(units, np, p, &b, &e);
        b *= MR;
        e = e * MR < out ? e * MR : out;
        if (b < e)
            s4c__gemm(e - b, T, in, W + (size_t)b * in, in, 1, X, T, Y + (size_t)b * T, T,
                      bias ? bias + b : NULL, act, residual ? residual + (size_t)b * T : NULL, T);
    }
#else
    s4c__gemm(out, T, in, W, in, 1, X, T, Y, T, bias, act, residual, T);
#endif
    return S4C_OK;
}
