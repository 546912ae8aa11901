/* Unit tests of the TLS engine (tls.c): an OpenSSL client in memory talks to
 * a cg_tls server. Certificates and keys are made at run time with the
 * openssl command-line tool in a temporary directory: a root CA, an
 * intermediate, a server certificate (RSA, sent with its chain), a second
 * server identity for reloads, a client certificate from the root and a
 * self-signed "rogue" one, and the server key encrypted as PKCS#1 and PKCS#8. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tap.h"
#include "tls.h"

static char dir[64];
static char pathbuf[16][256];
static int pathslot;

/* A path in the test directory (a small ring of buffers). */
static const char *P(const char *name)
{
    char *p = pathbuf[pathslot++ % 16];
    snprintf(p, sizeof(pathbuf[0]), "%s/%s", dir, name);
    return p;
}

static int make_material(void)
{
    static const char script[] =
        "set -e\n"
        "cd \"$1\"\n"
        "printf 'basicConstraints=critical,CA:TRUE\\nkeyUsage=critical,keyCertSign,cRLSign\\n' "
        "> ca.ext\n"
        "printf 'basicConstraints=CA:FALSE\\nsubjectAltName=DNS:localhost\\n' > leaf.ext\n"
        "printf 'basicConstraints=CA:FALSE\\nextendedKeyUsage=clientAuth\\n' > client.ext\n"
        "EC='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes'\n"
        "openssl req -x509 -new $EC -keyout ca.key -out ca.pem -subj '/CN=casgi test root' "
        "-days 2 -addext basicConstraints=critical,CA:TRUE "
        "-addext keyUsage=critical,keyCertSign,cRLSign\n"
        "openssl req -new $EC -keyout int.key -out int.csr -subj '/CN=casgi test intermediate'\n"
        "openssl x509 -req -in int.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out int.pem "
        "-days 2 -extfile ca.ext\n"
        "openssl req -new -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
        "-subj '/CN=localhost'\n"
        "openssl x509 -req -in server.csr -CA int.pem -CAkey int.key -CAcreateserial "
        "-out server.pem -days 2 -extfile leaf.ext\n"
        "cat server.pem int.pem > chain.pem\n"
        "cat server.key chain.pem > combined.pem\n"
        "openssl pkey -in server.key -traditional -aes256 -passout pass:s3cret "
        "-out server-p1.key\n"
        "openssl pkey -in server.key -aes256 -passout pass:s3cret -out server-p8.key\n"
        "openssl req -new $EC -keyout server2.key -out server2.csr -subj '/CN=localhost2'\n"
        "openssl x509 -req -in server2.csr -CA int.pem -CAkey int.key -CAcreateserial "
        "-out server2.pem -days 2 -extfile leaf.ext\n"
        "cat server2.pem int.pem > chain2.pem\n"
        "openssl req -new $EC -keyout client.key -out client.csr -subj '/O=Example/CN=alice'\n"
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out client.pem -days 2 -extfile client.ext\n"
        "openssl req -x509 -new $EC -keyout rogue.key -out rogue.pem -subj '/CN=mallory' "
        "-days 2\n"
        "echo 'not a certificate' > junk.pem\n";
    char cmd[512];
    FILE *f;
    char sh[128];
    snprintf(sh, sizeof(sh), "%s/make.sh", dir);
    f = fopen(sh, "w");
    if (!f)
        return -1;
    fputs(script, f);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "sh %s %s >%s/make.log 2>&1", sh, dir, dir);
    return system(cmd) == 0 ? 0 : -1;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        *len = (size_t)n;
    }
    return buf;
}

/* ---- the server configuration ---- */

static const char *const alpn_h1[] = {"http/1.1"};
static const char *const alpn_h2_h1[] = {"h2", "http/1.1"};

static cg_tls_conf base_conf(void)
{
    cg_tls_conf c;
    memset(&c, 0, sizeof(c));
    c.certfile = P("chain.pem");
    c.keyfile = P("server.key");
    c.ssl_version = 17;
    c.ciphers = "TLSv1";
    c.alpn = alpn_h1;
    c.alpn_n = 1;
    return c;
}

static cg_tls_ctx *ctx_or_die(const cg_tls_conf *c)
{
    char err[512] = "";
    cg_tls_ctx *ctx = cg_tls_ctx_new(c, err, sizeof(err));
    if (!ctx) {
        printf("# cg_tls_ctx_new: %s\n", err);
        printf("Bail out! no server context\n");
        exit(1);
    }
    return ctx;
}

/* ---- an in-memory client against a cg_tls ---- */

typedef struct cli {
    SSL *ssl;
    BIO *rb; /* bytes from the server */
    BIO *wb; /* bytes to the server */
    cg_buf got;
    int closed, failed;
} cli;

typedef struct srv {
    cg_tls *t;
    cg_buf plain, out;
    int flags, fatal, handshake_events;
} srv;

typedef struct cliopt {
    int min, max;              /* protocol versions, 0 = default */
    const char *cert, *key;    /* client certificate */
    const unsigned char *alpn; /* wire format */
    unsigned alpn_len;
    const char *ciphers;
    SSL_SESSION *session;
    int verify; /* verify the server against ca.pem */
} cliopt;

static SSL_CTX *client_ctx(const cliopt *o)
{
    SSL_CTX *cc = SSL_CTX_new(TLS_client_method());
    if (o->min || o->max) {
        /* Old versions need security level 0 in the client to be offered. */
        SSL_CTX_set_security_level(cc, 0);
        SSL_CTX_set_cipher_list(cc, "DEFAULT:@SECLEVEL=0");
        SSL_CTX_set_min_proto_version(cc, o->min);
        SSL_CTX_set_max_proto_version(cc, o->max);
    }
    if (o->ciphers)
        SSL_CTX_set_cipher_list(cc, o->ciphers);
    if (o->cert) {
        SSL_CTX_use_certificate_file(cc, o->cert, SSL_FILETYPE_PEM);
        SSL_CTX_use_PrivateKey_file(cc, o->key, SSL_FILETYPE_PEM);
    }
    if (o->alpn)
        SSL_CTX_set_alpn_protos(cc, o->alpn, o->alpn_len);
    if (o->verify) {
        SSL_CTX_load_verify_file(cc, P("ca.pem"));
        SSL_CTX_set_verify(cc, SSL_VERIFY_PEER, NULL);
    }
    /* No client cache: freeing the client's SSL_CTX would flush it and mark
     * the sessions a test keeps as not resumable. */
    SSL_CTX_set_session_cache_mode(cc, SSL_SESS_CACHE_OFF);
    return cc;
}

