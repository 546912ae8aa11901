/* File watcher for --reload: recursive inotify with a stat-polling fallback. */

// Patterns (cg_glob_match). A pattern is matched against the whole of a
// file's name and against the whole of its path relative to the watched
// directory it is under; either match counts. Components are split at '/':
//   *       any run of characters inside one component (never '/')
//   **      as a whole component: any number of components, including none;
//           elsewhere ("a**b") it is the same as "*"
//   ?       one character (never '/')
//   [abc]   one character of a class; ranges [a-z]; [!a-z] or [^a-z] negates;
//           a ']' right after '[' (or "[!") is literal; an unclosed '[' is literal
//   \x      the character x itself
// Examples, for the file app/api/main.py under the watched directory:
//   *.py               matches (name)        main.py          matches (name)
//   app/api/*.py       matches (path)        app/*.py         no: '*' stops at '/'
//   app/**/*.py        matches (any depth)   **/api/main.py   matches
//   m?in.py, [lm]ain.py, [!_]*.py match      *.py[cod]        no (matches main.pyc)
//   api/*.py           no: paths are anchored at the watched directory
//   app/**             matches (and also the directory app itself: ** may be empty)
//
// Directories: .git, __pycache__, .venv, venv, node_modules, site-packages
// and every hidden directory (.*) are never descended into, nor is a
// directory whose name or relative path an exclude pattern matches, with or
// without a trailing '/'. Each of build, build/ (a trailing '/' matches
// directories only), app/static, **/static and app/** excludes a directory.
// Files: exclude wins over include; with no include pattern every file is
// included. Defaults (*.py, .*, ...) are the caller's business. Symbolic links
// to files count as files; links to directories are not followed (no loops,
// no escaping the tree).

/* Reported paths are relative to the working directory at cg_watch_new() when
 * they are under it ("app/main.py"), absolute otherwise.
 *
 * inotify. One watch per directory, wd -> path in a hash table. Events used:
 * IN_CREATE, IN_MODIFY, IN_CLOSE_WRITE and IN_ATTRIB (in-place writes, touch,
 * os.utime), IN_MOVED_FROM/IN_MOVED_TO (atomic saves report the target name;
 * moves in and out), IN_DELETE, plus IN_MOVE_SELF/IN_IGNORED to retire
 * watches. A directory that appears (created or moved in) is watched first,
 * then listed, and every matching file in it is reported, so files created
 * before its watch existed are not missed. A directory moved away loses its
 * watches (an IN_MOVED_TO re-adds them under the new name). IN_Q_OVERFLOW:
 * every tree is walked again, watches re-added, every matching file
 * reported. One read() of at most CG_EVBUF bytes per call; the rest stays
 * queued and the fd stays readable. When the kernel's watch limit is reached
 * (at start or later) the watcher switches to polling.
 *
 * Polling. A hash table path -> (mtime_ns, size, inode, generation) of every
 * matching file. A pass walks the trees with one reused getdents64 buffer and
 * fstatat() relative to the directory fd (non-matching files are never
 * stat'ed), stamps each file with the pass's generation, reports new and
 * changed files, then sweeps entries left with an older generation as
 * deleted. A steady-state pass allocates nothing. A pass is done in slices
 * of about CG_SCAN_BUDGET entries per call (cg_watch_timeout_ms() is 0 until
 * it ends), and the pause between passes is at least CG_SCAN_DUTY times the
 * pass's cost.
 */
#include "watch.h"

#include <dirent.h> /* DT_* */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "errfmt.h"

#define CG_EVBUF (64 * 1024)    /* inotify bytes read per call */
#define CG_DIRBUF (32 * 1024)   /* getdents64 buffer */
#define CG_WPATH (PATH_MAX + 2) /* path buffer: room for a trailing '/' */
#define CG_SCAN_BUDGET 4096     /* polling: directory entries looked at per call */
#define CG_SCAN_DUTY 19 /* polling: idle at least 19x the time a pass took (about 5% of a core) */

#define CG_IN_MASK                                                                                 \
    (IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO |            \
     IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK)
#define CG_IN_FILE_EVENTS                                                                          \
    (IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE)

enum { CG_BACKEND_INOTIFY, CG_BACKEND_POLLING };

/* Walk modes: what happens to each directory and matching file. */
enum {
    CG_WALK_WATCH,        /* add watches (start) */
    CG_WALK_WATCH_REPORT, /* add watches, report files (new directory, overflow) */
    CG_WALK_SCAN,         /* polling: record files, report new and changed ones */
    CG_WALK_BASELINE,     /* polling: record files, report nothing */
};

/* ---- open-addressing index (linear probing, backward-shift deletion) ----
 * Maps a 32-bit hash to an index in a dense array owned by the user; the
 * user compares keys. Slots keep the hash so growing never touches entries. */
typedef struct cg_slot {
    uint32_t hash;
    uint32_t idx1; /* dense index + 1; 0 = empty slot */
} cg_slot;

typedef struct cg_index {
    cg_slot *slots;
    size_t cap; /* 0 or a power of two */
    size_t count;
} cg_index;

static uint32_t mix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a, then mixed for good low bits */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return mix32(h);
}

