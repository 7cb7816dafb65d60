/* activation.c -- GELU (erf / tanh), ReLU, the linear epilogue, softmax, transpose.
 * Plain loops over the inline approximations in s4c_internal.h; GCC/Clang
 * vectorise them at -O3 (no libm calls on the hot path). */
#include "s4c_internal.h"

#define S4C_TBLK 64 /* tokens per block in the feature-major reductions */

/* Element-wise loops are split across threads above this many elements. */
#define S4C_ELEMWISE_PAR 65536

/* act (not S4C_ACT_NONE) on one vector; `act` is a constant in every caller's inlined loop. */
S4C_INLINE s4c_vf act_v(const int act, s4c_vf v) {
    if (act == S4C_ACT_GELU_ERF) return s4c_vgelu_erf(v);
    if (act == S4C_ACT_GELU_TANH) return s4c_vgelu_tanh(v);
    return s4c_vrelu(v);
}

/* y[b..e) = act(x[b..e)) (+ res[b..e) when res != NULL), S4C_VW lanes at a time. */
S4C_INLINE void act_range(const int act, size_t b, size_t e, const float *x, const float *res,
                          float *y) {
    size_t i = b;
    for (; i + S4C_VW <= e; i += S4C_VW) {
        s4c_vf v = s4c_vload(x + i);
        v = act_v(act, v);
        if (res) v = s4c_vadd(v, s4c_vload(res + i));
        s4c_vstore(y + i, v);
    }
    if (i < e) {
        const int n = (int)(e - i);
        s4c_vf v = s4c_vload_n(x + i, n);
        v = act_v(act, v);
        if (res) v = s4c_vadd(v, s4c_vload_n(res + i, n));
        s4c_vstore_n(y + i, v, n);
    }
}

static void gelu_erf_range(size_t b, size_t e, const float *x, float *y) {
    act_range(S4C_ACT_GELU_ERF, b, e, x, NULL, y);
}

static void gelu_tanh_range(size_t b, size_t e, const float *x, float *y) {
    act_range(S4C_ACT_GELU_TANH, b, e, x, NULL, y);
}

static void relu_range(size_t b, size_t e, const float *x, float *y) {
    act_range(S4C_ACT_RELU, b, e, x, NULL, y);
}

static void elementwise(void (*fn)(size_t, size_t, const float *, float *), size_t n,
                        const float *x, float *y) {
#ifdef _OPENMP
    if (n >= 2 * S4C_ELEMWISE_PAR && s4c__max_threads() > 1) {
#pragma omp parallel num_threads(s4c__threads_for((double)n, (double)S4C_ELEMWISE_PAR))
        {
            const size_t p = (size_t)omp_get_thread_num(), np = (size_t)omp_get_num_threads();
            /* split on multiples of 16 floats (64 bytes) */
            const size_t units = (n + 15) / 16;
            size_t b = units * p / np * 16, e = units * (p + 1) / np * 16;
            if (e > n) e = n;
            if (b < e) fn(b, e, x, y);
        }
        return;
    }
#endif
    fn(0, n, x, y);
}

void s4c_gelu_erf(size_t n, const float *x, float *y) { elementwise(gelu_erf_range, n, x, y); }

void s4c_gelu_tanh(size_t n, const float *x, float *y) { elementwise(gelu_tanh_range, n, x, y); }

void s4c_activation(int act, size_t n, const float *x, float *y) {
    if (act == S4C_ACT_GELU_ERF)
        s4c_gelu_erf(n, x, y);
    else if (act == S4C_ACT_GELU_TANH)
        s4c_gelu_tanh(n, x, y);
    else if (act == S4C_ACT_RELU)
        elementwise(relu_range, n, x, y);
    else if (x != y)
        memmove(y, x, n * sizeof *y);
}

void s4c__epilogue(float *y, const float *res, int n, int act) {
    if (act == S4C_ACT_GELU_ERF)
        act_range(S4C_ACT_GELU_ERF, 0, (size_t)n, y, res, y);
    else if (act == S4C_ACT_GELU_TANH)
        act_range(S4C_ACT_GELU_TANH, 0, (size_t)n, y, res, y);
    else if (act == S4C_ACT_RELU)
        act_range(S4C_ACT_RELU, 0, (size_t)n, y, res, y);
    else if (res) {
        int i;
        for (i = 0; i < n; i++) y[i] += res[i];
    }
}

