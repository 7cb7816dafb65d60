/* norm.c -- LayerNorm and SkipLayerNorm over the feature dimension of
 * feature-major tensors x[F][T].
 *
 * Tokens are processed in blocks of S4C_LN_TBLK: per block, pass 1 sums over
 * the F rows (vectorised over the block's tokens; SkipLayerNorm forms
 * x + skip + bias in the same pass), pass 2 accumulates the centred squares
 * (two-pass variance, no cancellation), pass 3 normalises.
 * Blocks are split across threads. */
#include "s4c_internal.h"

#define S4C_LN_TBLK 64

/* Given mean[t] (sum over features / F) of src, normalise tokens [0, nt) of
 * src into y (src may be y): centred-square pass, then the output pass. */
static void ln_finish(int F, size_t T, const float *src, float *mean, const float *gamma,
                      const float *beta, float eps, float *y, int nt) {
    float rstd[S4C_LN_TBLK];
    const float invF = 1.0f / (float)F;
    int f, t;
    for (t = 0; t < nt; t++) rstd[t] = 0.0f;
    for (f = 0; f < F; f++) {
        const float *s = src + (size_t)f * T;
        for (t = 0; t < nt; t++) {
            float d = s[t] - mean[t];
            rstd[t] += d * d;
        }
    }
    for (t = 0; t < nt; t++) rstd[t] = 1.0f / sqrtf(rstd[t] * invF + eps);
    for (f = 0; f < F; f++) {
        const float *s = src + (size_t)f * T;
        float *yr = y + (size_t)f * T;
        const float g = gamma ? gamma[f] : 1.0f, b = beta ? beta[f] : 0.0f;
        for (t = 0; t < nt; t++) yr[t] = (s[t] - mean[t]) * rstd[t] * g + b;
    }
}

/* LayerNorm of tokens [0, nt) of x into y. */
static void ln_block(int F, size_t T, const float *x, const float *gamma, const float *beta,
                     float eps, float *y, int nt) {
    float mean[S4C_LN_TBLK];
    const float invF = 1.0f / (float)F;
    int f, t;
    for (t = 0; t < nt; t++) mean[t] = 0.0f;
    for (f = 0; f < F; f++) {
        const float *s = x + (size_t)f * T;
        for (t = 0; t < nt; t++) mean[t] += s[t];
    }
    for (t = 0; t < nt; t++) mean[t] *= invF;
    ln_finish(F, T, x, mean, gamma, beta, eps, y, nt);
}

/* s = x + skip (+ bias) into y (and sum_out), summing s on the way; then LN. */
static void skip_ln_block(int F, size_t T, const float *x, const float *skip, const float *bias,
                          const float *gamma, const float *beta, float eps, float *y,
                          float *sum_out, int nt) {
    float mean[S4C_LN_TBLK];
    const float invF = 1.0f / (float)F;
    int f, t;
    for (t = 0; t < nt; t++) mean[t] = 0.0f;
    for (f = 0; f < F; f++) {
        const size_t o = (size_t)f * T;
        const float b = bias ? bias[f] : 0.0f;
        for (t = 0; t < nt; t++) {
            const float v = x[o + t] + skip[o + t] + b;
            y[o + t] = v;
            mean[t] += v;
        }
        if (sum_out) memcpy(sum_out + o, y + o, (size_t)nt * sizeof *y);
    }
    for (t = 0; t < nt; t++) mean[t] *= invF;
    ln_finish(F, T, y, mean, gamma, beta, eps, y, nt);
}

static void norm_blocks(int b0, int b1, int F, int T, const float *x, const float *skip,
                        const float *bias, const float *gamma, const float *beta, float eps,
                        float *y, float *sum_out) {
    int i;
    for (i = b0; i < b1; i++) {
        const int t0 = i * S4C_LN_TBLK;
        const int nt = T - t0 < S4C_LN_TBLK ? T - t0 : S4C_LN_TBLK;
        if (skip)
            skip_ln_block(F, (size_t)T, x + t0, skip + t0, bias, gamma, beta, eps, y + t0,
                          sum_out ? sum_out + t0 : NULL, nt);
        else
            ln_block(F, (size_t)T, x + t0, gamma, beta, eps, y + t0, nt);
    }
}

static void norm_run(int F, int T, const float *x, const float *skip, const float *bias,
                     const float *gamma, const float *beta, float eps, float *y, float *sum_out) {
    const int nblk = (T + S4C_LN_TBLK - 1) / S4C_LN_TBLK;
    if (F <= 0 || T <= 0) return;
#ifdef _OPENMP
    /* Threads split the tokens, so every thread touches every feature row
     * (likely the cores' prefetchers then pull in lines the other core is
     * writing): below ~128K elements two threads were slower than one (AVX2 EPYC,
     * F=768, min of 200: T=128 46 us on one thread, 98 on two; T=256 90 / 150;
     * T=512 209 / 131). */
#pragma omp parallel num_threads(s4c__threads_for((double)F * T, 131072.0))
    {
        int b, e;
        s4c__split_even(nblk, omp_get_num_threads(), omp_get_thread_num(), &b, &e);
        norm_blocks(b, e, F, T, x, skip, bias, gamma, beta, eps, y, sum_out);
    }
#else
    norm_blocks(0, nblk, F, T, x, skip, bias, gamma, beta, eps, y, sum_out);
#endif
}

void s4c_layernorm(int F, int T, const float *x, const float *gamma, const float *beta,
                   float eps, float *y) {
    norm_run(F, T, x, NULL, NULL, gamma, beta, eps, y, NULL);
}

void s4c_skip_layernorm(int F, int T, const float *x, const float *skip, const float *bias,
                        const float *gamma, const float *beta, float eps, float *y,
                        float *sum_out) {
    norm_run(F, T, x, skip, bias, gamma, beta, eps, y, sum_out);
}