/* Makes room for `n` entries at a load factor of at most 1/2. */
static int index_reserve(cg_index *ix, size_t n)
{
    size_t cap = ix->cap ? ix->cap : 16;
    while (cap / 2 < n)
        cap *= 2;
    if (cap == ix->cap)
        return 0;
    cg_slot *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return -1;
    for (size_t i = 0; i < ix->cap; i++) {
        if (!ix->slots[i].idx1)
            continue;
        size_t j = ix->slots[i].hash & (cap - 1);
        while (slots[j].idx1)
            j = (j + 1) & (cap - 1);
        slots[j] = ix->slots[i];
    }
    free(ix->slots);
    ix->slots = slots;
    ix->cap = cap;
    return 0;
}

/* Inserts (the caller reserved room and checked the key is absent). */
static void index_insert(cg_index *ix, uint32_t hash, size_t idx)
{
    size_t mask = ix->cap - 1, j = hash & mask;
    while (ix->slots[j].idx1)
        j = (j + 1) & mask;
    ix->slots[j].hash = hash;
    ix->slots[j].idx1 = (uint32_t)idx + 1;
    ix->count++;
}

/* Slot holding dense index `idx` (whose hash is `hash`); the entry must be there. */
static size_t index_slot_of(const cg_index *ix, uint32_t hash, size_t idx)
{
    size_t mask = ix->cap - 1, j = hash & mask;
    while (ix->slots[j].idx1 != idx + 1)
        j = (j + 1) & mask;
    return j;
}

/* Empties slot `j`, shifting later members of its cluster back so that every
 * entry stays reachable from its home slot without tombstones. */
static void index_remove_at(cg_index *ix, size_t j)
{
    size_t mask = ix->cap - 1, i = j;
    for (;;) {
        j = (j + 1) & mask;
        if (!ix->slots[j].idx1)
            break;
        size_t home = ix->slots[j].hash & mask;
        /* Entry at j may move to i unless its home lies cyclically in (i, j]. */
        int stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            ix->slots[i] = ix->slots[j];
            i = j;
        }
    }
    ix->slots[i].idx1 = 0;
    ix->count--;
}

static void index_clear(cg_index *ix)
{
    if (ix->cap)
        memset(ix->slots, 0, ix->cap * sizeof(*ix->slots));
    ix->count = 0;
}

/* Grows the dense array whose pointer is at `p` (any T **) to hold `n`
 * elements of `size` bytes. The pointer is moved with memcpy so that no
 * T * is accessed through a void * lvalue. */
static int grow(void *p, size_t *cap, size_t n, size_t size)
{
    if (n <= *cap)
        return 0;
    size_t c = *cap ? *cap : 16;
    while (c < n)
        c *= 2;
    void *old, *q;
    memcpy(&old, p, sizeof(old));
    if (c > SIZE_MAX / size || !(q = realloc(old, c * size)))
        return -1;
    memcpy(p, &q, sizeof(q));
    *cap = c;
    return 0;
}

/* ---- the watcher ---- */

typedef struct cg_wroot {
    char *path;    /* absolute, resolved */
    size_t relofs; /* offset of the relative path in a path under this root */
} cg_wroot;

typedef struct cg_wdir { /* inotify: one watched directory */
    char *path;          /* absolute; owned */
    int wd;
    uint32_t root;
} cg_wdir;

typedef struct cg_wfile { /* polling: one matching file */
    char *path;           /* absolute; owned */
    uint32_t hash;
    uint32_t gen; /* generation of the last scan that saw it */
    int64_t mtime_ns;
    int64_t size;
    uint64_t ino;
} cg_wfile;

typedef struct cg_wstk { /* walk: one directory still to list */
    size_t ofs;          /* of its path in cg_watch.stack */
    uint32_t root;       /* index in cg_watch.roots */
} cg_wstk;

struct cg_watch {
    int backend;
    int ifd;           /* inotify fd or -1; kept open after a runtime fallback so a
                          descriptor the caller still polls is never reused */
    int need_fallback; /* the watch limit was hit: switch to polling */
    char *cwd;
    size_t cwdlen;
    cg_wroot *roots;
    size_t nroots;
    char **include, **exclude; /* owned copies */
    size_t ninclude, nexclude;
    int64_t interval_ns, next_scan_ns;
    int64_t pass_busy_ns; /* time spent in the pass in progress */
    size_t scan_budget;   /* CG_SCAN_BUDGET (tests lower it) */
    int scanning;         /* a polling pass is in progress: its walk is on the stack */
    size_t scan_hint;     /* files[] index the pass probably reaches next */
    uint32_t gen;

    cg_wdir *dirs; /* inotify: dense array + index by wd */
    size_t ndirs, capdirs;
    cg_index dir_ix;

    cg_wfile *files; /* polling: dense array + index by path */
    size_t nfiles, capfiles;
    cg_index file_ix;

    char **pending; /* paths found by the current call, not yet handed out */
    size_t npending, cappending;
    const char **seen; /* paths in the caller's list + pending: no duplicates */
    size_t nseen, capseen;
    cg_index seen_ix;

    char *stack; /* walk: directories still to list, NUL-separated */
    size_t stacklen, stackcap;
    cg_wstk *stackent;
    size_t nstack, capstack;

