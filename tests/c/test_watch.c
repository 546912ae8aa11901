/* Tests of the file watcher on real files in a temporary directory, for both
 * backends: glob rules, in-place writes, atomic saves, deletes, moves,
 * directories created or moved in later, excludes, ignored directories,
 * include filters, bursts, queue overflow, fallback to polling.
 *
 * The .c is included to reach static functions (forcing a fallback, checking
 * the file table after deletions).
 *
 * CASGI_WATCH_BENCH=50000 ./test_watch also times polling passes over a tree
 * of that many files (reported as TAP comments). The temporary directory is
 * made in $CASGI_WATCH_TMPDIR, else /dev/shm when writable, else /tmp. */
#include <stdlib.h>
#include <string.h>

/* Allocations made by watch.c, counted to check that a steady polling pass
 * makes none. */
static size_t watch_allocs;
static void *count_malloc(size_t n)
{
    watch_allocs++;
    return malloc(n);
}
static void *count_calloc(size_t n, size_t size)
{
    watch_allocs++;
    return calloc(n, size);
}
static void *count_realloc(void *p, size_t n)
{
    watch_allocs++;
    return realloc(p, n);
}
static char *count_strdup(const char *s)
{
    watch_allocs++;
    return strdup(s);
}
#define malloc count_malloc
#define calloc count_calloc
#define realloc count_realloc
#define strdup count_strdup
#include "watch.c"
#undef malloc
#undef calloc
#undef realloc
#undef strdup

#include <ftw.h>
#include <poll.h>
#include <sys/resource.h>

#include "tap.h"

static char base[PATH_MAX]; /* the temporary directory, also the working directory */
static int api_errors;      /* process() failures, miscounted returns, duplicates */

/* ---- file helpers ---- */

static void write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        printf("# cannot create %s: %s\n", path, strerror(errno));
        return;
    }
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len)
        printf("# short write to %s\n", path);
    close(fd);
}

static void mkdirs(const char *path)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(buf, 0755);
            *p = '/';
        }
    }
    mkdir(buf, 0755);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static void rm_rf(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Sets the modification time `delta` seconds away from now. */
static void bump_mtime(const char *path, int delta)
{
    struct timespec ts[2];
    clock_gettime(CLOCK_REALTIME, &ts[0]);
    ts[0].tv_sec += delta;
    ts[1] = ts[0];
    utimensat(AT_FDCWD, path, ts, 0);
}

/* ---- list helpers ---- */

static int has(const cg_strlist *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->items[i], s) == 0)
            return 1;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static size_t count_dups(const cg_strlist *l)
{
    size_t dups = 0;
    if (l->n < 2)
        return 0;
    char **copy = malloc(l->n * sizeof(*copy));
    if (!copy)
        return 1;
    memcpy(copy, l->items, l->n * sizeof(*copy));
    qsort(copy, l->n, sizeof(*copy), cmp_str);
    for (size_t i = 1; i < l->n; i++)
        dups += strcmp(copy[i - 1], copy[i]) == 0;
    free(copy);
    return dups;
}

static int64_t ms_now(void)
{
    return now_ns() / 1000000;
}

/* Waits on the watcher's fd or timeout and processes, until every path in
 * `want` (NULL-terminated; NULL = none: just run for timeout_ms) is in `got`
 * or timeout_ms passes. */
static int wait_all(cg_watch *w, cg_strlist *got, const char *const *want, int timeout_ms)
{
    int64_t deadline = ms_now() + timeout_ms;
    int done = 0;
    for (;;) {
        done = want != NULL;
        for (size_t i = 0; want && want[i]; i++)
            done &= has(got, want[i]);
        int64_t left = deadline - ms_now();
        if (done || left <= 0)
            break;
        int fd = cg_watch_fd(w), t = cg_watch_timeout_ms(w);
        if (t < 0 || t > left)
            t = (int)left;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        poll(&pfd, fd >= 0 ? 1 : 0, t);
        size_t before = got->n;
        int n = cg_watch_process(w, got);
        if (n < 0 || (size_t)n != got->n - before) {
            printf("# cg_watch_process returned %d (%s)\n", n, strerror(errno));
            api_errors++;
            break;
        }
    }
    if (count_dups(got)) {
        printf("# duplicates in the reported list\n");
        api_errors++;
    }
    return done;
}

static int wait_for(cg_watch *w, cg_strlist *got, const char *want)
{
    const char *const list[] = {want, NULL};
    return wait_all(w, got, list, 3000);
}

/* After a sentinel was seen: a little longer, so that polling finishes the
 * scan in progress and inotify reads what is queued. */
