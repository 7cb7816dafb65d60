/* embedding.c -- BERT embeddings (word + position + token type gathers, sum,
 * LayerNorm) written feature-major: out[hidden][T].
 *
 * Per token the three table rows are contiguous, so the sum and the LayerNorm
 * statistics are computed along the row; the result is scattered to column t
 * of out.  Tokens are processed in groups of S4C_EMB_TG so that each feature
 * row of out is written S4C_EMB_TG floats at a time. */
#include "s4c_internal.h"

#define S4C_EMB_TG 8

static void emb_group(int t0, int nt, int seq, int hidden, size_t T, const int64_t *ids,
                      const int64_t *tt, const int64_t *pid, const float *word, const float *pos,
                      const float *type, const float *gamma, const float *beta, float eps,
                      float *out) {
    const float *wr[S4C_EMB_TG], *pr[S4C_EMB_TG], *yr[S4C_EMB_TG];
    float mean[S4C_EMB_TG], rstd[S4C_EMB_TG];
    int g, f;
    for (g = 0; g < nt; g++) {
        const size_t t = (size_t)t0 + g;
        const int64_t p = pid ? pid[t] : (int64_t)(t % (size_t)seq);
        wr[g] = word + (size_t)ids[t] * hidden;
        pr[g] = pos ? pos + (size_t)p * hidden : NULL;
        yr[g] = type ? type + (size_t)(tt ? tt[t] : 0) * hidden : NULL;
        mean[g] = 0.0f;
        rstd[g] = 1.0f;
        if (gamma) {
            float s = 0.0f, v = 0.0f;
            for (f = 0; f < hidden; f++)
                s += wr[g][f] + (pr[g] ? pr[g][f] : 0.0f) + (yr[g] ? yr[g][f] : 0.0f);
            s /= (float)hidden;
            for (f = 0; f < hidden; f++) {
                float d = wr[g][f] + (pr[g] ? pr[g][f] : 0.0f) + (yr[g] ? yr[g][f] : 0.0f) - s;
                v += d * d;
            }
            mean[g] = s;
            rstd[g] = 1.0f / sqrtf(v / (float)hidden + eps);
        }
    }
    for (f = 0; f < hidden; f++) {
        float *o = out + (size_t)f * T + t0;
        const float ga = gamma ? gamma[f] : 1.0f;
        const float be = gamma && beta ? beta[f] : 0.0f;
        for (g = 0; g < nt; g++) {
            float e = wr[g][f] + (pr[g] ? pr[g][f] : 0.0f) + (yr[g] ? yr[g][f] : 0.0f);
            o[g] = (e - mean[g]) * rstd[g] * ga + be;
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
