/* TLS server engine on OpenSSL 3 (see tls.h). Built as stubs when meson did
 * not find OpenSSL (CG_HAVE_TLS 0). */
#include "tls.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errfmt.h"

int cg_tls_available(void)
{
    return CG_HAVE_TLS;
}

/* Python's ssl.PROTOCOL_* numbers: 0 SSLv2, 1 SSLv3, 2 TLS (negotiate), 3
 * TLSv1, 4 TLSv1_1, 5 TLSv1_2, 16 TLS_CLIENT, 17 TLS_SERVER. */
const char *cg_tls_version_problem(long v)
{
    switch (v) {
    case 2:
    case 5:
    case 17:
        return NULL;
    case 0:
    case 1:
        return "SSL 2.0 and 3.0 are not supported; the minimum is TLS 1.2";
    case 3:
    case 4:
        return "TLS 1.0 and 1.1 are not supported; the minimum is TLS 1.2";
    case 16:
        return "PROTOCOL_TLS_CLIENT is for clients; use 17 (PROTOCOL_TLS_SERVER)";
    default:
        return "not a server protocol; use 17 (TLS 1.2 and 1.3) or 5 (TLS 1.2 only)";
    }
}

static const char *const cause_texts[CG_TLS_E_COUNT] = {
    [CG_TLS_E_NONE] = "no error",
    [CG_TLS_E_NOT_TLS] = "not TLS (plaintext HTTP?)",
    [CG_TLS_E_VERSION] = "unsupported protocol version",
    [CG_TLS_E_HANDSHAKE] = "handshake failure",
    [CG_TLS_E_CERT_REQUIRED] = "client certificate required",
    [CG_TLS_E_BAD_CERT] = "bad certificate",
    [CG_TLS_E_ALERT] = "alert from the client",
    [CG_TLS_E_PROTOCOL] = "TLS protocol error",
    [CG_TLS_E_NOMEM] = "out of memory",
    [CG_TLS_E_STATE] = "connection not usable (handshake not done or failed)",
};

const char *cg_tls_cause_text(int cause)
{
    if (cause < 0 || cause >= CG_TLS_E_COUNT)
        return "unknown";
    return cause_texts[cause];
}

#if CG_HAVE_TLS

#include <errno.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define TICKET_KEYS_LEN 80 /* OpenSSL's layout: 16 name, 32 HMAC, 32 AES */
#define RECORD_PLAIN_MAX 16384
/* Per-record growth of ciphertext over plaintext, rounded up: header 5, and
 * for AEAD suites an explicit nonce (TLS 1.2) or content type (TLS 1.3) plus
 * a 16-byte tag; CBC suites add an IV, a MAC and padding. Only a size hint. */
#define RECORD_OVERHEAD 96
#define FILE_MAX (64u << 20)

/* One context generation: what a reload replaces. Connections keep a
 * reference to the generation they started on, so its certificate PEM and
 * ALPN list live as long as they do. Used from one thread: plain counter. */
typedef struct tls_gen {
    SSL_CTX *ssl_ctx;
    char *cert_pem; /* the leaf certificate, NUL-terminated */
    size_t cert_pem_len;
    unsigned char *alpn; /* wire format: length-prefixed names, preference order */
    size_t alpn_len;
    int cert_reqs;
    size_t refs; /* the cg_tls_ctx while current, plus one per connection */
} tls_gen;

struct cg_tls_ctx {
    tls_gen *cur;
    unsigned char ticket_keys[TICKET_KEYS_LEN];
};

/* What the connection BIO reads from and writes to. `out` is set only for
 * the duration of an engine call that may produce ciphertext; `dst` only
 * during cg_tls_write_into, whose records go there while they fit. */
typedef struct bio_io {
    cg_buf *in;
    cg_buf *out;
    size_t nread; /* ciphertext bytes handed to OpenSSL so far */
    int first;    /* the first byte of the stream, -1 before any */
    int oom;      /* an append to `out` failed */
    char *dst;    /* the caller's memory, or NULL */
    size_t dst_cap, dst_len;
} bio_io;

struct cg_tls {
    SSL *ssl;
    tls_gen *gen;
    cg_buf in;
    bio_io io;
    int done;        /* handshake completed */
    int cause;       /* enum cg_tls_cause once failed */
    const char *why; /* OpenSSL's reason text (static), "" if none */
    /* Set when the handshake completes: what a record adds to its
     * plaintext (0: not known for this cipher) and the most plaintext in
     * one record, for cg_tls_write_size. */
    size_t rec_extra, rec_max;
};

/* ---- the connection BIO ----
 *
 * Input: a BIO over the engine's own cg_buf rather than BIO_s_mem. The
 * caller may read from the socket straight into that buffer
 * (cg_tls_input), and OpenSSL then copies each record once, from it into its
 * record buffer; a BIO_s_mem would be one more copy (socket buffer -> mem
 * BIO -> record buffer). Output: every record OpenSSL writes is appended to
 * the caller's cg_buf, so a response of many records is one contiguous block
 * for one transport write, with no BIO_s_mem to drain and no allocation per
 * record. One BIO serves both directions (one allocation per connection). */

static BIO_METHOD *bio_method;
static CRYPTO_ONCE bio_once = CRYPTO_ONCE_STATIC_INIT;

/* Moves what went to the caller's memory so far to `out`, where the rest
 * goes. 0, or -1 when memory is exhausted. */
static int bio_dst_to_out(bio_io *io)
{
    int rc = cg_buf_append(io->out, io->dst, io->dst_len);
    io->dst = NULL;
    io->dst_len = 0;
    return rc;
}