static void cli_init(cli *c, const cliopt *o)
{
    SSL_CTX *cc = client_ctx(o);
    memset(c, 0, sizeof(*c));
    c->ssl = SSL_new(cc);
    SSL_CTX_free(cc);
    c->rb = BIO_new(BIO_s_mem());
    c->wb = BIO_new(BIO_s_mem());
    SSL_set_bio(c->ssl, c->rb, c->wb);
    SSL_set_connect_state(c->ssl);
    SSL_set_tlsext_host_name(c->ssl, "localhost");
    if (o->session)
        SSL_set_session(c->ssl, o->session);
    cg_buf_init(&c->got);
}

static void cli_free(cli *c)
{
    SSL_free(c->ssl);
    cg_buf_free(&c->got);
    ERR_clear_error();
}

static void srv_init(srv *s, cg_tls_ctx *ctx)
{
    memset(s, 0, sizeof(*s));
    s->t = cg_tls_new(ctx);
    cg_buf_init(&s->plain);
    cg_buf_init(&s->out);
}

static void srv_free(srv *s)
{
    cg_tls_free(s->t);
    cg_buf_free(&s->plain);
    cg_buf_free(&s->out);
}

/* Runs the client one step: handshake, or reading what it can. */
static void cli_step(cli *c)
{
    if (c->failed)
        return;
    if (!SSL_is_init_finished(c->ssl)) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1 && SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ)
            c->failed = 1;
        if (r != 1) {
            ERR_clear_error();
            return;
        }
    }
    for (;;) {
        char buf[16384];
        size_t k;
        if (SSL_read_ex(c->ssl, buf, sizeof(buf), &k)) {
            cg_buf_append(&c->got, buf, k);
            continue;
        }
        int e = SSL_get_error(c->ssl, 0);
        if (e == SSL_ERROR_ZERO_RETURN)
            c->closed = 1;
        else if (e != SSL_ERROR_WANT_READ)
            c->failed = 1;
        break;
    }
    ERR_clear_error();
}

/* Hands n ciphertext bytes to the server in pieces of `split` (0 = all at
 * once), running cg_tls_read after each piece. */
static void srv_take(srv *s, const char *p, size_t n, size_t split)
{
    for (size_t off = 0; off < n && !s->fatal;) {
        size_t k = split && split < n - off ? split : n - off;
        int r;
        cg_tls_feed(s->t, p + off, k);
        off += k;
        r = cg_tls_read(s->t, &s->plain, &s->out);
        if (r < 0) {
            s->fatal = 1;
            break;
        }
        if (r & CG_TLS_HANDSHAKE)
            s->handshake_events++;
        s->flags |= r;
    }
}

/* Moves bytes both ways until nothing moves. */
static void pump(cli *c, srv *s, size_t split)
{
    for (int round = 0; round < 200; round++) {
        int moved = 0;
        char *p;
        long n;
        cli_step(c);
        n = BIO_get_mem_data(c->wb, &p);
        if (n > 0 && !s->fatal) {
            srv_take(s, p, (size_t)n, split);
            moved = 1;
        }
        (void)BIO_reset(c->wb);
        if (s->out.len > s->out.pos) {
            BIO_write(c->rb, s->out.data + s->out.pos, (int)(s->out.len - s->out.pos));
            cg_buf_reset(&s->out);
            moved = 1;
        }
        if (!moved)
            break;
    }
    cli_step(c);
}

static int connected(cli *c, srv *s)
{
    return !c->failed && !s->fatal && SSL_is_init_finished(c->ssl) && cg_tls_handshake_done(s->t);
}

/* Client -> server and server -> client application data, checked. */
static int exchange(cli *c, srv *s, const char *msg, size_t n, size_t split)
{
    size_t w;
    size_t before = s->plain.len;
    if (!SSL_write_ex(c->ssl, msg, n, &w) || w != n)
        return 0;
    pump(c, s, split);
    if (s->plain.len - before != n || memcmp(s->plain.data + before, msg, n) != 0)
        return 0;
    before = c->got.len;
    if (cg_tls_write(s->t, msg, n, &s->out) != 0)
        return 0;
    pump(c, s, split);
    return c->got.len - before == n && memcmp(c->got.data + before, msg, n) == 0;
}

/* ---- tests ---- */

static void test_handshake(cg_tls_ctx *ctx, int version, const char *name)
{
    cli c;
    srv s;
    cliopt o = {.min = version, .max = version, .verify = 1};
    if (version == TLS1_2_VERSION || version == TLS1_3_VERSION)
        o.min = 0, o.max = version; /* default security level */
    srv_init(&s, ctx);
    cli_init(&c, &o);
    ok(!cg_tls_handshake_done(s.t), "%s: handshake not done before any byte", name);
    pump(&c, &s, 0);
    ok(connected(&c, &s), "%s: handshake completes", name);
    ok(s.handshake_events == 1, "%s: handshake reported exactly once", name);
    ok(SSL_get_verify_result(c.ssl) == X509_V_OK,
       "%s: the client verifies the chain (intermediate sent)", name);
    ok(cg_tls_version(s.t) == (unsigned)version &&
           cg_tls_version(s.t) == (unsigned)SSL_version(c.ssl),
       "%s: tls_version 0x%04x", name, cg_tls_version(s.t));
    ok(cg_tls_cipher_suite(s.t) == SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(c.ssl)) &&
           cg_tls_cipher_suite(s.t) != 0,
       "%s: cipher_suite 0x%04x is what the client sees", name, cg_tls_cipher_suite(s.t));
    size_t n, flen;
    const char *pem = cg_tls_server_cert_pem(s.t, &n);
    char *file = slurp(P("server.pem"), &flen);
    ok(pem && file && n == flen && memcmp(pem, file, n) == 0, "%s: server_cert is the leaf as PEM",
       name);
    free(file);
    ok(cg_tls_client_cert_count(s.t) == 0 && cg_tls_client_cert_error(s.t) == NULL,
       "%s: no client certificate", name);
    cg_buf nm;
    cg_buf_init(&nm);
    ok(cg_tls_client_cert_name(s.t, &nm) == 0 && nm.len == 0, "%s: no client name", name);
    cg_buf_free(&nm);
    ok(exchange(&c, &s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27, 0), "%s: data both ways", name);
    ok(ERR_peek_error() == 0, "%s: OpenSSL error queue empty", name);
    cli_free(&c);
    srv_free(&s);
}

