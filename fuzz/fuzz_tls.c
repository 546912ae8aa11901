/* libFuzzer target for the TLS engine (tls.c), a server with a fixed
 * self-signed certificate. Input byte 0 picks the mode:
 *
 * even: the rest is what a client sends (ClientHello, records), cut into
 *   pieces: each piece is a length byte (0 = everything left) then that many
 *   bytes, handed to cg_tls_feed and followed by cg_tls_read. After a fatal
 *   error the connection must stay failed with a known cause.
 * odd: an in-memory OpenSSL client completes a real handshake first; the
 *   rest is a list of operations (client writes of fuzzer-chosen sizes,
 *   ciphertext delivered in fuzzer-chosen pieces, server writes to a buffer
 *   or into memory sized by cg_tls_write_size (exact, a byte short, a byte
 *   over), cg_tls_shrink, close_notify). Plaintext must arrive byte-exact, in order, both ways.
 *
 * Any broken invariant aborts. OpenSSL itself is not instrumented: the
 * coverage guiding the fuzzer is the engine's, the memory checks are ASan's
 * over both. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tls.h"

/* Test data: an EC P-256 key and a self-signed certificate for CN=casgi
 * fuzz, valid until 2126 (openssl req -x509 -newkey ec). */
static const char key_and_cert[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgF5uu61WO5GNjZOWI\n"
    "ByDWIFb6NSkCPRVyqeERoDbSfCChRANCAASFOgNV/WX/0W8qmTo6fIkLIqChPc78\n"
    "YZONvIV10CQgIq+nZtbXPzwAfMLc7Ax5gIjG6d2RKW0fa5Hw0fVkH/Hs\n"
    "-----END PRIVATE KEY-----\n"
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBgDCCASegAwIBAgIUV4Kf3CxxhJfZuVw432xUotgh1u0wCgYIKoZIzj0EAwIw\n"
    "FTETMBEGA1UEAwwKY2FzZ2kgZnV6ejAgFw0yNjEyMDMxMDI5MDJaGA8yMTI2MTEw\n"
    "OTEwMjkwMlowFTETMBEGA1UEAwwKY2FzZ2kgZnV6ejBZMBMGByqGSM49AgEGCCqG\n"
    "SM49AwEHA0IABIU6A1X9Zf/RbyqZOjp8iQsioKE9zvxhk428hXXQJCAir6dm1tc/\n"
    "PAB8wtzsDHmAiMbp3ZEpbR9rkfDR9WQf8eyjUzBRMB0GA1UdDgQWBBSnS3qiEFLE\n"
    "/Cx07gSiWa1pcQh4DTAfBgNVHSMEGDAWgBSnS3qiEFLE/Cx07gSiWa1pcQh4DTAP\n"
    "BgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCIDqjkIhFcAYqeDaVPzJT\n"
    "Mq3BmOlp36nlp87Jpkp0ct+wAiAceHPtUjRgURqhcgh/4MIU2Mv+GMkWSMa2BjOH\n"
    "OmST7Q==\n"
    "-----END CERTIFICATE-----\n";

static cg_tls_ctx *ctx;
static SSL_CTX *client_ctx;

static void check(int cond)
{
    if (!cond)
        abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char *const alpn[] = {"h2", "http/1.1"};
    char path[] = "/tmp/casgi-fuzz-tls-XXXXXX";
    char err[512];
    cg_tls_conf conf;
    int fd = mkstemp(path);
    (void)argc;
    (void)argv;
    check(fd >= 0);
    check(write(fd, key_and_cert, sizeof(key_and_cert) - 1) == (ssize_t)(sizeof(key_and_cert) - 1));
    close(fd);
    memset(&conf, 0, sizeof(conf));
    conf.certfile = path;
    conf.ssl_version = 17;
    conf.alpn = alpn;
    conf.alpn_n = 2;
    ctx = cg_tls_ctx_new(&conf, err, sizeof(err));
    unlink(path);
    if (!ctx) {
        fprintf(stderr, "fuzz_tls: %s\n", err);
        abort();
    }
    client_ctx = SSL_CTX_new(TLS_client_method());
    check(client_ctx != NULL);
    SSL_CTX_set_session_cache_mode(client_ctx, SSL_SESS_CACHE_OFF);
    return 0;
}

static void raw_mode(const uint8_t *d, size_t n)
{
    cg_tls *t = cg_tls_new(ctx);
    cg_buf plain, out;
    int failed = 0;
    check(t != NULL);
    cg_buf_init(&plain);
    cg_buf_init(&out);
    while (n > 0) {
        size_t k = d[0] ? d[0] : n - 1;
        int r;
        d++, n--;
        if (k > n)
            k = n;
        check(cg_tls_feed(t, (const char *)d, k) == 0);
        d += k, n -= k;
        r = cg_tls_read(t, &plain, &out);
        if (failed) {
            check(r == CG_TLS_FATAL);
            continue;
        }
        if (r == CG_TLS_FATAL) {
            int cause = cg_tls_cause(t);
            check(cause > CG_TLS_E_NONE && cause < CG_TLS_E_COUNT);
            check(cg_tls_cause_text(cause)[0] != '\0');
            failed = 1;
        } else {
            /* Without a client's Finished, no handshake can complete. */
            check(!(r & CG_TLS_HANDSHAKE) && !cg_tls_handshake_done(t));
        }
        check(plain.len == 0);
        check(ERR_peek_error() == 0);
        cg_buf_reset(&out);
        if (k & 1) /* and sometimes the buffers go back between pieces */
            check(cg_tls_shrink(t) >= 0);
    }
    cg_buf_free(&plain);
    cg_buf_free(&out);
    cg_tls_free(t);
}

typedef struct conn {
    SSL *c;
    BIO *rb, *wb;
    cg_tls *t;
    cg_buf plain, out, got;
} conn;

/* Client ciphertext -> server, in pieces; server output -> client. */
static int deliver(conn *x, const uint8_t **d, size_t *n)
{
    char *p;
    long len = BIO_get_mem_data(x->wb, &p);
    size_t off = 0;
    while (off < (size_t)len) {
        size_t k = (size_t)len - off;
        if (*n > 0) {
            size_t want = (size_t)(*d)[0] + 1;
            (*d)++, (*n)--;
            if (want < k)
                k = want;
        }
        check(cg_tls_feed(x->t, p + off, k) == 0);
        off += k;
        if (cg_tls_read(x->t, &x->plain, &x->out) == CG_TLS_FATAL)
            return -1;
    }
    (void)BIO_reset(x->wb);
    if (x->out.len) {
        check(BIO_write(x->rb, x->out.data, (int)x->out.len) == (int)x->out.len);
        cg_buf_reset(&x->out);
    }
    return 0;
}

static void client_read(conn *x)
{
    char buf[16384];
    size_t k;
    while (SSL_read_ex(x->c, buf, sizeof(buf), &k))
        check(cg_buf_append(&x->got, buf, k) == 0);
    ERR_clear_error();
}

static void fill(char *p, size_t n, size_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (char)((seed + i) * 2654435761u >> 13);
}

static void session_mode(const uint8_t *d, size_t n)
{
    static char src[70000 + 1000];
    conn x;
    cg_buf exp_c, exp_s; /* what each side sent */
    const uint8_t *none = NULL;
    size_t zero = 0;
    memset(&x, 0, sizeof(x));
    cg_buf_init(&exp_c);
    cg_buf_init(&exp_s);
    fill(src, sizeof(src), 1);
    x.c = SSL_new(client_ctx);
    x.rb = BIO_new(BIO_s_mem());
    x.wb = BIO_new(BIO_s_mem());
    SSL_set_bio(x.c, x.rb, x.wb);
    SSL_set_connect_state(x.c);
    x.t = cg_tls_new(ctx);
    check(x.c && x.t);
    for (int i = 0; i < 10 && !SSL_is_init_finished(x.c); i++) {
        SSL_do_handshake(x.c);
        ERR_clear_error();
        check(deliver(&x, &none, &zero) == 0);
    }
    check(SSL_is_init_finished(x.c));
    SSL_do_handshake(x.c); /* the client's Finished */
    check(deliver(&x, &none, &zero) == 0);
    check(cg_tls_handshake_done(x.t));
    client_read(&x);

    while (n >= 3) {
        uint8_t op = d[0];
        size_t len = ((size_t)d[1] << 8 | d[2]) % 70000;
        const char *from = src + (exp_c.len + exp_s.len) % 1000;
        d += 3, n -= 3;
        switch (op % 5) {
        case 0: /* the client writes; the server receives in pieces */
        case 1: {
            size_t w;
            if (len) {
                check(SSL_write_ex(x.c, from, len, &w) && w == len);
                check(cg_buf_append(&exp_c, from, len) == 0);
            }
            check(deliver(&x, &d, &n) == 0);
            break;
        }
        case 2: { /* the server writes: into a buffer, or (op >= 128) into memory of the
                   * size cg_tls_write_size says, one byte short or one byte over (op % 3) */
            size_t size = cg_tls_write_size(x.t, len), room = size - 1 + (size_t)(op % 3);
            char *dst = op >= 128 && size ? malloc(size + 1) : NULL;
            if (dst) {
                int r = cg_tls_write_into(x.t, from, len, dst, room, &x.out);
                check(r == (room == size)); /* the client asks for no KeyUpdate */
                check(r == 0 || x.out.len == 0);
                if (r == 1)
                    check(BIO_write(x.rb, dst, (int)room) == (int)room);
                free(dst);
            } else {
                check(cg_tls_write(x.t, from, len, &x.out) == 0);
            }
            check(cg_buf_append(&exp_s, from, len) == 0);
            check(BIO_write(x.rb, x.out.data, (int)x.out.len) == (int)x.out.len || !x.out.len);
            cg_buf_reset(&x.out);
            client_read(&x);
            break;
        }
        case 4: /* idle: the server gives its buffers back (kept while a record is partial) */
            check(cg_tls_shrink(x.t) >= 0);
            break;
        case 3: /* the server closes */
            check(cg_tls_close_notify(x.t, &x.out) == 0);
            if (x.out.len)
                BIO_write(x.rb, x.out.data, (int)x.out.len);
            cg_buf_reset(&x.out);
            client_read(&x);
            check(SSL_get_shutdown(x.c) & SSL_RECEIVED_SHUTDOWN);
            n = 0;
            break;
        }
    }
    /* Every byte, in order, on both sides. */
    check(x.plain.len == exp_c.len &&
          (!exp_c.len || memcmp(x.plain.data, exp_c.data, exp_c.len) == 0));
    check(x.got.len == exp_s.len && (!exp_s.len || memcmp(x.got.data, exp_s.data, exp_s.len) == 0));
    cg_buf_free(&exp_c);
    cg_buf_free(&exp_s);
    cg_buf_free(&x.plain);
    cg_buf_free(&x.out);
    cg_buf_free(&x.got);
    cg_tls_free(x.t);
    SSL_free(x.c);
    ERR_clear_error();
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    if (n == 0)
        return 0;
    if (d[0] & 1)
        session_mode(d + 1, n - 1);
    else
        raw_mode(d + 1, n - 1);
    return 0;
}
