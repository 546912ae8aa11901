/* Finding and adapting the ASGI application. */
#ifndef CASGI_APP_H
#define CASGI_APP_H

#include "casgi.h"

/**
 * Imports cfg->app ("module:attr", dotted attributes allowed) with
 * cfg->app_dir first on sys.path, calls it when cfg->factory, and wraps an
 * ASGI 2 app so the result is always an ASGI 3 callable (new reference).
 * On failure returns NULL with no exception set after logging one clear line
 * ('Error loading ASGI app. Could not import module "x".', 'Attribute "y" not
 * found in module "x".', 'Import string "x" must be in format
 * "<module>:<attribute>".') - with the full traceback only when importing the
 * module itself raised.
 */
PyObject *cg_app_load(cg_state *st, const cg_config *cfg);

/** Adapts an application object given to run() (factory call, ASGI 2 wrap).
 * Returns a new reference, or NULL after logging as above. */
PyObject *cg_app_prepare(cg_state *st, PyObject *app, const cg_config *cfg);

#endif
