/* Access log formats: see alog.h. The semantics of each atom are gunicorn's
 * (gunicorn/glogging.py, Logger.atoms and SafeAtoms), so a gunicorn format
 * gives the line gunicorn gives for the same request, with one difference
 * kept from casgi's default line: bytes outside printable ASCII are written
 * as \xNN, so request data cannot forge log lines. */
#include "alog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ascii.h"
#include "hdrtab.h"

#define CG_ALOG_NONE 0xff /* slot: no slot */

static const char *const kind_keys[CG_ALOG_KINDS] = {
    [CG_ALOG_HOST] = "h",    [CG_ALOG_USER] = "u",      [CG_ALOG_DATE] = "t",
    [CG_ALOG_REQLINE] = "r", [CG_ALOG_METHOD] = "m",    [CG_ALOG_PATH] = "U",
    [CG_ALOG_QUERY] = "q",   [CG_ALOG_PROTO] = "H",     [CG_ALOG_STATUS] = "s",
    [CG_ALOG_BYTES] = "B",   [CG_ALOG_BYTES_CLF] = "b", [CG_ALOG_REFERER] = "f",
    [CG_ALOG_AGENT] = "a",   [CG_ALOG_SECS] = "T",      [CG_ALOG_MSECS] = "M",
    [CG_ALOG_USECS] = "D",   [CG_ALOG_DECIMAL] = "L",   [CG_ALOG_PID] = "p",
};

const char *cg_alog_kind_key(int kind)
{
    return kind >= 0 && kind < CG_ALOG_KINDS ? kind_keys[kind] : NULL;
}

static int is_number(int kind)
{
    return kind == CG_ALOG_BYTES || kind == CG_ALOG_SECS || kind == CG_ALOG_MSECS ||
           kind == CG_ALOG_USECS;
}

static int is_duration(int kind)
{
    return kind == CG_ALOG_SECS || kind == CG_ALOG_MSECS || kind == CG_ALOG_USECS ||
           kind == CG_ALOG_DECIMAL;
}

/* ---- escaping ---------------------------------------------------------- */

static const char hexd[] = "0123456789abcdef";

/* Request data in a line: printable ASCII as is but '"', written '\"' (as
 * gunicorn's SafeAtoms does), anything else as \xNN. */
static int put_escaped(cg_buf *out, const char *s, size_t n)
{
    if (n == 0)
        return 0; /* out may have no buffer yet */
    size_t need = n;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"')
            need += 1;
        else if (c < 0x20 || c > 0x7e)
            need += 3;
    }
    if (out->cap - out->len < need && cg_buf_reserve(out, need) < 0)
        return -1;
    char *p = out->data + out->len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"') {
            *p++ = '\\';
            *p++ = '"';
        } else if (c < 0x20 || c > 0x7e) {
            *p++ = '\\';
            *p++ = 'x';
            *p++ = hexd[c >> 4];
            *p++ = hexd[c & 15];
        } else {
            *p++ = (char)c;
        }
    }
    out->len += need;
    return 0;
}

static int put(cg_buf *out, const char *s, size_t n)
{
    return cg_buf_append(out, s, n);
}

static int put_str(cg_buf *out, const char *s)
{
    return cg_buf_append(out, s, strlen(s));
}

static int put_dash(cg_buf *out)
{
    return cg_buf_append(out, "-", 1);
}

static int put_num(cg_buf *out, long long v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%lld", v);
    return put(out, tmp, (size_t)n);
}

/* The length of the UTF-8 sequence at p (its code point in *cp), or 0 when
 * it is not a valid one (overlong, surrogate, beyond U+10FFFF, cut short). */