/* Softmax over features for tokens [t0, t0+nt), nt <= S4C_TBLK. */
static void softmax_features_block(int F, int T, int t0, int nt, const float *x, float *y) {
    float m[S4C_TBLK], s[S4C_TBLK];
    int f, t;
    for (t = 0; t < nt; t++) {
        m[t] = -INFINITY;
        s[t] = 0.0f;
    }
    for (f = 0; f < F; f++) {
        const float *xr = x + (size_t)f * T + t0;
        for (t = 0; t < nt; t++) m[t] = xr[t] > m[t] ? xr[t] : m[t];
    }
    for (t = 0; t < nt; t++)
        if (m[t] == -INFINITY) m[t] = 0.0f; /* all -inf: avoid inf - inf */
    for (f = 0; f < F; f++) {
        const float *xr = x + (size_t)f * T + t0;
        float *yr = y + (size_t)f * T + t0;
        s4c__exp_sub_acc(xr, m, 1.0f, yr, s, nt);
    }
    for (t = 0; t < nt; t++) s[t] = s[t] > 0.0f ? 1.0f / s[t] : 0.0f;
    for (f = 0; f < F; f++) {
        float *yr = y + (size_t)f * T + t0;
        for (t = 0; t < nt; t++) yr[t] *= s[t];
    }
}

void s4c_softmax_features(int F, int T, const float *x, float *y) {
    int nblk = (T + S4C_TBLK - 1) / S4C_TBLK;
    if (F <= 0 || T <= 0) return;
#ifdef _OPENMP
#pragma omp parallel num_threads(s4c__threads_for((double)F * T, 32768.0))
    {
        int p = omp_get_thread_num(), np = omp_get_num_threads(), b, e, i;
        s4c__split_even(nblk, np, p, &b, &e);
        for (i = b; i < e; i++) {
            int t0 = i * S4C_TBLK, nt = T - t0 < S4C_TBLK ? T - t0 : S4C_TBLK;
            softmax_features_block(F, T, t0, nt, x, y);
        }
    }
#else
    {
        int i;
        for (i = 0; i < nblk; i++) {
            int t0 = i * S4C_TBLK, nt = T - t0 < S4C_TBLK ? T - t0 : S4C_TBLK;
            softmax_features_block(F, T, t0, nt, x, y);
        }
    }
#endif
}

static void softmax_row(int n, const float *x, float *y) {
    float m = s4c__max(x, n), s;
    int i;
    if (m == -INFINITY) m = 0.0f;
    {
        s4c_vf mv = s4c_vset1(m);
        for (i = 0; i + S4C_VW <= n; i += S4C_VW)
            s4c_vstore(y + i, s4c_vexp0(s4c_vsub(s4c_vload(x + i), mv)));
        for (; i < n; i++) y[i] = s4c__exp0(x[i] - m);
    }
    s = s4c__sum(y, n);
    s = s > 0.0f ? 1.0f / s : 0.0f;
    for (i = 0; i < n; i++) y[i] *= s;
}

void s4c_softmax_rows(int rows, int n, const float *x, float *y) {
    int r;
    if (rows <= 0 || n <= 0) return;
#ifdef _OPENMP
#pragma omp parallel for num_threads(s4c__threads_for((double)rows * n, 32768.0)) schedule(static)
#endif
    for (r = 0; r < rows; r++) softmax_row(n, x + (size_t)r * n, y + (size_t)r * n);
}

void s4c_transpose(int rows, int cols, const float *x, float *y) {
    const int B = 32;
    int r0;
    if (rows <= 0 || cols <= 0) return;
#ifdef _OPENMP
#pragma omp parallel for num_threads(s4c__threads_for((double)rows * cols, 65536.0)) schedule(static)
#endif
    for (r0 = 0; r0 < rows; r0 += B) {
        int c0, r, c;
        int r1 = r0 + B < rows ? r0 + B : rows;
        for (c0 = 0; c0 < cols; c0 += B) {
            int c1 = c0 + B < cols ? c0 + B : cols;
            for (c = c0; c < c1; c++)
                for (r = r0; r < r1; r++) y[(size_t)c * rows + r] = x[(size_t)r * cols + c];
        }
    }
}