static void test_alpn(void)
{
    cg_tls_conf conf = base_conf();
    conf.alpn = alpn_h2_h1;
    conf.alpn_n = 2;
    cg_tls_ctx *ctx = ctx_or_die(&conf);
    static const struct {
        const unsigned char *wire;
        unsigned len;
        const char *want;
        const char *name;
    } cases[] = {
        {(const unsigned char *)"\x08http/1.1\x02h2", 12, "h2", "server preference wins"},
        {(const unsigned char *)"\x08http/1.1", 9, "http/1.1", "http/1.1 only"},
        {(const unsigned char *)"\x06spdy/3\x03foo", 11, NULL,
         "no match: no ALPN, handshake goes on"},
        {NULL, 0, NULL, "client without ALPN"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cli c;
        srv s;
        cliopt o = {.alpn = cases[i].wire, .alpn_len = cases[i].len};
        size_t n;
        const char *a;
        srv_init(&s, ctx);
        cli_init(&c, &o);
        pump(&c, &s, 0);
        a = cg_tls_alpn(s.t, &n);
        if (cases[i].want)
            ok(connected(&c, &s) && a && n == strlen(cases[i].want) &&
                   memcmp(a, cases[i].want, n) == 0,
               "ALPN: %s (%s)", cases[i].name, cases[i].want);
        else
            ok(connected(&c, &s) && a == NULL && n == 0, "ALPN: %s", cases[i].name);
        const unsigned char *ca;
        unsigned cn;
        SSL_get0_alpn_selected(c.ssl, &ca, &cn);
        ok(cn == n && (n == 0 || memcmp(ca, a, n) == 0), "ALPN: client agrees (%s)", cases[i].name);
        cli_free(&c);
        srv_free(&s);
    }
    cg_tls_ctx_free(ctx);
}

static void test_old_versions(cg_tls_ctx *ctx)
{
    static const int versions[] = {TLS1_VERSION, TLS1_1_VERSION};
    for (int i = 0; i < 2; i++) {
        cli c;
        srv s;
        cliopt o = {.min = versions[i], .max = versions[i]};
        srv_init(&s, ctx);
        cli_init(&c, &o);
        pump(&c, &s, 0);
        ok(s.fatal && cg_tls_cause(s.t) == CG_TLS_E_VERSION && !SSL_is_init_finished(c.ssl),
           "TLS 1.%d client refused: %s (%s)", i, cg_tls_cause_text(cg_tls_cause(s.t)),
           cg_tls_error_detail(s.t));
        ok(ERR_peek_error() == 0, "error queue empty after a refused client");
        cli_free(&c);
        srv_free(&s);
    }
}

static void test_version_options(void)
{
    cg_tls_conf conf = base_conf();
    char err[512];
    cli c;
    srv s;
    cliopt o = {0};
    conf.ssl_version = 5;
    cg_tls_ctx *ctx = ctx_or_die(&conf);
    srv_init(&s, ctx);
    cli_init(&c, &o);
    pump(&c, &s, 0);
    ok(connected(&c, &s) && cg_tls_version(s.t) == 0x0303,
       "ssl-version 5 pins TLS 1.2 for a TLS 1.3 client");
    cli_free(&c);
    srv_free(&s);
    cg_tls_ctx_free(ctx);

    conf.ssl_version = 2;
    ctx = ctx_or_die(&conf);
    srv_init(&s, ctx);
    cli_init(&c, &o);
    pump(&c, &s, 0);
    ok(connected(&c, &s) && cg_tls_version(s.t) == 0x0304, "ssl-version 2 negotiates TLS 1.3");
    cli_free(&c);
    srv_free(&s);
    cg_tls_ctx_free(ctx);

    static const long bad[] = {3, 4, 0, 16, 99};
    static const char *const want[] = {"ssl-version 3: TLS 1.0 and 1.1 are not supported",
                                       "ssl-version 4: TLS 1.0 and 1.1 are not supported",
                                       "ssl-version 0: SSL 2.0 and 3.0",
                                       "ssl-version 16:", "ssl-version 99: not a server protocol"};
    for (int i = 0; i < 5; i++) {
        conf.ssl_version = bad[i];
        err[0] = '\0';
        ctx = cg_tls_ctx_new(&conf, err, sizeof(err));
        ok(!ctx && strncmp(err, want[i], strlen(want[i])) == 0, "ssl-version %ld refused: %s",
           bad[i], err);
    }
    ok(cg_tls_version_problem(17) == NULL && cg_tls_version_problem(2) == NULL &&
           cg_tls_version_problem(5) == NULL,
       "2, 5 and 17 are accepted");
}

static void test_ciphers(void)
{
    cg_tls_conf conf = base_conf();
    char err[512];
    cli c;
    srv s;
    cliopt o = {.max = TLS1_2_VERSION};
    conf.ciphers = "ECDHE-RSA-AES128-GCM-SHA256";
    cg_tls_ctx *ctx = ctx_or_die(&conf);
    srv_init(&s, ctx);
    cli_init(&c, &o);
    pump(&c, &s, 0);
    ok(connected(&c, &s) && cg_tls_cipher_suite(s.t) == 0xC02F,
       "ssl-ciphers applies to TLS 1.2 (0x%04x)", cg_tls_cipher_suite(s.t));
    cli_free(&c);
    srv_free(&s);
    cg_tls_ctx_free(ctx);

    conf.ciphers = "NO-SUCH-CIPHER";
    ctx = cg_tls_ctx_new(&conf, err, sizeof(err));
    ok(!ctx && strstr(err, "ssl-ciphers 'NO-SUCH-CIPHER'"), "unknown cipher list: %s", err);
    ok(ERR_peek_error() == 0, "error queue empty after a refused cipher list");

    /* A TLS 1.2 client with no cipher in common. */
    conf.ciphers = "ECDHE-RSA-AES128-GCM-SHA256";
    ctx = ctx_or_die(&conf);
    o.ciphers = "ECDHE-RSA-AES256-GCM-SHA384";
    srv_init(&s, ctx);
    cli_init(&c, &o);
    pump(&c, &s, 0);
    ok(s.fatal && cg_tls_cause(s.t) == CG_TLS_E_HANDSHAKE, "no shared cipher: %s (%s)",
       cg_tls_cause_text(cg_tls_cause(s.t)), cg_tls_error_detail(s.t));
    cli_free(&c);
    srv_free(&s);
    cg_tls_ctx_free(ctx);
}

static void test_mtls(void)
{
    cg_tls_conf conf = base_conf();
    char err[512];
    cli c;
    srv s;
    cg_buf b;
    size_t flen;

    conf.cert_reqs = 2;
    ok(!cg_tls_ctx_new(&conf, err, sizeof(err)) && strstr(err, "ssl-ca-certs"),
       "cert_reqs 2 without CA certificates: %s", err);
    conf.ca_certs = P("ca.pem");
    cg_tls_ctx *req = ctx_or_die(&conf);
    conf.cert_reqs = 1;
    cg_tls_ctx *opt = ctx_or_die(&conf);

    for (int v = 0; v < 2; v++) {
        int ver = v ? TLS1_2_VERSION : TLS1_3_VERSION;
        const char *vn = v ? "TLS 1.2" : "TLS 1.3";
        cliopt none = {.max = ver};
        cliopt good = {.max = ver, .cert = P("client.pem"), .key = P("client.key")};
        cliopt rogue = {.max = ver, .cert = P("rogue.pem"), .key = P("rogue.key")};

        srv_init(&s, req);
        cli_init(&c, &none);
        pump(&c, &s, 0);
        ok(s.fatal && cg_tls_cause(s.t) == CG_TLS_E_CERT_REQUIRED,
           "%s required, no client cert: %s (%s)", vn, cg_tls_cause_text(cg_tls_cause(s.t)),
           cg_tls_error_detail(s.t));
        ok(!exchange(&c, &s, "x", 1, 0), "%s: no data after the failure", vn);
        cli_free(&c);
        srv_free(&s);

        srv_init(&s, req);
        cli_init(&c, &rogue);
        pump(&c, &s, 0);
        ok(s.fatal && cg_tls_cause(s.t) == CG_TLS_E_BAD_CERT,
           "%s required, untrusted client cert: %s (%s)", vn, cg_tls_cause_text(cg_tls_cause(s.t)),
           cg_tls_error_detail(s.t));
        cli_free(&c);
        srv_free(&s);

        srv_init(&s, req);
        cli_init(&c, &good);
        pump(&c, &s, 0);
        ok(connected(&c, &s) && cg_tls_client_cert_count(s.t) == 1 &&
               cg_tls_client_cert_error(s.t) == NULL,
           "%s required, good client cert accepted", vn);
        cg_buf_init(&b);
        char *file = slurp(P("client.pem"), &flen);
        ok(cg_tls_client_cert_pem(s.t, 0, &b) == 0 && file && b.len == flen &&
               memcmp(b.data, file, flen) == 0,
           "%s: client_cert_chain[0] is the client's PEM", vn);
        free(file);
        ok(cg_tls_client_cert_pem(s.t, 1, &b) == -1, "%s: no second certificate", vn);
        cg_buf_reset(&b);
        ok(cg_tls_client_cert_name(s.t, &b) == 1 && b.len == 18 &&
               memcmp(b.data, "CN=alice,O=Example", 18) == 0,
           "%s: client_cert_name is RFC 4514 '%.*s'", vn, (int)b.len, b.data);
        cg_buf_free(&b);
        ok(exchange(&c, &s, "hello", 5, 0), "%s: mTLS data both ways", vn);
        cli_free(&c);
        srv_free(&s);

        srv_init(&s, opt);
        cli_init(&c, &rogue);
        pump(&c, &s, 0);
        const char *why = cg_tls_client_cert_error(s.t);
        ok(connected(&c, &s) && why && *why,
           "%s optional, bad cert: served, client_cert_error '%s'", vn, why ? why : "(null)");
        ok(cg_tls_client_cert_count(s.t) == 1, "%s optional: the bad cert is reported", vn);
        ok(exchange(&c, &s, "still served", 12, 0), "%s optional: data both ways", vn);
        cli_free(&c);
        srv_free(&s);

        srv_init(&s, opt);
        cli_init(&c, &none);
        pump(&c, &s, 0);
        ok(connected(&c, &s) && cg_tls_client_cert_count(s.t) == 0 &&
               cg_tls_client_cert_error(s.t) == NULL,
           "%s optional, no cert: served, no error", vn);
        cli_free(&c);
        srv_free(&s);

        srv_init(&s, opt);
        cli_init(&c, &good);
        pump(&c, &s, 0);
        ok(connected(&c, &s) && cg_tls_client_cert_count(s.t) == 1 &&
               cg_tls_client_cert_error(s.t) == NULL,
           "%s optional, good cert: verified", vn);
        cli_free(&c);
        srv_free(&s);
    }
    cg_tls_ctx_free(req);
    cg_tls_ctx_free(opt);
}

static void fill(char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (char)(seed >> 16);
    }
}

