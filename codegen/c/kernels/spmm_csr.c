/* spmm_csr.c -- Y[out][T] = W_csr X[in][T] (+ bias, GELU, residual).
 *
 * Per output row and chunk of S4C_CSR_NV vectors (64 tokens with AVX2) the
 * row's (value, column) pairs are streamed: acc[0..64) += v * X[col][t..t+64),
 * with the accumulators in registers.  Rows are split across threads by nnz;
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

/* Prefetch distance: S4C_SPARSE_PF (s4c_internal.h). */

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