static int bio_write_ex(BIO *b, const char *src, size_t n, size_t *written)
{
    bio_io *io = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (io && io->dst && io->out) {
        if (n <= io->dst_cap - io->dst_len) {
            memcpy(io->dst + io->dst_len, src, n);
            io->dst_len += n;
            *written = n;
            return 1;
        }
        if (bio_dst_to_out(io) < 0) { /* more than the caller made room for */
            io->oom = 1;
            return 0;
        }
    }
    if (!io || !io->out || cg_buf_append(io->out, src, n) < 0) {
        if (io)
            io->oom = io->out != NULL;
        return 0;
    }
    *written = n;
    return 1;
}

static int bio_read_ex(BIO *b, char *dst, size_t n, size_t *got)
{
    bio_io *io = BIO_get_data(b);
    size_t avail, k;
    BIO_clear_retry_flags(b);
    avail = io && io->in ? cg_buf_unread(io->in) : 0;
    if (avail == 0 || n == 0) {
        BIO_set_retry_read(b);
        return 0;
    }
    k = avail < n ? avail : n;
    memcpy(dst, io->in->data + io->in->pos, k);
    if (io->nread == 0)
        io->first = (unsigned char)dst[0];
    io->nread += k;
    cg_buf_consume(io->in, k);
    *got = k;
    return 1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    default:
        return 0;
    }
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void bio_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "casgi cg_buf");
    if (!m)
        return;
    if (!BIO_meth_set_write_ex(m, bio_write_ex) || !BIO_meth_set_read_ex(m, bio_read_ex) ||
        !BIO_meth_set_ctrl(m, bio_ctrl) || !BIO_meth_set_create(m, bio_create)) {
        BIO_meth_free(m);
        return;
    }
    bio_method = m;
}

static BIO *bio_new(bio_io *io)
{
    BIO *b;
    if (!CRYPTO_THREAD_run_once(&bio_once, bio_method_init) || !bio_method)
        return NULL;
    b = BIO_new(bio_method);
    if (b)
        BIO_set_data(b, io);
    return b;
}

/* Appends what `write` produces through a BIO to out. */
static int append_via_bio(cg_buf *out, int (*write)(BIO *, const void *), const void *arg)
{
    bio_io io = {NULL, out, 0, -1, 0, NULL, 0, 0};
    BIO *b = bio_new(&io);
    int ok = b && write(b, arg) > 0 && !io.oom;
    BIO_free(b);
    ERR_clear_error();
    return ok ? 0 : -1;
}

static int write_pem(BIO *b, const void *x)
{
    return PEM_write_bio_X509(b, (X509 *)x);
}

/* ---- loading files ---- */

static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1; /* certificates are never encrypted; never prompt on a terminal */
}

typedef struct pw_state {
    const char *password;
    int asked;
} pw_state;

static int give_password(char *buf, int size, int rwflag, void *u)
{
    pw_state *p = u;
    size_t n;
    (void)rwflag;
    p->asked = 1;
    if (!p->password)
        return -1;
    n = strlen(p->password);
    if (n > (size_t)size)
        return -1;
    memcpy(buf, p->password, n);
    return (int)n;
}

/* Reads a whole file; *data is malloc'd (NUL-terminated). */
static int read_file(const char *label, const char *path, char **data, size_t *len, char *err,
                     size_t errlen)
{
    FILE *f = fopen(path, "rbe");
    char *buf = NULL;
    size_t cap = 0, n = 0;
    if (!f) {
        cg_set_err(err, errlen, "%s %s: %s", label, path, strerror(errno));
        return -1;
    }
    for (;;) {
        size_t got;
        if (cap - n < 4096) {
            size_t ncap = cap ? cap * 2 : 8192;
            char *p;
            if (ncap > FILE_MAX + 1) {
                cg_set_err(err, errlen, "%s %s: larger than %u MiB", label, path, FILE_MAX >> 20);
                goto fail;
            }
            p = realloc(buf, ncap + 1);
            if (!p) {
                cg_set_err(err, errlen, "%s %s: out of memory", label, path);
                goto fail;
            }
            buf = p;
            cap = ncap;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) {
                cg_set_err(err, errlen, "%s %s: %s", label, path, strerror(errno));
                goto fail;
            }
            break;
        }
    }
    fclose(f);
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 0;
fail:
    fclose(f);
    if (buf)
        OPENSSL_cleanse(buf, cap);
    free(buf);
    return -1;
}

static void free_secret(char *data, size_t len)
{
    if (data)
        OPENSSL_cleanse(data, len);
    free(data);
}

/* The certificate, then the chain certificates that follow it. */
static int load_chain(SSL_CTX *sc, const char *path, const char *data, size_t len, X509 **leafp,
                      char *err, size_t errlen)
{
    BIO *b = BIO_new_mem_buf(data, (int)len);
    X509 *leaf = NULL, *ca;
    unsigned long e;
    int rc = -1;
    if (!b)
        goto nomem;
    leaf = PEM_read_bio_X509_AUX(b, NULL, no_password, NULL);
    if (!leaf) {
        cg_set_err(err, errlen, "ssl-certfile %s: no PEM certificate found", path);
        goto out;
    }
    if (!SSL_CTX_use_certificate(sc, leaf)) {
        cg_set_err(err, errlen, "ssl-certfile %s: certificate not usable (%s)", path,
                   ERR_reason_error_string(ERR_peek_last_error()));
        goto out;
    }
    SSL_CTX_clear_chain_certs(sc);
    ERR_clear_error();
    while ((ca = PEM_read_bio_X509(b, NULL, no_password, NULL)) != NULL) {
        if (!SSL_CTX_add0_chain_cert(sc, ca)) {
            X509_free(ca);
            goto nomem;
        }
    }
    /* The loop ends at the end of the data (no further PEM block); anything
     * else is a damaged certificate in the chain. */
    e = ERR_peek_last_error();
    if (e && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
        cg_set_err(err, errlen, "ssl-certfile %s: a chain certificate is damaged (%s)", path,
                   ERR_reason_error_string(e));
        goto out;
    }
    *leafp = leaf;
    leaf = NULL;
    rc = 0;
    goto out;
nomem:
    cg_set_err(err, errlen, "ssl-certfile %s: out of memory", path);
out:
    X509_free(leaf);
    BIO_free(b);
    ERR_clear_error();
    return rc;
}

