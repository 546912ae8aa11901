/* The monotonic clock, in seconds: deadlines and intervals everywhere. */
#ifndef CG_CLOCK_H
#define CG_CLOCK_H

#include <time.h>

/** Seconds of CLOCK_MONOTONIC (never jumps with the wall clock). */
static inline double cg_monotonic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif
