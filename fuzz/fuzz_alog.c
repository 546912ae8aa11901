/* libFuzzer target for the access-log formats. The input is NUL-separated
 * fields: the format (or, when it starts with "json", the JSON line), the
 * client, method, path, query, then request header values for referer,
 * user-agent, authorization and x-h, and a response header x-r. Bytes past
 * the fields pick the status, version, byte count and duration. Checks: a
 * format that fails to compile says why; a compiled format's line equals the
 * concatenation of what each of its ops renders; a JSON line is printable
 * ASCII (every control and non-ASCII byte escaped) with balanced quotes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alog.h"
#include "http1.h"

enum { F_FORMAT, F_CLIENT, F_METHOD, F_PATH, F_QUERY, F_REFERER, F_AGENT, F_AUTH, F_XH, F_XR, F_N };

static void check(int cond)
{
    if (!cond)
        abort();
}

/* A heap copy of exactly len bytes, so ASan sees any over-read. */
static char *copy_of(const uint8_t *p, size_t len)
{
    char *c = malloc(len ? len : 1);
    if (len)
        memcpy(c, p, len);
    return c;
}

static void check_json(const cg_buf *out)
{
    int in_string = 0;
    for (size_t i = out->pos; i < out->len; i++) {
        unsigned char c = (unsigned char)out->data[i];
        check(c >= 0x20 && c < 0x7f);
        if (in_string && c == '\\') {
            i++; /* the escaped character */
            check(i < out->len);
            continue;
        }
        if (c == '"')
            in_string = !in_string;
    }
    check(!in_string);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *field[F_N] = {0};
    size_t flen[F_N] = {0};
    size_t at = 0;
    for (int f = 0; f < F_N; f++) {
        size_t end = at;
        while (end < size && data[end] != 0)
            end++;
        field[f] = copy_of(data + at, end - at);
        flen[f] = end - at;
        at = end < size ? end + 1 : end;
    }
    uint8_t knobs[8] = {0};
    memcpy(knobs, data + at, size - at < sizeof(knobs) ? size - at : sizeof(knobs));

    cg_alog p;
    memset(&p, 0, sizeof(p));
    int json = flen[F_FORMAT] >= 4 && memcmp(field[F_FORMAT], "json", 4) == 0;
    char err[256] = "";
    int rc;
    if (json) {
        rc = cg_alog_init_json(&p, 4242);
    } else {
        char *fmt = malloc(flen[F_FORMAT] + 1);
        memcpy(fmt, field[F_FORMAT], flen[F_FORMAT]);
        fmt[flen[F_FORMAT]] = '\0';
        rc = cg_alog_compile(&p, fmt, 4242, err, sizeof(err));
        free(fmt);
        check(rc == 0 || err[0] != '\0');
    }
    if (rc == 0) {
        cg_alog_vals v;
        cg_alog_vals_init(&v, 1.0);
        static const char *const names[] = {"referer", "user-agent", "authorization", "x-h"};
        for (int i = 0; i < 4; i++)
            check(cg_alog_capture(&p, &v, 0, names[i], strlen(names[i]), field[F_REFERER + i],
                                  flen[F_REFERER + i]) == 0);
        check(cg_alog_capture(&p, &v, 1, "x-r", 3, field[F_XR], flen[F_XR]) == 0);

        cg_alog_entry e = {
            .client = {field[F_CLIENT], flen[F_CLIENT]},
            .method = {field[F_METHOD], flen[F_METHOD]},
            .path = {field[F_PATH], flen[F_PATH]},
            .query = {field[F_QUERY], flen[F_QUERY]},
            .qmark = knobs[0] & 1,
            .version = knobs[0] >> 1 & 3 ? (knobs[0] >> 1 & 3) - 1 : CG_HTTP_1_1,
            .status = 100 + (knobs[1] | knobs[2] << 8) % 900,
            .bytes = (unsigned long long)knobs[3] << 24 | (unsigned long long)knobs[4] << 8,
            .duration = (double)(knobs[5] | knobs[6] << 8) / 1000.0,
            .now = 1700000000 + knobs[7],
            .vals = &v,
        };
        cg_buf line, parts;
        cg_buf_init(&line);
        cg_buf_init(&parts);
        check(cg_alog_format(&p, &e, &line) == 0);
        if (json) {
            check_json(&line);
        } else {
            for (size_t i = 0; i < p.nops; i++)
                check(cg_alog_render(&p, &p.ops[i], &e, &parts) == 0);
            size_t n = line.len - line.pos;
            check(n == parts.len - parts.pos);
            /* An empty line may have no buffer at all (data NULL). */
            check(n == 0 || memcmp(line.data + line.pos, parts.data + parts.pos, n) == 0);
        }
        cg_buf_free(&line);
        cg_buf_free(&parts);
        cg_alog_vals_free(&v);
        cg_alog_free(&p);
    }
    for (int f = 0; f < F_N; f++)
        free(field[f]);
    return 0;
}