static void settle(cg_watch *w, cg_strlist *got)
{
    wait_all(w, got, NULL, w->backend == CG_BACKEND_POLLING ? 80 : 30);
}

static void show(const cg_strlist *l)
{
    for (size_t i = 0; i < l->n && i < 20; i++)
        printf("#   reported: %s\n", l->items[i]);
}

/* ---- glob ---- */

static void test_glob(void)
{
    static const struct {
        const char *pat, *path;
        int want;
    } cases[] = {
        {"*.py", "main.py", 1},
        {"*.py", "main.pyc", 0},
        {"*.py", "app/main.py", 0}, /* '*' never crosses '/' */
        {"*.py", ".py", 1},
        {"*", "", 1},
        {"*", "a/b", 0},
        {"", "", 1},
        {"", "a", 0},
        {"a", "a", 1},
        {"a", "ab", 0},
        {"ab", "a", 0},
        {"*.py[cod]", "x.pyc", 1},
        {"*.py[cod]", "x.pyo", 1},
        {"*.py[cod]", "x.py", 0},
        {"*.py[cod]", "x.pyx", 0},
        {".py[cod]", "x.pyc", 0},
        {".*", ".hidden", 1},
        {".*", ".main.py.swp", 1},
        {".*", "main.py", 0},
        {".sw.*", ".sw.x", 1},
        {"*.sw?", "main.py.swp", 1},
        {"*.sw?", "main.py.swpx", 0},
        {"~*", "~main.py", 1},
        {"~*", "main.py~", 0},
        {"*~", "main.py~", 1},
        {"m?in.py", "main.py", 1},
        {"m?in.py", "mn.py", 0},
        {"a?b", "a/b", 0}, /* '?' never matches '/' */
        {"[lm]ain.py", "main.py", 1},
        {"[lm]ain.py", "rain.py", 0},
        {"[a-c]x", "bx", 1},
        {"[a-c]x", "dx", 0},
        {"[!_]*.py", "main.py", 1},
        {"[!_]*.py", "_private.py", 0},
        {"[^_]*.py", "_private.py", 0},
        {"[]]x", "]x", 1},
        {"[!]]x", "]x", 0},
        {"[!]]x", "ax", 1},
        {"[a-]x", "-x", 1},
        {"[", "[", 1},
        {"[abc", "[abc", 1},
        {"[abc", "a", 0},
        {"a/[/]b", "a/[/]b", 1}, /* a '[' closed only across '/' is literal */
        {"\\*", "*", 1},
        {"\\*", "a", 0},
        {"\\?x", "?x", 1},
        {"[\\]]x", "]x", 1},
        {"*a*b*c", "xaxbxc", 1},
        {"*a*b*c", "xaxbxcx", 0},
        {"*a", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab", 0},
        {"a*a*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0},
        {"app/*.py", "app/main.py", 1},
        {"app/*.py", "app/api/main.py", 0},
        {"app/*.py", "main.py", 0},
        {"app/**/*.py", "app/main.py", 1}, /* "**" may be empty */
        {"app/**/*.py", "app/a/main.py", 1},
        {"app/**/*.py", "app/a/b/c/main.py", 1},
        {"app/**/*.py", "app/a/b/c/main.txt", 0},
        {"app/**/*.py", "other/main.py", 0},
        {"**/*.py", "main.py", 1},
        {"**/*.py", "a/b/main.py", 1},
        {"**", "a/b/c", 1},
        {"**", "a", 1},
        {"**/api/main.py", "app/api/main.py", 1},
        {"**/api/main.py", "api/main.py", 1},
        {"**/api/main.py", "app/xapi/main.py", 0},
        {"app/**", "app/x/y.py", 1},
        {"app/**", "app", 1},
        {"app/**", "apps/x.py", 0},
        {"a/**/b/**/c", "a/b/c", 1},
        {"a/**/b/**/c", "a/x/b/y/z/c", 1},
        {"a/**/b/**/c", "a/x/y/z/c", 0},
        {"a/**/**/b", "a/b", 1},
        {"**/**/**/**/**/**/**/**/x", "a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/y", 0},
        {"a**b", "axxb", 1}, /* "**" inside a component is "*" */
        {"a**b", "ax/xb", 0},
        {"build/", "build/", 1}, /* how directories are tested with a '/' */
        {"build/", "build", 0},
        {"*/", "build/", 1},
        {"tests/**", "tests/", 1},
        {"app/api/main.py", "app/api/main.py", 1},
        {"app/api/main.py", "app/api/main.pyc", 0},
        {"/app/main.py", "app/main.py", 0},
        {"a//b", "a//b", 1},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = cg_glob_match(cases[i].pat, cases[i].path);
        if (got != cases[i].want) {
            bad++;
            printf("# glob '%s' vs '%s': got %d, want %d\n", cases[i].pat, cases[i].path, got,
                   cases[i].want);
        }
    }
    ok(bad == 0, "glob table: %zu cases", sizeof(cases) / sizeof(cases[0]));

    /* Matching a name or a path relative to the watched directory. */
    cg_watch w = {0};
    char *inc[] = {"*.py", "app/templates/**/*.html"}, *exc[] = {".*", "tests/**", "*_test.py"};
    w.include = inc;
    w.ninclude = 2;
    w.exclude = exc;
    w.nexclude = 3;
    ok(file_matches(&w, "main.py", "app/main.py"), "include by name");
    ok(file_matches(&w, "i.html", "app/templates/x/i.html"), "include by relative path");
    ok(!file_matches(&w, "i.html", "other/i.html"), "include by path is anchored");
    ok(!file_matches(&w, "x.txt", "x.txt"), "not included");
    ok(!file_matches(&w, ".main.py", "app/.main.py"), "exclude wins over include");
    ok(!file_matches(&w, "a_test.py", "app/a_test.py"), "exclude by name");
    ok(!file_matches(&w, "a.py", "tests/unit/a.py"), "exclude by path");
    w.ninclude = 0;
    ok(file_matches(&w, "x.txt", "x.txt"), "no include pattern: every file");
}

/* ---- scenarios, run for each backend ---- */

static cg_watch *start(int poll_mode, const char *dir, const char *const *inc, size_t ninc,
                       const char *const *exc, size_t nexc)
{
    const char *dirs[] = {dir};
    cg_watch_opts o = {.dirs = dirs,
                       .ndirs = 1,
                       .include = inc,
                       .ninclude = ninc,
                       .exclude = exc,
                       .nexclude = nexc,
                       .poll = poll_mode,
                       .poll_interval = 0.02};
    char err[256] = "";
    cg_watch *w = cg_watch_new(&o, err, sizeof(err));
    if (!w)
        printf("# cg_watch_new: %s\n", err);
    return w;
}

static void scenarios(int poll_mode)
{
    const char *mode = poll_mode ? "polling" : "inotify";
    static const char *const inc[] = {"*.py", "app/templates/**/*.html"};
    static const char *const exc[] = {".*", "*.py[cod]", "*~", "build", "gen/"};
    cg_strlist got = {0};

    rm_rf("tree");
    rm_rf("outside");
    mkdirs("tree/app/templates");
    mkdirs("tree/.git");
    mkdirs("tree/__pycache__");
    mkdirs("tree/build");
    mkdirs("outside");
    write_file("tree/app/main.py", "v1\n");
    write_file("tree/app/mod.py", "m\n");

    cg_watch *w = start(poll_mode, "tree", inc, 2, exc, 5);
    if (!ok(w != NULL, "%s: started", mode))
        return;
    w->scan_budget = 64; /* polling passes in many slices: every case below crosses them */
    ok(strcmp(cg_watch_backend(w), mode) == 0, "%s: backend", mode);
    ok(poll_mode ? cg_watch_fd(w) == -1 && cg_watch_timeout_ms(w) >= 0
                 : cg_watch_fd(w) >= 0 && cg_watch_timeout_ms(w) == -1,
       "%s: fd and timeout", mode);
    ok(wait_all(w, &got, NULL, 60) == 0 && got.n == 0, "%s: nothing reported at start", mode);

    /* In-place write: open, write, close. */
    write_file("tree/app/main.py", "version 2\n");
    ok(wait_for(w, &got, "tree/app/main.py"), "%s: in-place write", mode);
    settle(w, &got);
    ok(got.n == 1, "%s: reported once (%zu)", mode, got.n);
    show(&got);
    cg_strlist_clear(&got);

    /* Same size, only the mtime differs (polling compares mtime_ns). */
    write_file("tree/app/main.py", "version 3\n");
    bump_mtime("tree/app/main.py", 5);
    ok(wait_for(w, &got, "tree/app/main.py"), "%s: same-size rewrite", mode);
    settle(w, &got);
    cg_strlist_clear(&got);

    /* A new file. */
    write_file("tree/app/new.py", "n\n");
    ok(wait_for(w, &got, "tree/app/new.py"), "%s: new file", mode);
    settle(w, &got);
    cg_strlist_clear(&got);

    /* Atomic save: a hidden temporary written, then renamed over the target. */
    write_file("tree/app/.main.py.tmp1234", "version 4!\n");
    rename("tree/app/.main.py.tmp1234", "tree/app/main.py");
    ok(wait_for(w, &got, "tree/app/main.py"), "%s: atomic save by rename", mode);
    settle(w, &got);
    ok(got.n == 1, "%s: only the target is reported (%zu)", mode, got.n);
    show(&got);
    cg_strlist_clear(&got);

    /* The JetBrains way: tmp written, target renamed away, tmp renamed in,
     * old removed. Same size as before: polling sees the new inode. */
    write_file("tree/app/main.py___jb_tmp___", "version 5!\n");
    rename("tree/app/main.py", "tree/app/main.py___jb_old___");
    rename("tree/app/main.py___jb_tmp___", "tree/app/main.py");
    unlink("tree/app/main.py___jb_old___");
    ok(wait_for(w, &got, "tree/app/main.py"), "%s: save through a backup rename", mode);
    settle(w, &got);
    ok(got.n == 1, "%s: no temporary names reported (%zu)", mode, got.n);
    cg_strlist_clear(&got);

    /* Delete. */
    unlink("tree/app/new.py");
    ok(wait_for(w, &got, "tree/app/new.py"), "%s: delete", mode);
    cg_strlist_clear(&got);

    /* Moves out of and into the tree. */
    rename("tree/app/mod.py", "outside/mod.py");
    ok(wait_for(w, &got, "tree/app/mod.py"), "%s: move out", mode);
    cg_strlist_clear(&got);
    write_file("outside/in.py", "i\n");
    rename("outside/in.py", "tree/app/in.py");
    ok(wait_for(w, &got, "tree/app/in.py"), "%s: move in", mode);
    cg_strlist_clear(&got);

    /* Directories created later: nested, and a file right after mkdir,
     * before the watcher had a chance to look. */
    mkdirs("tree/a/b/c");
    write_file("tree/a/b/c/x.py", "x\n");
    mkdir("tree/d", 0755);
    write_file("tree/d/y.py", "y\n");
    {
        const char *const want[] = {"tree/a/b/c/x.py", "tree/d/y.py", NULL};
        ok(wait_all(w, &got, want, 3000), "%s: files in directories created after start", mode);
    }
    cg_strlist_clear(&got);
    write_file("tree/a/b/c/x2.py", "x\n");
    ok(wait_for(w, &got, "tree/a/b/c/x2.py"), "%s: new nested directory is watched", mode);
    cg_strlist_clear(&got);
    mkdirs("tree/e/f");
    wait_all(w, &got, NULL, 60); /* the empty directories are picked up first */
    write_file("tree/e/f/z.py", "z\n");
    ok(wait_for(w, &got, "tree/e/f/z.py"), "%s: file in a directory watched earlier", mode);
    cg_strlist_clear(&got);

    /* A directory tree moved in, renamed inside, then moved out. */
    mkdirs("outside/pkg/sub");
    write_file("outside/pkg/sub/m.py", "m\n");
    rename("outside/pkg", "tree/pkg");
    ok(wait_for(w, &got, "tree/pkg/sub/m.py"), "%s: directory moved in", mode);
    cg_strlist_clear(&got);
    rename("tree/pkg", "tree/pkg2");
    ok(wait_for(w, &got, "tree/pkg2/sub/m.py"), "%s: directory renamed inside", mode);
    cg_strlist_clear(&got);
    write_file("tree/pkg2/sub/n.py", "n\n");
    ok(wait_for(w, &got, "tree/pkg2/sub/n.py"), "%s: renamed directory, new path", mode);
    ok(!has(&got, "tree/pkg/sub/n.py"), "%s: renamed directory, no stale path", mode);
    cg_strlist_clear(&got);
    rename("tree/pkg2", "outside/pkg2");
    settle(w, &got);
    cg_strlist_clear(&got);
    write_file("outside/pkg2/sub/o.py", "o\n");
    write_file("outside/top.py", "t\n");

    /* Excluded and ignored: written, then a sentinel. */
    mkdirs("tree/node_modules/x");
    mkdirs("tree/venv");
    mkdirs("tree/.venv");
    mkdirs("tree/site-packages");
    mkdirs("tree/.hidden");
    mkdirs("tree/gen");
    mkdirs("tree/app/build");
    write_file("tree/app/x.pyc", "c");
    write_file("tree/app/.main.py.swp", "s");
    write_file("tree/app/main.py~", "b");
    write_file("tree/app/notes.txt", "t");
    write_file("tree/build/b.py", "b");
    write_file("tree/app/build/b.py", "b");
    write_file("tree/gen/g.py", "g");
    write_file("tree/.git/g.py", "g");
    write_file("tree/__pycache__/c.py", "c");
    write_file("tree/node_modules/x/n.py", "n");
    write_file("tree/venv/v.py", "v");
    write_file("tree/.venv/v.py", "v");
    write_file("tree/site-packages/s.py", "s");
    write_file("tree/.hidden/h.py", "h");
    write_file("tree/app/templates/index.html", "<p>");
    mkdirs("tree/other");
    write_file("tree/other/index.html", "<p>");
    write_file("tree/app/sentinel.py", "s");
    {
        const char *const want[] = {"tree/app/sentinel.py", "tree/app/templates/index.html", NULL};
        ok(wait_all(w, &got, want, 3000), "%s: sentinel and included template seen", mode);
    }
    settle(w, &got);
    ok(got.n == 2,
       "%s: excluded files, ignored and excluded directories, moved-out tree, "
       "non-included files: none reported (%zu)",
       mode, got.n);
    show(&got);
    cg_strlist_clear(&got);

    /* A burst: 100 new files and 100 writes to one file. */
    mkdir("tree/burst", 0755);
    char name[64];
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof(name), "tree/burst/f%03d.py", i);
        write_file(name, "b\n");
        snprintf(name, sizeof(name), "v%d\n", i);
        write_file("tree/app/main.py", name);
    }
    {
        const char *want[102];
        char names[100][32];
        for (int i = 0; i < 100; i++) {
            snprintf(names[i], sizeof(names[i]), "tree/burst/f%03d.py", i);
            want[i] = names[i];
        }
        want[100] = "tree/app/main.py";
        want[101] = NULL;
        ok(wait_all(w, &got, want, 4000), "%s: burst of 200 writes reported", mode);
        settle(w, &got);
        ok(got.n == 101, "%s: burst: each path once (%zu)", mode, got.n);
    }
    cg_strlist_clear(&got);

    /* `changed` is not cleared by the watcher: an already listed path is not
     * added again. */
    char *prev = strdup("tree/app/main.py");
    got.items = malloc(sizeof(*got.items));
    got.items[0] = prev;
    got.n = 1;
    write_file("tree/app/main.py", "again\n");
    write_file("tree/app/sentinel.py", "s2");
    ok(wait_for(w, &got, "tree/app/sentinel.py"), "%s: appends to a non-empty list", mode);
    settle(w, &got);
    ok(got.n == 2, "%s: a listed path is not added again (%zu)", mode, got.n);
    cg_strlist_clear(&got);

    /* Many files created, half of them deleted: exactly those reported, and
     * the table stays consistent (polling removes entries by back-shifting). */
    mkdir("tree/many", 0755);
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof(name), "tree/many/m%04d.py", i);
        write_file(name, "m");
    }
    snprintf(name, sizeof(name), "tree/many/m%04d.py", 999);
    ok(wait_for(w, &got, name), "%s: 1000 new files", mode);
    settle(w, &got);
    ok(got.n == 1000, "%s: 1000 new files reported (%zu)", mode, got.n);
    cg_strlist_clear(&got);
    if (poll_mode) {
        size_t allocs = watch_allocs;
        w->next_scan_ns = 0;
        int n = cg_watch_process(w, &got), calls = 1;
        int sliced = w->scanning && cg_watch_timeout_ms(w) == 0;
        while (w->scanning && n >= 0 && calls < 1000) {
            n = cg_watch_process(w, &got);
            calls++;
        }
        ok(sliced && n == 0 && got.n == 0 && calls > 1,
           "polling: a pass over 1000 entries is done in slices (%d calls)", calls);
        ok(cg_watch_timeout_ms(w) > 0, "polling: then waits for the next pass");
        ok(watch_allocs == allocs, "polling: a pass without changes allocates nothing (%zu)",
           watch_allocs - allocs);
    }
    for (int i = 0; i < 1000; i += 2) {
        snprintf(name, sizeof(name), "tree/many/m%04d.py", i);
        unlink(name);
    }
    snprintf(name, sizeof(name), "tree/many/m%04d.py", 998);
    ok(wait_for(w, &got, name), "%s: 500 deletions", mode);
    settle(w, &got);
    int odd_reported = 0;
    for (size_t i = 0; i < got.n; i++)
        odd_reported += got.items[i][strlen(got.items[i]) - 4] % 2 == 1;
    ok(got.n == 500 && odd_reported == 0, "%s: exactly the 500 deleted reported (%zu)", mode,
       got.n);
    cg_strlist_clear(&got);
    if (poll_mode) {
        int findable = 0;
        char full[PATH_MAX + 64];
        for (int i = 1; i < 1000; i += 2) {
            snprintf(full, sizeof(full), "%s/tree/many/m%04d.py", base, i);
            findable += file_find(w, full, hash_str(full)) >= 0;
        }
        size_t indexed = 0;
        for (size_t i = 0; i < w->nfiles; i++)
            indexed += file_find(w, w->files[i].path, w->files[i].hash) == (long)i;
        ok(findable == 500 && indexed == w->nfiles && w->file_ix.count == w->nfiles,
           "polling: table consistent after deletions (%d, %zu/%zu)", findable, indexed, w->nfiles);
    }
    write_file("tree/many/m0001.py", "changed");
    ok(wait_for(w, &got, "tree/many/m0001.py"), "%s: survivor still watched", mode);
    cg_strlist_clear(&got);

    ok(api_errors == 0, "%s: process() counts right, no duplicates, no errors", mode);
    cg_watch_free(w);
    cg_strlist_clear(&got);
}

