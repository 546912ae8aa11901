/* The ASGI lifespan protocol: startup before serving, shutdown last. Each
 * phase is a begin, which hands the app its event and returns the future to
 * await, and an end, which reads the app's answer once that future is done. */
#ifndef CASGI_LIFESPAN_H
#define CASGI_LIFESPAN_H

#include "context.h"

/** Starts lifespan startup per --lifespan. Returns 0 with *out the lifespan
 * object (NULL when lifespan is off) and *wait the future to await before
 * cg_lifespan_startup_end (NULL: nothing to await, the app already ended);
 * or -1 after logging that startup failed. */
int cg_lifespan_startup_begin(cg_server *srv, PyObject **out, PyObject **wait);

/** Reads the startup answer. Returns 0 to go on serving (*lifespan cleared
 * when the app does not support lifespan), or -1 after logging that startup
 * failed (*lifespan cleared, the app's task cancelled). */
int cg_lifespan_startup_end(cg_server *srv, PyObject **lifespan);

/** Starts lifespan shutdown: the future to await before
 * cg_lifespan_shutdown_end (a new reference); NULL when there is nothing to
 * do (`lifespan` NULL, or its app ended), or NULL with an exception (logged). */
PyObject *cg_lifespan_shutdown_begin(cg_server *srv, PyObject *lifespan);

/** Reads the shutdown answer. Returns 0, or -1 after logging that shutdown
 * failed. */
int cg_lifespan_shutdown_end(cg_server *srv, PyObject *lifespan);

/** A forced stop does not wait for the app's lifespan: its task (if still
 * running) is cancelled. `lifespan` may be NULL. Never raises. */
void cg_lifespan_abandon(cg_server *srv, PyObject *lifespan);

#endif
