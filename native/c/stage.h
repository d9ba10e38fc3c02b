/*
 * stage.h - the one stage interface every native algorithm implements.
 *
 * An algorithm is one C file exporting
 *
 *     int algo_<name>_stage(const struct algo_stage *call);
 *
 * which runs stage `call->stage` (0-based) of `call->stages` and returns one
 * of the ALGO_* codes below. The Rust side (`native/src/ffi.rs`) mirrors these
 * declarations by hand; keep the two in sync.
 *
 * Rules every stage function follows:
 *  - It never calls back into Rust and keeps no state between calls (no
 *    mutable globals), so any number of threads may run stages at once.
 *  - It reads `*cancel` with an acquire atomic load (algo_cancelled) often
 *    enough to return ALGO_INTERRUPTED within a few milliseconds once the flag
 *    is non-zero, and never writes it.
 *  - It may report its progress within the stage by storing a per-mille value
 *    (0..=1000) into `*progress` with an atomic store (algo_progress); the
 *    Rust side polls it. C never reads it back.
 *  - `input` points to the algorithm's own input struct (its size in
 *    `input_size`), `output` to its own in/out output (its size in
 *    `output_size`); a stage checks both sizes (algo_check) and answers
 *    ALGO_EINVAL on a mismatch. An interrupted or failed stage leaves
 *    accumulators in `output` as they were (buffers it fills band by band may
 *    be partly written; the stage is run again).
 *  - On ALGO_RETRYABLE and ALGO_FATAL it writes a NUL-terminated message of
 *    at most `error_size - 1` bytes into `error` (algo_fail).
 */
#ifndef ALGO_STAGE_H
#define ALGO_STAGE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The stage completed; its output is updated. */
#define ALGO_OK 0
/* The cancel flag was raised; the stage stopped early. */
#define ALGO_INTERRUPTED 1
/* The stage failed; running it again may succeed. Message in `error`. */
#define ALGO_RETRYABLE 2
/* The stage failed for good (bad input data, ...). Message in `error`. */
#define ALGO_FATAL 3
/* The stage ran its course but ended past `*valid_until_ms` (hello's input);
 * nothing was written. */
#define ALGO_EXPIRED 4
/* An argument was invalid (NULL pointer, wrong struct size, stage >= stages):
 * a mismatch between the Rust and C sides. */
#define ALGO_EINVAL (-1)
/* Writing to stdout (or reading the monotonic clock) failed. */
#define ALGO_EIO (-2)

/* `flags` bit: the caller allows test inputs that abort the process. */
#define ALGO_FLAG_ALLOW_CRASH 1u

struct algo_stage {
    const void *input;   /* the algorithm's input struct */
    size_t input_size;
    void *output;        /* the algorithm's in/out output */
    size_t output_size;
    uint32_t stage;      /* 0-based: the number of stages already completed */
    uint32_t stages;     /* >= 1, > stage */
    uint32_t attempt;    /* 1-based attempt of the task */
    uint32_t flags;      /* ALGO_FLAG_* */
    const int *cancel;   /* non-NULL; read with acquire atomic loads */
    int *progress;       /* NULL or per-mille within the stage, atomic stores */
    char *error;         /* NULL or a buffer of error_size bytes */
    size_t error_size;
};

typedef int (*algo_stage_fn)(const struct algo_stage *call);

/* ---- helpers shared by the algorithms (stage.c) ---- */

/* Non-zero once the cancel flag is raised. */
int algo_cancelled(const struct algo_stage *call);
/* Stores `permille` (clamped to 0..=1000) into `*progress` when non-NULL. */
void algo_progress(const struct algo_stage *call, uint64_t done, uint64_t total);
/* Checks the pointers, sizes and stage numbers; ALGO_OK or ALGO_EINVAL. */
int algo_check(const struct algo_stage *call, size_t input_size, size_t output_size);
/* Writes `message` into the error buffer (truncated) and returns `code`. */
int algo_fail(const struct algo_stage *call, int code, const char *message);
/* CLOCK_MONOTONIC in milliseconds (0 if the clock cannot be read): the clock
 * of hello's `valid_until_ms`. */
