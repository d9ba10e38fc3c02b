/*
 * algo.c - see algo.h for the contract.
 *
 * Portable POSIX (nanosleep, clock_gettime, write); no clock_nanosleep, which
 * macOS lacks. The total sleep does not drift: every slice is recomputed from
 * an absolute CLOCK_MONOTONIC deadline, so EINTR and oversleeping slices only
 * shorten the next slice.
 */
#define _POSIX_C_SOURCE 200809L

#include "algo.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_SEC 1000000000L
#define NS_PER_MS 1000000L
/* Longest single sleep between two reads of the cancel flag. */
#define SLICE_NS (5L * NS_PER_MS)

static const char LINE[] = "hello world\n";

/* Largest value of the (signed, on every supported platform) time_t. */
static time_t time_max(void) {
    return (time_t)((((uint64_t)1) << (sizeof(time_t) * CHAR_BIT - 1)) - 1);
}

static int cancelled(const int *flag) {
    return __atomic_load_n(flag, __ATOMIC_ACQUIRE) != 0;
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

static uint64_t to_ms(const struct timespec *t) {
    return (uint64_t)t->tv_sec * 1000u + (uint64_t)(t->tv_nsec / NS_PER_MS);
}

uint64_t algo_monotonic_ms(void) {
    struct timespec now;
    if (clock_gettime(CLOCK_MONOTONIC, &now) != 0) {
        return 0;
    }
    return to_ms(&now);
}

int algo_run_stage(uint64_t stage_ms, const int *cancel_flag) {
    return algo_run_stage_until(stage_ms, cancel_flag, NULL);
}

int algo_run_stage_until(uint64_t stage_ms, const int *cancel_flag,
                         const uint64_t *valid_until_ms) {
    struct timespec now;
    struct timespec deadline;

    if (cancel_flag == NULL) {
        return ALGO_EINVAL;
    }
    if (cancelled(cancel_flag)) {
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
        (void)nanosleep(&slice, NULL);
        if (cancelled(cancel_flag)) {
            return ALGO_INTERRUPTED;
        }
        if (clock_gettime(CLOCK_MONOTONIC, &now) != 0) {
            return ALGO_EIO;
        }
    }

    if (valid_until_ms != NULL) {
        uint64_t until = __atomic_load_n(valid_until_ms, __ATOMIC_ACQUIRE);
        if (clock_gettime(CLOCK_MONOTONIC, &now) != 0) {
            return ALGO_EIO;
        }
        if (until != 0 && to_ms(&now) > until) {
            return ALGO_EXPIRED;
        }
    }

    /* sizeof - 1: without the terminating NUL. 12 bytes < PIPE_BUF, so one
     * write(2) is atomic and lines from concurrent calls never interleave. */
    if (write_all(STDOUT_FILENO, LINE, sizeof LINE - 1) != 0) {
        return ALGO_EIO;
    }
    return ALGO_OK;
}
