/*
 * sum.c - the worked example of docs/ALGORITHMS.md: the sum 1 + 2 + ... + n.
 *
 * Stage k (0-based) of s adds the numbers of its share of 1..=n: the range
 * [k*n/s + 1, (k+1)*n/s]. A completed stage adds its partial sum to the
 * `struct algo_sum_output` accumulator, so the job's total after the last
 * stage is n(n+1)/2 (modulo 2^64). The cancel flag is read and the progress
 * stored every CHUNK numbers.
 */
#include "stage.h"

#define CHUNK (1u << 16)

int algo_sum_stage(const struct algo_stage *call) {
    const struct algo_sum_input *in;
    struct algo_sum_output *out;
    uint64_t first, last, next, partial = 0;
    int rc = algo_check(call, sizeof *in, sizeof *out);

    if (rc != ALGO_OK) {
        return rc;
    }
    in = call->input;
    out = call->output;
    if (in->n == 0) {
        return algo_fail(call, ALGO_FATAL, "n must be at least 1");
    }
    first = in->n / call->stages * call->stage + (in->n % call->stages) * call->stage / call->stages + 1;
    last = in->n / call->stages * (call->stage + 1) + (in->n % call->stages) * (call->stage + 1) / call->stages;

    algo_progress(call, 0, last + 1 - first);
    for (next = first; next <= last;) {
        uint64_t end = last - next < CHUNK ? last : next + CHUNK - 1;
        if (algo_cancelled(call)) {
            return ALGO_INTERRUPTED; /* the accumulator is untouched */
        }
        for (; next <= end; next++) {
            partial += next;
        }
        algo_progress(call, next - first, last + 1 - first);
    }
    out->sum += partial;
    out->count += last + 1 - first;
    return ALGO_OK;
}
