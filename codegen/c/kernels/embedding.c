/* embedding.c -- BERT embeddings (word + position + token type gathers, sum,
 * LayerNorm) written feature-major: out[hidden][T].
 *
 * Per token the three table rows are contiguous, so the sum and the LayerNorm
 * statistics are computed along the row (vectorised); groups of S4C_EMB_TG
 * tokens are then normalised into a small token-major tile and transposed
 * into out, so each feature row of out gets S4C_EMB_TG floats at a time. */
#include "s4c_internal.h"

#define S4C_EMB_TG 8 /* tokens per group (one output row segment)   */
#define S4C_EMB_FB 64 /* features per transposition tile             */

/* e[f] = w[f] + p[f] + y[f] over f in [f0, f0+n) into dst (p, y may be NULL;
 * the branches are hoisted so each loop vectorises). */
static void emb_sum(const float *w, const float *p, const float *y, int f0, int n, float *dst) {
    int f;
    w += f0;
    if (p && y) {
        p += f0;
        y += f0;
        for (f = 0; f < n; f++) dst[f] = w[f] + p[f] + y[f];
    } else if (p || y) {
        const float *q = (p ? p : y) + f0;
        for (f = 0; f < n; f++) dst[f] = w[f] + q[f];
    } else {
        for (f = 0; f < n; f++) dst[f] = w[f];
    }
}

static void emb_group(int t0, int nt, int seq, int hidden, size_t T, const int64_t *ids,
                      const int64_t *tt, const int64_t *pid, const float *word, const float *pos,
                      const float *type, const float *gamma, const float *beta, float eps,
                      float *out) {
    const float *wr[S4C_EMB_TG], *pr[S4C_EMB_TG], *yr[S4C_EMB_TG];
    float mean[S4C_EMB_TG], rstd[S4C_EMB_TG];
    float tile[S4C_EMB_TG][S4C_EMB_FB];
    int g, f, f0;
    for (g = 0; g < nt; g++) {
        const size_t t = (size_t)t0 + g;
        const int64_t p = pid ? pid[t] : (int64_t)(t % (size_t)seq);
        wr[g] = word + (size_t)ids[t] * hidden;
        pr[g] = pos ? pos + (size_t)p * hidden : NULL;
        yr[g] = type ? type + (size_t)(tt ? tt[t] : 0) * hidden : NULL;
        mean[g] = 0.0f;
        rstd[g] = 1.0f;
        if (gamma) { /* two-pass statistics over tiles of the token's row */
            float s = 0.0f, v = 0.0f;
            for (f0 = 0; f0 < hidden; f0 += S4C_EMB_FB) {
                const int n = hidden - f0 < S4C_EMB_FB ? hidden - f0 : S4C_EMB_FB;
                emb_sum(wr[g], pr[g], yr[g], f0, n, tile[0]);
                s += s4c__sum(tile[0], n);
            }
            s /= (float)hidden;
            for (f0 = 0; f0 < hidden; f0 += S4C_EMB_FB) {
                const int n = hidden - f0 < S4C_EMB_FB ? hidden - f0 : S4C_EMB_FB;
                emb_sum(wr[g], pr[g], yr[g], f0, n, tile[0]);
                v += s4c__sumsq_dev(tile[0], n, s);
            }
            mean[g] = s;
            rstd[g] = 1.0f / sqrtf(v / (float)hidden + eps);
        }
    }
    for (f0 = 0; f0 < hidden; f0 += S4C_EMB_FB) {
        const int n = hidden - f0 < S4C_EMB_FB ? hidden - f0 : S4C_EMB_FB;
        for (g = 0; g < nt; g++) { /* token-major tile, contiguous along features */
            float *r = tile[g];
            emb_sum(wr[g], pr[g], yr[g], f0, n, r);
            if (gamma) {
                const float *ga = gamma + f0, m = mean[g], rs = rstd[g];
                if (beta) {
                    const float *be = beta + f0;
                    for (f = 0; f < n; f++) r[f] = (r[f] - m) * rs * ga[f] + be[f];
                } else {
                    for (f = 0; f < n; f++) r[f] = (r[f] - m) * rs * ga[f];
                }
            }
        }
        for (f = 0; f < n; f++) { /* transpose into out[f][t0 .. t0+nt) */
            float *o = out + (size_t)(f0 + f) * T + t0;
            for (g = 0; g < nt; g++) o[g] = tile[g][f];
        }
    }
}

int s4c_embedding(int batch, int seq, int hidden, const int64_t *input_ids,
                  const int64_t *token_type_ids, const int64_t *position_ids, const float *word,
                  int vocab, const float *pos, int max_pos, const float *type, int n_types,
                  const float *gamma, const float *beta, float eps, float *out) {
    size_t T, t;
    int ngroups;
    if (batch < 0 || seq < 0 || hidden < 0 || !word) return S4C_EINVAL;
    T = (size_t)batch * (size_t)seq;
    if (T == 0 || hidden == 0) return S4C_OK;
    for (t = 0; t < T; t++) {
        const int64_t p = position_ids ? position_ids[t] : (int64_t)(t % (size_t)seq);
        if (input_ids[t] < 0 || input_ids[t] >= vocab) return S4C_EINVAL;
        if (pos && (p < 0 || p >= max_pos)) return S4C_EINVAL;
        if (type && token_type_ids && (token_type_ids[t] < 0 || token_type_ids[t] >= n_types))
            return S4C_EINVAL;
        if (type && !token_type_ids && n_types < 1) return S4C_EINVAL;
    }
    ngroups = (int)((T + S4C_EMB_TG - 1) / S4C_EMB_TG);
#ifdef _OPENMP
#pragma omp parallel num_threads(s4c__threads_for((double)T * hidden, 65536.0))
    {
        int b, e, i;
        s4c__split_even(ngroups, omp_get_num_threads(), omp_get_thread_num(), &b, &e);
        for (i = b; i < e; i++) {
            const int t0 = i * S4C_EMB_TG;
            const int nt = (int)T - t0 < S4C_EMB_TG ? (int)T - t0 : S4C_EMB_TG;
            emb_group(t0, nt, seq, hidden, T, input_ids, token_type_ids, position_ids, word, pos,
                      type, gamma, beta, eps, out);
        }
    }
#else
    {
        int i;
        for (i = 0; i < ngroups; i++) {
            const int t0 = i * S4C_EMB_TG;
            const int nt = (int)T - t0 < S4C_EMB_TG ? (int)T - t0 : S4C_EMB_TG;
            emb_group(t0, nt, seq, hidden, T, input_ids, token_type_ids, position_ids, word, pos,
                      type, gamma, beta, eps, out);
        }
    }
#endif
    return S4C_OK;
}