static void test_bulk(cg_tls_ctx *ctx)
{
    const size_t n = 8u << 20;
    char *data = malloc(n);
    cli c;
    srv s;
    cliopt o = {0};
    size_t w;
    fill(data, n, 7);
    srv_init(&s, ctx);
    cli_init(&c, &o);
    pump(&c, &s, 0);
    ok(connected(&c, &s), "bulk: connected");
    ok(SSL_write_ex(c.ssl, data, n, &w) && w == n, "bulk: client wrote 8 MiB");
    pump(&c, &s, 65536 + 7);
    ok(s.plain.len == n && memcmp(s.plain.data, data, n) == 0,
       "bulk: 8 MiB client -> server byte-exact");
    cg_buf_reset(&s.out);
    ok(cg_tls_write(s.t, data, n, &s.out) == 0, "bulk: one cg_tls_write of 8 MiB");
    size_t records = n / 16384;
    ok(s.out.len > n + records * 5 && s.out.len < n + records * 64,
       "bulk: 8 MiB in %zu bytes of records, one buffer", s.out.len);
    pump(&c, &s, 0);
    ok(c.got.len == n && memcmp(c.got.data, data, n) == 0,
       "bulk: 8 MiB server -> client byte-exact");
    cli_free(&c);
    srv_free(&s);
    free(data);
}

/* The first flight split in two at every point, for both versions. */
static void test_split_points(cg_tls_ctx *ctx)
{
    for (int v = 0; v < 2; v++) {
        int ver = v ? TLS1_2_VERSION : TLS1_3_VERSION;
        int good = 1;
        size_t hello_len = 0, first_bad = 0;
        for (size_t i = 1;; i++) {
            cli c;
            srv s;
            cliopt o = {.max = ver};
            char *p;
            long n;
            srv_init(&s, ctx);
            cli_init(&c, &o);
            cli_step(&c);
            n = BIO_get_mem_data(c.wb, &p);
            hello_len = (size_t)n;
            if (i >= hello_len) {
                cli_free(&c);
                srv_free(&s);
                break;
            }
            srv_take(&s, p, i, 0);
            int mid_ok = !s.fatal && s.out.len == 0 && !cg_tls_handshake_done(s.t);
            srv_take(&s, p + i, hello_len - i, 0);
            (void)BIO_reset(c.wb);
            pump(&c, &s, 0);
            if (!mid_ok || !connected(&c, &s) || !exchange(&c, &s, "ping", 4, 0)) {
                if (good)
                    first_bad = i;
                good = 0;
            }
            cli_free(&c);
            srv_free(&s);
        }
        ok(good && hello_len > 100, "TLS 1.%d: ClientHello (%zu bytes) split at every point",
           v ? 2 : 3, hello_len);
        if (!good)
            printf("#   first failure at %zu\n", first_bad);
    }
}