    char *dirbuf; /* getdents64 */
    char *evbuf;  /* inotify events */
    char path[CG_WPATH];
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- glob ---- */

/* Matches one class at p (just after '['); sets *end after its ']'. Returns -1
 * when the class is not closed (the '[' is then a literal). */
static int match_class(const char *p, const char *pe, unsigned char c, const char **end)
{
    int neg = 0, hit = 0;
    if (p < pe && (*p == '!' || *p == '^')) {
        neg = 1;
        p++;
    }
    const char *first = p;
    while (p < pe && (*p != ']' || p == first)) {
        unsigned char lo = (unsigned char)*p++, hi;
        if (lo == '\\' && p < pe)
            lo = (unsigned char)*p++;
        hi = lo;
        if (p + 1 < pe && *p == '-' && p[1] != ']') {
            hi = (unsigned char)p[1];
            p += 2;
            if (hi == '\\' && p < pe)
                hi = (unsigned char)*p++;
        }
        if (lo <= c && c <= hi)
            hit = 1;
    }
    if (p >= pe)
        return -1;
    *end = p + 1;
    return hit != neg;
}

/* Matches the single-character token at p against c; sets *next past it. */
static int match_token(const char *p, const char *pe, unsigned char c, const char **next)
{
    if (*p == '?') {
        *next = p + 1;
        return 1;
    }
    if (*p == '[') {
        int r = match_class(p + 1, pe, c, next);
        if (r >= 0)
            return r;
    } else if (*p == '\\' && p + 1 < pe) {
        *next = p + 2;
        return (unsigned char)p[1] == c;
    }
    *next = p + 1;
    return (unsigned char)*p == c;
}

/* One component: pattern [p, pe) against name [s, se), neither containing '/'.
 * Greedy with backtracking to the last '*' only: O(len(p) * len(s)). */
static int match_component(const char *p, const char *pe, const char *s, const char *se)
{
    const char *star_p = NULL, *star_s = NULL;
    while (s < se) {
        if (p < pe && *p == '*') {
            while (p < pe && *p == '*')
                p++;
            star_p = p;
            star_s = s;
            continue;
        }
        const char *next;
        if (p < pe && match_token(p, pe, (unsigned char)*s, &next)) {
            p = next;
            s++;
            continue;
        }
        if (!star_p)
            return 0;
        p = star_p;
        s = ++star_s;
    }
    while (p < pe && *p == '*')
        p++;
    return p == pe;
}

static const char *comp_end(const char *s)
{
    while (*s && *s != '/')
        s++;
    return s;
}

/* Start of the component after the one ending at e, or NULL after the last. */
static const char *comp_next(const char *e)
{
    return *e == '/' ? e + 1 : NULL;
}

static int is_globstar(const char *p, const char *pe)
{
    return pe - p == 2 && p[0] == '*' && p[1] == '*';
}

/* The same greedy scheme one level up: components are the units and a "**"
 * component is the star, so nested "**" never backtrack exponentially. */
int cg_glob_match(const char *pattern, const char *path)
{
    const char *p = pattern, *s = path, *star_p = NULL, *star_s = NULL;
    int star = 0;
    while (s) {
        if (p) {
            const char *pe = comp_end(p);
            if (is_globstar(p, pe)) {
                star = 1;
                star_p = p = comp_next(pe);
                star_s = s;
                continue;
            }
            const char *se = comp_end(s);
            if (match_component(p, pe, s, se)) {
                p = comp_next(pe);
                s = comp_next(se);
                continue;
            }
        }
        if (!star)
            return 0;
        star_s = comp_next(comp_end(star_s));
        s = star_s;
        p = star_p;
    }
    while (p) {
        const char *pe = comp_end(p);
        if (!is_globstar(p, pe))
            return 0;
        p = comp_next(pe);
    }
    return 1;
}

/* `name` is a suffix of `rel`. A pattern without '/' is one component: it
 * cannot match a rel that has several (a lone "**" already matched the name),
 * so rel is only tried for patterns with a '/'. */
static int any_match(char *const *pats, size_t n, const char *name, const char *rel)
{
    for (size_t i = 0; i < n; i++)
        if (cg_glob_match(pats[i], name) ||
            (rel != name && strchr(pats[i], '/') && cg_glob_match(pats[i], rel)))
            return 1;
    return 0;
}

static int file_matches(const cg_watch *w, const char *name, const char *rel)
{
    if (any_match(w->exclude, w->nexclude, name, rel))
        return 0;
    return w->ninclude == 0 || any_match(w->include, w->ninclude, name, rel);
}

/* name and rel are suffixes of w->path, whose length is `len`: a '/' is
 * appended there for a moment so "build/" patterns can match. */
static int dir_ignored(cg_watch *w, const char *name, const char *rel, size_t len)
{
    static const char *const never[] = {"__pycache__",   "venv", "node_modules",
                                        "site-packages", ".git", ".venv"};
    if (name[0] == '.')
        return 1;
    for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++)
        if (strcmp(name, never[i]) == 0)
            return 1;
    if (!w->nexclude)
        return 0;
    if (any_match(w->exclude, w->nexclude, name, rel))
        return 1;
    w->path[len] = '/';
    w->path[len + 1] = '\0';
    int r = any_match(w->exclude, w->nexclude, name, rel);
    w->path[len] = '\0';
    return r;
}

/* ---- reporting ---- */

static const char *display_path(const cg_watch *w, const char *abs)
{
    if (w->cwdlen == 1 && w->cwd[0] == '/')
        return abs[1] ? abs + 1 : abs;
    if (strncmp(abs, w->cwd, w->cwdlen) == 0 && abs[w->cwdlen] == '/' && abs[w->cwdlen + 1])
        return abs + w->cwdlen + 1;
    return abs;
}

