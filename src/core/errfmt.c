/* One-line error messages: see errfmt.h. */
#include "errfmt.h"

#include <stdarg.h>
#include <stdio.h>

void cg_set_err(char *err, size_t errlen, const char *fmt, ...)
{
    char raw[1024];
    size_t o = 0;
    va_list ap;
    if (!err || !errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    for (const unsigned char *p = (const unsigned char *)raw; *p && o + 1 < errlen; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            if (o + 5 >= errlen)
                break;
            snprintf(err + o, errlen - o, "\\x%02x", *p);
            o += 4;
        } else {
            err[o++] = (char)*p;
        }
    }
    err[o] = '\0';
}
