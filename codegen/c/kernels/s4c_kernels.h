/*
 * s4c_kernels.h -- C99 kernel library used by the s4c C code generator.
 *
 * Layout contract (see README.md next to this file for the full text):
 *
 *   Activations are FEATURE-MAJOR: a tensor of F features over T tokens is a
 *   row-major float array A[F][T] (element (f, t) at A[f*T + t]); T = batch*seq
 *   and the tokens of one sentence are contiguous (token t = b*seq + s).
 *   Every kernel reads and writes this layout, with row stride exactly T.
 *
 *   Linear layers compute Y[out][T] = W[out][in] . X[in][T] (+ epilogue), W in
 *   one of the weight formats below (reduction dimension = in).
 *
 *   Outputs must not alias inputs unless a function says so.
 *
 * Every function is thread-safe and does no heap allocation.  Parallelism is
 * OpenMP (used when compiled with -fopenmp / _OPENMP), serial otherwise.
 */
#ifndef S4C_KERNELS_H
#define S4C_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define S4C_KERNELS_VERSION 1

/* Status codes returned by the kernels that can fail. */
#define S4C_OK 0
#define S4C_EINVAL (-1) /* bad shape / parameter / id out of range  */
#define S4C_ESCRATCH (-2) /* scratch missing or too small           */

/* Fused activation of the linear epilogue. */
#define S4C_ACT_NONE 0
#define S4C_ACT_GELU_ERF 1  /* 0.5 x (1 + erf(x / sqrt 2))                       */
#define S4C_ACT_GELU_TANH 2 /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))  */
#define S4C_ACT_RELU 3      /* max(x, 0)                                           */

/* ---------------------------------------------------------------- threads */
/* Sets the number of OpenMP threads later kernels use (no-op without OpenMP). */
void s4c_set_num_threads(int n);
/* Number of threads a kernel will use at most (1 without OpenMP). */
int s4c_get_max_threads(void);

/* ---------------------------------------------------------------- linear
 * All linear kernels compute, for o < out and t < T,
 *
 *     Y[o][t] = act( sum_i W[o][i] * X[i][t] + bias[o] ) + residual[o][t]
 *
 * bias (float[out]) and residual (float[out][T]) may be NULL; act is one of
 * S4C_ACT_*.  Y must not alias X or residual.  Return S4C_OK or S4C_EINVAL.
 */

/* Dense W: float[out][in], row-major. */
int s4c_linear_dense(int out, int in, int T, const float *W, const float *X,
                     const float *bias, int act, const float *residual, float *Y);

/* CSR: indptr int32[out+1] (absolute offsets into indices / values), column
 * indices[nnz] in any order within a row, values float[nnz].  Index type:
 * any that holds in-1; s4c.sparse picks the smallest: uint8 when in <= 256,
 * uint16 when in <= 65536, else int32. */
int s4c_linear_csr_u8(int out, int in, int T, const int32_t *indptr, const uint8_t *indices,
                      const float *values, const float *X, const float *bias, int act,
                      const float *residual, float *Y);
int s4c_linear_csr_u16(int out, int in, int T, const int32_t *indptr,
                       const uint16_t *indices, const float *values, const float *X,
                       const float *bias, int act, const float *residual, float *Y);
int s4c_linear_csr_i32(int out, int in, int T, const int32_t *indptr,
                       const int32_t *indices, const float *values, const float *X,
                       const float *bias, int act, const float *residual, float *Y);

/* BSR with br x bc blocks: block indptr int32[ceil(out/br)+1], block column
 * indices[nnzb] (block units: the block covers in-columns idx*bc .. idx*bc+bc-1),
 * values float[nnzb][br][bc] row-major inside the block.  Edge blocks: when
 * out % br != 0 or in % bc != 0 the last block row / column is padded; padded
 * values are never used (rows >= out are not written, columns >= in are not
 * read).  Any br, bc >= 1 works; fast paths: r x 1 for r % 4 == 0 (4x1, 8x1,
 * 16x1, 32x1), 1x4, 1x8, 4x4, 8x8 (and any r % 4 == 0 with c <= 8).  Index
 * type as for CSR, counted in block columns (s4c.sparse: uint8 when
 * ceil(in/bc) <= 256, e.g. 1x4 / 4x4 / 8x8 on in = 768). */
int s4c_linear_bsr_u8(int out, int in, int T, int br, int bc, const int32_t *indptr,
                      const uint8_t *indices, const float *values, const float *X,
                      const float *bias, int act, const float *residual, float *Y);
int s4c_linear_bsr_u16(int out, int in, int T, int br, int bc, const int32_t *indptr,
                       const uint16_t *indices, const float *values, const float *X,
                       const float *bias, int act, const float *residual, float *Y);
int s4c_linear_bsr_i32(int out, int in, int T, int br, int bc, const int32_t *indptr,
                       const int32_t *indices, const float *values, const float *X,
                       const float *bias, int act, const float *residual, float *Y);