static void test_byte_by_byte(cg_tls_ctx *ctx)
{
    for (int v = 0; v < 2; v++) {
        int ver = v ? TLS1_2_VERSION : TLS1_3_VERSION;
        cli c;
        srv s;
        cliopt o = {.max = ver, .cert = P("client.pem"), .key = P("client.key")};
        char big[20000];
        fill(big, sizeof(big), 3);
        srv_init(&s, ctx);
        cli_init(&c, &o);
        pump(&c, &s, 1);
        ok(connected(&c, &s) && s.handshake_events == 1,
           "TLS 1.%d: whole handshake fed one byte at a time", v ? 2 : 3);
        ok(exchange(&c, &s, "a", 1, 1) && exchange(&c, &s, big, 1000, 1) &&
               exchange(&c, &s, big, sizeof(big), 1),
           "TLS 1.%d: records of 1, 1000 and 20000 bytes fed one byte at a time", v ? 2 : 3);
        /* Three records in one write from the client, delivered byte by byte. */
        size_t w, before = s.plain.len;
        SSL_write_ex(c.ssl, "one", 3, &w);
        SSL_write_ex(c.ssl, big, 17000, &w);
        SSL_write_ex(c.ssl, "three", 5, &w);
        pump(&c, &s, 1);
        ok(s.plain.len - before == 17008 && memcmp(s.plain.data + before, "one", 3) == 0 &&
               memcmp(s.plain.data + before + 3, big, 17000) == 0 &&
               memcmp(s.plain.data + before + 17003, "three", 5) == 0,
           "TLS 1.%d: back-to-back records, byte by byte, in order", v ? 2 : 3);
        cli_free(&c);
        srv_free(&s);
    }
}

static void test_input_buffer(cg_tls_ctx *ctx)
{
    /* The caller reads straight into cg_tls_input instead of feeding. */
    cli c;
    srv s;
    cliopt o = {0};
    int good = 1;
    srv_init(&s, ctx);
    cli_init(&c, &o);
    for (int round = 0; round < 20; round++) {
        char *p;
        long n;
        cli_step(&c);
        n = BIO_get_mem_data(c.wb, &p);
        if (n > 0) {
            cg_buf *in = cg_tls_input(s.t);
            if (cg_buf_reserve(in, (size_t)n) < 0)
                good = 0;
            memcpy(in->data + in->len, p, (size_t)n);
            in->len += (size_t)n;
            if (cg_tls_read(s.t, &s.plain, &s.out) < 0)
                good = 0;
        }
        (void)BIO_reset(c.wb);
        if (s.out.len)
            BIO_write(c.rb, s.out.data, (int)s.out.len);
        cg_buf_reset(&s.out);
    }
    ok(good && connected(&c, &s), "handshake through the input buffer, no feed");
    ok(cg_buf_unread(cg_tls_input(s.t)) == 0, "input fully consumed");
    cli_free(&c);
    srv_free(&s);
}

static void test_shrink(cg_tls_ctx *ctx)
{
    cli c;
    srv s;
    cliopt o = {0};
    size_t w;
    char *p;
    long n;
    srv_init(&s, ctx);
    cli_init(&c, &o);
    pump(&c, &s, 0);
    ok(exchange(&c, &s, "request", 7, 0), "shrink: data before");
    ok(cg_tls_shrink(s.t) == 1 && cg_tls_input(s.t)->data == NULL,
       "shrink: an idle connection gives its buffers back");
    ok(exchange(&c, &s, "another request", 15, 0), "shrink: the connection works after it");
    SSL_write_ex(c.ssl, "partial", 7, &w);
    n = BIO_get_mem_data(c.wb, &p);
    srv_take(&s, p, (size_t)n - 3, 0);
    ok(cg_tls_shrink(s.t) == 0, "shrink: a partial record keeps them");
    srv_take(&s, p + n - 3, 3, 0);
    (void)BIO_reset(c.wb);
    ok(!s.fatal && s.plain.len >= 7 && memcmp(s.plain.data + s.plain.len - 7, "partial", 7) == 0,
       "shrink: the partial record completes");
    cli_free(&c);
    srv_free(&s);
}

/* Hands the client n bytes of records and checks it decrypts want. */
static int client_gets(cli *c, const char *records, size_t n, const char *want, size_t wn)
{
    size_t before = c->got.len;
    BIO_write(c->rb, records, (int)n);
    cli_step(c);
    return !c->failed && c->got.len - before == wn && memcmp(c->got.data + before, want, wn) == 0;
}

/* cg_tls_write_into: records straight into the caller's memory when their
 * size is known, the same bytes cg_tls_write makes; anything else ends in
 * cipher_out. */
static void write_into_case(const cliopt *o, const char *ciphers, int known, const char *name)
{
    static const size_t sizes[] = {1, 1000, 16384, 16385, 40000};
    static char data[40000];
    cg_tls_conf conf = base_conf();
    cg_tls_ctx *ctx;
    cli c;
    srv s;
    int good = 1, sized = 1;
    fill(data, sizeof(data), 9);
    conf.ciphers = ciphers;
    ctx = ctx_or_die(&conf);
    srv_init(&s, ctx);
    cli_init(&c, o);
    ok(cg_tls_write_size(s.t, 10) == 0, "%s: no size before the handshake", name);
    pump(&c, &s, 0);
    ok(connected(&c, &s), "%s: connected", name);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t n = sizes[i], size = cg_tls_write_size(s.t, n);
        char *dst = malloc(size + 1);
        cg_buf_reset(&s.out);
        if (!known) {
            sized &= size == 0;
        } else if (cg_tls_write(s.t, data, n, &s.out) != 0 || s.out.len != size ||
                   !client_gets(&c, s.out.data, s.out.len, data, n)) {
            sized = 0;
        } else {
            cg_buf_reset(&s.out);
            good &= cg_tls_write_into(s.t, data, n, dst, size, &s.out) == 1 && s.out.len == 0 &&
                    client_gets(&c, dst, size, data, n);
            /* A byte too few, a byte too many: all records in cipher_out. */
            good &= cg_tls_write_into(s.t, data, n, dst, size - 1, &s.out) == 0 &&
                    client_gets(&c, s.out.data, s.out.len, data, n);
            cg_buf_reset(&s.out);
            good &= cg_tls_write_into(s.t, data, n, dst, size + 1, &s.out) == 0 &&
                    client_gets(&c, s.out.data, s.out.len, data, n);
        }
        free(dst);
    }
    if (known)
        ok(sized, "%s: cg_tls_write_size is what cg_tls_write makes (1 B to 40000 B)", name);
    else
        ok(sized, "%s: cg_tls_write_size does not guess", name);
    if (known)
        ok(good, "%s: records written into the caller's memory, or all to cipher_out", name);
    cli_free(&c);
    srv_free(&s);
    cg_tls_ctx_free(ctx);
}

