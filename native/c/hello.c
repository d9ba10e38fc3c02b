/*
 * hello.c - the `hello` algorithm: each stage sleeps `stage_ms` in waits of
 * at most ALGO_WAIT_SLICE_NS (algo_wait: a cancel ends one at once on Linux),
 * checking the cancel flag before and between them, then
 * writes `hello world\n` to fd 1 with one write(2). An interrupted or failed
 * stage writes nothing, and so does one that ends past `*valid_until_ms`
 * (ALGO_EXPIRED, checked after the sleep; see stage.h).
 *
 * Test input (struct algo_hello_input): stage `fail_at_stage` (1-based) fails
 * in attempts 1..=fail_attempts, after its sleep, with ALGO_RETRYABLE,
 * ALGO_FATAL, or abort() (crash; only with ALGO_FLAG_ALLOW_CRASH, otherwise
 * ALGO_FATAL with the message exactly `crash_disabled`).
 *
 * Portable POSIX (clock_gettime, write; algo_wait is a futex on Linux and
 * nanosleep elsewhere); no clock_nanosleep, which macOS lacks. A thousand
 * sleeping stages polling every 5 ms cost a core in context switches; a
 * futex wait costs nothing until it ends. The total sleep does not drift:
 * every slice is recomputed from an absolute CLOCK_MONOTONIC deadline, so
 * EINTR, early wake-ups and oversleeping slices only shorten the next one.
 */
#define _POSIX_C_SOURCE 200809L

#include "stage.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_SEC 1000000000L
#define NS_PER_MS 1000000L
/* Longest single wait between two reads of the cancel flag. */
#define SLICE_NS ALGO_WAIT_SLICE_NS

static const char LINE[] = "hello world\n";

/* Largest value of the (signed, on every supported platform) time_t. */
static time_t time_max(void) {
    return (time_t)((((uint64_t)1) << (sizeof(time_t) * CHAR_BIT - 1)) - 1);
}

/* a < b */
static int ts_before(const struct timespec *a, const struct timespec *b) {
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* deadline = now + stage_ms, saturated at the largest representable time. */
static struct timespec deadline_after(struct timespec now, uint64_t stage_ms) {
    uint64_t secs = stage_ms / 1000u;
    long nsec = (long)(stage_ms % 1000u) * NS_PER_MS;
    struct timespec deadline = now;

    /* `>=` leaves room for the carry below. */
    if (secs >= (uint64_t)(time_max() - now.tv_sec)) {
        deadline.tv_sec = time_max();
        deadline.tv_nsec = NS_PER_SEC - 1;
        return deadline;
    }
    deadline.tv_sec += (time_t)secs;
    deadline.tv_nsec += nsec;
    if (deadline.tv_nsec >= NS_PER_SEC) {
        deadline.tv_nsec -= NS_PER_SEC;
        deadline.tv_sec += 1;
    }
    return deadline;
}

/* min(deadline - now, SLICE_NS); requires now < deadline. */
static struct timespec next_slice(const struct timespec *now, const struct timespec *deadline) {
    struct timespec slice = {0, SLICE_NS};
    time_t dsec = deadline->tv_sec - now->tv_sec;
    long dnsec = deadline->tv_nsec - now->tv_nsec;

    if (dnsec < 0) {
        dnsec += NS_PER_SEC;
        dsec -= 1;
    }
    if (dsec == 0 && dnsec < SLICE_NS) {
        slice.tv_nsec = dnsec;
    }
    return slice;
}

/* Writes all of buf to fd, retrying on EINTR and short writes. 0 or -1. */
static int write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        if (n == 0) {
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Sleeps until `stage_ms` have passed; ALGO_OK, ALGO_INTERRUPTED or ALGO_EIO. */
static int sleep_stage(const struct algo_stage *call, uint64_t stage_ms) {
    struct timespec now;
    struct timespec deadline;

    if (algo_cancelled(call)) {
        return ALGO_INTERRUPTED;
    }
    if (clock_gettime(CLOCK_MONOTONIC, &now) != 0) {
        return ALGO_EIO;
    }
    deadline = deadline_after(now, stage_ms);

    while (ts_before(&now, &deadline)) {
        struct timespec slice = next_slice(&now, &deadline);
        /* EINTR only cuts this slice short; the loop recomputes from the
         * deadline. Other errors cannot occur for a valid, in-range slice. */
        algo_wait(call, &slice);
        if (algo_cancelled(call)) {
            return ALGO_INTERRUPTED;
        }
        if (clock_gettime(CLOCK_MONOTONIC, &now) != 0) {
            return ALGO_EIO;
        }
    }
    return ALGO_OK;
}

int algo_hello_stage(const struct algo_stage *call) {
    const struct algo_hello_input *in;
    int rc = algo_check(call, sizeof *in, 0);
    char message[128];

    if (rc != ALGO_OK) {
        return rc;
    }
    in = call->input;
    if (in->fail_mode > ALGO_HELLO_FAIL_CRASH) {
        return ALGO_EINVAL;
    }
    rc = sleep_stage(call, in->stage_ms);
    if (rc != ALGO_OK) {
        return rc;
    }

    if (in->valid_until_ms != NULL) {
        uint64_t until = __atomic_load_n(in->valid_until_ms, __ATOMIC_ACQUIRE);
        uint64_t now = algo_monotonic_ms();
        if (now == 0) {
            return ALGO_EIO;
        }
        if (until != 0 && now > until) {
            return ALGO_EXPIRED;
        }
    }

    if (in->fail_mode != ALGO_HELLO_FAIL_NONE && in->fail_at_stage == call->stage + 1u &&
        call->attempt <= in->fail_attempts) {
        switch (in->fail_mode) {
        case ALGO_HELLO_FAIL_ERROR:
            snprintf(message, sizeof message, "hello: injected error at stage %u in attempt %u",
                     (unsigned)(call->stage + 1u), (unsigned)call->attempt);
            return algo_fail(call, ALGO_RETRYABLE, message);
        case ALGO_HELLO_FAIL_FATAL:
            snprintf(message, sizeof message,
                     "hello: injected fatal error at stage %u in attempt %u",
                     (unsigned)(call->stage + 1u), (unsigned)call->attempt);
            return algo_fail(call, ALGO_FATAL, message);
        default: /* ALGO_HELLO_FAIL_CRASH */
            if ((call->flags & ALGO_FLAG_ALLOW_CRASH) == 0) {
                return algo_fail(call, ALGO_FATAL, "crash_disabled");
            }
            abort();
        }
    }

    /* sizeof - 1: without the terminating NUL. 12 bytes < PIPE_BUF, so one
     * write(2) is atomic and lines from concurrent calls never interleave. */
    if (write_all(STDOUT_FILENO, LINE, sizeof LINE - 1) != 0) {
        return ALGO_EIO;
    }
    return ALGO_OK;
}
