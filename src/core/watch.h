/* File watcher for --reload: inotify (recursive, following directories created
 * later, atomic saves, moves, deletes; queue overflow triggers a rescan) with
 * a stat-polling fallback. Pure C; the caller owns the event loop: it polls
 * cg_watch_fd() for readability or waits cg_watch_timeout_ms(), then calls
 * cg_watch_process(). Debouncing is the caller's (supervisor's) job. */
#ifndef CG_WATCH_H
#define CG_WATCH_H

#include <stddef.h>

#include "options.h" /* cg_strlist */

typedef struct cg_watch cg_watch;

typedef struct cg_watch_opts {
    const char *const *dirs; /* directories to watch recursively (default: ".") */
    size_t ndirs;
    const char *const *include; /* patterns a changed file must match (none: every file;
                                   the binding applies the default "*.py") */
    size_t ninclude;
    const char *const *exclude; /* patterns that exclude a file or directory */
    size_t nexclude;
    int poll;             /* 1: stat polling instead of inotify */
    double poll_interval; /* seconds between scans in polling mode (e.g. 0.25) */
} cg_watch_opts;

/**
 * Starts watching. Directories named .git, __pycache__, .venv, venv,
 * node_modules, site-packages and every hidden directory (".*") are never
 * descended into. A pattern matches a file's name, or its path relative to
 * the watched directory it is under; "*" does not cross '/', "**" matches
 * any number of directories (including none), "?" one character, "[abc]"
 * a class. Returns NULL with a message in err on failure (e.g. a directory
 * that does not exist). inotify unavailable when poll is 0 is NOT a failure:
 * it falls back to polling, says so through cg_watch_backend, and leaves the
 * reason in err (err is otherwise untouched on success).
 */
cg_watch *cg_watch_new(const cg_watch_opts *opts, char *err, size_t errlen);

/** Stops watching and frees everything. */
void cg_watch_free(cg_watch *w);

/** "inotify" or "polling". */
const char *cg_watch_backend(const cg_watch *w);

/** The fd to poll for readability (inotify), or -1 in polling mode. The
 * backend can change to polling inside cg_watch_process (the inotify watch
 * limit reached by new directories): ask for the fd and the timeout again
 * before every wait. */
int cg_watch_fd(const cg_watch *w);

/** Milliseconds until the next scan is due in polling mode (0 = now), or -1
 * with inotify (no timeout needed). */
int cg_watch_timeout_ms(const cg_watch *w);

/**
 * Handles pending events (inotify: reads without blocking; polling: scans when
 * due). Appends each changed file that passes include/exclude to `changed`
 * as a path relative to the current directory (no duplicates within one call;
 * a path already in `changed` is not added again), and starts watching new
 * directories. Returns the number appended, or -1 on an error (errno set).
 * Bounded work per call.
 */
int cg_watch_process(cg_watch *w, cg_strlist *changed);

/** 1 when `path` (a name, or a relative path with '/') matches `pattern` per the
 * rules above. */
int cg_glob_match(const char *pattern, const char *path);

/** Frees the items of a list and empties it. */
void cg_strlist_clear(cg_strlist *l);

#endif