/* Paths outside the working directory are absolute. */
static void test_absolute(int poll_mode)
{
    const char *mode = poll_mode ? "polling" : "inotify";
    cg_strlist got = {0};
    char want[PATH_MAX + 32];
    rm_rf("abs");
    mkdirs("abs/w");
    mkdirs("abs/cwd");
    if (chdir("abs/cwd") < 0) {
        ok(0, "%s: absolute paths (setup)", mode);
        return;
    }
    cg_watch *w = start(poll_mode, "../w", NULL, 0, NULL, 0);
    if (!w) {
        ok(0, "%s: absolute paths (start)", mode);
        if (chdir(base) < 0)
            printf("# chdir back failed\n");
        return;
    }
    write_file("../w/q.txt", "q");
    snprintf(want, sizeof(want), "%s/abs/w/q.txt", base);
    int seen = wait_for(w, &got, want);
    ok(seen, "%s: a path outside the working directory at start is absolute", mode);
    if (!seen)
        show(&got);
    if (chdir(base) < 0)
        printf("# chdir back failed\n");
    cg_strlist_clear(&got);
    cg_watch_free(w);
}

/* Links to directories are not followed (a loop would never end); a link to
 * a file counts as a file. */
static void test_symlinks(int poll_mode)
{
    const char *mode = poll_mode ? "polling" : "inotify";
    rm_rf("ln");
    mkdirs("ln/sub");
    write_file("ln/sub/x.py", "x");
    if (symlink(".", "ln/loop") < 0 || symlink("..", "ln/sub/up") < 0 ||
        symlink("sub/x.py", "ln/l.py") < 0 || symlink("missing.py", "ln/dangling.py") < 0) {
        ok(0, "%s: symlinks (setup)", mode);
        return;
    }
    static const char *const inc[] = {"*.py"};
    cg_watch *w = start(poll_mode, "ln", inc, 1, NULL, 0);
    if (!ok(w != NULL, "%s: a tree with link loops is watched", mode))
        return;
    if (poll_mode)
        ok(w->nfiles == 2, "polling: the file and the link to it are tracked (%zu)", w->nfiles);
    else
        ok(w->ndirs == 2, "inotify: links to directories not followed (%zu watches)", w->ndirs);
    cg_strlist got = {0};
    write_file("ln/sub/x.py", "changed");
    ok(wait_for(w, &got, "ln/sub/x.py"), "%s: the target of a link is watched", mode);
    if (poll_mode)
        ok(has(&got, "ln/l.py") || wait_for(w, &got, "ln/l.py"),
           "polling: a link to a changed file is reported");
    cg_strlist_clear(&got);
    if (symlink("sub/x.py", "ln/new.py") == 0)
        ok(wait_for(w, &got, "ln/new.py"), "%s: a new link to a file is reported", mode);
    cg_strlist_clear(&got);
    cg_watch_free(w);
    rm_rf("ln");
}