static int load_key(SSL_CTX *sc, const cg_tls_conf *conf, const char *data, size_t len, char *err,
                    size_t errlen)
{
    const char *label = conf->keyfile ? "ssl-keyfile" : "ssl-certfile";
    const char *path = conf->keyfile ? conf->keyfile : conf->certfile;
    pw_state pw = {conf->password, 0};
    BIO *b = BIO_new_mem_buf(data, (int)len);
    EVP_PKEY *key = NULL;
    int rc = -1;
    if (!b) {
        cg_set_err(err, errlen, "%s %s: out of memory", label, path);
        goto out;
    }
    key = PEM_read_bio_PrivateKey(b, NULL, give_password, &pw);
    if (!key) {
        if (pw.asked && !conf->password)
            cg_set_err(err, errlen,
                       "%s %s: the key is encrypted and no password was given "
                       "(--ssl-keyfile-password)",
                       label, path);
        else if (pw.asked)
            cg_set_err(err, errlen, "%s %s: wrong password or not a private key", label, path);
        else
            cg_set_err(err, errlen, "%s %s: no PEM private key found", label, path);
        goto out;
    }
    if (!SSL_CTX_use_PrivateKey(sc, key) || !SSL_CTX_check_private_key(sc)) {
        cg_set_err(err, errlen, "%s %s: the private key does not match the certificate in %s",
                   label, path, conf->certfile);
        goto out;
    }
    rc = 0;
out:
    EVP_PKEY_free(key);
    BIO_free(b);
    ERR_clear_error();
    return rc;
}

/* ---- context generations ---- */

static void gen_unref(tls_gen *g)
{
    if (!g || --g->refs > 0)
        return;
    SSL_CTX_free(g->ssl_ctx);
    free(g->cert_pem);
    free(g->alpn);
    free(g);
}

/* Server side of ALPN: the first of our protocols the client offers. A
 * client offering none of them gets no ALPN at all (not a fatal alert): the
 * caller decides what to serve. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    const tls_gen *g = arg;
    (void)ssl;
    for (size_t i = 0; i < g->alpn_len; i += 1 + (size_t)g->alpn[i]) {
        const unsigned char *ours = g->alpn + i + 1;
        unsigned char n = g->alpn[i];
        for (unsigned int j = 0; j < inlen;) {
            unsigned char m = in[j];
            if (j + 1u + m > inlen)
                break; /* malformed list; OpenSSL has validated it already */
            if (m == n && memcmp(in + j + 1, ours, n) == 0) {
                *out = ours;
                *outlen = n;
                return SSL_TLSEXT_ERR_OK;
            }
            j += 1u + m;
        }
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* --ssl-cert-reqs 1: a client certificate that fails verification does not
 * stop the handshake; SSL_get_verify_result keeps the reason, reported as
 * the tls extension's client_cert_error. */
static int verify_optional(int ok, X509_STORE_CTX *store)
{
    (void)ok;
    (void)store;
    return 1;
}

static int apply_ticket_keys(SSL_CTX *sc, unsigned char keys[TICKET_KEYS_LEN])
{
    return SSL_CTX_set_tlsext_ticket_keys(sc, keys, TICKET_KEYS_LEN) == 1;
}

