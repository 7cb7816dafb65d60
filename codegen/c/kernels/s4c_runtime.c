/* s4c_runtime.c -- thread control and work-splitting helpers. */
#include "s4c_internal.h"

void s4c_set_num_threads(int n) {
#ifdef _OPENMP
    if (n >= 1) omp_set_num_threads(n);
#else
    (void)n;
#endif
}

int s4c_get_max_threads(void) { return s4c__max_threads(); }

/* Smallest row r in [lo, hi] whose weight prefix w(r) = ptr[r] - ptr[0] +
 * r * row_cost reaches target. */
static int lower_bound_weight(const int32_t *ptr, int lo, int hi, int64_t row_cost,
                              int64_t target) {
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int64_t w = (int64_t)ptr[mid] - ptr[0] + (int64_t)mid * row_cost;
        if (w < target)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void s4c__split_weighted(const int32_t *ptr, int n, int64_t row_cost, int nparts, int p,
                         int *b, int *e) {
    int64_t total = (int64_t)ptr[n] - ptr[0] + (int64_t)n * row_cost;
    int64_t t0 = (total * p) / nparts, t1 = (total * (p + 1)) / nparts;
    *b = p == 0 ? 0 : lower_bound_weight(ptr, 0, n, row_cost, t0);
    *e = p == nparts - 1 ? n : lower_bound_weight(ptr, 0, n, row_cost, t1);
}
