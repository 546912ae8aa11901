/* Unit tests of cg_buf: reserve, append, consume, compact, shrink. */
#include <stdint.h>
#include <string.h>

#include "buf.h"
#include "tap.h"

static void test_empty(void)
{
    cg_buf b;
    cg_buf_init(&b);
    ok(b.data == NULL && b.pos == 0 && b.len == 0 && b.cap == 0, "init allocates nothing");
    ok(cg_buf_unread(&b) == 0, "empty: nothing unread");
    ok(cg_buf_append(&b, "x", 0) == 0 && b.data == NULL, "appending nothing allocates nothing");
    ok(cg_buf_reserve(&b, 0) == 0, "reserving nothing");
    cg_buf_consume(&b, 0);
    ok(b.pos == 0 && b.len == 0, "consume 0 on empty");
    cg_buf_shrink(&b, 0);
    cg_buf_free(&b);
    ok(b.data == NULL && b.cap == 0, "free on empty");
}

static void test_append_consume(void)
{
    cg_buf b;
    cg_buf_init(&b);
    ok(cg_buf_append(&b, "hello", 5) == 0, "append");
    ok(b.cap >= 5 && b.len == 5 && b.pos == 0 && memcmp(b.data, "hello", 5) == 0, "content");
    ok(cg_buf_append(&b, " world", 6) == 0 && cg_buf_unread(&b) == 11 &&
           memcmp(b.data, "hello world", 11) == 0,
       "second append");
    cg_buf_consume(&b, 6);
    ok(b.pos == 6 && cg_buf_unread(&b) == 5 && memcmp(b.data + b.pos, "world", 5) == 0,
       "consume moves the read cursor");
    cg_buf_consume(&b, 5);
    ok(b.pos == 0 && b.len == 0, "consuming everything resets both cursors");
    size_t cap = b.cap;
    ok(cg_buf_append(&b, "abc", 3) == 0 && b.cap == cap && memcmp(b.data, "abc", 3) == 0,
       "reuses memory after reset");
    cg_buf_reset(&b);
    ok(b.pos == 0 && b.len == 0 && b.cap == cap && b.data != NULL, "reset keeps memory");
    cg_buf_free(&b);
    ok(b.data == NULL && b.cap == 0 && b.len == 0, "free");
    ok(cg_buf_append(&b, "again", 5) == 0 && cg_buf_unread(&b) == 5, "reusable after free");
    cg_buf_free(&b);
}

static void test_grow(void)
{
    cg_buf b;
    cg_buf_init(&b);
    char chunk[1000];
    int good = 1;
    for (int i = 0; i < 300; i++) {
        memset(chunk, 'a' + i % 26, sizeof chunk);
        if (cg_buf_append(&b, chunk, sizeof chunk) != 0)
            good = 0;
    }
    ok(good && b.len == 300000 && b.cap >= 300000, "grows to 300 KB");
    for (int i = 0; i < 300; i++)
        if (b.data[i * 1000] != 'a' + i % 26 || b.data[i * 1000 + 999] != 'a' + i % 26)
            good = 0;
    ok(good, "content kept across growth");
    ok((b.cap & (b.cap - 1)) == 0, "capacity is a power of two (%zu)", b.cap);
    cg_buf_free(&b);
}

static void test_reserve_compact(void)
{
    cg_buf b;
    cg_buf_init(&b);
    ok(cg_buf_reserve(&b, 100) == 0 && b.cap >= 100 && b.len == 0, "reserve on empty");
    size_t cap = b.cap;
    char fill[256];
    memset(fill, 'x', sizeof fill);
    ok(cg_buf_append(&b, fill, cap - 10) == 0 && b.cap == cap, "fill to 10 bytes short");
    memcpy(b.data + cap - 20, "0123456789", 10);
    cg_buf_consume(&b, cap - 20);
    ok(cg_buf_unread(&b) == 10, "10 unread");
    /* 15 free bytes are needed; 10 are free at the end, consumed bytes make the rest. */
    ok(cg_buf_reserve(&b, 15) == 0, "reserve compacts");
    ok(b.cap == cap && b.pos == 0 && b.len == 10 && memcmp(b.data, "0123456789", 10) == 0,
       "compacted in place, unread bytes moved to the front");
    ok(cg_buf_reserve(&b, cap) == 0 && b.cap >= cap + 10 && b.len == 10 &&
           memcmp(b.data, "0123456789", 10) == 0,
       "reserve grows when compacting is not enough");
    ok(b.cap - b.len >= cap, "room as asked");
    cap = b.cap;
    ok(cg_buf_reserve(&b, 1) == 0 && b.cap == cap, "enough room: unchanged");
    ok(cg_buf_reserve(&b, SIZE_MAX) == -1 && b.cap == cap && b.len == 10 &&
           memcmp(b.data, "0123456789", 10) == 0,
       "impossible reserve fails, buffer unchanged");
    ok(cg_buf_append(&b, fill, SIZE_MAX - 5) == -1 && b.len == 10, "impossible append fails");
    cg_buf_free(&b);
}

static void test_shrink(void)
{
    cg_buf b;
    cg_buf_init(&b);
    char big[10000] = {0};
    cg_buf_append(&b, big, sizeof big);
    cg_buf_shrink(&b, 4096);
    ok(b.cap >= 10000 && b.len == 10000, "shrink does nothing while bytes are unread");
    cg_buf_consume(&b, 9000);
    cg_buf_shrink(&b, 4096);
    ok(b.cap >= 10000 && b.len != 0, "nor with some unread");
    cg_buf_consume(&b, 1000);
    cg_buf_shrink(&b, 1 << 20);
    ok(b.data != NULL && b.cap >= 10000, "capacity under `keep`: kept");
    cg_buf_shrink(&b, 4096);
    ok(b.data == NULL && b.cap == 0 && b.len == 0 && b.pos == 0, "empty and large: released");
    ok(cg_buf_append(&b, "x", 1) == 0 && cg_buf_unread(&b) == 1, "usable after shrink");
    cg_buf_free(&b);
}

int main(void)
{
    test_empty();
    test_append_consume();
    test_grow();
    test_reserve_compact();
    test_shrink();
    return tap_done();
}
