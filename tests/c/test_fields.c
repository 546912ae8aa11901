/* Unit tests of cg_fields: add, iterate, reset, free, growth, byte counts,
 * empty names and values, every byte value, and a packed buffer that starts
 * at odd offsets (no alignment assumed). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fields.h"
#include "tap.h"

#define S(lit) (lit), sizeof(lit) - 1

static int field_is(const cg_field *f, const char *name, size_t name_len, const char *value,
                    size_t value_len)
{
    return f->name_len == name_len && f->value_len == value_len &&
           memcmp(f->name, name, name_len) == 0 && memcmp(f->value, value, value_len) == 0;
}

static void test_empty(void)
{
    cg_fields f;
    cg_field out;
    size_t pos = 0;
    cg_fields_init(&f);
    ok(f.n == 0 && f.buf.data == NULL && f.buf.len == 0, "init allocates nothing");
    ok(cg_fields_next(&f, &pos, &out) == 0 && pos == 0, "nothing to iterate");
    ok(cg_fields_bytes(&f) == 0, "no bytes");
    cg_fields_reset(&f);
    ok(f.n == 0 && f.buf.data == NULL, "reset of an empty list");
    cg_fields_free(&f);
    ok(f.n == 0 && f.buf.data == NULL && f.buf.cap == 0, "free of an empty list");
}

static void test_add_iterate(void)
{
    cg_fields f;
    cg_field out;
    size_t pos = 0;
    cg_fields_init(&f);
    ok(cg_fields_add(&f, S("content-type"), S("text/plain")) == 0, "add");
    ok(cg_fields_add(&f, S("X-Mixed-Case"), S("a, b;c=\"d\"")) == 0, "add a second");
    ok(cg_fields_add(&f, S("content-type"), S("repeated")) == 0, "a repeated name is kept");
    ok(f.n == 3, "three fields");
    ok(cg_fields_bytes(&f) == 12 + 10 + 12 + 10 + 12 + 8, "bytes: %zu", cg_fields_bytes(&f));
    ok(cg_fields_next(&f, &pos, &out) == 1 && field_is(&out, S("content-type"), S("text/plain")),
       "first field");
    ok(cg_fields_next(&f, &pos, &out) == 1 && field_is(&out, S("X-Mixed-Case"), S("a, b;c=\"d\"")),
       "second field, case kept");
    ok(cg_fields_next(&f, &pos, &out) == 1 && field_is(&out, S("content-type"), S("repeated")),
       "third field");
    ok(pos == f.buf.len, "position at the end");
    ok(cg_fields_next(&f, &pos, &out) == 0, "end");
    ok(cg_fields_next(&f, &pos, &out) == 0, "end stays the end");

    /* Two iterations at once do not disturb each other. */
    size_t p1 = 0, p2 = 0;
    cg_field a, b;
    cg_fields_next(&f, &p1, &a);
    cg_fields_next(&f, &p2, &b);
    cg_fields_next(&f, &p2, &b);
    ok(field_is(&a, S("content-type"), S("text/plain")) &&
           field_is(&b, S("X-Mixed-Case"), S("a, b;c=\"d\"")),
       "independent positions");

    /* The copies do not depend on the caller's memory. */
    char name[] = "x-temp", value[] = "v1";
    cg_fields_add(&f, name, strlen(name), value, strlen(value));
    memset(name, 'z', strlen(name));
    memset(value, 'z', strlen(value));
    pos = 0;
    for (int i = 0; i < 4; i++)
        cg_fields_next(&f, &pos, &out);
    ok(field_is(&out, S("x-temp"), S("v1")), "name and value are copied in");

    size_t cap = f.buf.cap;
    char *data = f.buf.data;
    cg_fields_reset(&f);
    pos = 0;
    ok(f.n == 0 && cg_fields_bytes(&f) == 0 && cg_fields_next(&f, &pos, &out) == 0,
       "reset empties");
    ok(f.buf.cap == cap && f.buf.data == data, "reset keeps the memory");
    ok(cg_fields_add(&f, S("a"), S("b")) == 0 && f.n == 1 && f.buf.data == data,
       "add after reset reuses the memory");
    pos = 0;
    ok(cg_fields_next(&f, &pos, &out) == 1 && field_is(&out, S("a"), S("b")) &&
           cg_fields_next(&f, &pos, &out) == 0,
       "only the new field after reset");
    cg_fields_free(&f);
    ok(f.n == 0 && f.buf.data == NULL && f.buf.cap == 0 && cg_fields_bytes(&f) == 0, "free");
    ok(cg_fields_add(&f, S("again"), S("1")) == 0 && f.n == 1, "usable after free");
    cg_fields_free(&f);
}

