/* stage.c - helpers shared by every algorithm; see stage.h. */
#define _POSIX_C_SOURCE 200809L
#ifdef __linux__
#define _DEFAULT_SOURCE /* syscall(2), for the futex */
#endif

#include "stage.h"

#include <string.h>
#include <time.h>

#ifdef __linux__
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define NS_PER_MS 1000000L

int algo_cancelled(const struct algo_stage *call) {
    return __atomic_load_n(call->cancel, __ATOMIC_ACQUIRE) != 0;
}

void algo_progress(const struct algo_stage *call, uint64_t done, uint64_t total) {
    int permille = 1000;
    if (call->progress == NULL) {
        return;
    }
    if (total > 0 && done < total) {
        /* done < total <= 2^64 - 1: split to avoid overflowing done * 1000. */
        permille = total > UINT64_MAX / 1000u ? (int)(done / (total / 1000u))
                                               : (int)(done * 1000u / total);
        if (permille > 1000) {
            permille = 1000;
        }
    }
    __atomic_store_n(call->progress, permille, __ATOMIC_RELAXED);
}

int algo_check(const struct algo_stage *call, size_t input_size, size_t output_size) {
    if (call == NULL || call->cancel == NULL) {
        return ALGO_EINVAL;
    }
    if (call->stages == 0 || call->stage >= call->stages || call->attempt == 0) {
        return ALGO_EINVAL;
    }
    if (call->input_size != input_size || (input_size > 0 && call->input == NULL)) {
        return ALGO_EINVAL;
    }
    if (call->output_size != output_size || (output_size > 0 && call->output == NULL)) {
        return ALGO_EINVAL;
    }
    return ALGO_OK;
}

int algo_fail(const struct algo_stage *call, int code, const char *message) {
    if (call->error != NULL && call->error_size > 0) {
        size_t len = strlen(message);
        if (len > call->error_size - 1) {
            len = call->error_size - 1;
        }
        memcpy(call->error, message, len);
        call->error[len] = '\0';
    }
    return code;
}

uint64_t algo_monotonic_ms(void) {
    struct timespec now;
    if (clock_gettime(CLOCK_MONOTONIC, &now) != 0) {
        return 0;
    }
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)(now.tv_nsec / NS_PER_MS);
}

void algo_wait(const struct algo_stage *call, const struct timespec *timeout) {
#ifdef __linux__
    /* Returns at once when *cancel is no longer 0 (EAGAIN), when woken, or
     * at the (relative) timeout. Private: waiter and waker share a process. */
    (void)syscall(SYS_futex, call->cancel, FUTEX_WAIT_PRIVATE, 0, timeout, NULL, 0);
#else
    (void)call;
    (void)nanosleep(timeout, NULL);
#endif
}

void algo_wake(int *cancel) {
#ifdef __linux__
    if (cancel != NULL) {
        (void)syscall(SYS_futex, cancel, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    }
#else
    (void)cancel;
#endif
}
