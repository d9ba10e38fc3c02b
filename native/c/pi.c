/*
 * pi.c - the `pi` algorithm: a Monte Carlo estimate of pi.
 *
 * The task's `samples` are split evenly over the stages: stage k (0-based) of
 * n draws samples / n, plus one when k < samples % n. Each sample is one
 * 64-bit number from splitmix64, seeded with splitmix64(seed + k): its high
 * and low 32 bits are a point (x, y) of the grid [0, 2^32)^2, a hit when
 * x^2 + y^2 < 2^64. A completed stage adds its hits and samples to the
 * `struct algo_pi_output` accumulator; pi is about 4 * hits / samples. The
 * same seed, stage and stage count always give the same counts.
 *
 * The cancel flag is read and the progress stored every CHUNK samples
 * (a fraction of a millisecond).
 */
#include "stage.h"

#define CHUNK (1u << 16)

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int algo_pi_stage(const struct algo_stage *call) {
    const struct algo_pi_input *in;
    struct algo_pi_output *out;
    uint64_t count, done = 0, hits = 0, state;
    int rc = algo_check(call, sizeof *in, sizeof *out);

    if (rc != ALGO_OK) {
        return rc;
    }
    in = call->input;
    out = call->output;
    count = in->samples / call->stages + (call->stage < in->samples % call->stages ? 1u : 0u);
    state = in->seed + call->stage;
    state = splitmix64(&state);

    algo_progress(call, 0, count);
    while (done < count) {
        uint64_t chunk = count - done < CHUNK ? count - done : CHUNK;
        uint64_t i;
        if (algo_cancelled(call)) {
            return ALGO_INTERRUPTED;
        }
        for (i = 0; i < chunk; i++) {
            uint64_t r = splitmix64(&state);
            uint64_t x = r >> 32, y = r & 0xFFFFFFFFu;
            uint64_t xx = x * x, yy = y * y;
            /* x^2 + y^2 < 2^64 exactly when the 64-bit sum does not wrap. */
            hits += (uint64_t)(xx + yy >= xx);
        }
        done += chunk;
        algo_progress(call, done, count);
    }
    if (algo_cancelled(call)) {
        return ALGO_INTERRUPTED;
    }
    out->hits += hits;
    out->samples += count;
    return ALGO_OK;
}