static int seen_find(const cg_watch *w, const char *s, uint32_t h)
{
    if (!w->seen_ix.cap)
        return 0;
    size_t mask = w->seen_ix.cap - 1;
    for (size_t j = h & mask; w->seen_ix.slots[j].idx1; j = (j + 1) & mask) {
        const cg_slot *sl = &w->seen_ix.slots[j];
        if (sl->hash == h && strcmp(w->seen[sl->idx1 - 1], s) == 0)
            return 1;
    }
    return 0;
}

/* Records `s` (not owned) as seen; returns 0, 1 when it already was, -1 on ENOMEM. */
static int seen_add(cg_watch *w, const char *s)
{
    uint32_t h = hash_str(s);
    if (seen_find(w, s, h))
        return 1;
    if (grow(&w->seen, &w->capseen, w->nseen + 1, sizeof(*w->seen)) < 0 ||
        index_reserve(&w->seen_ix, w->nseen + 1) < 0)
        return -1;
    w->seen[w->nseen] = s;
    index_insert(&w->seen_ix, h, w->nseen);
    w->nseen++;
    return 0;
}

/* Queues the file at absolute path `abs` for the caller, once. */
static int report(cg_watch *w, const char *abs)
{
    const char *d = display_path(w, abs);
    if (seen_find(w, d, hash_str(d)))
        return 0;
    if (grow(&w->pending, &w->cappending, w->npending + 1, sizeof(*w->pending)) < 0)
        return -1;
    char *copy = strdup(d);
    if (!copy)
        return -1;
    if (seen_add(w, copy) < 0) {
        free(copy);
        return -1;
    }
    w->pending[w->npending++] = copy;
    return 0;
}

/* ---- inotify directory table ---- */

static long dir_find(const cg_watch *w, int wd)
{
    if (!w->dir_ix.cap)
        return -1;
    uint32_t h = mix32((uint32_t)wd);
    size_t mask = w->dir_ix.cap - 1;
    for (size_t j = h & mask; w->dir_ix.slots[j].idx1; j = (j + 1) & mask) {
        size_t i = w->dir_ix.slots[j].idx1 - 1;
        if (w->dirs[i].wd == wd)
            return (long)i;
    }
    return -1;
}

/* Records wd -> path; an existing wd (the same directory reached again, or
 * under a new name) gets the new path. */
static int dir_set(cg_watch *w, int wd, const char *path, uint32_t root)
{
    long i = dir_find(w, wd);
    if (i >= 0 && strcmp(w->dirs[i].path, path) == 0)
        return 0;
    char *copy = strdup(path);
    if (!copy)
        return -1;
    if (i >= 0) {
        free(w->dirs[i].path);
        w->dirs[i].path = copy;
        w->dirs[i].root = root;
        return 0;
    }
    if (grow(&w->dirs, &w->capdirs, w->ndirs + 1, sizeof(*w->dirs)) < 0 ||
        index_reserve(&w->dir_ix, w->ndirs + 1) < 0) {
        free(copy);
        return -1;
    }
    w->dirs[w->ndirs] = (cg_wdir){.path = copy, .wd = wd, .root = root};
    index_insert(&w->dir_ix, mix32((uint32_t)wd), w->ndirs);
    w->ndirs++;
    return 0;
}

/* Forgets dirs[i] (its watch is already gone or is removed by the caller). */
static void dir_remove(cg_watch *w, size_t i)
{
    uint32_t h = mix32((uint32_t)w->dirs[i].wd);
    index_remove_at(&w->dir_ix, index_slot_of(&w->dir_ix, h, i));
    free(w->dirs[i].path);
    size_t last = --w->ndirs;
    if (i != last) {
        uint32_t hl = mix32((uint32_t)w->dirs[last].wd);
        w->dir_ix.slots[index_slot_of(&w->dir_ix, hl, last)].idx1 = (uint32_t)i + 1;
        w->dirs[i] = w->dirs[last];
    }
}

static int path_is_under(const char *path, const char *dir, size_t dirlen)
{
    return strncmp(path, dir, dirlen) == 0 && (path[dirlen] == '\0' || path[dirlen] == '/');
}

/* Drops the watches of directory `dir` and everything below it (moved away). */
static void dir_remove_tree(cg_watch *w, const char *dir)
{
    size_t len = strlen(dir);
    for (size_t i = 0; i < w->ndirs;) {
        if (path_is_under(w->dirs[i].path, dir, len)) {
            inotify_rm_watch(w->ifd, w->dirs[i].wd);
            dir_remove(w, i); /* moves the last entry to i: look at i again */
        } else {
            i++;
        }
    }
}

/* ---- polling file table ---- */

static long file_find(const cg_watch *w, const char *path, uint32_t h)
{
    if (!w->file_ix.cap)
        return -1;
    size_t mask = w->file_ix.cap - 1;
    for (size_t j = h & mask; w->file_ix.slots[j].idx1; j = (j + 1) & mask) {
        const cg_slot *sl = &w->file_ix.slots[j];
        if (sl->hash == h && strcmp(w->files[sl->idx1 - 1].path, path) == 0)
            return (long)(sl->idx1 - 1);
    }
    return -1;
}

static void file_remove(cg_watch *w, size_t i)
{
    index_remove_at(&w->file_ix, index_slot_of(&w->file_ix, w->files[i].hash, i));
    free(w->files[i].path);
    size_t last = --w->nfiles;
    if (i != last) {
        w->file_ix.slots[index_slot_of(&w->file_ix, w->files[last].hash, last)].idx1 =
            (uint32_t)i + 1;
        w->files[i] = w->files[last];
    }
}

