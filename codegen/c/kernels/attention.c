/* attention.c -- multi-head self attention on feature-major Q, K, V.
 *
 * For one (sentence b, head h, tile of up to S4C_ATT_QT queries) the kernel
 * computes the TRANSPOSED score tile St[j][i] = q_i . k_j + mask[b][j] / scale
 * (keys j down, queries i across, so the query index -- the token index of the
 * layout -- stays contiguous), a column-wise numerically stable softmax
 * P = exp(scale * (St - max_j)) (vectorised over queries), and
 * out[h*D + d][i] = (sum_j V[h*D + d][j] P[j][i]) / sum_j P[j][i].
 * Both products run on the dense GEMM micro-kernel (s4c__gemm):
 *   St = K_h^T Q_h   A(j, d) = K[d*T + j]  (rsa = 1, csa = T)
 *   O  = V_h P       A(d, j) = V[d*T + j]  (rsa = T, csa = 1)
 * Work items (b, h, tile) are split evenly across threads; each thread uses
 * its own slice of the caller's scratch. */
#include "s4c_internal.h"

#define S4C_ATT_QT 64 /* queries per tile */

static int att_qt(int seq) { return seq < S4C_ATT_QT ? seq : S4C_ATT_QT; }

size_t s4c_attention_scratch_floats(int seq) {
    size_t s = seq > 0 ? (size_t)seq : 1, qt = (size_t)att_qt(seq > 0 ? seq : 1);
    return s * qt + s + 2 * qt;
}

static void att_range(int i0, int i1, int batch, int seq, int heads, int D, float scale,
                      const float *q, const float *k, const float *v, const float *mask,
                      float *out, float *ws) {
    const int qt = att_qt(seq), ntile = (seq + qt - 1) / qt;
    const size_t T = (size_t)batch * (size_t)seq;
    const float inv_scale = 1.0f / scale;
    float *St = ws;                          /* [seq][qt] */
    float *mrow = ws + (size_t)seq * qt;     /* [seq]     */
    float *mx = mrow + seq, *sm = mx + qt;   /* [qt] each */
    int item, j, i, d;
    for (item = i0; item < i1; item++) {
        const int tile = item % ntile, h = (item / ntile) % heads, b = item / ntile / heads;
        const int q0 = tile * qt, nq = seq - q0 < qt ? seq - q0 : qt;
        const size_t tok0 = (size_t)b * seq;
        const size_t hrow = (size_t)h * D * T;
        const float *Kh = k + hrow + tok0, *Vh = v + hrow + tok0;
        const float *Qh = q + hrow + tok0 + q0;
        float *Oh = out + hrow + tok0 + q0;
        for (j = 0; j < seq; j++) mrow[j] = mask ? mask[tok0 + j] * inv_scale : 0.0f;
        /* St[j][i] = k_j . q_i + mask_j / scale */
        s4c__gemm(seq, nq, D, Kh, 1, (ptrdiff_t)T, Qh, (ptrdiff_t)T, St, nq, mrow, S4C_ACT_NONE,
                  NULL, 0);
        /* column softmax (unnormalised) */
        for (i = 0; i < nq; i++) {
            mx[i] = -INFINITY;
            sm[i] = 0.0f;
        }
        for (j = 0; j < seq; j++) {
            const float *s = St + (size_t)j * nq;
            for (i = 0; i < nq; i++) mx[i] = s[i] > mx[i] ? s[i] : mx[i];
        }
        for (i = 0; i < nq; i++) mx[i] = mx[i] == -INFINITY ? 0.0f : mx[i];
        for (j = 0; j < seq; j++) {
            float *s = St + (size_t)j * nq;
            s4c__exp_sub_acc(s, mx, scale, s, sm, nq);
        }
        for (i = 0; i < nq; i++) sm[i] = sm[i] > 0.0f ? 1.0f / sm[i] : 0.0f;
        /* O[d][i] = sum_j V[d][j] P[j][i], then / sum */
        s4c__gemm(D, nq, seq, Vh, (ptrdiff_t)T, 1, St, nq, Oh, (ptrdiff_t)T, NULL, S4C_ACT_NONE,
                  NULL, 0);
        for (d = 0; d < D; d++) {
            float *o = Oh + (size_t)d * T;
            for (i = 0; i < nq; i++) o[i] *= sm[i];
        }
    }
}

int s4c_attention(int batch, int seq, int heads, int head_dim, float scale, const float *q,
                  const float *k, const float *v, const float *mask, float *out, float *scratch,
                  size_t scratch_floats) {
    size_t per;
    int items, nt;
    if (batch < 0 || seq < 0 || heads < 0 || head_dim < 0 || !(scale > 0.0f)) return S4C_EINVAL;
    if (batch == 0 || seq == 0 || heads == 0 || head_dim == 0) return S4C_OK;
    per = s4c_attention_scratch_floats(seq);
    if (!scratch || scratch_floats < per) return S4C_ESCRATCH;
    items = batch * heads * ((seq + att_qt(seq) - 1) / att_qt(seq));
    nt = s4c__threads_for((double)items, 1.0);
    if ((size_t)nt > scratch_floats / per) nt = (int)(scratch_floats / per);
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
    {
        int p = omp_get_thread_num(), np = omp_get_num_threads(), b, e;
        s4c__split_even(items, np, p, &b, &e);
        att_range(b, e, batch, seq, heads, head_dim, scale, q, k, v, mask, out,
                  scratch + (size_t)p * per);
    }
#else
    (void)nt;
    att_range(0, items, batch, seq, heads, head_dim, scale, q, k, v, mask, out, scratch);
#endif
    return S4C_OK;
}

int s4c_attention_qkv(int batch, int seq, int heads, int head_dim, float scale,
                      const float *qkv, const float *mask, float *out, float *scratch,
                      size_t scratch_floats) {
    const size_t plane = (size_t)heads * head_dim * batch * seq;
    return s4c_attention(batch, seq, heads, head_dim, scale, qkv, qkv + plane, qkv + 2 * plane,
                         mask, out, scratch, scratch_floats);
}