static tls_gen *gen_new(const cg_tls_conf *conf, unsigned char ticket_keys[TICKET_KEYS_LEN],
                        char *err, size_t errlen)
{
    static const unsigned char sid_ctx[] = "casgi";
    const char *problem = cg_tls_version_problem(conf->ssl_version);
    tls_gen *g = NULL;
    SSL_CTX *sc = NULL;
    X509 *leaf = NULL;
    char *cert = NULL, *key = NULL;
    size_t cert_len = 0, key_len = 0, alpn_len = 0;
    BIO *mem = NULL;

    if (problem) {
        cg_set_err(err, errlen, "ssl-version %ld: %s", conf->ssl_version, problem);
        return NULL;
    }
    if (!conf->certfile) {
        cg_set_err(err, errlen, "ssl-certfile: not given");
        return NULL;
    }
    if (conf->cert_reqs < 0 || conf->cert_reqs > 2) {
        cg_set_err(err, errlen, "ssl-cert-reqs %d: not 0 (none), 1 (optional) or 2 (required)",
                   conf->cert_reqs);
        return NULL;
    }
    if (conf->cert_reqs == 2 && !conf->ca_certs) {
        cg_set_err(err, errlen,
                   "ssl-cert-reqs 2 requires ssl-ca-certs: the CA certificates that verify "
                   "client certificates");
        return NULL;
    }
    for (size_t i = 0; i < conf->alpn_n; i++) {
        size_t n = strlen(conf->alpn[i]);
        if (n == 0 || n > 255) {
            cg_set_err(err, errlen, "ALPN protocol name '%s': length not in 1..255", conf->alpn[i]);
            return NULL;
        }
        alpn_len += 1 + n;
    }

    g = calloc(1, sizeof(*g));
    if (!g)
        goto nomem;
    g->refs = 1;
    g->cert_reqs = conf->cert_reqs;
    if (alpn_len) {
        size_t o = 0;
        g->alpn = malloc(alpn_len);
        if (!g->alpn)
            goto nomem;
        for (size_t i = 0; i < conf->alpn_n; i++) {
            size_t n = strlen(conf->alpn[i]);
            g->alpn[o++] = (unsigned char)n;
            memcpy(g->alpn + o, conf->alpn[i], n);
            o += n;
        }
        g->alpn_len = alpn_len;
    }

    sc = SSL_CTX_new(TLS_server_method());
    if (!sc)
        goto nomem;
    g->ssl_ctx = sc;
    /* No renegotiation (a DoS vector, and unused by HTTP/1.1 or h2 clients);
     * no compression (CRIME); the server's cipher order wins. */
    SSL_CTX_set_options(sc, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* TLS 1.3 suites, AES-128-GCM first: as strong as a web server needs
     * and fewer AES rounds per record than OpenSSL's default first choice,
     * AES-256-GCM (every client offers both). */
    if (!SSL_CTX_set_ciphersuites(sc, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
                                      "TLS_CHACHA20_POLY1305_SHA256"))
        goto internal;
    if (!SSL_CTX_set_min_proto_version(sc, TLS1_2_VERSION) ||
        (conf->ssl_version == 5 && !SSL_CTX_set_max_proto_version(sc, TLS1_2_VERSION)))
        goto internal;
    /* No SSL_MODE_RELEASE_BUFFERS: it frees the record buffers (about 34
     * KiB) after every read and write, which measured about 1,200 more
     * instructions per request (1 KiB request and response over TLS 1.3,
     * callgrind: +3 % for client and server together, about +6 % for the
     * engine). A connection gives them back when it goes idle instead
     * (cg_tls_shrink). No read-ahead either: it saves one BIO read per
     * record (about 200 instructions a small request) but keeps a partial
     * record behind the records before it in OpenSSL's buffer, which then
     * moves it to the front when the rest arrives (a 10 KiB upload: about
     * 9,300 more instructions a request). */
    /* Resumption: stateless tickets (keys shared between workers, see
     * cg_tls_ctx_set_ticket_keys), and the server-side session cache for
     * TLS 1.2 clients that resume by session id. The id context is required
     * for resumption once client certificates are requested. */
    SSL_CTX_set_session_cache_mode(sc, SSL_SESS_CACHE_SERVER);
    if (!SSL_CTX_set_session_id_context(sc, sid_ctx, sizeof(sid_ctx) - 1) ||
        !apply_ticket_keys(sc, ticket_keys))
        goto internal;
    /* "TLSv1" is uvicorn's default --ssl-ciphers; it means OpenSSL's default
     * list here (taken literally it would select only TLS 1.0-era CBC-SHA1
     * suites for TLS 1.2 clients). */
    if (conf->ciphers && *conf->ciphers && strcmp(conf->ciphers, "TLSv1") != 0 &&
        !SSL_CTX_set_cipher_list(sc, conf->ciphers)) {
        cg_set_err(err, errlen, "ssl-ciphers '%s': no usable cipher in the list", conf->ciphers);
        goto fail;
    }
    if (g->alpn)
        SSL_CTX_set_alpn_select_cb(sc, alpn_select, g);

    if (read_file("ssl-certfile", conf->certfile, &cert, &cert_len, err, errlen) < 0)
        goto fail;
    if (load_chain(sc, conf->certfile, cert, cert_len, &leaf, err, errlen) < 0)
        goto fail;
    if (conf->keyfile) {
        if (read_file("ssl-keyfile", conf->keyfile, &key, &key_len, err, errlen) < 0)
            goto fail;
        if (load_key(sc, conf, key, key_len, err, errlen) < 0)
            goto fail;
    } else if (load_key(sc, conf, cert, cert_len, err, errlen) < 0) {
        goto fail;
    }

    if (conf->ca_certs) {
        char *ca;
        size_t ca_len;
        /* Read once first for an errno message ("No such file or directory"),
         * which OpenSSL's loader does not give. */
        if (read_file("ssl-ca-certs", conf->ca_certs, &ca, &ca_len, err, errlen) < 0)
            goto fail;
        free(ca);
        if (!SSL_CTX_load_verify_file(sc, conf->ca_certs)) {
            cg_set_err(err, errlen, "ssl-ca-certs %s: no PEM certificate found", conf->ca_certs);
            goto fail;
        }
    }
    if (conf->cert_reqs == 1)
        SSL_CTX_set_verify(sc, SSL_VERIFY_PEER, verify_optional);
    else if (conf->cert_reqs == 2)
        SSL_CTX_set_verify(sc, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);

    /* The leaf as PEM, once per generation (the tls extension's server_cert). */
    mem = BIO_new(BIO_s_mem());
    if (!mem || !PEM_write_bio_X509(mem, leaf))
        goto nomem;
    {
        char *p;
        long n = BIO_get_mem_data(mem, &p);
        g->cert_pem = malloc((size_t)n + 1);
        if (!g->cert_pem)
            goto nomem;
        memcpy(g->cert_pem, p, (size_t)n);
        g->cert_pem[n] = '\0';
        g->cert_pem_len = (size_t)n;
    }
    BIO_free(mem);
    X509_free(leaf);
    free_secret(cert, cert_len);
    free_secret(key, key_len);
    ERR_clear_error();
    return g;

internal:
    cg_set_err(err, errlen, "TLS context setup failed (%s)",
               ERR_reason_error_string(ERR_peek_last_error()));
    goto fail;
nomem:
    cg_set_err(err, errlen, "TLS context setup: out of memory");
fail:
    BIO_free(mem);
    X509_free(leaf);
    free_secret(cert, cert_len);
    free_secret(key, key_len);
    gen_unref(g);
    ERR_clear_error();
    return NULL;
}

/* ---- the context ---- */

cg_tls_ctx *cg_tls_ctx_new(const cg_tls_conf *conf, char *err, size_t errlen)
{
    cg_tls_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        cg_set_err(err, errlen, "TLS context setup: out of memory");
        return NULL;
    }
    if (RAND_bytes(ctx->ticket_keys, TICKET_KEYS_LEN) != 1) {
        cg_set_err(err, errlen, "TLS context setup: no random bytes for session tickets");
        goto fail;
    }
    ctx->cur = gen_new(conf, ctx->ticket_keys, err, errlen);
    if (!ctx->cur)
        goto fail;
    return ctx;
fail:
    OPENSSL_cleanse(ctx->ticket_keys, TICKET_KEYS_LEN);
    free(ctx);
    ERR_clear_error();
    return NULL;
}

