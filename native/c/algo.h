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

#ifdef __cplusplus
}
#endif

#endif /* ALGO_H */
