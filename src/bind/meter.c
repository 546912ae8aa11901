/* Metrics in the extension: see meter.h. */
#include "meter.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

void cg_meter_attach(cg_server *srv)
{
    const char *spec = getenv("CASGI_METRICS");
    char err[256];
    srv->metrics_map.fd = -1; /* nothing owned until a region is made or mapped */
    if (!spec)
        return;
    srv->metrics = cg_metrics_attach(&srv->metrics_map, spec, err, sizeof(err));
    if (!srv->metrics)
        cg_log(&srv->st->log, CG_WARNING, "Metrics: %s; this worker is not counted", err);
    /* The app's own subprocesses must not count into this slot. */
    cg_environ_remove("CASGI_METRICS");
}

cg_metrics_server *cg_meter_serve(cg_log_state *log, const cg_config *cfg,
                                  const cg_metrics_region *r)
{
    char url[300], err[256];
    cg_metrics_server *ms = cg_metrics_server_start(r, cfg->metrics_host, (int)cfg->metrics_port,
                                                    url, sizeof(url), err, sizeof(err));
    if (!ms)
        cg_log(log, CG_ERROR,
               "%s: error while attempting to bind the metrics server on ('%s', %ld)", err,
               cfg->metrics_host, cfg->metrics_port);
    else
        cg_log(log, CG_INFO, "Metrics on %s", url);
    return ms;
}

int cg_meter_start(cg_server *srv)
{
    const cg_config *cfg = srv->cfg;
    /* Under a supervisor (casgi's or gunicorn's) only the supervisor serves
     * the metrics; a worker without a slot runs uncounted. */
    if (cfg->metrics_port < 0 || srv->metrics || srv->ctl_fd >= 0 || srv->host_mode)
        return 0;
    if (cg_metrics_create(&srv->metrics_map, 1) < 0) {
        cg_log(&srv->st->log, CG_ERROR, "Metrics: cannot create the counters: [Errno %d] %s", errno,
               strerror(errno));
        return -1;
    }
    cg_metrics_region *r = srv->metrics_map.r;
    srv->metrics = &r->slots[cg_metrics_slot_take(r, (int32_t)getpid())];
    srv->metrics_srv = cg_meter_serve(&srv->st->log, cfg, r);
    return srv->metrics_srv ? 0 : -1;
}

void cg_meter_free(cg_server *srv)
{
    /* The thread reads the region: it stops first. */
    cg_metrics_server_stop(srv->metrics_srv);
    srv->metrics_srv = NULL;
    srv->metrics = NULL;
    cg_metrics_close(&srv->metrics_map);
}
