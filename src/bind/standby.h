/* --reload standby workers: the worker side of the protocol in
 * core/supervisor.h, and the file through which workers tell the next
 * standby what to import.
 *
 * A standby imports ahead the modules the last serving worker had loaded
 * from the interpreter's own library and from site-packages / dist-packages
 * ("installed" modules: the reloader never watches them). The project's own
 * modules are never imported ahead: a released standby imports the app as a
 * fresh worker would, though after the installed modules rather than before
 * them (an app that sets variables before its imports sees them applied
 * later: --no-reload-standby). A standby that finds, when released, that a
 * loaded file, an installed-packages directory or the --env-file is not what
 * it was when it imported (a package installed or upgraded meanwhile), or that
 * a module from outside the installed paths got imported, is discarded: it
 * re-executes itself as an ordinary worker. */
#ifndef CASGI_STANDBY_H
#define CASGI_STANDBY_H

#include "casgi.h"

/** Supervisor: creates the (empty) module list file in the temporary
 * directory and names it in CASGI_RELOAD_MODULES for the workers. Returns 0,
 * or -1 with nothing created. */
int cg_standby_file_create(char *path, size_t size);

/** Supervisor: removes the file and the variable. */
void cg_standby_file_remove(const char *path);

/** Worker, before --env-file is loaded and the app imported. In a standby:
 * loads the env file, imports the listed modules, waits for the
 * supervisor's release, and returns 0 once released (or re-executes with the
 * environment it started with; or exits when the supervisor is gone, or with
 * status 3 when it cannot prepare). Elsewhere returns 0 at once. Also takes
 * CASGI_RELOAD_MODULES out of the environment. */
int cg_standby_wait(cg_state *st, const cg_config *cfg);

/** Reload-mode worker, once serving: writes the installed modules it has
 * loaded to the list file (atomically). Failures are logged at debug level:
 * the next standby then imports less ahead, nothing else changes. */
void cg_standby_write_modules(cg_state *st);

#endif
