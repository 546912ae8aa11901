/* libFuzzer target for the PROXY protocol header parser. The first byte picks
 * the accepted versions (its low two bits), the rest is the connection's
 * input. Checks: a header's length is within the input and the version's
 * bounds, the result is one the version can give, an address is set exactly
 * for TCP4 and TCP6, a failure has a reason, and every prefix of the input
 * gives CG_PP_INCOMPLETE or the same result (the connection re-parses its
 * buffer after each read). The input is an exact-size heap copy, so ASan
 * sees any over-read. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxyproto.h"

static void check(int cond)
{
    if (!cond)
        abort();
}

static int parse_copy(const uint8_t *data, size_t len, unsigned accept, cg_pp_result *r)
{
    char *copy = malloc(len ? len : 1);
    if (len)
        memcpy(copy, data, len);
    int rc = cg_pp_parse(copy, len, accept, r);
    free(copy);
    return rc;
}

static int same(const cg_pp_result *a, const cg_pp_result *b)
{
    return a->version == b->version && a->command == b->command && a->family == b->family &&
           memcmp(&a->src, &b->src, sizeof(a->src)) == 0 &&
           memcmp(&a->dst, &b->dst, sizeof(a->dst)) == 0 && a->src_port == b->src_port &&
           a->dst_port == b->dst_port && a->error == b->error;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    unsigned accept = data[0] & CG_PP_ANY;
    data++;
    size--;
    if (size > 16 + CG_PP_V2_MAX_BLOCK + 64)
        size = 16 + CG_PP_V2_MAX_BLOCK + 64;

    cg_pp_result r;
    int rc = parse_copy(data, size, accept, &r);
    check(rc > 0 || rc == CG_PP_INCOMPLETE || rc == CG_PP_INVALID);
    if (rc == CG_PP_INVALID)
        check(r.error != NULL);
    if (rc > 0) {
        check((size_t)rc <= size && r.error == NULL);
        check(r.version == 1 ? (accept & CG_PP_V1) && rc <= CG_PP_V1_MAX
                             : r.version == 2 && (accept & CG_PP_V2) && rc >= 16 &&
                                   rc <= 16 + CG_PP_V2_MAX_BLOCK);
        check(r.command == CG_PP_PROXY || (r.command == CG_PP_LOCAL && r.version == 2));
        check(r.family >= CG_PP_UNKNOWN && r.family <= CG_PP_UNIX);
        int addressed = r.family == CG_PP_TCP4 || r.family == CG_PP_TCP6;
        check(addressed ? (r.src.family == 4 || r.src.family == 6) &&
                              (r.dst.family == 4 || r.dst.family == 6)
                        : r.src.family == 0 && r.dst.family == 0 && !r.src_port && !r.dst_port);
        check(r.src_port <= 65535 && r.dst_port <= 65535);
        check(r.family != CG_PP_TCP4 || (r.src.family == 4 && r.dst.family == 4));
        if (addressed) {
            char text[CG_PROXY_ADDR_TEXT];
            check(cg_proxy_addr_format(&r.src, text, sizeof(text)) > 0);
        }
    }
    /* Every prefix: incomplete, or the same result (before the header ends,
     * only incomplete). Bounded so a long input stays fast. */
    size_t limit = size < 300 ? size : 300;
    for (size_t k = 0; k < limit; k++) {
        cg_pp_result rk;
        int n = parse_copy(data, k, accept, &rk);
        if (rc > 0 && k < (size_t)rc)
            check(n == CG_PP_INCOMPLETE);
        else
            check(n == CG_PP_INCOMPLETE || (n == rc && same(&rk, &r)));
    }
    return 0;
}
