/* ASCII helpers (locale-free), shared by the core and the bindings. */
#ifndef CG_ASCII_H
#define CG_ASCII_H

#include <stddef.h>
#include <string.h>

/** The ASCII lower-case of c; other bytes unchanged. */
static inline unsigned char cg_ascii_lower1(unsigned char c)
{
    return (unsigned char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
}

/** 1 when s[0..n) equals the NUL-terminated lower-case `lower` ignoring
 * ASCII case, else 0. Inline: with a literal, the length test comes first
 * and costs nothing (strlen is folded). */
static inline int cg_ascii_ieq(const char *s, size_t n, const char *lower)
{
    if (strlen(lower) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (cg_ascii_lower1((unsigned char)s[i]) != (unsigned char)lower[i])
            return 0;
    return 1;
}

/** The value of hexadecimal digit c (either case), or -1. */
static inline int cg_hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

#endif
