/* spmm_csr.c -- Y[out][T] = W_csr X[in][T] (+ bias, GELU, residual).
 *
 * Per output row and chunk of 4 vectors (32 tokens with AVX) the row's
 * (value, column) pairs are streamed: acc[0..32) += v * X[col][t..t+32), with
 * the four accumulators in registers.  Rows are split across threads by nnz;
 * tokens are processed in blocks so that the touched part of X stays in L2. */
#include "s4c_internal.h"

/* Token vectors per register block (4 or 8).  AVX2 has 16 ymm registers: 8
 * accumulators (64 tokens) + the broadcast value fit, and a pass then does 8
 * FMAs per (value, column) pair loaded instead of 4 (3072x768 at 90%, T=128,
 * one thread: 2.21 -> 2.00 ms with the prefetch off). */
#ifndef S4C_CSR_NV
#if defined(S4C_VECEXT) && defined(__AVX__) && !defined(S4C_WIDE)
#define S4C_CSR_NV 8
#else
#define S4C_CSR_NV 4
#endif
#endif

/* The X rows a pass reads are the row's column indices, scattered over X: the
 * hardware prefetchers cannot guess them and each nonzero waited on L2.  The
 * register-block pass prefetches the X slice S4C_CSR_PF nonzeros ahead (AVX2,
 * NV 8, T=128, one thread: 3072x768 2.00 -> 1.90 ms, 768x3072 2.55 -> 2.17).
 * -DS4C_CSR_PF=0 turns it off. */
#ifndef S4C_CSR_PF
#if defined(__GNUC__)
#define S4C_CSR_PF 8
#else
#define S4C_CSR_PF 0
#endif
#endif
#if S4C_CSR_PF > 0
#define S4C_PREFETCH(p) __builtin_prefetch(p)
#endif

#define CSR_ITYPE uint8_t
#define CSR_SFX(name) name##_u8
#include "spmm_csr_impl.h"
#undef CSR_ITYPE
#undef CSR_SFX

#define CSR_ITYPE uint16_t
#define CSR_SFX(name) name##_u16
#include "spmm_csr_impl.h"
#undef CSR_ITYPE
#undef CSR_SFX

#define CSR_ITYPE int32_t
#define CSR_SFX(name) name##_i32
#include "spmm_csr_impl.h"
#undef CSR_ITYPE
#undef CSR_SFX

int s4c_linear_csr_u8(int out, int in, int T, const int32_t *indptr, const uint8_t *indices,
                      const float *values, const float *X, const float *bias, int act,
                      const float *residual, float *Y) {
    return csr_run_u8(out, in, T, indptr, indices, values, X, bias, act, residual, Y);
}

int s4c_linear_csr_u16(int out, int in, int T, const int32_t *indptr,
                       const uint16_t *indices, const float *values, const float *X,
                       const float *bias, int act, const float *residual, float *Y) {
    return csr_run_u16(out, in, T, indptr, indices, values, X, bias, act, residual, Y);
}

int s4c_linear_csr_i32(int out, int in, int T, const int32_t *indptr,
                       const int32_t *indices, const float *values, const float *X,
                       const float *bias, int act, const float *residual, float *Y) {
    return csr_run_i32(out, in, T, indptr, indices, values, X, bias, act, residual, Y);
}
