/* A borrowed view of bytes: {base, len}. The owner of the memory is always
 * stated where a slice is produced; a slice never owns what it points to. */
#ifndef CG_SLICE_H
#define CG_SLICE_H

#include <stddef.h>

typedef struct cg_slice {
    const char *base;
    size_t len;
} cg_slice;

#define CG_SLICE_LIT(s) ((cg_slice){(s), sizeof(s) - 1})

#endif