int cg_tls_ctx_reload(cg_tls_ctx *ctx, const cg_tls_conf *conf, char *err, size_t errlen)
{
    tls_gen *g = gen_new(conf, ctx->ticket_keys, err, errlen);
    if (!g)
        return -1;
    gen_unref(ctx->cur);
    ctx->cur = g;
    return 0;
}

int cg_tls_ctx_set_ticket_keys(cg_tls_ctx *ctx, const unsigned char *key, size_t len)
{
    static const char info[] = "casgi session ticket keys";
    unsigned char keys[TICKET_KEYS_LEN];
    EVP_KDF *kdf;
    EVP_KDF_CTX *kctx = NULL;
    OSSL_PARAM params[4];
    int ok = 0;

    if (!key || len < 16)
        return -1;
    kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    if (kdf)
        kctx = EVP_KDF_CTX_new(kdf);
    EVP_KDF_free(kdf);
    if (!kctx)
        goto out;
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)key, len);
    params[2] =
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, sizeof(info) - 1);
    params[3] = OSSL_PARAM_construct_end();
    if (EVP_KDF_derive(kctx, keys, sizeof(keys), params) != 1)
        goto out;
    if (!apply_ticket_keys(ctx->cur->ssl_ctx, keys))
        goto out;
    memcpy(ctx->ticket_keys, keys, sizeof(keys));
    ok = 1;
out:
    OPENSSL_cleanse(keys, sizeof(keys));
    EVP_KDF_CTX_free(kctx);
    ERR_clear_error();
    return ok ? 0 : -1;
}

void cg_tls_ctx_free(cg_tls_ctx *ctx)
{
    if (!ctx)
        return;
    gen_unref(ctx->cur);
    OPENSSL_cleanse(ctx->ticket_keys, TICKET_KEYS_LEN);
    free(ctx);
}

const char *cg_tls_ctx_cert_pem(const cg_tls_ctx *ctx, size_t *len)
{
    *len = ctx->cur->cert_pem_len;
    return ctx->cur->cert_pem;
}

/* ---- connections ---- */

cg_tls *cg_tls_new(cg_tls_ctx *ctx)
{
    cg_tls *t = calloc(1, sizeof(*t));
    BIO *b;
    if (!t)
        return NULL;
    cg_buf_init(&t->in);
    t->io.in = &t->in;
    t->io.first = -1;
    t->why = "";
    t->ssl = SSL_new(ctx->cur->ssl_ctx);
    if (!t->ssl)
        goto fail;
    b = bio_new(&t->io);
    if (!b)
        goto fail;
    SSL_set_bio(t->ssl, b, b); /* one reference, owned by the SSL */
    SSL_set_accept_state(t->ssl);
    t->gen = ctx->cur;
    t->gen->refs++;
    return t;
fail:
    SSL_free(t->ssl);
    free(t);
    ERR_clear_error();
    return NULL;
}

void cg_tls_free(cg_tls *t)
{
    if (!t)
        return;
    SSL_free(t->ssl);
    gen_unref(t->gen);
    cg_buf_free(&t->in);
    free(t);
    ERR_clear_error();
}

cg_buf *cg_tls_input(cg_tls *t)
{
    return &t->in;
}

int cg_tls_feed(cg_tls *t, const char *cipher, size_t n)
{
    return cg_buf_append(&t->in, cipher, n);
}

/* Records why the connection failed, from OpenSSL's error queue; returns
 * CG_TLS_FATAL. */
