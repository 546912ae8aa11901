/* The supervising process for --reload and --workers. */
#ifndef CASGI_SUPERVISE_H
#define CASGI_SUPERVISE_H

#include "casgi.h"

/** 1 when cfg asks for a supervisor (--reload or --workers > 1) and this
 * process is not itself a worker. */
int cg_wants_supervisor(const cg_config *cfg);

/** Supervises workers until shutdown. Returns the exit status. */
int cg_supervise(PyObject *module, cg_config *cfg);

#endif