static void test_write_into(cg_tls_ctx *ctx)
{
    cliopt o = {0};
    write_into_case(&o, NULL, 1, "TLS 1.3");
    o.max = TLS1_2_VERSION;
    write_into_case(&o, "ECDHE-RSA-AES128-GCM-SHA256", 1, "TLS 1.2 AES-GCM");
    write_into_case(&o, "ECDHE-RSA-CHACHA20-POLY1305", 1, "TLS 1.2 ChaCha20-Poly1305");
    write_into_case(&o, "ECDHE-RSA-AES128-SHA256", 0, "TLS 1.2 CBC");

    /* A client that limits records to 1 KiB (max_fragment_length). */
    cli c;
    srv s;
    cliopt d = {0};
    static char data[3000];
    fill(data, sizeof(data), 4);
    srv_init(&s, ctx);
    cli_init(&c, &d);
    SSL_set_tlsext_max_fragment_length(c.ssl, TLSEXT_max_fragment_length_1024);
    pump(&c, &s, 0);
    size_t size = cg_tls_write_size(s.t, sizeof(data));
    char *dst = malloc(size);
    ok(connected(&c, &s) && size == sizeof(data) + 3 * 22 &&
           cg_tls_write_into(s.t, data, sizeof(data), dst, size, &s.out) == 1 &&
           client_gets(&c, dst, size, data, sizeof(data)),
       "max_fragment_length 1024: 3000 bytes in 3 records, into the caller's memory");

    /* The client asks for a key update: the server's next write starts with
     * its own KeyUpdate, which the size did not count. */
    size_t w;
    SSL_key_update(c.ssl, SSL_KEY_UPDATE_REQUESTED);
    SSL_write_ex(c.ssl, "k", 1, &w);
    pump(&c, &s, 0);
    cg_buf_reset(&s.out);
    ok(cg_tls_write_into(s.t, data, sizeof(data), dst, size, &s.out) == 0 &&
           client_gets(&c, s.out.data, s.out.len, data, sizeof(data)) &&
           SSL_get_key_update_type(c.ssl) == SSL_KEY_UPDATE_NONE,
       "after a KeyUpdate request: the records and the KeyUpdate in cipher_out");
    cg_buf_reset(&s.out);
    ok(cg_tls_write_into(s.t, data, sizeof(data), dst, size, &s.out) == 1 &&
           client_gets(&c, dst, size, data, sizeof(data)),
       "the write after it goes into the caller's memory again");
    free(dst);
    cli_free(&c);
    srv_free(&s);
}

/* A record that began in an earlier call has more plaintext than the input
 * that completes it: the room made for that input fills, and the rest comes
 * out in the same call. */
static void test_pending_plaintext(cg_tls_ctx *ctx)
{
    static char big[16000];
    cli c;
    srv s;
    cliopt o = {0};
    size_t w;
    char *p;
    long n;
    fill(big, sizeof(big), 5);
    srv_init(&s, ctx);
    cli_init(&c, &o);
    pump(&c, &s, 0);
    SSL_write_ex(c.ssl, big, sizeof(big), &w);
    n = BIO_get_mem_data(c.wb, &p);
    srv_take(&s, p, (size_t)n - 10, 0);
    ok(!s.fatal && s.plain.len == 0, "pending: a partial record gives nothing yet");
    cg_buf_free(&s.plain); /* the room made for that input is gone */
    srv_take(&s, p + n - 10, 10, 0);
    (void)BIO_reset(c.wb);
    ok(!s.fatal && s.plain.len == sizeof(big) && memcmp(s.plain.data, big, sizeof(big)) == 0,
       "pending: 16000 bytes of plaintext from the last 10 bytes of their record");
    cli_free(&c);
    srv_free(&s);
}

/* An entry another user of OpenSSL left in the thread's error queue must not
 * make a wait for input look fatal, nor stop a write. */
static void test_stale_errors(cg_tls_ctx *ctx)
{
    cli c;
    srv s;
    cliopt o = {0};
    size_t w;
    char *p;
    long n;
    srv_init(&s, ctx);
    cli_init(&c, &o);
    pump(&c, &s, 0);
    SSL_write_ex(c.ssl, "ping", 4, &w);
    n = BIO_get_mem_data(c.wb, &p);
    ERR_raise(ERR_LIB_SSL, SSL_R_BAD_LENGTH);
    srv_take(&s, p, (size_t)n - 3, 0);
    ok(!s.fatal && s.plain.len == 0, "stale error: a partial record still waits for input");
    ERR_raise(ERR_LIB_SSL, SSL_R_BAD_LENGTH);
    srv_take(&s, p + n - 3, 3, 0);
    (void)BIO_reset(c.wb);
    ok(!s.fatal && s.plain.len == 4 && memcmp(s.plain.data, "ping", 4) == 0,
       "stale error: the record completes");
    ERR_raise(ERR_LIB_SSL, SSL_R_BAD_LENGTH);
    ok(cg_tls_write(s.t, "pong", 4, &s.out) == 0, "stale error: a write succeeds");
    ERR_clear_error();
    pump(&c, &s, 0);
    ok(c.got.len == 4 && memcmp(c.got.data, "pong", 4) == 0, "stale error: the client gets it");
    cli_free(&c);
    srv_free(&s);
}

static void test_close_notify(cg_tls_ctx *ctx)
{
    cli c;
    srv s;
    cliopt o = {0};
    srv_init(&s, ctx);
    cli_init(&c, &o);
    pump(&c, &s, 0);
    ok(cg_tls_close_notify(s.t, &s.out) == 0 && s.out.len > 0, "close_notify appended");
    pump(&c, &s, 0);
    ok(c.closed, "client sees the server's close_notify");
    cli_free(&c);
    srv_free(&s);

    srv_init(&s, ctx);
    cli_init(&c, &o);
    pump(&c, &s, 0);
    ok(exchange(&c, &s, "last words", 10, 0), "data before close");
    SSL_shutdown(c.ssl);
    pump(&c, &s, 0);
    ok(!s.fatal && (s.flags & CG_TLS_CLOSED), "server reports the client's close_notify");
    cli_free(&c);
    srv_free(&s);

    srv_init(&s, ctx);
    ok(cg_tls_close_notify(s.t, &s.out) == 0 && s.out.len == 0,
       "close_notify before the handshake writes nothing");
    ok(cg_tls_write(s.t, "x", 1, &s.out) == CG_TLS_FATAL && cg_tls_cause(s.t) == CG_TLS_E_STATE,
       "write before the handshake is refused");
    srv_free(&s);
}