static void test_empty_parts(void)
{
    cg_fields f;
    cg_field out;
    size_t pos = 0;
    cg_fields_init(&f);
    ok(cg_fields_add(&f, NULL, 0, NULL, 0) == 0, "empty name and value (NULL pointers)");
    ok(cg_fields_add(&f, "", 0, S("v")) == 0, "empty name");
    ok(cg_fields_add(&f, S("n"), "", 0) == 0, "empty value");
    ok(cg_fields_add(&f, NULL, 0, NULL, 0) == 0, "empty again");
    ok(f.n == 4 && cg_fields_bytes(&f) == 2, "four fields, two bytes");
    ok(cg_fields_next(&f, &pos, &out) == 1 && out.name_len == 0 && out.value_len == 0 &&
           out.name != NULL && out.value != NULL,
       "empty field: lengths 0, pointers usable");
    ok(cg_fields_next(&f, &pos, &out) == 1 && field_is(&out, "", 0, S("v")), "empty name read");
    ok(cg_fields_next(&f, &pos, &out) == 1 && field_is(&out, S("n"), "", 0), "empty value read");
    ok(cg_fields_next(&f, &pos, &out) == 1 && out.name_len == 0 && out.value_len == 0,
       "last empty field");
    ok(cg_fields_next(&f, &pos, &out) == 0, "end");
    cg_fields_free(&f);
}

static void test_binary(void)
{
    cg_fields f;
    cg_field out;
    size_t pos = 0;
    char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (char)i;
    cg_fields_init(&f);
    ok(cg_fields_add(&f, S("x-high"), all + 0x80, 0x80) == 0, "value with 0x80-0xff");
    ok(cg_fields_add(&f, all, 256, all, 256) == 0, "every byte value in name and value");
    ok(cg_fields_next(&f, &pos, &out) == 1 && field_is(&out, S("x-high"), all + 0x80, 0x80),
       "high bytes read back unchanged");
    ok(cg_fields_next(&f, &pos, &out) == 1 && field_is(&out, all, 256, all, 256),
       "all bytes read back unchanged");
    ok(cg_fields_next(&f, &pos, &out) == 0, "end");
    cg_fields_free(&f);
}

/* Many fields of varied (often odd) lengths: the buffer grows many times and
 * the headers sit at every alignment. */
static void test_many(void)
{
    enum { N = 5000 };
    cg_fields f;
    cg_field out;
    char name[64], value[600];
    size_t total = 0;
    int good = 1;
    cg_fields_init(&f);
    for (int i = 0; i < N; i++) {
        size_t nl = (size_t)snprintf(name, sizeof name, "x-field-%d", i);
        size_t vl = (size_t)(i * 7 % 597);
        for (size_t j = 0; j < vl; j++)
            value[j] = (char)(i + (int)j);
        if (cg_fields_add(&f, name, nl, value, vl) != 0)
            good = 0;
        total += nl + vl;
    }
    ok(good && f.n == N, "%d fields added", N);
    ok(cg_fields_bytes(&f) == total, "bytes: %zu", cg_fields_bytes(&f));
    size_t pos = 0;
    int i = 0;
    while (cg_fields_next(&f, &pos, &out)) {
        size_t nl = (size_t)snprintf(name, sizeof name, "x-field-%d", i);
        size_t vl = (size_t)(i * 7 % 597);
        for (size_t j = 0; j < vl; j++)
            value[j] = (char)(i + (int)j);
        if (!field_is(&out, name, nl, value, vl)) {
            if (good)
                printf("# field %d differs\n", i);
            good = 0;
        }
        i++;
    }
    ok(good && i == N, "all read back in order (%d)", i);
    ok(pos == f.buf.len, "iteration ends at the packed end");
    cg_fields_free(&f);
}

static void test_too_big(void)
{
    cg_fields f;
    cg_fields_init(&f);
    cg_fields_add(&f, S("a"), S("b"));
    size_t len = f.buf.len, cap = f.buf.cap;
    /* Lengths whose sum overflows: refused before any copy. */
    ok(cg_fields_add(&f, "x", SIZE_MAX, "y", 1) == -1, "name length overflowing");
    ok(cg_fields_add(&f, "x", SIZE_MAX / 2, "y", SIZE_MAX / 2) == -1, "sum overflowing");
    ok(cg_fields_add(&f, "x", SIZE_MAX - CG_FIELD_HDR - 1, "y", 0) == -1,
       "size beyond what the buffer can hold");
    ok(f.n == 1 && f.buf.len == len && f.buf.cap == cap, "list unchanged");
    cg_fields_free(&f);
}

int main(void)
{
    test_empty();
    test_add_iterate();
    test_empty_parts();
    test_binary();
    test_many();
    test_too_big();
    return tap_done();
}