uint64_t algo_monotonic_ms(void);
/* Sleeps for up to `*timeout`, returning early once the cancel flag is
 * raised and woken (algo_wake). On Linux it waits on the flag itself (a
 * futex): a cancel ends the wait at once and a waiting stage costs no
 * wake-ups. Elsewhere it is nanosleep, so callers still check the flag
 * between waits of at most ALGO_WAIT_SLICE_NS. May return early (EINTR). */
void algo_wait(const struct algo_stage *call, const struct timespec *timeout);
/* Wakes every stage waiting in algo_wait on `cancel`; call it after raising
 * the flag. No-op where algo_wait cannot be woken. */
void algo_wake(int *cancel);
/* Longest wait between two reads of the cancel flag in a sleeping stage:
 * 250 ms where algo_wait is woken by a cancel, else 5 ms. */
#ifdef __linux__
#define ALGO_WAIT_SLICE_NS (250L * 1000000L)
#else
#define ALGO_WAIT_SLICE_NS (5L * 1000000L)
#endif

/* ---- the algorithms ---- */

/* hello.c: sleeps, then prints `hello world`.
 *
 * `valid_until_ms` binds the line to a time: if it is not NULL and the value
 * it points to (read with an acquire atomic load just after the sleep; 0
 * means no limit) is below algo_monotonic_ms(), the stage returns
 * ALGO_EXPIRED without writing (and without its injected failure). A caller
 * whose right to run the stage ends at a known time (a lease) keeps it there,
 * moving it forward as the right is renewed, so a stage that overran it (the
 * process was stopped, say) leaves no line behind. Other threads may store
 * into it atomically at any time. */
#define ALGO_HELLO_FAIL_NONE 0
#define ALGO_HELLO_FAIL_ERROR 1
#define ALGO_HELLO_FAIL_FATAL 2
#define ALGO_HELLO_FAIL_CRASH 3
struct algo_hello_input {
    uint64_t stage_ms;      /* sleep per stage, in slices of at most 5 ms */
    uint32_t fail_at_stage; /* 1-based stage that fails; 0: none */
    uint32_t fail_attempts; /* it fails in attempts 1..=fail_attempts */
    uint32_t fail_mode;     /* ALGO_HELLO_FAIL_* */
    uint32_t reserved;      /* 0 */
    const uint64_t *valid_until_ms; /* NULL: no limit; see above */
};
/* output: none (output_size 0). */
int algo_hello_stage(const struct algo_stage *call);

/* pi.c: Monte Carlo estimate of pi. */
struct algo_pi_input {
    uint64_t samples; /* of the whole task, split evenly over the stages */
    uint64_t seed;
};
struct algo_pi_output { /* an accumulator: a completed stage adds to it */
    uint64_t hits;    /* samples inside the quarter circle */
    uint64_t samples; /* samples drawn */
};
int algo_pi_stage(const struct algo_stage *call);

/* grayscale.c: RGB8 -> 8-bit luma, one horizontal band per stage. */
struct algo_grayscale_input {
    const uint8_t *rgb; /* width * height * 3 bytes, rows top to bottom */
    uint32_t width;
    uint32_t height;
};
/* output: the luma buffer itself, width * height bytes. */
int algo_grayscale_stage(const struct algo_stage *call);

/* sum.c: 1 + 2 + ... + n, the worked example of docs/ALGORITHMS.md. */
struct algo_sum_input {
    uint64_t n; /* >= 1 */
};
struct algo_sum_output { /* an accumulator: a completed stage adds to it */
    uint64_t sum;   /* modulo 2^64 */
    uint64_t count; /* numbers added */
};
int algo_sum_stage(const struct algo_stage *call);

#ifdef __cplusplus
}
#endif

#endif /* ALGO_STAGE_H */