/* Queue overflow: more events than the kernel queues; the rescan reports
 * files whose events were dropped. */
static void test_overflow(void)
{
    long maxq = 0;
    FILE *f = fopen("/proc/sys/fs/inotify/max_queued_events", "r");
    if (f) {
        if (fscanf(f, "%ld", &maxq) != 1)
            maxq = 0;
        fclose(f);
    }
    if (maxq <= 0 || maxq > 20000) {
        ok(1, "# SKIP overflow: max_queued_events is %ld", maxq);
        return;
    }
    rm_rf("ovf");
    mkdirs("ovf");
    cg_watch *w = start(0, "ovf", NULL, 0, NULL, 0);
    if (!ok(w && w->backend == CG_BACKEND_INOTIFY, "overflow: started"))
        return;
    int nfiles = (int)(maxq / 3) + 600; /* create + modify + close_write each */
    char name[64];
    for (int i = 0; i < nfiles; i++) {
        snprintf(name, sizeof(name), "ovf/f%05d", i);
        write_file(name, "o");
    }
    snprintf(name, sizeof(name), "ovf/f%05d", nfiles - 1);
    cg_strlist got = {0};
    ok(wait_for(w, &got, name), "overflow: a file whose events were dropped is reported");
    settle(w, &got);
    ok(got.n == (size_t)nfiles, "overflow: every file once (%zu of %d)", got.n, nfiles);
    cg_strlist_clear(&got);
    write_file("ovf/after", "a");
    ok(wait_for(w, &got, "ovf/after"), "overflow: still watching afterwards");
    cg_strlist_clear(&got);
    cg_watch_free(w);
    rm_rf("ovf");
}