static void test_garbage(cg_tls_ctx *ctx)
{
    static const char http[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    srv s;
    srv_init(&s, ctx);
    srv_take(&s, http, sizeof(http) - 1, 0);
    ok(s.fatal && cg_tls_cause(s.t) == CG_TLS_E_NOT_TLS &&
           strcmp(cg_tls_cause_text(cg_tls_cause(s.t)), "not TLS (plaintext HTTP?)") == 0,
       "plaintext HTTP: %s (%s)", cg_tls_cause_text(cg_tls_cause(s.t)), cg_tls_error_detail(s.t));
    ok(ERR_peek_error() == 0, "error queue empty after plaintext HTTP");
    ok(cg_tls_read(s.t, &s.plain, &s.out) == CG_TLS_FATAL, "a failed connection stays failed");
    srv_free(&s);

    srv_init(&s, ctx);
    srv_take(&s, http, sizeof(http) - 1, 1);
    ok(s.fatal && cg_tls_cause(s.t) == CG_TLS_E_NOT_TLS, "plaintext HTTP byte by byte: not TLS");
    srv_free(&s);

    char junk[300];
    fill(junk, sizeof(junk), 11);
    junk[0] = 0x01;
    srv_init(&s, ctx);
    srv_take(&s, junk, sizeof(junk), 0);
    ok(s.fatal && cg_tls_cause(s.t) == CG_TLS_E_NOT_TLS, "random bytes: not TLS");
    srv_free(&s);

    junk[0] = 0x16; /* a handshake record header, then nonsense */
    srv_init(&s, ctx);
    srv_take(&s, junk, sizeof(junk), 0);
    ok(s.fatal && cg_tls_cause(s.t) != CG_TLS_E_NOT_TLS && cg_tls_cause(s.t) != CG_TLS_E_NONE,
       "broken record after a handshake byte: %s (%s)", cg_tls_cause_text(cg_tls_cause(s.t)),
       cg_tls_error_detail(s.t));
    ok(ERR_peek_error() == 0, "error queue empty after a broken record");
    srv_free(&s);

    /* A valid handshake, then garbage instead of a record. */
    cli c;
    cliopt o = {0};
    srv_init(&s, ctx);
    cli_init(&c, &o);
    pump(&c, &s, 0);
    srv_take(&s, junk + 1, 100, 0);
    ok(connected(&c, &s) == 0 && s.fatal && cg_tls_cause(s.t) == CG_TLS_E_PROTOCOL,
       "garbage after the handshake: %s (%s)", cg_tls_cause_text(cg_tls_cause(s.t)),
       cg_tls_error_detail(s.t));
    cli_free(&c);
    srv_free(&s);
}

static void conf_fails(cg_tls_conf conf, const char *want1, const char *want2, const char *name)
{
    char err[512] = "";
    cg_tls_ctx *ctx = cg_tls_ctx_new(&conf, err, sizeof(err));
    ok(!ctx && strstr(err, want1) && (!want2 || strstr(err, want2)) && !strchr(err, '\n'), "%s: %s",
       name, err);
    ok(ERR_peek_error() == 0, "%s: error queue empty", name);
    cg_tls_ctx_free(ctx);
}

static void test_conf_errors(void)
{
    cg_tls_conf conf = base_conf();
    char want[300];

    conf.keyfile = P("server-p1.key");
    conf.password = "s3cret";
    cg_tls_ctx *ctx = ctx_or_die(&conf);
    cg_tls_ctx_free(ctx);
    ok(1, "encrypted PKCS#1 key with its password");
    conf.keyfile = P("server-p8.key");
    ctx = ctx_or_die(&conf);
    cg_tls_ctx_free(ctx);
    ok(1, "encrypted PKCS#8 key with its password");

    conf.password = "wrong";
    snprintf(want, sizeof(want), "ssl-keyfile %s: wrong password", P("server-p8.key"));
    conf_fails(conf, want, NULL, "PKCS#8, wrong password");
    conf.keyfile = P("server-p1.key");
    snprintf(want, sizeof(want), "ssl-keyfile %s: wrong password", P("server-p1.key"));
    conf_fails(conf, want, NULL, "PKCS#1, wrong password");
    conf.password = NULL;
    conf_fails(conf, "the key is encrypted and no password was given", NULL,
               "encrypted key, no password");

    conf = base_conf();
    conf.keyfile = P("client.key");
    snprintf(want, sizeof(want), "ssl-keyfile %s: the private key does not match the certificate",
             P("client.key"));
    conf_fails(conf, want, NULL, "mismatched key");

    conf = base_conf();
    conf.keyfile = P("missing.key");
    snprintf(want, sizeof(want), "ssl-keyfile %s: No such file or directory", P("missing.key"));
    conf_fails(conf, want, NULL, "missing key file");
    conf = base_conf();
    conf.certfile = P("missing.pem");
    snprintf(want, sizeof(want), "ssl-certfile %s: No such file or directory", P("missing.pem"));
    conf_fails(conf, want, NULL, "missing certificate file");
    conf = base_conf();
    conf.certfile = P("junk.pem");
    conf_fails(conf, "ssl-certfile", "no PEM certificate found", "not a certificate");
    conf = base_conf();
    conf.keyfile = P("junk.pem");
    conf_fails(conf, "ssl-keyfile", "no PEM private key found", "not a key");
    conf = base_conf();
    conf.keyfile = NULL;
    conf_fails(conf, "ssl-certfile", "no PEM private key found", "no keyfile, no key in certfile");
    conf = base_conf();
    conf.ca_certs = P("missing-ca.pem");
    conf_fails(conf, "ssl-ca-certs", "No such file or directory", "missing CA file");
    conf.ca_certs = P("junk.pem");
    conf_fails(conf, "ssl-ca-certs", "no PEM certificate found", "CA file without certificates");
    conf.ca_certs = dir; /* a directory: unreadable as a file */
    conf_fails(conf, "ssl-ca-certs", "Is a directory", "CA path is a directory");

    conf = base_conf();
    conf.certfile = P("combined.pem");
    conf.keyfile = NULL;
    ctx = ctx_or_die(&conf);
    cli c;
    srv s;
    cliopt o = {.verify = 1};
    srv_init(&s, ctx);
    cli_init(&c, &o);
    pump(&c, &s, 0);
    ok(connected(&c, &s) && SSL_get_verify_result(c.ssl) == X509_V_OK,
       "key and chain in one certfile (no keyfile)");
    cli_free(&c);
    srv_free(&s);
    cg_tls_ctx_free(ctx);
}

static int peer_cn_is(cli *c, const char *cn)
{
    X509 *x = SSL_get0_peer_certificate(c->ssl);
    char buf[128] = "";
    if (!x)
        return 0;
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, sizeof(buf));
    return strcmp(buf, cn) == 0;
}

