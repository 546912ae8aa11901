/* Access log formats: gunicorn's access_log_format (--access-log-format)
 * compiled once into a program of literal runs and atoms, and the JSON line
 * (--access-log-json). A line is formatted from one request's facts
 * (cg_alog_entry) into a cg_buf; nothing here allocates per line beyond the
 * output buffer and the captured header values. */
#ifndef CG_ALOG_H
#define CG_ALOG_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "slice.h"

/* What an op of a program writes. */
enum cg_alog_kind {
    CG_ALOG_LIT,       /* literal bytes (text[off..off+len)); also an environment variable's
                          value and '-' for an unknown atom, resolved at compile time */
    CG_ALOG_HOST,      /* h: the client's address without its port, '-' when unknown */
    CG_ALOG_USER,      /* u: the user of a Basic authorization, '-' when none */
    CG_ALOG_DATE,      /* t: [10/Oct/2000:13:55:36 +0000], local time */
    CG_ALOG_REQLINE,   /* r: GET /path?q HTTP/1.1 */
    CG_ALOG_METHOD,    /* m */
    CG_ALOG_PATH,      /* U: the path, percent-decoded, without the query */
    CG_ALOG_QUERY,     /* q: the query as received */
    CG_ALOG_PROTO,     /* H: HTTP/1.0, HTTP/1.1, HTTP/2 */
    CG_ALOG_STATUS,    /* s */
    CG_ALOG_BYTES,     /* B: body bytes sent */
    CG_ALOG_BYTES_CLF, /* b: the same (gunicorn writes '0', not '-', for none) */
    CG_ALOG_REFERER,   /* f: the referer header, '-' when absent */
    CG_ALOG_AGENT,     /* a: the user-agent header, '-' when absent */
    CG_ALOG_SECS,      /* T: whole seconds */
    CG_ALOG_MSECS,     /* M: whole milliseconds */
    CG_ALOG_USECS,     /* D: microseconds */
    CG_ALOG_DECIMAL,   /* L: seconds with six decimals */
    CG_ALOG_PID,       /* p: <pid> */
    CG_ALOG_REQ_HDR,   /* {name}i: a request header (the last of that name), '-' when absent */
    CG_ALOG_RESP_HDR,  /* {name}o: a response header, '-' when absent */
    CG_ALOG_KINDS
};

/* Header values a program reads: at most this many distinct names. */
#define CG_ALOG_MAX_SLOTS 16
/* The compiled format is at most this long. */
#define CG_ALOG_MAX_FORMAT 4096

typedef struct cg_alog_op {
    uint8_t kind;  /* enum cg_alog_kind */
    uint8_t slot;  /* CG_ALOG_REQ_HDR / RESP_HDR: the header slot */
    uint8_t known; /* an atom gunicorn has (else the key is unknown: LIT "-") */
    uint8_t conv;  /* the conversion written: 's', 'd' or 'i' */
    uint32_t off;  /* LIT: the bytes in text */
    uint32_t len;
    uint32_t key_off; /* atoms (and unknown keys): the key between "%(" and ")" in fmt */
    uint32_t key_len;
} cg_alog_op;

typedef struct cg_alog_slot {
    char name[64]; /* lowercase header name */
    uint8_t len;
    uint8_t resp; /* 1: a response header */
} cg_alog_slot;

/* A compiled access log format. Owns its memory (cg_alog_free). The date
 * cache is written by cg_alog_format: one program per thread. */
typedef struct cg_alog {
    int json;        /* 1: the JSON line, no ops */
    cg_alog_op *ops; /* owned */
    size_t nops;
    char *fmt; /* owned copy of the format, NUL-terminated (empty for JSON) */
    size_t fmt_len;
    char *text; /* owned: literal runs ("%%" as '%'), escaped environment values */
    size_t text_len;
    cg_alog_slot slots[CG_ALOG_MAX_SLOTS];
    size_t nslots;
    int referer, agent, auth; /* request header slots the atoms f, a, u read, or -1 */
    unsigned needs_time : 1;  /* a duration is written: the request's start is needed */
    unsigned needs_date : 1;  /* t (or JSON's time) */
    long pid;
    long long date_sec; /* the second date[] was made for, -1 for none */
    char date[64];
    size_t date_len;
    long long iso_sec;
    char iso[40];
    size_t iso_len;
} cg_alog;

/* Captured for one request: its start and the header values its program
 * reads (request headers at the head, response headers at the response
 * start). Owns buf. */
typedef struct cg_alog_vals {
    double start; /* cg_monotonic_now() when the request head was complete */
    cg_buf buf;   /* the values, copied */
    uint32_t off[CG_ALOG_MAX_SLOTS];
    uint32_t len[CG_ALOG_MAX_SLOTS];
    uint32_t present; /* bit per slot */
} cg_alog_vals;

/* One request's facts for its access line. Slices are borrowed for the call. */
typedef struct cg_alog_entry {
    cg_slice client; /* "host:port" of the (forwarded) client, or empty when unknown */
    cg_slice method;
    cg_slice path;  /* as received (percent-encoded), without the query */
    cg_slice query; /* as received, without '?' */
    int qmark;      /* the target had a '?' (the query may be empty) */
    int version;    /* enum cg_http_version */
    int status;
    unsigned long long bytes; /* body bytes sent */
    double duration;          /* seconds from the request head to the log line */
    long long now;            /* wall clock seconds (time(NULL)) for t */
    const cg_alog_vals *vals; /* may be NULL: every header absent */
} cg_alog_entry;

/**
 * Compiles gunicorn's access_log_format `fmt` (Python %-formatting with a
 * mapping: "%(key)s", "%(key)d" / "%(key)i" for the numbers B T M D, and
 * "%%"). Unknown keys write '-' as gunicorn's do; {name}e is the environment
 * variable `name` read now. Returns 0, or -1 with a one-line reason in err
 * (a '%' not followed by "(key)" and s, d or i, an unbalanced "(", d or i
 * on an atom that is not a number, too many header names, too long).
 */
int cg_alog_compile(cg_alog *p, const char *fmt, long pid, char *err, size_t errlen);
/** The JSON line's program (never fails but for memory: -1). */
int cg_alog_init_json(cg_alog *p, long pid);
void cg_alog_free(cg_alog *p);

/** Prepares v for a request starting at `start`. */
void cg_alog_vals_init(cg_alog_vals *v, double start);
/** Releases v's memory. */
void cg_alog_vals_free(cg_alog_vals *v);
/** Offers one header field of the request (resp 0) or of the response
 * (resp 1): kept when the program reads that name (case-insensitive), the
 * later of repeated fields winning. 0, or -1 when out of memory. */
int cg_alog_capture(const cg_alog *p, cg_alog_vals *v, int resp, const char *name, size_t name_len,
                    const char *value, size_t value_len);
/** 1 when the program reads any header of that side. */
int cg_alog_reads_headers(const cg_alog *p, int resp);

/** Appends the line for e to out (no line terminator). 0, or -1 (memory). */
int cg_alog_format(cg_alog *p, const cg_alog_entry *e, cg_buf *out);
/** Appends the value one atom (op of the program, or a kind with slot -1)
 * writes in a line: the same bytes cg_alog_format writes for it. 0 or -1. */
int cg_alog_render(cg_alog *p, const cg_alog_op *op, const cg_alog_entry *e, cg_buf *out);
/** The number a numeric atom (B, b, T, M, D) stands for. */
long long cg_alog_number(int kind, const cg_alog_entry *e);

/** The single-letter key of a kind ("h" for CG_ALOG_HOST), or NULL. */
const char *cg_alog_kind_key(int kind);

#endif