/* N:M along `in`: G = ceil(in/m) groups per row; values float[out][G*n] and
 * indices uint8[out][G*n]; entry k of group g has in-column g*m + indices[..]
 * (offset 0..m-1).  Padded entries have value 0 (any offset < m; entries whose
 * column would be >= in are skipped).  Any 1 <= n <= m <= 255 works; fast paths
 * for 2:4, 1:4, 2:8, 1:8, 1:16, 1:32. */
int s4c_linear_nm(int out, int in, int T, int n, int m, const float *values,
                  const uint8_t *indices, const float *X, const float *bias, int act,
                  const float *residual, float *Y);

/* ---------------------------------------------------------------- attention
 * Multi-head self attention.  q, k, v: float[H*D][T] each (feature-major; head
 * h uses feature rows h*D .. h*D+D-1); for a merged QKV projection output
 * qkv[3*H*D][T] pass q = qkv, k = qkv + H*D*T, v = qkv + 2*H*D*T (or call
 * s4c_attention_qkv).  T = batch*seq.  mask: additive, float[batch][seq]
 * (0 for keep, large negative such as -10000 or -INFINITY for masked key
 * positions), or NULL.  out: float[H*D][T].
 *
 *     out[h*D+d][b*seq+i] = sum_j softmax_j(scale * q_i . k_j + mask[b][j]) v_j[d]
 *
 * scratch: float[scratch_floats]; each thread needs s4c_attention_scratch_floats(seq)
 * floats, and the kernel uses at most scratch_floats / that many threads
 * (S4C_ESCRATCH when not even one fits).  A query whose keys are all masked
 * with -INFINITY gets a zero output.  out must not alias q, k, v. */
size_t s4c_attention_scratch_floats(int seq);
int s4c_attention(int batch, int seq, int heads, int head_dim, float scale,
                  const float *q, const float *k, const float *v, const float *mask,
                  float *out, float *scratch, size_t scratch_floats);
int s4c_attention_qkv(int batch, int seq, int heads, int head_dim, float scale,
                      const float *qkv, const float *mask, float *out, float *scratch,
                      size_t scratch_floats);

/* ---------------------------------------------------------------- norms
 * LayerNorm over the feature dimension of x[F][T], independently per token:
 *     y[f][t] = (x[f][t] - mean_t) / sqrt(var_t + eps) * gamma[f] + beta[f]
 * (biased variance).  gamma / beta: float[F], either may be NULL (1 / 0).
 * y may alias x. */
void s4c_layernorm(int F, int T, const float *x, const float *gamma, const float *beta,
                   float eps, float *y);
/* SkipLayerNorm: s = x + skip (+ bias[f]); y = LayerNorm(s).  bias may be NULL;
 * sum_out (float[F][T], may be NULL) receives s.  y may alias x or skip. */
void s4c_skip_layernorm(int F, int T, const float *x, const float *skip, const float *bias,
                        const float *gamma, const float *beta, float eps, float *y,
                        float *sum_out);

/* ---------------------------------------------------------------- activations
 * Element-wise over n floats; y may alias x. */
void s4c_gelu_erf(size_t n, const float *x, float *y);
void s4c_gelu_tanh(size_t n, const float *x, float *y);
/* act: S4C_ACT_*; S4C_ACT_NONE copies. */
void s4c_activation(int act, size_t n, const float *x, float *y);
/* Softmax over the feature dimension of x[F][T] for each token (feature-major
 * tensors, e.g. classifier logits).  y may alias x. */
void s4c_softmax_features(int F, int T, const float *x, float *y);
/* Softmax along each contiguous row of x[rows][n].  y may alias x. */
void s4c_softmax_rows(int rows, int n, const float *x, float *y);
/* y[c][r] = x[r][c] for x[rows][cols]: converts token-major <-> feature-major. */
void s4c_transpose(int rows, int cols, const float *x, float *y);

/* ---------------------------------------------------------------- embedding
 * BERT embeddings: for token t = b*seq + s,
 *     e = word[input_ids[t]] + pos[p] + type[tt]
 * with p = position_ids ? position_ids[t] : s and tt = token_type_ids ?
 * token_type_ids[t] : 0; then LayerNorm(e; gamma, beta, eps) written to
 * out[hidden][T] (feature-major).  Tables are row-major: word[vocab][hidden],
 * pos[max_pos][hidden], type[n_types][hidden]; type may be NULL (no token-type
 * embedding), pos may be NULL (no position embedding), gamma NULL means no
 * LayerNorm (the raw sum is written; beta is then ignored).  Ids are int64.
 * Returns S4C_EINVAL (writing nothing) if an id is out of range. */
int s4c_embedding(int batch, int seq, int hidden, const int64_t *input_ids,
                  const int64_t *token_type_ids, const int64_t *position_ids,
                  const float *word, int vocab, const float *pos, int max_pos,
                  const float *type, int n_types, const float *gamma, const float *beta,
                  float eps, float *out);

#ifdef __cplusplus
}
#endif

#endif /* S4C_KERNELS_H */