/* Polling: records the file at w->path (name relative to dfd) for this scan. */
static int poll_file(cg_watch *w, int dfd, const char *name, int mode)
{
    struct stat st;
    if (fstatat(dfd, name, &st, 0) < 0 || !S_ISREG(st.st_mode))
        return 0; /* vanished, or a link to something else */
    int64_t mtime = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    uint32_t h = hash_str(w->path);
    /* Passes visit files in the order they were added: try the entry after
     * the last one found before probing the index (sequential reads instead
     * of a cache miss per file in a large table). */
    size_t hint = w->scan_hint;
    long i =
        hint < w->nfiles && w->files[hint].hash == h && strcmp(w->files[hint].path, w->path) == 0
            ? (long)hint
            : file_find(w, w->path, h);
    if (i >= 0) {
        cg_wfile *f = &w->files[i];
        w->scan_hint = (size_t)i + 1;
        if (f->gen == w->gen)
            return 0; /* reached twice in one scan */
        f->gen = w->gen;
        if (f->mtime_ns == mtime && f->size == (int64_t)st.st_size && f->ino == st.st_ino)
            return 0;
        f->mtime_ns = mtime;
        f->size = (int64_t)st.st_size;
        f->ino = st.st_ino;
        return mode == CG_WALK_SCAN ? report(w, w->path) : 0;
    }
    if (w->nfiles >= UINT32_MAX - 1)
        return 0;
    char *copy = strdup(w->path);
    if (!copy || grow(&w->files, &w->capfiles, w->nfiles + 1, sizeof(*w->files)) < 0 ||
        index_reserve(&w->file_ix, w->nfiles + 1) < 0) {
        free(copy);
        return -1;
    }
    w->files[w->nfiles] = (cg_wfile){.path = copy,
                                     .hash = h,
                                     .gen = w->gen,
                                     .mtime_ns = mtime,
                                     .size = (int64_t)st.st_size,
                                     .ino = st.st_ino};
    index_insert(&w->file_ix, h, w->nfiles);
    w->scan_hint = ++w->nfiles;
    return mode == CG_WALK_SCAN ? report(w, w->path) : 0;
}

/* ---- walking ---- */

static int stack_push(cg_watch *w, const char *path, size_t len, uint32_t root)
{
    if (grow(&w->stack, &w->stackcap, w->stacklen + len + 1, 1) < 0 ||
        grow(&w->stackent, &w->capstack, w->nstack + 1, sizeof(*w->stackent)) < 0)
        return -1;
    memcpy(w->stack + w->stacklen, path, len + 1);
    w->stackent[w->nstack++] = (cg_wstk){.ofs = w->stacklen, .root = root};
    w->stacklen += len + 1;
    return 0;
}

/* Pops the last pushed directory into w->path; returns its length. */
static size_t stack_pop(cg_watch *w, uint32_t *root)
{
    cg_wstk e = w->stackent[--w->nstack];
    size_t len = w->stacklen - e.ofs - 1;
    memcpy(w->path, w->stack + e.ofs, len + 1);
    w->stacklen = e.ofs;
    *root = e.root;
    return len;
}

/* Adds the watch for the directory in w->path. Returns 1 to list it, 0 to
 * skip it (gone, unreadable), -1 on ENOMEM. */
static int watch_dir(cg_watch *w, uint32_t root, int is_root)
{
    if (w->need_fallback)
        return 1; /* still listed so that its files are reported */
    int wd = inotify_add_watch(w->ifd, w->path, CG_IN_MASK | (is_root ? 0 : IN_DONT_FOLLOW));
    if (wd < 0) {
        if (errno == ENOSPC || errno == ENOMEM) {
            w->need_fallback = 1;
            return 1;
        }
        return 0;
    }
    return dir_set(w, wd, w->path, root) < 0 ? -1 : 1;
}

/* Type of entry `name` in dfd: 'd' directory (never through a link), 'f'
 * regular file or a link to one, 0 anything else. */
static int entry_kind(int dfd, const char *name, unsigned char type)
{
    struct stat st;
    if (type == DT_DIR)
        return 'd';
    if (type == DT_REG)
        return 'f';
    if (type == DT_UNKNOWN) {
        if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            return 0;
        if (S_ISDIR(st.st_mode))
            return 'd';
        if (S_ISREG(st.st_mode))
            return 'f';
        if (!S_ISLNK(st.st_mode))
            return 0;
    } else if (type != DT_LNK) {
        return 0;
    }
    return fstatat(dfd, name, &st, 0) == 0 && S_ISREG(st.st_mode) ? 'f' : 0;
}

/* Layout of a getdents64 record (the kernel's linux_dirent64). */
struct cg_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* Lists the directory in w->path (length len): subdirectories are pushed,
 * matching files handled per mode. Unreadable directories are skipped.
 * Returns the number of entries looked at, or -1 on ENOMEM. */