static int fail(cg_tls *t, int sslerr)
{
    unsigned long e = ERR_peek_error();
    int reason = ERR_GET_REASON(e);
    int cause = CG_TLS_E_PROTOCOL;

    if (e)
        t->why = ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "";
    if (t->io.oom) {
        cause = CG_TLS_E_NOMEM;
    } else if (!t->done && t->io.first >= 0 && t->io.first != 0x16) {
        /* A TLS connection starts with a handshake record (content type 22);
         * 0x80 is an SSL 2.0-style ClientHello. Anything else is not TLS. */
        cause = t->io.first == 0x80 ? CG_TLS_E_VERSION : CG_TLS_E_NOT_TLS;
    } else if (sslerr == SSL_ERROR_SSL && ERR_GET_LIB(e) == ERR_LIB_SSL) {
        if (reason >= SSL_AD_REASON_OFFSET)
            cause = CG_TLS_E_ALERT;
        else
            switch (reason) {
            case SSL_R_UNSUPPORTED_PROTOCOL:
            case SSL_R_VERSION_TOO_LOW:
            case SSL_R_NO_PROTOCOLS_AVAILABLE:
            case SSL_R_WRONG_SSL_VERSION:
                cause = CG_TLS_E_VERSION;
                break;
            case SSL_R_NO_SHARED_CIPHER:
            case SSL_R_NO_SHARED_SIGNATURE_ALGORITHMS:
            case SSL_R_NO_SUITABLE_KEY_SHARE:
            case SSL_R_NO_SHARED_GROUPS:
                cause = CG_TLS_E_HANDSHAKE;
                break;
            case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
                cause = CG_TLS_E_CERT_REQUIRED;
                break;
            case SSL_R_CERTIFICATE_VERIFY_FAILED:
                cause = CG_TLS_E_BAD_CERT;
                break;
            case SSL_R_HTTP_REQUEST:
            case SSL_R_HTTPS_PROXY_REQUEST:
                cause = CG_TLS_E_NOT_TLS;
                break;
            default:
                break;
            }
    }
    t->cause = cause;
    ERR_clear_error();
    return CG_TLS_FATAL;
}

/* The error queue and the data path. SSL_get_error reads the queue first,
 * so an entry another user of OpenSSL in this thread left (Python's ssl, an
 * app's crypto library) would turn "wants more input" into a fatal error:
 * cg_tls_read, whose control flow depends on SSL_get_error, makes sure the
 * queue is empty before it calls OpenSSL. ERR_peek_error only looks (about
 * 200 instructions in OpenSSL 3.0: it fetches the thread's error state);
 * ERR_clear_error also wipes all 16 slots (about 800), so it runs only when
 * something is there. A successful call, or one that waits for input, adds
 * nothing to the queue, so there is nothing to clear after it; every failure
 * clears the queue (fail). The handshake, once per connection, is checked
 * before and after all the same. */
static inline void clear_stale_errors(void)
{
    if (ERR_peek_error())
        ERR_clear_error();
}

static int fail_state(cg_tls *t)
{
    if (!t->cause)
        t->cause = CG_TLS_E_STATE;
    ERR_clear_error();
    return CG_TLS_FATAL;
}

/* What a record adds to the plaintext it carries, for the cipher the
 * handshake chose: 5 bytes of header, then for TLS 1.3 the content type
 * byte and a 16-byte tag (all three suites offered), for TLS 1.2's AES-GCM
 * an 8-byte explicit nonce and the tag, for its ChaCha20-Poly1305 the tag.
 * Other suites (CBC, CCM) stay unknown (0). A client's max_fragment_length
 * makes the records smaller. cg_tls_write_into checks the sum all the same:
 * anything else OpenSSL writes (a KeyUpdate) makes the total differ. */
static void record_sizes(cg_tls *t)
{
    const SSL_CIPHER *c = SSL_get_current_cipher(t->ssl);
    const SSL_SESSION *sess = SSL_get_session(t->ssl);
    unsigned mfl = sess ? SSL_SESSION_get_max_fragment_length(sess) : 0;
    t->rec_extra = 0;
    t->rec_max = mfl >= TLSEXT_max_fragment_length_512 && mfl <= TLSEXT_max_fragment_length_4096
                     ? (size_t)512 << (mfl - TLSEXT_max_fragment_length_512)
                     : RECORD_PLAIN_MAX;
    if (!c)
        return;
    if (SSL_version(t->ssl) == TLS1_3_VERSION) {
        switch (SSL_CIPHER_get_protocol_id(c)) {
        case 0x1301: /* TLS_AES_128_GCM_SHA256 */
        case 0x1302: /* TLS_AES_256_GCM_SHA384 */
        case 0x1303: /* TLS_CHACHA20_POLY1305_SHA256 */
            t->rec_extra = 5 + 1 + 16;
            break;
        default:
            break;
        }
    } else if (SSL_version(t->ssl) == TLS1_2_VERSION) {
        switch (SSL_CIPHER_get_cipher_nid(c)) {
        case NID_aes_128_gcm:
        case NID_aes_256_gcm:
            t->rec_extra = 5 + 8 + 16;
            break;
        case NID_chacha20_poly1305:
            t->rec_extra = 5 + 16;
            break;
        default:
            break;
        }
    }
}

int cg_tls_read(cg_tls *t, cg_buf *plain, cg_buf *cipher_out)
{
    int flags = CG_TLS_AGAIN, handshake = !t->done, filled = 0;
    if (t->cause)
        return CG_TLS_FATAL;
    t->io.out = cipher_out;
    clear_stale_errors();
    if (handshake) {
        int r = SSL_do_handshake(t->ssl);
        if (r != 1) {
            int e = SSL_get_error(t->ssl, r);
            if (e == SSL_ERROR_WANT_READ)
                goto out;
            t->io.out = NULL;
            return fail(t, e);
        }
        t->done = 1;
        record_sizes(t);
        flags |= CG_TLS_HANDSHAKE;
    }
    /* One SSL_read_ex per record (no read-ahead: OpenSSL reads a record's
     * header, then exactly its body, from the input). Plaintext is never
     * longer than the ciphertext it came from, so room for the unread input
     * holds the next record's plaintext, and nothing is reserved when there
     * is nothing to read (an idle connection's buffer stays empty). Only a
     * record that began in an earlier call can have more plaintext than the
     * input left: then the read fills the room, OpenSSL keeps the rest
     * (SSL_has_pending), and the next round makes room for a whole record. */
    while (cg_buf_unread(&t->in) > 0 || (filled && SSL_has_pending(t->ssl))) {
        size_t want = cg_buf_unread(&t->in) + 64, room, got = 0;
        if (filled || want > RECORD_PLAIN_MAX)
            want = RECORD_PLAIN_MAX;
        if (plain->cap - plain->len < want && cg_buf_reserve(plain, want) < 0) {
            t->io.oom = 1;
            t->io.out = NULL;
            return fail(t, SSL_ERROR_SYSCALL);
        }
        room = plain->cap - plain->len;
        if (SSL_read_ex(t->ssl, plain->data + plain->len, room, &got)) {
            plain->len += got;
            filled = got == room;
            continue;
        }
        int e = SSL_get_error(t->ssl, 0);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_ZERO_RETURN) {
            flags |= CG_TLS_CLOSED;
            break;
        }
        t->io.out = NULL;
        return fail(t, e);
    }