/* The watch limit reached while a new directory is handled: that directory's
 * files are still reported and the watcher continues by polling. */
static void test_runtime_fallback(void)
{
    rm_rf("fb");
    mkdirs("fb/app");
    cg_watch *w = start(0, "fb", NULL, 0, NULL, 0);
    if (!ok(w && w->backend == CG_BACKEND_INOTIFY, "fallback: started with inotify"))
        return;
    cg_strlist got = {0};
    w->need_fallback = 1; /* as if inotify_add_watch had failed with ENOSPC */
    mkdirs("fb/new/deep");
    write_file("fb/new/deep/n.py", "n");
    ok(wait_for(w, &got, "fb/new/deep/n.py"), "fallback: files of the new directory reported");
    ok(strcmp(cg_watch_backend(w), "polling") == 0 && cg_watch_fd(w) == -1 &&
           cg_watch_timeout_ms(w) >= 0 && w->ndirs == 0,
       "fallback: switched to polling");
    cg_strlist_clear(&got);
    write_file("fb/app/a.py", "a");
    write_file("fb/new/deep/n.py", "changed");
    {
        const char *const want[] = {"fb/app/a.py", "fb/new/deep/n.py", NULL};
        ok(wait_all(w, &got, want, 3000), "fallback: polling sees later changes");
    }
    cg_strlist_clear(&got);
    cg_watch_free(w);
    rm_rf("fb");
}

