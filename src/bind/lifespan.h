/* The ASGI lifespan protocol: startup before serving, shutdown last. */
#ifndef CASGI_LIFESPAN_H
#define CASGI_LIFESPAN_H

#include "context.h"

/** Runs lifespan startup per --lifespan. Returns 0 to go on serving (*out is
 * the lifespan object to pass to shutdown, or NULL when lifespan is off or
 * unsupported), or -1 after logging that startup failed. */
int cg_lifespan_startup(cg_server *srv, PyObject **out);

/** Runs lifespan shutdown (nothing when `lifespan` is NULL). Returns 0, or
 * -1 after logging that shutdown failed. */
int cg_lifespan_shutdown(cg_server *srv, PyObject *lifespan);

#endif