out:
    t->io.out = NULL;
    if (handshake)
        clear_stale_errors();
    return flags;
}

size_t cg_tls_write_size(const cg_tls *t, size_t n)
{
    if (!t->rec_extra || n == 0)
        return 0;
    return n + (n + t->rec_max - 1) / t->rec_max * t->rec_extra;
}

/* Encrypts n bytes. The records go to dst while they fit there; when they
 * fill it exactly the result is 1, else they are all appended to cipher_out
 * (0). dst NULL: cipher_out. */
static int tls_write(cg_tls *t, const char *plain, size_t n, char *dst, size_t cap,
                     cg_buf *cipher_out)
{
    size_t written = 0;
    int ok;
    if (t->cause || !t->done)
        return fail_state(t);
    if (n == 0)
        return dst && cap == 0;
    /* One reservation for the whole write: the records are appended without
     * the buffer growing record by record. */
    if (!dst && cg_buf_reserve(cipher_out, n + (n / RECORD_PLAIN_MAX + 1) * RECORD_OVERHEAD) < 0) {
        t->cause = CG_TLS_E_NOMEM;
        return CG_TLS_FATAL;
    }
    /* No look at the error queue first: the BIO never asks to retry, so a
     * write that fails is fatal whatever SSL_get_error says (a stale entry
     * could only misname the cause of a connection that is over anyway). */
    t->io.out = cipher_out;
    t->io.dst = dst;
    t->io.dst_cap = cap;
    t->io.dst_len = 0;
    ok = SSL_write_ex(t->ssl, plain, n, &written);
    /* Fewer bytes than dst has room for go to cipher_out as well. */
    if (ok && t->io.dst && t->io.dst_len != cap && bio_dst_to_out(&t->io) < 0) {
        t->io.oom = 1;
        ok = 0;
    }
    dst = t->io.dst;
    t->io.dst = NULL;
    t->io.out = NULL;
    if (!ok)
        return fail(t, SSL_get_error(t->ssl, ok));
    return dst != NULL;
}

int cg_tls_write(cg_tls *t, const char *plain, size_t n, cg_buf *cipher_out)
{
    return tls_write(t, plain, n, NULL, 0, cipher_out) < 0 ? CG_TLS_FATAL : 0;
}

int cg_tls_write_into(cg_tls *t, const char *plain, size_t n, char *dst, size_t cap,
                      cg_buf *cipher_out)
{
    return tls_write(t, plain, n, dst, cap, cipher_out);
}

int cg_tls_close_notify(cg_tls *t, cg_buf *cipher_out)
{
    int r;
    if (t->cause)
        return CG_TLS_FATAL;
    if (!t->done)
        return 0; /* nothing to close politely: the handshake never finished */
    t->io.out = cipher_out;
    ERR_clear_error();
    r = SSL_shutdown(t->ssl);
    t->io.out = NULL;
    if (r < 0)
        return fail(t, SSL_get_error(t->ssl, r));
    ERR_clear_error();
    return 0;
}

int cg_tls_handshake_done(const cg_tls *t)
{
    return t->done;
}

int cg_tls_shrink(cg_tls *t)
{
    int freed;
    if (cg_buf_unread(&t->in) > 0)
        return 0;
    cg_buf_shrink(&t->in, 0);
    freed = SSL_free_buffers(t->ssl);
    ERR_clear_error();
    return freed;
}

int cg_tls_cause(const cg_tls *t)
{
    return t->cause;
}

const char *cg_tls_error_detail(const cg_tls *t)
{
    return t->why;
}

const char *cg_tls_alpn(const cg_tls *t, size_t *len)
{
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(t->ssl, &p, &n);
    *len = n;
    return n ? (const char *)p : NULL;
}

unsigned cg_tls_version(const cg_tls *t)
{
    return (unsigned)SSL_version(t->ssl);
}

unsigned cg_tls_cipher_suite(const cg_tls *t)
{
    const SSL_CIPHER *c = SSL_get_current_cipher(t->ssl);
    return c ? SSL_CIPHER_get_protocol_id(c) : 0;
}

const char *cg_tls_server_cert_pem(const cg_tls *t, size_t *len)
{
    *len = t->gen->cert_pem_len;
    return t->gen->cert_pem;
}

size_t cg_tls_client_cert_count(const cg_tls *t)
{
    STACK_OF(X509) * chain;
    if (!SSL_get0_peer_certificate(t->ssl))
        return 0;
    /* On the server side the peer chain excludes the leaf. */
    chain = SSL_get_peer_cert_chain(t->ssl);
    return 1 + (chain ? (size_t)sk_X509_num(chain) : 0);
}