static size_t utf8_seq(const unsigned char *p, size_t n, uint32_t *cp)
{
    uint32_t c = p[0], min;
    size_t len;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        c &= 0x1f;
        min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        c &= 0x0f;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        c &= 0x07;
        min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (p[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

static int utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    uint32_t cp;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(p + i, n - i, &cp);
        if (!k)
            return 0;
        i += k;
    }
    return 1;
}

static char *put_u(char *p, uint32_t u)
{
    *p++ = '\\';
    *p++ = 'u';
    *p++ = hexd[(u >> 12) & 15];
    *p++ = hexd[(u >> 8) & 15];
    *p++ = hexd[(u >> 4) & 15];
    *p++ = hexd[u & 15];
    return p;
}

/* A JSON string: quotes, backslashes and control characters escaped, every
 * character beyond ASCII as \uXXXX (a surrogate pair above U+FFFF), bytes
 * that are not UTF-8 as U+FFFD. The output is ASCII. */
static int put_json_str(cg_buf *out, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    /* At most 12 bytes out per byte in (a 4-byte sequence becomes two \u). */
    if (n > ((size_t)-1 - 2) / 12 ||
        (out->cap - out->len < n * 12 + 2 && cg_buf_reserve(out, n * 12 + 2) < 0))
        return -1;
    char *p = out->data + out->len;
    *p++ = '"';
    for (size_t i = 0; i < n;) {
        unsigned char c = u[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            *p++ = (char)c;
            i++;
            continue;
        }
        if (c < 0x80) {
            *p++ = '\\';
            switch (c) {
            case '"':
                *p++ = '"';
                break;
            case '\\':
                *p++ = '\\';
                break;
            case '\n':
                *p++ = 'n';
                break;
            case '\r':
                *p++ = 'r';
                break;
            case '\t':
                *p++ = 't';
                break;
            default:
                p = put_u(p - 1, c);
            }
            i++;
            continue;
        }
        uint32_t cp;
        size_t k = utf8_seq(u + i, n - i, &cp);
        if (!k) {
            p = put_u(p, 0xfffd);
            i++;
        } else if (cp > 0xffff) {
            cp -= 0x10000;
            p = put_u(p, 0xd800 | (cp >> 10));
            p = put_u(p, 0xdc00 | (cp & 0x3ff));
            i += k;
        } else {
            p = put_u(p, cp);
            i += k;
        }
    }
    *p++ = '"';
    out->len = (size_t)(p - out->data);
    return 0;
}

/* ---- the request's values ---------------------------------------------- */

void cg_alog_vals_init(cg_alog_vals *v, double start)
{
    v->start = start;
    cg_buf_init(&v->buf);
    v->present = 0;
}

void cg_alog_vals_free(cg_alog_vals *v)
{
    cg_buf_free(&v->buf);
    v->present = 0;
}

int cg_alog_reads_headers(const cg_alog *p, int resp)
{
    for (size_t i = 0; i < p->nslots; i++)
        if (p->slots[i].resp == (resp != 0))
            return 1;
    return 0;
}

int cg_alog_capture(const cg_alog *p, cg_alog_vals *v, int resp, const char *name, size_t name_len,
                    const char *value, size_t value_len)
{
    for (size_t i = 0; i < p->nslots; i++) {
        const cg_alog_slot *s = &p->slots[i];
        if (s->resp != (resp != 0) || s->len != name_len || !cg_ascii_ieq(name, name_len, s->name))
            continue;
        if (value_len > UINT32_MAX || v->buf.len > UINT32_MAX - value_len)
            return -1;
        v->off[i] = (uint32_t)v->buf.len;
        v->len[i] = (uint32_t)value_len;
        if (cg_buf_append(&v->buf, value, value_len) < 0)
            return -1;
        v->present |= 1u << i;
        return 0;
    }
    return 0;
}

/* The captured value of slot i, or 0 when absent. */
static int slot_value(const cg_alog_entry *e, int i, cg_slice *out)
{
    const cg_alog_vals *v = e->vals;
    if (i < 0 || !v || !(v->present & (1u << i)))
        return 0;
    /* Only empty values captured: no buffer was allocated. */
    out->base = v->buf.data ? v->buf.data + v->off[i] : "";
    out->len = v->len[i];
    return 1;
}

/* ---- atoms ------------------------------------------------------------- */

/* The client's address without ":port". */
static cg_slice client_host(cg_slice client)
{
    for (size_t i = client.len; i > 0; i--)
        if (client.base[i - 1] == ':')
            return (cg_slice){client.base, i - 1};
    return client;
}

/* U: the path percent-decoded (an invalid escape stays as it is), escaped. */
static int put_decoded_path(cg_buf *out, cg_slice path)
{
    char tmp[256];
    size_t n = 0;
    for (size_t i = 0; i < path.len; i++) {
        unsigned char c = (unsigned char)path.base[i];
        int hi, lo;
        if (c == '%' && i + 2 < path.len &&
            (hi = cg_hexval((unsigned char)path.base[i + 1])) >= 0 &&
            (lo = cg_hexval((unsigned char)path.base[i + 2])) >= 0) {
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        }
        tmp[n++] = (char)c;
        if (n == sizeof(tmp)) {
            if (put_escaped(out, tmp, n) < 0)
                return -1;
            n = 0;
        }
    }
    return put_escaped(out, tmp, n);
}

static signed char b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return (signed char)(c - 'A');
    if (c >= 'a' && c <= 'z')
        return (signed char)(c - 'a' + 26);
    if (c >= '0' && c <= '9')
        return (signed char)(c - '0' + 52);
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* u: the user name of "Basic <base64 user:password>", decoded as Python's
 * base64.b64decode does without validation (other characters are skipped;
 * a complete pad ends the data; a quad left incomplete is an error), then
 * the part before the first ':' if it is UTF-8. 0 when there is none. */
static int basic_user(cg_slice auth, char *buf, size_t cap, size_t *len)
{
    size_t i = 0, n = 0, quad = 0, pads = 0;
    unsigned left = 0;
    if (auth.len < 5 || !cg_ascii_ieq(auth.base, 5, "basic"))
        return 0;
    while (i < auth.len && auth.base[i] != ' ')
        i++;
    if (i == auth.len)
        return 0;
    for (i++; i < auth.len; i++) {
        unsigned char c = (unsigned char)auth.base[i];
        if (c == '=') {
            if (quad >= 2 && quad + ++pads >= 4)
                goto done;
            continue;
        }
        signed char v = b64val(c);
        if (v < 0)
            continue;
        pads = 0;
        unsigned out;
        switch (quad) {
        case 0:
            left = (unsigned)v;
            quad = 1;
            continue;
        case 1:
            out = (left << 2) | ((unsigned)v >> 4);
            left = (unsigned)v & 0xf;
            quad = 2;
            break;
        case 2:
            out = (left << 4) | ((unsigned)v >> 2);
            left = (unsigned)v & 3;
            quad = 3;
            break;
        default:
            out = (left << 6) | (unsigned)v;
            quad = 0;
            break;
        }
        if (n < cap)
            buf[n] = (char)out;
        n++;
    }
    if (quad != 0)
        return 0;
done:;
    size_t stored = n < cap ? n : cap;
    for (i = 0; i < stored && buf[i] != ':'; i++)
        ;
    if ((i == stored && n > cap) || i == 0 || !utf8_valid(buf, i))
        return 0; /* none, or longer than the buffer */
    *len = i;
    return 1;
}

static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* [10/Oct/2000:13:55:36 +0000] in local time, made once a second. */
static int put_date(cg_alog *p, long long now, cg_buf *out)
{
    if (p->date_sec != now) {
        time_t t = (time_t)now;
        struct tm tm;
        char zone[16];
        if (!localtime_r(&t, &tm) || !strftime(zone, sizeof(zone), "%z", &tm))
            return put_dash(out);
        int n = snprintf(p->date, sizeof(p->date), "[%02d/%s/%04d:%02d:%02d:%02d %s]", tm.tm_mday,
                         months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                         tm.tm_sec, zone);
        if (n < 0 || (size_t)n >= sizeof(p->date))
            return put_dash(out);
        p->date_len = (size_t)n;
        p->date_sec = now;
    }
    return put(out, p->date, p->date_len);
}

/* 2000-10-10T13:55:36+00:00 (ISO 8601, local time), made once a second. */
static int put_iso(cg_alog *p, long long now, cg_buf *out)
{
    if (p->iso_sec != now) {
        time_t t = (time_t)now;
        struct tm tm;
        char zone[16];
        if (!localtime_r(&t, &tm) || strftime(zone, sizeof(zone), "%z", &tm) != 5)
            return put_str(out, "null");
        int n = snprintf(p->iso, sizeof(p->iso), "\"%04d-%02d-%02dT%02d:%02d:%02d%.3s:%.2s\"",
                         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                         tm.tm_sec, zone, zone + 3);
        if (n < 0 || (size_t)n >= sizeof(p->iso))
            return put_str(out, "null");
        p->iso_len = (size_t)n;
        p->iso_sec = now;
    }
    return put(out, p->iso, p->iso_len);
}

static const char *proto_text(int version)
{
    return version == 2 ? "HTTP/2" : version == 0 ? "HTTP/1.0" : "HTTP/1.1";
}

/* Whole seconds and the microseconds after them, as gunicorn splits a
 * request's time. */
static void split_duration(double d, long long *secs, long long *usecs)
{
    if (!(d > 0)) /* negative or NaN */
        d = 0;
    if (d > 1e12)
        d = 1e12;
    *secs = (long long)d;
    *usecs = (long long)((d - (double)*secs) * 1e6);
    if (*usecs > 999999)
        *usecs = 999999;
}

long long cg_alog_number(int kind, const cg_alog_entry *e)
{
    long long s, us;
    switch (kind) {
    case CG_ALOG_BYTES:
    case CG_ALOG_BYTES_CLF:
        return (long long)e->bytes;
    case CG_ALOG_SECS:
        split_duration(e->duration, &s, &us);
        return s;
    case CG_ALOG_MSECS:
        split_duration(e->duration, &s, &us);
        return s * 1000 + us / 1000;
    case CG_ALOG_USECS:
        split_duration(e->duration, &s, &us);
        return s * 1000000 + us;
    default:
        return 0;
    }
}

static int put_header(const cg_alog_entry *e, int slot, cg_buf *out)
{
    cg_slice v;
    if (!slot_value(e, slot, &v))
        return put_dash(out);
    return put_escaped(out, v.base, v.len);
}

int cg_alog_render(cg_alog *p, const cg_alog_op *op, const cg_alog_entry *e, cg_buf *out)
{
    cg_slice s;
    long long secs, usecs;
    char tmp[64], user[256];
    size_t n;

    switch (op->kind) {
    case CG_ALOG_LIT:
        return put(out, p->text + op->off, op->len);
    case CG_ALOG_HOST:
        s = client_host(e->client);
        return s.len ? put_escaped(out, s.base, s.len) : put_dash(out);
    case CG_ALOG_USER:
        if (slot_value(e, p->auth, &s) && basic_user(s, user, sizeof(user), &n))
            return put_escaped(out, user, n);
        return put_dash(out);
    case CG_ALOG_DATE:
        return put_date(p, e->now, out);
    case CG_ALOG_REQLINE:
        if (put_escaped(out, e->method.base, e->method.len) < 0 || put(out, " ", 1) < 0 ||
            put_escaped(out, e->path.base, e->path.len) < 0 ||
            ((e->query.len || e->qmark) &&
             (put(out, "?", 1) < 0 || put_escaped(out, e->query.base, e->query.len) < 0)) ||
            put(out, " ", 1) < 0)
            return -1;
        return put_str(out, proto_text(e->version));
    case CG_ALOG_METHOD:
        return put_escaped(out, e->method.base, e->method.len);
    case CG_ALOG_PATH:
        return put_decoded_path(out, e->path);
    case CG_ALOG_QUERY:
        return put_escaped(out, e->query.base, e->query.len);
    case CG_ALOG_PROTO:
        return put_str(out, proto_text(e->version));
    case CG_ALOG_STATUS:
        return put_num(out, e->status);
    case CG_ALOG_BYTES:
    case CG_ALOG_BYTES_CLF:
    case CG_ALOG_SECS:
    case CG_ALOG_MSECS:
    case CG_ALOG_USECS:
        return put_num(out, cg_alog_number(op->kind, e));
    case CG_ALOG_DECIMAL:
        split_duration(e->duration, &secs, &usecs);
        n = (size_t)snprintf(tmp, sizeof(tmp), "%lld.%06lld", secs, usecs);
        return put(out, tmp, n);
    case CG_ALOG_PID:
        n = (size_t)snprintf(tmp, sizeof(tmp), "<%ld>", p->pid);
        return put(out, tmp, n);
    case CG_ALOG_REFERER:
        return put_header(e, p->referer, out);
    case CG_ALOG_AGENT:
        return put_header(e, p->agent, out);
    case CG_ALOG_REQ_HDR:
    case CG_ALOG_RESP_HDR:
        return put_header(e, op->slot == CG_ALOG_NONE ? -1 : op->slot, out);
    default:
        return put_dash(out);
    }
}

/* ---- the JSON line ------------------------------------------------------ */

static int json_header(const cg_alog_entry *e, int slot, cg_buf *out)
{
    cg_slice v;
    if (!slot_value(e, slot, &v))
        return put_str(out, "null");
    return put_json_str(out, v.base, v.len);
}

static int format_json(cg_alog *p, const cg_alog_entry *e, cg_buf *out)
{
    cg_slice host = client_host(e->client), auth;
    const char *port = host.len < e->client.len ? e->client.base + host.len + 1 : NULL;
    size_t port_len = port ? e->client.len - host.len - 1 : 0;
    long long secs, usecs;
    char tmp[64], user[256];
    size_t n;

    if (put_str(out, "{\"time\":") < 0 || put_iso(p, e->now, out) < 0 ||
        put_str(out, ",\"client\":") < 0 ||
        (host.len ? put_json_str(out, host.base, host.len) : put_str(out, "null")) < 0 ||
        put_str(out, ",\"port\":") < 0)
        return -1;
    /* The port is digits (the server formats it); anything else is null. */
    int digits = port_len > 0 && port_len < 6;
    for (size_t i = 0; digits && i < port_len; i++)
        digits = port[i] >= '0' && port[i] <= '9';
    if ((digits ? put(out, port, port_len) : put_str(out, "null")) < 0 ||
        put_str(out, ",\"method\":") < 0 || put_json_str(out, e->method.base, e->method.len) < 0 ||
        put_str(out, ",\"path\":") < 0 || put_json_str(out, e->path.base, e->path.len) < 0 ||
        put_str(out, ",\"query\":") < 0 || put_json_str(out, e->query.base, e->query.len) < 0 ||
        put_str(out, ",\"protocol\":\"") < 0 || put_str(out, proto_text(e->version)) < 0 ||
        put_str(out, "\",\"status\":") < 0 || put_num(out, e->status) < 0 ||
        put_str(out, ",\"bytes\":") < 0 || put_num(out, (long long)e->bytes) < 0)
        return -1;
    split_duration(e->duration, &secs, &usecs);
    n = (size_t)snprintf(tmp, sizeof(tmp), ",\"duration\":%lld.%06lld", secs, usecs);
    if (put(out, tmp, n) < 0 || put_str(out, ",\"referer\":") < 0 ||
        json_header(e, p->referer, out) < 0 || put_str(out, ",\"user_agent\":") < 0 ||
        json_header(e, p->agent, out) < 0 || put_str(out, ",\"user\":") < 0)
        return -1;
    if (slot_value(e, p->auth, &auth) && basic_user(auth, user, sizeof(user), &n)) {
        if (put_json_str(out, user, n) < 0)
            return -1;
    } else if (put_str(out, "null") < 0) {
        return -1;
    }
    n = (size_t)snprintf(tmp, sizeof(tmp), ",\"pid\":%ld}", p->pid);
    return put(out, tmp, n);
}

int cg_alog_format(cg_alog *p, const cg_alog_entry *e, cg_buf *out)
{
    size_t mark = out->len;
    int rc = 0;
    if (p->json) {
        rc = format_json(p, e, out);
    } else {
        for (size_t i = 0; i < p->nops && rc == 0; i++)
            rc = cg_alog_render(p, &p->ops[i], e, out);
    }
    if (rc < 0)
        out->len = mark;
    return rc;
}

/* ---- compiling ---------------------------------------------------------- */

static void init(cg_alog *p, long pid)
{
    memset(p, 0, sizeof(*p));
    p->referer = p->agent = p->auth = -1;
    p->pid = pid;
    p->date_sec = p->iso_sec = -1;
}

void cg_alog_free(cg_alog *p)
{
    free(p->ops);
    free(p->fmt);
    free(p->text);
    init(p, 0);
}

/* The slot of a header name (lowercased), added when new; -1 when full. */
static int slot_for(cg_alog *p, int resp, const char *name, size_t len)
{
    if (len >= sizeof(p->slots[0].name))
        return -2;
    for (size_t i = 0; i < p->nslots; i++)
        if (p->slots[i].resp == resp && p->slots[i].len == len &&
            !memcmp(p->slots[i].name, name, len))
            return (int)i;
    if (p->nslots == CG_ALOG_MAX_SLOTS)
        return -1;
    cg_alog_slot *s = &p->slots[p->nslots];
    cg_ascii_lower(s->name, name, len);
    s->len = (uint8_t)len;
    s->resp = (uint8_t)resp;
    return (int)p->nslots++;
}

int cg_alog_init_json(cg_alog *p, long pid)
{
    init(p, pid);
    p->json = 1;
    p->fmt = calloc(1, 1);
    if (!p->fmt)
        return -1;
    p->referer = slot_for(p, 0, "referer", 7);
    p->agent = slot_for(p, 0, "user-agent", 10);
    p->auth = slot_for(p, 0, "authorization", 13);
    p->needs_time = p->needs_date = 1;
    return 0;
}

static int add_op(cg_alog *p, size_t *cap, cg_alog_op op)
{
    if (p->nops == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        cg_alog_op *n = realloc(p->ops, ncap * sizeof(*n));
        if (!n)
            return -1;
        p->ops = n;
        *cap = ncap;
    }
    p->ops[p->nops++] = op;
    return 0;
}

/* Appends literal bytes as a LIT op (merged with a LIT op just before). */
static int add_lit(cg_alog *p, size_t *cap, cg_buf *text, const char *s, size_t n, int escape)
{
    size_t start = text->len;
    if (n == 0)
        return 0;
    if ((escape ? put_escaped(text, s, n) : put(text, s, n)) < 0)
        return -1;
    if (p->nops && p->ops[p->nops - 1].kind == CG_ALOG_LIT &&
        p->ops[p->nops - 1].off + p->ops[p->nops - 1].len == start &&
        p->ops[p->nops - 1].key_len == 0) {
        p->ops[p->nops - 1].len += (uint32_t)(text->len - start);
        return 0;
    }
    cg_alog_op op = {
        CG_ALOG_LIT, CG_ALOG_NONE, 0, 0, (uint32_t)start, (uint32_t)(text->len - start), 0, 0};
    return add_op(p, cap, op);
}

/* The environment variable `name` as written, else upper- or lowercased. */
static const char *env_lookup(const char *name, size_t len)
{
    char buf[256];
    const char *v;
    if (len >= sizeof(buf))
        return NULL;
    memcpy(buf, name, len);
    buf[len] = '\0';
    if ((v = getenv(buf)))
        return v;
    for (size_t i = 0; i < len; i++)
        if (buf[i] >= 'a' && buf[i] <= 'z')
            buf[i] = (char)(buf[i] - 'a' + 'A');
    if ((v = getenv(buf)))
        return v;
    cg_ascii_lower(buf, name, len);
    return getenv(buf);
}

static int fail(char *err, size_t errlen, const char *fmt, size_t at, const char *what)
{
    if (err && errlen)
        snprintf(err, errlen, "%s at offset %zu of the format '%s'", what, at, fmt);
    return -1;
}

int cg_alog_compile(cg_alog *p, const char *fmt, long pid, char *err, size_t errlen)
{
    size_t len = strlen(fmt), cap = 0, i = 0, run = 0;
    cg_buf text;
    char msg[200];

    init(p, pid);
    cg_buf_init(&text);
    if (len > CG_ALOG_MAX_FORMAT) {
        snprintf(err, errlen, "the format is longer than %d bytes", CG_ALOG_MAX_FORMAT);
        return -1;
    }
    p->fmt = malloc(len + 1);
    if (!p->fmt)
        goto nomem;
    memcpy(p->fmt, fmt, len + 1);
    p->fmt_len = len;

    while (i < len) {
        if (fmt[i] != '%') {
            i++;
            continue;
        }
        if (add_lit(p, &cap, &text, fmt + run, i - run, 0) < 0)
            goto nomem;
        size_t at = i;
        if (i + 1 < len && fmt[i + 1] == '%') {
            if (add_lit(p, &cap, &text, "%", 1, 0) < 0)
                goto nomem;
            i += 2;
            run = i;
            continue;
        }
        if (i + 1 >= len || fmt[i + 1] != '(') {
            fail(err, errlen, fmt, at, "'%' must be followed by '(name)s' or '%'");
            goto failed;
        }
        /* The key ends at the ')' balancing the '(' (Python's rule). */
        size_t k = i + 2, depth = 1;
        for (; k < len; k++) {
            if (fmt[k] == '(')
                depth++;
            else if (fmt[k] == ')' && --depth == 0)
                break;
        }
        if (k >= len) {
            fail(err, errlen, fmt, at, "unbalanced '(' in a '%(name)s'");
            goto failed;
        }
        const char *key = fmt + i + 2;
        size_t key_len = k - (i + 2);
        char conv = k + 1 < len ? fmt[k + 1] : '\0';
        if (conv != 's' && conv != 'd' && conv != 'i') {
            fail(err, errlen, fmt, at,
                 "'%(name)' must be followed by 's' (or 'd' for the numbers B, T, M, D)");
            goto failed;
        }
        cg_alog_op op = {CG_ALOG_LIT,       CG_ALOG_NONE,     0, (uint8_t)conv, 0, 0,
                         (uint32_t)(i + 2), (uint32_t)key_len};
        int kind = -1;
        for (int kd = 0; kd < CG_ALOG_KINDS; kd++)
            if (kind_keys[kd] && key_len == 1 && key[0] == kind_keys[kd][0])
                kind = kd;
        char low[80];
        if (kind < 0 && key_len >= 3 && key_len < sizeof(low) && key[0] == '{') {
            /* gunicorn lowercases such keys whole: "{Referer}I" is "{referer}i". */
            cg_ascii_lower(low, key, key_len);
            char suffix = low[key_len - 1];
            if (low[key_len - 2] == '}' && (suffix == 'i' || suffix == 'o' || suffix == 'e')) {
                const char *name = low + 1;
                size_t name_len = key_len - 3;
                if (suffix == 'e') {
                    const char *v = env_lookup(key + 1, name_len);
                    if (conv != 's') {
                        fail(err, errlen, fmt, at, "an environment variable is not a number");
                        goto failed;
                    }
                    size_t start = text.len;
                    if (v ? put_escaped(&text, v, strlen(v)) < 0 : put_dash(&text) < 0)
                        goto nomem;
                    op.off = (uint32_t)start;
                    op.len = (uint32_t)(text.len - start);
                    op.known = 1;
                    if (add_op(p, &cap, op) < 0)
                        goto nomem;
                    i = k + 2;
                    run = i;
                    continue;
                }
                int slot = slot_for(p, suffix == 'o', name, name_len);
                if (slot == -1) {
                    snprintf(msg, sizeof(msg), "more than %d header names", CG_ALOG_MAX_SLOTS);
                    fail(err, errlen, fmt, at, msg);
                    goto failed;
                }
                if (slot >= 0) {
                    kind = suffix == 'o' ? CG_ALOG_RESP_HDR : CG_ALOG_REQ_HDR;
                    op.slot = (uint8_t)slot;
                }
            }
        }
        if (conv != 's' && !(kind >= 0 && is_number(kind))) {
            snprintf(msg, sizeof(msg), "'%%(%.*s)%c': only B, T, M and D are numbers",
                     (int)(key_len > 40 ? 40 : key_len), key, conv);
            fail(err, errlen, fmt, at, msg);
            goto failed;
        }
        if (kind < 0) {
            /* Unknown: '-', as gunicorn's SafeAtoms answers. */
            size_t start = text.len;
            if (put_dash(&text) < 0)
                goto nomem;
            op.off = (uint32_t)start;
            op.len = 1;
        } else {
            op.kind = (uint8_t)kind;
            op.known = 1;
            if (kind == CG_ALOG_REFERER && (p->referer = slot_for(p, 0, "referer", 7)) < 0)
                goto full;
            if (kind == CG_ALOG_AGENT && (p->agent = slot_for(p, 0, "user-agent", 10)) < 0)
                goto full;
            if (kind == CG_ALOG_USER && (p->auth = slot_for(p, 0, "authorization", 13)) < 0)
                goto full;
            if (is_duration(kind))
                p->needs_time = 1;
            if (kind == CG_ALOG_DATE)
                p->needs_date = 1;
        }
        if (add_op(p, &cap, op) < 0)
            goto nomem;
        i = k + 2;
        run = i;
    }
    if (add_lit(p, &cap, &text, fmt + run, len - run, 0) < 0)
        goto nomem;
    p->text = text.data;
    p->text_len = text.len;
    return 0;
full:
    snprintf(msg, sizeof(msg), "more than %d header names", CG_ALOG_MAX_SLOTS);
    fail(err, errlen, fmt, i, msg);
    goto failed;
nomem:
    snprintf(err, errlen, "out of memory");
failed:
    cg_buf_free(&text);
    cg_alog_free(p);
    return -1;
}
