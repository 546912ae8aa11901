/* One-line error messages for the core's callers (err, errlen buffers). */
#ifndef CG_ERRFMT_H
#define CG_ERRFMT_H

#include <stddef.h>

/** Formats a one-line error into err[0..errlen) (nothing when err is NULL or
 * errlen 0). User text quoted in it may hold control characters (a newline
 * in a --header value or a file name): they are written as \xNN, so the
 * message stays one line and cannot forge output. */
void cg_set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