/* inotify unavailable at start (no descriptor left): polling, with a reason. */
static void test_start_fallback(void)
{
    struct rlimit old, low;
    mkdirs("sf");
    write_file("sf/s.py", "s");
    int probe = dup(0);
    if (probe < 0 || getrlimit(RLIMIT_NOFILE, &old) < 0) {
        ok(0, "start fallback: setup");
        return;
    }
    close(probe);
    low = old;
    low.rlim_cur = (rlim_t)probe; /* the lowest free descriptor is now out of range */
    const char *dirs[] = {"sf"};
    cg_watch_opts o = {.dirs = dirs, .ndirs = 1, .poll_interval = 0.02};
    char err[256] = "";
    setrlimit(RLIMIT_NOFILE, &low);
    cg_watch *w = cg_watch_new(&o, err, sizeof(err));
    setrlimit(RLIMIT_NOFILE, &old);
    ok(w && strcmp(cg_watch_backend(w), "polling") == 0 && strstr(err, "inotify"),
       "start fallback: polling when inotify_init1 fails (%s)", err);
    if (w) {
        cg_strlist got = {0};
        write_file("sf/t.py", "t");
        ok(wait_for(w, &got, "sf/t.py"), "start fallback: polling works");
        cg_strlist_clear(&got);
    }
    cg_watch_free(w);
    rm_rf("sf");
}

