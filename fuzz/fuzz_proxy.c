/* libFuzzer target for trusted proxies. The first line of the input is a
 * --forwarded-allow-ips list; every further line is one header value, an
 * X-Forwarded-Proto when it starts with '~' (that byte removed), else an
 * X-Forwarded-For. Checks: a refused list names an entry inside it, a parsed
 * list's networks hold their own address, a client is a non-empty slice
 * inside one of the values, ports fit in 16 bits, and the return value agrees
 * with what was found. Each value is an exact-size heap copy, so ASan sees
 * any over-read. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hdrtab.h"
#include "proxy.h"

#define MAXH 16

static void check(int cond)
{
    if (!cond)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data, *end = in + size;
    const char *nl = memchr(in, '\n', size);
    size_t list_len = nl ? (size_t)(nl - in) : size;
    char *list = malloc(list_len + 1);
    cg_proxy_trust t;
    cg_slice bad = {NULL, 0};

    memcpy(list, in, list_len);
    list[list_len] = '\0';
    int rc = cg_proxy_trust_parse(&t, list, &bad);
    if (rc < 0) {
        check(t.n == 0 && !t.nets && !t.all && !t.unix_peers);
        check(rc == CG_PROXY_NO_MEMORY ||
              (bad.len > 0 && bad.base >= list && bad.base + bad.len <= list + list_len));
        free(list);
        return 0;
    }
    free(list);
    for (size_t i = 0; i < t.n; i++) {
        const cg_proxy_net *net = &t.nets[i];
        check(net->addr.family == 4 || net->addr.family == 6);
        check(net->prefix <= (net->addr.family == 4 ? 32u : 128u));
        check(cg_proxy_trusts_addr(&t, &net->addr)); /* a network holds its own address */
    }

    cg_http1_header hdrs[MAXH];
    char *copies[MAXH];
    size_t n = 0;
    const char *p = nl ? nl + 1 : end;
    while (p < end && n < MAXH) {
        const char *e = memchr(p, '\n', (size_t)(end - p));
        size_t len = e ? (size_t)(e - p) : (size_t)(end - p);
        int proto = len && *p == '~';
        copies[n] = malloc(len ? len : 1);
        memcpy(copies[n], p + proto, len - (size_t)proto);
        hdrs[n].name = (cg_slice){"x", 1};
        hdrs[n].value = (cg_slice){copies[n], len - (size_t)proto};
        hdrs[n].token = proto ? CG_HDR_X_FORWARDED_PROTO : CG_HDR_X_FORWARDED_FOR;
        n++;
        p = e ? e + 1 : end;
    }

    cg_proxy_forwarded out;
    int ret = cg_proxy_read_headers(&t, hdrs, n, &out);
    check(ret == (out.has_client || out.scheme != CG_PROXY_SCHEME_NONE));
    check(out.scheme >= CG_PROXY_SCHEME_NONE && out.scheme <= CG_PROXY_SCHEME_HTTPS);
    check(out.port <= 65535);
    if (out.has_client) {
        int inside = 0;
        check(out.host.len > 0);
        for (size_t i = 0; i < n; i++)
            inside |= hdrs[i].token == CG_HDR_X_FORWARDED_FOR &&
                      out.host.base >= hdrs[i].value.base &&
                      out.host.base + out.host.len <= hdrs[i].value.base + hdrs[i].value.len;
        check(inside);
        (void)cg_proxy_trusts_host(&t, out.host.base, out.host.len);
    } else {
        check(out.host.base == NULL && out.host.len == 0 && out.port == 0);
    }
    for (size_t i = 0; i < n; i++)
        free(copies[i]);
    cg_proxy_trust_free(&t);
    return 0;
}
