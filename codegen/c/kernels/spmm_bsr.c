/* spmm_bsr.c -- Y[out][T] = W_bsr X[in][T] (+ bias, GELU, residual), br x bc blocks.
 *
 * r x c blocks with r % 4 == 0 (4x1, 8x1, 16x1, 32x1, 4x4, 8x8, ...): each
 * block row is processed as r/4 groups of 4 rows x 3 vectors of tokens, so
 * every X vector loaded is reused by 4 FMAs (the reason to prefer r x 1 blocks
 * over CSR).  1 x c blocks (1x4, 1x8), edge block rows and other shapes go
 * row at a time, like CSR with c consecutive columns per index. */
#include "s4c_internal.h"

#ifndef S4C_L1_BYTES
#define S4C_L1_BYTES 32768 /* L1 data cache size assumed by the BSR pass-width choice */
#endif

#define BSR_ITYPE uint8_t
#define BSR_SFX(name) name##_u8
#include "spmm_bsr_impl.h"
#undef BSR_ITYPE
#undef BSR_SFX

#define BSR_ITYPE uint16_t
#define BSR_SFX(name) name##_u16
#include "spmm_bsr_impl.h"
#undef BSR_ITYPE
#undef BSR_SFX

#define BSR_ITYPE int32_t
#define BSR_SFX(name) name##_i32
#include "spmm_bsr_impl.h"
#undef BSR_ITYPE
#undef BSR_SFX

int s4c_linear_bsr_u8(int out, int in, int T, int br, int bc, const int32_t *indptr,
                      const uint8_t *indices, const float *values, const float *X,
                      const float *bias, int act, const float *residual, float *Y) {
    return bsr_run_u8(out, in, T, br, bc, indptr, indices, values, X, bias, act, residual, Y);
}

int s4c_linear_bsr_u16(int out, int in, int T, int br, int bc, const int32_t *indptr,
                       const uint16_t *indices, const float *values, const float *X,
                       const float *bias, int act, const float *residual, float *Y) {
    return bsr_run_u16(out, in, T, br, bc, indptr, indices, values, X, bias, act, residual, Y);
}

int s4c_linear_bsr_i32(int out, int in, int T, int br, int bc, const int32_t *indptr,
                       const int32_t *indices, const float *values, const float *X,
                       const float *bias, int act, const float *residual, float *Y) {
    return bsr_run_i32(out, in, T, br, bc, indptr, indices, values, X, bias, act, residual, Y);
}
