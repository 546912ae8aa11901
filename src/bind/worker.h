/* Worker mode: the pipe protocol between a worker and casgi's supervisor
 * (core/supervisor.h). */
#ifndef CASGI_WORKER_H
#define CASGI_WORKER_H

#include "context.h"

/** Reads CASGI_WORKER ("<ctl_fd>:<alive_fd>") into srv->ctl_fd and
 * srv->alive_fd (both -1 when not a worker) and removes it from the
 * environment. */
void cg_worker_attach(cg_server *srv);
/** Once the loop exists: stack dumps on SIGUSR1, exit when the supervisor is
 * gone. 0, or -1 with an exception. */
int cg_worker_start(cg_server *srv);
/** Sends one byte to the supervisor: 'R' serving, 'H' heartbeat, 'X' replace
 * me. Never blocks; nothing when not a worker. */
void cg_worker_notify(cg_server *srv, char what);

#endif
