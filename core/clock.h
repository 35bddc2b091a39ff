/* clock.h — the monotonic clock every timing, timeout and latency figure
 * uses (CLOCK_MONOTONIC: never jumps with the wall clock). */
#ifndef QN_CORE_CLOCK_H
#define QN_CORE_CLOCK_H

#include <time.h>

/* Seconds on CLOCK_MONOTONIC, with nanosecond resolution. */
static inline double qn_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