static void test_errors(void)
{
    char err[256] = "";
    const char *missing[] = {"no/such/dir"};
    cg_watch_opts o = {.dirs = missing, .ndirs = 1};
    cg_watch *w = cg_watch_new(&o, err, sizeof(err));
    ok(!w && strstr(err, "no/such/dir") && strstr(err, "No such file"),
       "missing directory: error (%s)", err);
    write_file("plain", "p");
    const char *plain[] = {".", "plain"};
    o.dirs = plain;
    o.ndirs = 2;
    w = cg_watch_new(&o, err, sizeof(err));
    ok(!w && strstr(err, "not a directory"), "a file as directory: error (%s)", err);
    unlink("plain");
    o.poll = 1;
    w = cg_watch_new(&o, NULL, 0);
    ok(w == NULL, "no error buffer: still fails cleanly");

    /* Default directory ".", nested roots merged. */
    mkdirs("roots/inner");
    const char *nested[] = {"roots/inner", "roots", "roots/", "roots/inner/.."};
    o.dirs = nested;
    o.ndirs = 4;
    o.poll = 0;
    w = cg_watch_new(&o, err, sizeof(err));
    ok(w && w->nroots == 1 && strstr(w->roots[0].path, "/roots") &&
           strcmp(w->roots[0].path + strlen(w->roots[0].path) - 6, "/roots") == 0,
       "nested and repeated directories are watched once");
    cg_watch_free(w);
    o.ndirs = 0;
    o.dirs = NULL;
    w = cg_watch_new(&o, err, sizeof(err));
    ok(w && w->nroots == 1 && strcmp(w->roots[0].path, base) == 0, "default directory is '.'");
    cg_watch_free(w);
    rm_rf("roots");

    cg_strlist l = {0};
    cg_strlist_clear(&l);
    ok(l.items == NULL && l.n == 0, "clearing an empty list");
}