static long list_dir(cg_watch *w, uint32_t root, size_t len, int mode)
{
    const cg_wroot *r = &w->roots[root];
    long rc = 0, seen = 0;
    int dfd = open(w->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (dfd < 0)
        return 0;
    for (;;) {
        long n = syscall(SYS_getdents64, dfd, w->dirbuf, CG_DIRBUF);
        if (n <= 0)
            break; /* end, or an error that only skips the rest of this directory */
        for (long pos = 0; pos < n;) {
            struct cg_dirent64 d;
            memcpy(&d, w->dirbuf + pos, offsetof(struct cg_dirent64, d_name));
            const char *name = w->dirbuf + pos + offsetof(struct cg_dirent64, d_name);
            pos += d.d_reclen;
            seen++;
            size_t nlen = strlen(name);
            if ((name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'))) ||
                len + 1 + nlen + 2 > sizeof(w->path))
                continue;
            int kind = entry_kind(dfd, name, d.d_type);
            if (!kind)
                continue;
            size_t sub = len;
            if (w->path[len - 1] != '/')
                w->path[sub++] = '/';
            memcpy(w->path + sub, name, nlen + 1);
            const char *nm = w->path + sub;
            const char *rel = w->path + r->relofs;
            if (kind == 'd') {
                if (!dir_ignored(w, nm, rel, sub + nlen) &&
                    stack_push(w, w->path, sub + nlen, root) < 0)
                    rc = -1;
            } else if (mode != CG_WALK_WATCH && file_matches(w, nm, rel)) {
                if (mode == CG_WALK_WATCH_REPORT)
                    rc = report(w, w->path);
                else
                    rc = poll_file(w, dfd, nm, mode);
            }
            w->path[len] = '\0';
            if (rc < 0)
                goto done;
        }
    }
done:
    close(dfd);
    return rc < 0 ? -1 : seen;
}

/* Lists directories from the stack until it is empty (returns 1) or about
 * `budget` entries were looked at (returns 0; a whole directory is always
 * finished). -1 on ENOMEM. */
static int run_walk(cg_watch *w, int mode, size_t budget)
{
    size_t done = 0;
    while (w->nstack) {
        if (done >= budget)
            return 0;
        uint32_t root;
        size_t len = stack_pop(w, &root);
        if (mode == CG_WALK_WATCH || mode == CG_WALK_WATCH_REPORT) {
            int r = watch_dir(w, root, strcmp(w->path, w->roots[root].path) == 0);
            if (r < 0)
                return -1;
            if (r == 0)
                continue;
        }
        long n = list_dir(w, root, len, mode);
        if (n < 0)
            return -1;
        done += (size_t)n + 1;
    }
    return 1;
}

/* Walks the whole tree at `start` (a directory under root `root`, or it). */
static int walk(cg_watch *w, uint32_t root, const char *start, int mode)
{
    w->nstack = w->stacklen = 0;
    if (stack_push(w, start, strlen(start), root) < 0)
        return -1;
    return run_walk(w, mode, SIZE_MAX) < 0 ? -1 : 0;
}

/* ---- polling ---- */

/* Polling work for one call: starts a pass over every tree, continues it
 * for about `budget` entries; at its end, files the pass did not see are
 * reported as deleted and the next pass is scheduled after the interval or
 * CG_SCAN_DUTY times the pass's own cost, whichever is longer, so that a
 * huge tree on a slow file system cannot keep a CPU busy. */
static int poll_step(cg_watch *w, int mode, size_t budget)
{
    int64_t t0 = now_ns();
    if (!w->scanning) {
        w->gen++;
        w->nstack = w->stacklen = 0;
        for (size_t r = w->nroots; r-- > 0;)
            if (stack_push(w, w->roots[r].path, strlen(w->roots[r].path), (uint32_t)r) < 0)
                return -1;
        w->scanning = 1;
        w->pass_busy_ns = 0;
        w->scan_hint = 0;
    }
    int r = run_walk(w, mode, budget);
    if (r <= 0) {
        w->scanning = r == 0; /* after an error the next call starts a new pass */
        w->pass_busy_ns += now_ns() - t0;
        return r;
    }
    for (size_t i = 0; i < w->nfiles;) {
        if (w->files[i].gen == w->gen) {
            i++;
            continue;
        }
        if (mode == CG_WALK_SCAN && report(w, w->files[i].path) < 0) {
            w->scanning = 0;
            return -1;
        }
        file_remove(w, i); /* the last entry moved to i */
    }
    int64_t end = now_ns(), busy = w->pass_busy_ns + (end - t0);
    w->scanning = 0;
    w->next_scan_ns =
        end + (busy * CG_SCAN_DUTY > w->interval_ns ? busy * CG_SCAN_DUTY : w->interval_ns);
    return 0;
}

/* Leaves inotify for polling (the watch limit was reached). The inotify fd
 * stays open, without watches, until cg_watch_free(). */
static int switch_to_polling(cg_watch *w)
{
    for (size_t i = 0; i < w->ndirs; i++) {
        inotify_rm_watch(w->ifd, w->dirs[i].wd);
        free(w->dirs[i].path);
    }
    w->ndirs = 0;
    index_clear(&w->dir_ix);
    w->backend = CG_BACKEND_POLLING;
    w->need_fallback = 0;
    w->scanning = 0;
    return poll_step(w, CG_WALK_BASELINE, SIZE_MAX);
}

/* ---- inotify ---- */

/* One event that names an entry of a watched directory. */
static int handle_entry(cg_watch *w, const cg_wdir *d, const struct inotify_event *ev,
                        const char *name)
{
    size_t dlen = strlen(d->path), nlen = strlen(name), len = dlen;
    if (dlen + 1 + nlen + 2 > sizeof(w->path))
        return 0;
    memcpy(w->path, d->path, dlen);
    if (w->path[len - 1] != '/')
        w->path[len++] = '/';
    memcpy(w->path + len, name, nlen + 1);
    const char *rel = w->path + w->roots[d->root].relofs;
    uint32_t root = d->root; /* d may move when the table changes */
    if (ev->mask & IN_ISDIR) {
        if (ev->mask & IN_MOVED_FROM) {
            dir_remove_tree(w, w->path);
        } else if ((ev->mask & (IN_CREATE | IN_MOVED_TO)) &&
                   !dir_ignored(w, w->path + len, rel, len + nlen)) {
            return walk(w, root, w->path, CG_WALK_WATCH_REPORT); /* copied first */
        }
        return 0;
    }
    if ((ev->mask & CG_IN_FILE_EVENTS) && file_matches(w, w->path + len, rel))
        return report(w, w->path);
    return 0;
}

static int inotify_process(cg_watch *w)
{
    ssize_t n = read(w->ifd, w->evbuf, CG_EVBUF);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    int overflow = 0;
    for (ssize_t pos = 0; pos + (ssize_t)sizeof(struct inotify_event) <= n;) {
        struct inotify_event ev;
        memcpy(&ev, w->evbuf + pos, sizeof(ev));
        const char *name = w->evbuf + pos + sizeof(ev);
        pos += (ssize_t)(sizeof(ev) + ev.len);
        if (ev.mask & IN_Q_OVERFLOW) {
            overflow = 1;
            continue;
        }
        long i = dir_find(w, ev.wd);
        if (i < 0)
            continue; /* a watch already dropped */
        if (ev.mask & IN_IGNORED) {
            dir_remove(w, (size_t)i);
        } else if (ev.len && name[0]) {
            if (handle_entry(w, &w->dirs[i], &ev, name) < 0)
                return -1;
        } else if (ev.mask & IN_MOVE_SELF) {
            /* A watched root moved: its paths are stale. Subdirectories are
             * handled by their parent's IN_MOVED_FROM. */
            for (size_t r = 0; r < w->nroots; r++)
                if (strcmp(w->dirs[i].path, w->roots[r].path) == 0) {
                    dir_remove_tree(w, w->roots[r].path);
                    break;
                }
        }
    }
    if (overflow)
        for (size_t r = 0; r < w->nroots; r++)
            if (walk(w, (uint32_t)r, w->roots[r].path, CG_WALK_WATCH_REPORT) < 0)
                return -1;
    return w->need_fallback ? switch_to_polling(w) : 0;
}

/* ---- public ---- */

void cg_strlist_clear(cg_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

static char **copy_list(const char *const *src, size_t n)
{
    char **dst = calloc(n ? n : 1, sizeof(*dst));
    if (!dst)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (!(dst[i] = strdup(src[i]))) {
            while (i--)
                free(dst[i]);
            free(dst);
            return NULL;
        }
    }
    return dst;
}

static void free_list(char **l, size_t n)
{
    for (size_t i = 0; l && i < n; i++)
        free(l[i]);
    free(l);
}

/* 1 when root `in` is `out` or lies below it. */
static int root_covers(const cg_wroot *out, const cg_wroot *in)
{
    size_t olen = out->relofs - 1; /* "/" has relofs 1: it covers everything */
    return olen == 0 || path_is_under(in->path, out->path, olen);
}

/* Resolves and checks the directories; drops those inside another one (and
 * repeats), so every directory is watched once, relative to the outermost. */
static int add_roots(cg_watch *w, const cg_watch_opts *o, char *err, size_t errlen)
{
    static const char *const dot[] = {"."};
    const char *const *dirs = o->ndirs ? o->dirs : dot;
    size_t ndirs = o->ndirs ? o->ndirs : 1;
    if (!(w->roots = calloc(ndirs, sizeof(*w->roots)))) {
        cg_set_err(err, errlen, "cannot start the file watcher: out of memory");
        return -1;
    }
    for (size_t i = 0; i < ndirs; i++) {
        struct stat st;
        char *real = realpath(dirs[i], NULL);
        if (!real || stat(real, &st) < 0) {
            cg_set_err(err, errlen, "cannot watch '%s': %s", dirs[i], strerror(errno));
            free(real);
            return -1;
        }
        w->roots[w->nroots++] = (cg_wroot){.path = real, .relofs = strlen(real) + 1};
        if (strcmp(real, "/") == 0)
            w->roots[w->nroots - 1].relofs = 1;
        if (!S_ISDIR(st.st_mode)) {
            cg_set_err(err, errlen, "cannot watch '%s': not a directory", dirs[i]);
            return -1;
        }
        if (access(real, R_OK | X_OK) < 0) {
            cg_set_err(err, errlen, "cannot watch '%s': %s", dirs[i], strerror(errno));
            return -1;
        }
    }
    for (size_t i = 0; i < w->nroots;) {
        int drop = 0;
        for (size_t j = 0; j < w->nroots && !drop; j++)
            drop = j != i && root_covers(&w->roots[j], &w->roots[i]) &&
                   (j < i || !root_covers(&w->roots[i], &w->roots[j]));
        if (drop) {
            free(w->roots[i].path);
            w->roots[i] = w->roots[--w->nroots];
        } else {
            i++;
        }
    }
    return 0;
}

cg_watch *cg_watch_new(const cg_watch_opts *opts, char *err, size_t errlen)
{
    cg_watch *w = calloc(1, sizeof(*w));
    if (!w)
        goto fail_alloc;
    w->ifd = -1;
    w->backend = opts->poll ? CG_BACKEND_POLLING : CG_BACKEND_INOTIFY;
    double iv = opts->poll_interval;
    if (!(iv > 0) || iv > 86400)
        iv = 0.25;
    w->interval_ns = (int64_t)(iv * 1e9);
    w->scan_budget = CG_SCAN_BUDGET;
    if (!(w->cwd = getcwd(NULL, 0)))
        goto fail_errno;
    w->cwdlen = strlen(w->cwd);
    w->ninclude = opts->ninclude;
    w->nexclude = opts->nexclude;
    if (!(w->include = copy_list(opts->include, opts->ninclude)) ||
        !(w->exclude = copy_list(opts->exclude, opts->nexclude)) ||
        !(w->dirbuf = malloc(CG_DIRBUF)))
        goto fail_alloc;
    if (add_roots(w, opts, err, errlen) < 0)
        goto fail;

    if (w->backend == CG_BACKEND_INOTIFY) {
        w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (w->ifd < 0) {
            cg_set_err(err, errlen, "inotify unavailable (%s), polling", strerror(errno));
            w->backend = CG_BACKEND_POLLING;
        } else if (!(w->evbuf = malloc(CG_EVBUF))) {
            goto fail_alloc;
        }
    }
    if (w->backend == CG_BACKEND_INOTIFY) {
        for (size_t r = 0; r < w->nroots; r++)
            if (walk(w, (uint32_t)r, w->roots[r].path, CG_WALK_WATCH) < 0)
                goto fail_alloc;
        if (w->need_fallback) {
            cg_set_err(err, errlen,
                       "inotify watch limit reached (fs.inotify.max_user_watches), "
                       "polling");
            if (switch_to_polling(w) < 0)
                goto fail_alloc;
        }
    } else if (poll_step(w, CG_WALK_BASELINE, SIZE_MAX) < 0) {
        goto fail_alloc;
    }
    return w;

fail_errno:
    cg_set_err(err, errlen, "cannot start the file watcher: %s", strerror(errno));
    goto fail;
fail_alloc:
    cg_set_err(err, errlen, "cannot start the file watcher: out of memory");
fail:
    cg_watch_free(w);
    return NULL;
}

void cg_watch_free(cg_watch *w)
{
    if (!w)
        return;
    if (w->ifd >= 0)
        close(w->ifd);
    for (size_t i = 0; i < w->ndirs; i++)
        free(w->dirs[i].path);
    for (size_t i = 0; i < w->nfiles; i++)
        free(w->files[i].path);
    for (size_t i = 0; i < w->nroots; i++)
        free(w->roots[i].path);
    free_list(w->include, w->ninclude);
    free_list(w->exclude, w->nexclude);
    free_list(w->pending, w->npending);
    free(w->dirs);
    free(w->dir_ix.slots);
    free(w->files);
    free(w->file_ix.slots);
    free(w->seen);
    free(w->seen_ix.slots);
    free(w->stack);
    free(w->stackent);
    free(w->roots);
    free(w->dirbuf);
    free(w->evbuf);
    free(w->cwd);
    free(w);
}

const char *cg_watch_backend(const cg_watch *w)
{
    return w->backend == CG_BACKEND_INOTIFY ? "inotify" : "polling";
}

int cg_watch_fd(const cg_watch *w)
{
    return w->backend == CG_BACKEND_INOTIFY ? w->ifd : -1;
}

int cg_watch_timeout_ms(const cg_watch *w)
{
    if (w->backend == CG_BACKEND_INOTIFY)
        return -1;
    if (w->scanning)
        return 0; /* a pass is half done: continue it soon */
    int64_t left = w->next_scan_ns - now_ns();
    if (left <= 0)
        return 0;
    int64_t ms = (left + 999999) / 1000000;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

int cg_watch_process(cg_watch *w, cg_strlist *changed)
{
    int rc = 0;
    w->npending = 0;
    w->nseen = 0;
    if (w->seen_ix.cap > 4096 && changed->n < w->seen_ix.cap / 16) {
        free(w->seen_ix.slots); /* grown by a burst: do not clear it on every call */
        w->seen_ix = (cg_index){0};
    }
    index_clear(&w->seen_ix);
    for (size_t i = 0; i < changed->n; i++)
        if (seen_add(w, changed->items[i]) < 0)
            goto fail_nomem;

    if (w->backend == CG_BACKEND_INOTIFY) {
        if (inotify_process(w) < 0)
            goto fail;
    } else {
        if (w->ifd >= 0) { /* after a runtime fallback: drain what is left */
            while (read(w->ifd, w->evbuf, CG_EVBUF) > 0)
                ;
        }
        if ((w->scanning || now_ns() >= w->next_scan_ns) &&
            poll_step(w, CG_WALK_SCAN, w->scan_budget) < 0)
            goto fail;
    }

    if (w->npending) {
        char **items = realloc(changed->items, (changed->n + w->npending) * sizeof(*items));
        if (!items)
            goto fail_nomem;
        memcpy(items + changed->n, w->pending, w->npending * sizeof(*items));
        changed->items = items;
        changed->n += w->npending;
    }
    rc = (int)w->npending;
    w->npending = 0;
    w->nseen = 0;
    return rc;

fail_nomem:
    errno = ENOMEM;
fail:
    rc = errno;
    for (size_t i = 0; i < w->npending; i++)
        free(w->pending[i]);
    w->npending = 0;
    w->nseen = 0;
    errno = rc;
    return -1;
}
