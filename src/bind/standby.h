/* --reload standby workers: the worker side of the protocol in
 * core/supervisor.h, and the file through which workers tell the next
 * standby what to import.
 *
 * A standby imports ahead the modules the last serving worker had loaded
 * from the interpreter's own library and from site-packages / dist-packages
 * ("installed" modules: the reloader never watches them). The project's own
 * modules are never imported ahead: a released standby imports the app as a
 * fresh worker would. A standby that finds, when released, that an imported
 * file changed after it was imported (a package was upgraded meanwhile), or
 * that a module from outside the installed paths got imported, is discarded:
 * it re-executes itself as an ordinary worker. */
#ifndef CASGI_STANDBY_H
#define CASGI_STANDBY_H

#include "casgi.h"

/** Supervisor: creates the (empty) module list file in the temporary
 * directory and names it in CASGI_RELOAD_MODULES for the workers. Returns 0,
 * or -1 with nothing created. */
int cg_standby_file_create(char *path, size_t size);

/** Supervisor: removes the file and the variable. */
void cg_standby_file_remove(const char *path);

/** Worker, before loading the app. In a standby: imports the listed
 * modules, waits for the supervisor's release, and returns 0 once released
 * (or re-executes; or exits when the supervisor is gone). Elsewhere returns
 * 0 at once. Also takes CASGI_RELOAD_MODULES out of the environment. */
int cg_standby_wait(cg_state *st);

/** Reload-mode worker, once serving: writes the installed modules it has
 * loaded to the list file (atomically). Failures are logged at debug level:
 * the next standby then imports less ahead, nothing else changes. */
void cg_standby_write_modules(cg_state *st);

#endif
