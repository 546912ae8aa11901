/* Header field list: the hot operations are inline in fields.h. */
#include "fields.h"

void cg_fields_free(cg_fields *f)
{
    cg_buf_free(&f->buf);
    f->n = 0;
}
