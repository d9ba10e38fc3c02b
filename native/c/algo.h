/*
 * algo.h - the C routine of the `hello` algorithm.
 *
 * One call runs one stage: an interruptible sleep followed by a single
 * `hello world\n` line on stdout. The Rust side (`native/src/ffi.rs`) mirrors
 * these declarations by hand; keep the two in sync.
 */
#ifndef ALGO_H
#define ALGO_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The stage ran to completion and its line was written to stdout. */
#define ALGO_OK 0
/* The cancel flag was non-zero; nothing was written. */
#define ALGO_INTERRUPTED 1
/* The stage slept its time, but past `*valid_until_ms` (algo_run_stage_until):
 * nothing was written. */
#define ALGO_EXPIRED 2
/* `cancel_flag` was NULL; nothing was slept or written. */
#define ALGO_EINVAL (-1)
/* Writing the line to stdout failed (or, never seen on Linux, the monotonic
 * clock could not be read). */
#define ALGO_EIO (-2)

/*
 * Sleeps `stage_ms` milliseconds, measured on CLOCK_MONOTONIC, in slices of at
 * most 5 ms, then writes `hello world\n` to file descriptor 1 with one
 * unbuffered write(2) (retried on EINTR or a short write).
 *
 * `*cancel_flag` is read with an acquire atomic load before the first slice
 * and after every slice; as soon as it is non-zero the call returns
 * ALGO_INTERRUPTED without writing anything. The flag is only read, never
 * written, and must stay valid for the whole call. Other threads may store
 * into it atomically at any time.
 *
 * Thread-safe: no global mutable state, so any number of threads may call it
 * at once (each line is written whole; see write(2) and PIPE_BUF).
 * `stage_ms == 0` writes at once unless the flag is already raised. Stages too
 * long to express as a CLOCK_MONOTONIC deadline only end when cancelled.
 *
 * Returns ALGO_OK, ALGO_INTERRUPTED, ALGO_EINVAL or ALGO_EIO.
 */
int algo_run_stage(uint64_t stage_ms, const int *cancel_flag);

/*
 * algo_run_stage, and one more check just before the line is written: if
 * `valid_until_ms` is not NULL, and the value it points to (read with an
 * acquire atomic load; 0 means no limit) is below the current
 * CLOCK_MONOTONIC time in milliseconds (algo_monotonic_ms), the call
 * returns ALGO_EXPIRED without writing. A caller whose right to run the
 * stage ends at a known time (a lease) keeps it there, moving it forward as
 * the right is renewed, so a stage that overran it — the process was
 * stopped, say — leaves no line behind. Other threads may store into it
 * atomically at any time.
 *
 * Returns ALGO_OK, ALGO_INTERRUPTED, ALGO_EXPIRED, ALGO_EINVAL or ALGO_EIO.
 */
int algo_run_stage_until(uint64_t stage_ms, const int *cancel_flag,
                         const uint64_t *valid_until_ms);

/* CLOCK_MONOTONIC in milliseconds (0 if the clock cannot be read): the clock
 * of algo_run_stage_until's `valid_until_ms`. */
uint64_t algo_monotonic_ms(void);

#ifdef __cplusplus
}
#endif

#endif /* ALGO_H */