int cg_tls_client_cert_pem(const cg_tls *t, size_t i, cg_buf *out)
{
    X509 *x;
    if (i >= cg_tls_client_cert_count(t))
        return -1;
    x = i == 0 ? SSL_get0_peer_certificate(t->ssl)
               : sk_X509_value(SSL_get_peer_cert_chain(t->ssl), (int)(i - 1));
    return append_via_bio(out, write_pem, x);
}

static int write_name(BIO *b, const void *name)
{
    /* RFC 2253 (the same string form as RFC 4514), with UTF-8 kept as is
     * rather than escaped byte by byte. Returns the length; an empty subject
     * is a valid (empty) name. */
    int n =
        X509_NAME_print_ex(b, (const X509_NAME *)name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
    return n >= 0 ? 1 : 0;
}

int cg_tls_client_cert_name(const cg_tls *t, cg_buf *out)
{
    X509 *x = SSL_get0_peer_certificate(t->ssl);
    if (!x)
        return 0;
    return append_via_bio(out, write_name, X509_get_subject_name(x)) < 0 ? -1 : 1;
}

const char *cg_tls_client_cert_error(const cg_tls *t)
{
    long r;
    if (t->gen->cert_reqs == 0 || !SSL_get0_peer_certificate(t->ssl))
        return NULL;
    r = SSL_get_verify_result(t->ssl);
    return r == X509_V_OK ? NULL : X509_verify_cert_error_string(r);
}

#else /* !CG_HAVE_TLS: the same API, always failing to create a context. */

cg_tls_ctx *cg_tls_ctx_new(const cg_tls_conf *conf, char *err, size_t errlen)
{
    (void)conf;
    cg_set_err(err, errlen,
               "TLS is not available: casgi was built without OpenSSL (install libssl-dev and "
               "reinstall)");
    return NULL;
}

int cg_tls_ctx_reload(cg_tls_ctx *ctx, const cg_tls_conf *conf, char *err, size_t errlen)
{
    (void)ctx;
    return cg_tls_ctx_new(conf, err, errlen) ? 0 : -1;
}

int cg_tls_ctx_set_ticket_keys(cg_tls_ctx *ctx, const unsigned char *key, size_t len)
{
    (void)ctx;
    (void)key;
    (void)len;
    return -1;
}

void cg_tls_ctx_free(cg_tls_ctx *ctx)
{
    (void)ctx;
}

const char *cg_tls_ctx_cert_pem(const cg_tls_ctx *ctx, size_t *len)
{
    (void)ctx;
    *len = 0;
    return NULL;
}

cg_tls *cg_tls_new(cg_tls_ctx *ctx)
{
    (void)ctx;
    return NULL;
}

void cg_tls_free(cg_tls *t)
{
    (void)t;
}

cg_buf *cg_tls_input(cg_tls *t)
{
    (void)t;
    return NULL;
}

int cg_tls_feed(cg_tls *t, const char *cipher, size_t n)
{
    (void)t;
    (void)cipher;
    (void)n;
    return -1;
}

int cg_tls_read(cg_tls *t, cg_buf *plain, cg_buf *cipher_out)
{
    (void)t;
    (void)plain;
    (void)cipher_out;
    return CG_TLS_FATAL;
}

int cg_tls_write(cg_tls *t, const char *plain, size_t n, cg_buf *cipher_out)
{
    (void)t;
    (void)plain;
    (void)n;
    (void)cipher_out;
    return CG_TLS_FATAL;
}

size_t cg_tls_write_size(const cg_tls *t, size_t n)
{
    (void)t;
    (void)n;
    return 0;
}

int cg_tls_write_into(cg_tls *t, const char *plain, size_t n, char *dst, size_t cap,
                      cg_buf *cipher_out)
{
    (void)t;
    (void)plain;
    (void)n;
    (void)dst;
    (void)cap;
    (void)cipher_out;
    return CG_TLS_FATAL;
}

int cg_tls_close_notify(cg_tls *t, cg_buf *cipher_out)
{
    (void)t;
    (void)cipher_out;
    return CG_TLS_FATAL;
}

int cg_tls_handshake_done(const cg_tls *t)
{
    (void)t;
    return 0;
}

int cg_tls_shrink(cg_tls *t)
{
    (void)t;
    return 0;
}

int cg_tls_cause(const cg_tls *t)
{
    (void)t;
    return CG_TLS_E_STATE;
}

const char *cg_tls_error_detail(const cg_tls *t)
{
    (void)t;
    return "";
}

const char *cg_tls_alpn(const cg_tls *t, size_t *len)
{
    (void)t;
    *len = 0;
    return NULL;
}

unsigned cg_tls_version(const cg_tls *t)
{
    (void)t;
    return 0;
}

unsigned cg_tls_cipher_suite(const cg_tls *t)
{
    (void)t;
    return 0;
}

const char *cg_tls_server_cert_pem(const cg_tls *t, size_t *len)
{
    (void)t;
    *len = 0;
    return NULL;
}

size_t cg_tls_client_cert_count(const cg_tls *t)
{
    (void)t;
    return 0;
}

int cg_tls_client_cert_pem(const cg_tls *t, size_t i, cg_buf *out)
{
    (void)t;
    (void)i;
    (void)out;
    return -1;
}

int cg_tls_client_cert_name(const cg_tls *t, cg_buf *out)
{
    (void)t;
    (void)out;
    return 0;
}

const char *cg_tls_client_cert_error(const cg_tls *t)
{
    (void)t;
    return NULL;
}

#endif