/* CASGI_WATCH_BENCH=N: one polling scan of N files (100 per directory). */
static void bench(long n)
{
    char name[128];
    rm_rf("bench");
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        if (i % 100 == 0) {
            snprintf(name, sizeof(name), "bench/d%03ld/s%03ld", i / 10000, i / 100 % 100);
            mkdirs(name);
        }
        snprintf(name, sizeof(name), "bench/d%03ld/s%03ld/m%02ld.py", i / 10000, i / 100 % 100,
                 i % 100);
        write_file(name, "x = 1\n");
    }
    int64_t t1 = now_ns();
    static const char *const inc[] = {"*.py"};
    static const char *const exc[] = {".*", ".py[cod]", ".sw.*", "~*"};
    cg_watch *w = start(1, "bench", inc, 1, exc, 4);
    int64_t t2 = now_ns();
    cg_strlist got = {0};
    int64_t best = INT64_MAX, total = 0, slice_max = 0;
    int calls = 0;
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    for (int k = 0; k < 5; k++) {
        w->next_scan_ns = 0;
        int64_t s = now_ns();
        do {
            int64_t c = now_ns();
            cg_watch_process(w, &got);
            c = now_ns() - c;
            slice_max = c > slice_max ? c : slice_max;
            calls++;
        } while (w->scanning);
        int64_t d = now_ns() - s;
        total += d;
        best = d < best ? d : best;
    }
    getrusage(RUSAGE_SELF, &r1);
    double user = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) * 1e3 +
                  (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e3;
    double sys = (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1e3 +
                 (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e3;
    printf("# bench: %ld files created in %.0f ms; baseline pass %.1f ms; steady pass best "
           "%.1f ms, mean %.1f ms (user %.1f ms + system %.1f ms), %d calls per pass, longest "
           "call %.1f ms; next pass in %d ms; %zu files tracked, %zu reported; max RSS %ld MB\n",
           n, (t1 - t0) / 1e6, (t2 - t1) / 1e6, best / 1e6, total / 5e6, user / 5, sys / 5,
           calls / 5, slice_max / 1e6, cg_watch_timeout_ms(w), w->nfiles, got.n,
           r1.ru_maxrss / 1024);
    cg_strlist_clear(&got);
    cg_watch_free(w);
    int64_t t3 = now_ns();
    w = start(0, "bench", inc, 1, exc, 4);
    printf("# bench: inotify setup of %zu directories in %.1f ms\n", w ? w->ndirs : 0,
           (now_ns() - t3) / 1e6);
    cg_watch_free(w);
    rm_rf("bench");
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* tmpfs when there is one: creating thousands of files on a loaded disk
     * would dominate the run time; inotify and stat behave the same. */
    const char *tmp = getenv("CASGI_WATCH_TMPDIR");
    if (!tmp || !*tmp)
        tmp = access("/dev/shm", W_OK | X_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(base, sizeof(base), "%s/cg_watch_XXXXXX", tmp);
    if (!mkdtemp(base) || chdir(base) < 0) {
        ok(0, "temporary directory");
        return tap_done();
    }
    char *real = realpath(base, NULL); /* what getcwd() reports */
    if (real) {
        snprintf(base, sizeof(base), "%s", real);
        free(real);
    }

    test_glob();
    test_errors();
    scenarios(0);
    scenarios(1);
    test_absolute(0);
    test_absolute(1);
    test_symlinks(0);
    test_symlinks(1);
    test_overflow();
    test_runtime_fallback();
    test_start_fallback();
    const char *b = getenv("CASGI_WATCH_BENCH");
    if (b && atol(b) > 0)
        bench(atol(b));

    if (chdir("/") == 0)
        rm_rf(base);
    return tap_done();
}
