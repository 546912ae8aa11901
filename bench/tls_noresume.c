/* LD_PRELOAD shim for wrk: every TLS connection starts with a full handshake.
 *
 * wrk keeps one SSL object per connection slot and, on reconnecting, calls
 * SSL_clear on it, which keeps the last session: its next handshake offers that
 * session (a TLS 1.3 ticket) and the server resumes it, skipping the
 * certificate signature. To measure full handshakes, this shim wraps
 * SSL_set_fd, which wrk calls before every SSL_connect of a handshake, and
 * drops the session the object still holds when the handshake has not begun
 * (SSL_in_before: a fresh or cleared object, i.e. a new connection).
 *
 *   cc -O2 -shared -fPIC -o tls_noresume.so bench/tls_noresume.c -ldl
 *   LD_PRELOAD=$PWD/tls_noresume.so wrk -H "Connection: close" https://...
 *
 * Nothing is linked against libssl: the real functions are found at run time,
 * so the shim is harmless in processes without OpenSSL (taskset before wrk).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;

int SSL_set_fd(SSL *ssl, int fd)
{
    static int (*real_set_fd)(SSL *, int);
    static int (*set_session)(SSL *, SSL_SESSION *);
    static int (*in_before)(const SSL *);
    if (real_set_fd == NULL) {
        real_set_fd = (int (*)(SSL *, int))dlsym(RTLD_NEXT, "SSL_set_fd");
        set_session = (int (*)(SSL *, SSL_SESSION *))dlsym(RTLD_NEXT, "SSL_set_session");
        in_before = (int (*)(const SSL *))dlsym(RTLD_NEXT, "SSL_in_before");
    }
    if (real_set_fd == NULL)
        return 0;
    if (set_session != NULL && in_before != NULL && in_before(ssl))
        set_session(ssl, NULL);
    return real_set_fd(ssl, fd);
}