static void test_reload(void)
{
    cg_tls_conf conf = base_conf();
    cg_tls_ctx *ctx = ctx_or_die(&conf);
    char err[512];
    cli c1, c2;
    srv s1, s2;
    cliopt o = {.verify = 1};
    size_t n1, n2;

    srv_init(&s1, ctx);
    cli_init(&c1, &o);
    pump(&c1, &s1, 0);
    ok(connected(&c1, &s1) && peer_cn_is(&c1, "localhost"), "before reload: first certificate");
    const char *before = cg_tls_ctx_cert_pem(ctx, &n1);
    char *first_pem = malloc(n1);
    memcpy(first_pem, before, n1);

    conf.certfile = P("missing.pem");
    ok(cg_tls_ctx_reload(ctx, &conf, err, sizeof(err)) == -1 && strstr(err, "missing.pem"),
       "failed reload: %s", err);
    conf.certfile = P("chain2.pem");
    conf.keyfile = P("server2.key");
    ok(cg_tls_ctx_reload(ctx, &conf, err, sizeof(err)) == 0, "reload with the second identity");

    srv_init(&s2, ctx);
    cli_init(&c2, &o);
    pump(&c2, &s2, 0);
    ok(connected(&c2, &s2) && peer_cn_is(&c2, "localhost2") &&
           SSL_get_verify_result(c2.ssl) == X509_V_OK,
       "after reload: a new connection gets the new certificate");
    const char *p1 = cg_tls_server_cert_pem(s1.t, &n1);
    const char *p2 = cg_tls_server_cert_pem(s2.t, &n2);
    ok(n1 == n2 || memcmp(p1, p2, n1 < n2 ? n1 : n2) != 0, "the two connections report their own "
                                                           "server_cert");
    ok(memcmp(p1, first_pem, n1) == 0, "the open connection still reports the first certificate");
    ok(exchange(&c1, &s1, "still here", 10, 0) && exchange(&c2, &s2, "new one", 7, 0),
       "the open connection keeps working beside the new one");
    free(first_pem);
    /* The context may go before its connections. */
    cg_tls_ctx_free(ctx);
    ok(exchange(&c1, &s1, "after free", 10, 0), "connections outlive the context");
    cli_free(&c1);
    srv_free(&s1);
    cli_free(&c2);
    srv_free(&s2);
}

/* A full handshake on `a`, then a resumption attempt on `b`. Returns 1 when
 * `b` resumed. */
static int resumes(cg_tls_ctx *a, cg_tls_ctx *b, int ver)
{
    cli c;
    srv s;
    cliopt o = {.max = ver};
    SSL_SESSION *sess;
    int reused;
    srv_init(&s, a);
    cli_init(&c, &o);
    pump(&c, &s, 0);
    if (!connected(&c, &s) || !exchange(&c, &s, "x", 1, 0)) {
        cli_free(&c);
        srv_free(&s);
        return -1;
    }
    /* A client freed without sending close_notify marks its session not
     * resumable. */
    SSL_shutdown(c.ssl);
    sess = SSL_get1_session(c.ssl);
    cli_free(&c);
    srv_free(&s);
    o.session = sess;
    srv_init(&s, b);
    cli_init(&c, &o);
    pump(&c, &s, 0);
    reused = connected(&c, &s) && SSL_session_reused(c.ssl) && exchange(&c, &s, "y", 1, 0);
    cli_free(&c);
    srv_free(&s);
    SSL_SESSION_free(sess);
    return reused;
}

static void test_resumption(void)
{
    cg_tls_conf conf = base_conf();
    cg_tls_ctx *w1 = ctx_or_die(&conf), *w2 = ctx_or_die(&conf), *w3 = ctx_or_die(&conf);
    static const unsigned char secret[32] = "0123456789abcdef0123456789abcde";
    static const unsigned char other[32] = "fedcba9876543210fedcba987654321";
    ok(cg_tls_ctx_set_ticket_keys(w1, secret, 8) == -1,
       "a ticket secret under 16 bytes is refused");
    ok(cg_tls_ctx_set_ticket_keys(w1, secret, sizeof(secret)) == 0 &&
           cg_tls_ctx_set_ticket_keys(w2, secret, sizeof(secret)) == 0 &&
           cg_tls_ctx_set_ticket_keys(w3, other, sizeof(other)) == 0,
       "ticket keys set on three workers");
    ok(resumes(w1, w1, TLS1_3_VERSION) == 1, "TLS 1.3: resumption on the same worker");
    ok(resumes(w1, w2, TLS1_3_VERSION) == 1, "TLS 1.3: a ticket from worker 1 resumes on worker 2");
    ok(resumes(w1, w3, TLS1_3_VERSION) == 0, "TLS 1.3: a worker with other keys does a full "
                                             "handshake");
    ok(resumes(w2, w1, TLS1_2_VERSION) == 1, "TLS 1.2: a ticket from worker 2 resumes on worker 1");
    char err[512];
    ok(cg_tls_ctx_reload(w2, &conf, err, sizeof(err)) == 0 && resumes(w1, w2, TLS1_3_VERSION) == 1,
       "the ticket keys survive a reload");
    cg_tls_ctx_free(w1);
    cg_tls_ctx_free(w2);
    cg_tls_ctx_free(w3);
}

int main(void)
{
    char cmd[128];
    snprintf(dir, sizeof(dir), "/tmp/casgi-tls-XXXXXX");
    if (!mkdtemp(dir) || make_material() < 0) {
        printf("Bail out! could not make test certificates with the openssl tool in %s\n", dir);
        return 1;
    }
    ok(cg_tls_available() == 1, "TLS is available in this build");

    cg_tls_conf conf = base_conf();
    cg_tls_ctx *ctx = ctx_or_die(&conf);
    test_handshake(ctx, TLS1_3_VERSION, "TLS 1.3");
    test_handshake(ctx, TLS1_2_VERSION, "TLS 1.2");
    test_alpn();
    test_old_versions(ctx);
    test_version_options();
    test_ciphers();
    test_mtls();
    test_bulk(ctx);
    test_split_points(ctx);
    test_input_buffer(ctx);
    test_shrink(ctx);
    test_pending_plaintext(ctx);
    test_write_into(ctx);
    test_stale_errors(ctx);
    test_close_notify(ctx);
    test_garbage(ctx);
    test_conf_errors();
    test_reload();
    test_resumption();
    cg_tls_ctx_free(ctx);

    conf.cert_reqs = 1;
    conf.ca_certs = P("ca.pem");
    ctx = ctx_or_die(&conf);
    test_byte_by_byte(ctx);
    cg_tls_ctx_free(ctx);

    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", dir);
    return tap_done();
}
