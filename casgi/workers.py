"""gunicorn worker: ``gunicorn -k casgi.workers.CasgiWorker main:app``.

gunicorn owns the processes, the sockets and the logging; each worker serves
them with casgi's C protocol. gunicorn's settings map onto casgi's options:
keepalive, graceful_timeout, max_requests (with gunicorn's jitter),
forwarded_allow_ips, certfile / keyfile / ca_certs / cert_reqs / ciphers (TLS in
casgi's own engine; gunicorn's ssl_context hook, a Python SSLContext, does not apply),
limit_request_line / limit_request_fields / limit_request_field_size,
access_log_format (when set: gunicorn's line through gunicorn's access log;
left at its default, the access line is uvicorn's, as with uvicorn's worker),
http_protocols (gunicorn 25+: ``h2`` in it is ``--http2``, its absence, as in
gunicorn's default ``h1``, ``--no-http2``) with http2_max_concurrent_streams /
http2_max_header_list_size (0, no limit, is casgi's largest, 16 MiB; below
1 KiB is 1 KiB) / http2_initial_window_size, and the heartbeat that
gunicorn's ``timeout`` watches is sent from the event loop. gunicorn's
http2_cleartext and http2_max_frame_size are not mapped: casgi has one switch,
``--http2``, for HTTP/2 over TLS and over cleartext.

gunicorn's proxy_protocol is ``--proxy-protocol``: ``v1`` and ``v2`` as they
are, ``auto`` (and ``True``, which older gunicorn releases, speaking v1 only,
took) as ``any``. gunicorn keeps a second list, proxy_allow_ips, for the peers
allowed to send the header, and lets Unix socket peers send it; casgi has one
list, so with the PROXY protocol on, proxy_allow_ips and ``unix:`` join
forwarded_allow_ips. Unlike gunicorn, casgi requires the header on every
connection once it is on (a connection without one is closed): a balancer
that sends it on some connections only would let clients forge it on others.
"""

import logging
import os
import signal
import sys
from typing import Any, Dict

from gunicorn.arbiter import Arbiter
from gunicorn.workers.base import Worker

from casgi import _casgi

__all__ = ["CasgiWorker"]

# gunicorn uses 0 for "no limit"; casgi's limits are plain numbers.
_NO_LIMIT = 2**31 - 1
# casgi's bounds of --h2-max-header-list-size (gunicorn's 0 means no limit).
_H2_HEADER_LIST_MIN = 1024
_H2_HEADER_LIST_MAX = 16 * 1024 * 1024
_EXIT_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGQUIT}


class CasgiWorker(Worker):
    """A gunicorn worker running casgi's server on gunicorn's sockets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._attach_logging()

    def _attach_logging(self) -> None:
        # casgi's loggers write through gunicorn's handlers, at its levels.
        for name, source in (("casgi.error", self.log.error_log), ("casgi.access", self.log.access_log)):
            logger = logging.getLogger(name)
            logger.handlers = source.handlers
            logger.setLevel(source.level)
            logger.propagate = False

    def _options(self) -> Dict[str, Any]:
        cfg = self.cfg
        options: Dict[str, Any] = {
            "timeout_keep_alive": cfg.keepalive,
            # gunicorn SIGKILLs at graceful_timeout (and does not reap then):
            # drain a little earlier so lifespan shutdown and exit fit in it.
            "timeout_graceful_shutdown": max(cfg.graceful_timeout * 0.8, cfg.graceful_timeout - 1.0),
            "limit_request_line": cfg.limit_request_line or _NO_LIMIT,
            "limit_request_fields": cfg.limit_request_fields or _NO_LIMIT,
            "limit_request_field_size": cfg.limit_request_field_size or _NO_LIMIT,
            "access_log": bool(cfg.accesslog),
        }
        options.update(self._proxy_options())

        # gunicorn's access_log_format, when set: the line gunicorn writes.
        # Left at gunicorn's default, the line is uvicorn's, as with
        # uvicorn's worker.
        setting = cfg.settings.get("access_log_format")
        if setting is not None and setting.value != setting.default:
            options["access_log_format"] = setting.value
        if self.max_requests < sys.maxsize:
            options["limit_max_requests"] = self.max_requests
        if cfg.is_ssl:
            tls = cfg.ssl_options
            options["ssl_certfile"] = tls["certfile"]
            for ours, theirs in (("ssl_keyfile", "keyfile"), ("ssl_ca_certs", "ca_certs"), ("ssl_ciphers", "ciphers")):
                if tls.get(theirs):
                    options[ours] = tls[theirs]
            options["ssl_cert_reqs"] = int(tls.get("cert_reqs") or 0)
        options.update(self._http2_options())
        return options

    def _proxy_options(self) -> Dict[str, Any]:
        cfg = self.cfg
        trusted = list(cfg.forwarded_allow_ips)
        mode = getattr(cfg, "proxy_protocol", False)
        if mode is None or isinstance(mode, bool):
            mode = "any" if mode else "off"
        mode = "any" if mode == "auto" else mode
        if mode != "off":
            for entry in [*getattr(cfg, "proxy_allow_ips", []), "unix:"]:
                if entry not in trusted:
                    trusted.append(entry)
        return {"proxy_protocol": mode, "forwarded_allow_ips": ",".join(trusted)}

    def _http2_options(self) -> Dict[str, Any]:
        # gunicorn before 25 has no HTTP/2 settings: casgi's defaults stay.
        protocols = getattr(self.cfg, "http_protocols", None)
        if protocols is None:
            return {}
        cfg = self.cfg
        header_list = cfg.http2_max_header_list_size or _H2_HEADER_LIST_MAX
        return {
            "http2": "h2" in protocols,
            "h2_max_concurrent_streams": min(cfg.http2_max_concurrent_streams, _NO_LIMIT),
            "h2_max_header_list_size": min(max(header_list, _H2_HEADER_LIST_MIN), _H2_HEADER_LIST_MAX),
            "h2_initial_window_size": cfg.http2_initial_window_size,
        }

    def _heartbeat(self) -> None:
        self.notify()
        if self.ppid != os.getppid():
            self.log.info("Parent changed, shutting down: %s", self)
            os.kill(os.getpid(), signal.SIGTERM)

    def run(self) -> None:
        # gunicorn's own handlers are live from before the app is loaded; a
        # SIGTERM they caught only cleared self.alive. Block the exit signals
        # (casgi unblocks them once its handlers run in the loop), then look.
        signal.pthread_sigmask(signal.SIG_BLOCK, _EXIT_SIGNALS)
        if not self.alive:
            self.log.info("Worker told to exit while booting (pid: %s)", self.pid)
            sys.exit(0)
        sockets = [s.sock for s in self.sockets]
        try:
            status = _casgi.serve_host(self.wsgi, self._options(), sockets, self._heartbeat)
        except (TypeError, ValueError) as exc:
            # Options casgi refuses (--http2 or TLS on a build without nghttp2
            # or OpenSSL, --ssl-cert-reqs 2 without CA certificates): every
            # worker would fail the same way, so gunicorn is told to stop
            # rather than to start another.
            self.log.error("Error: %s", exc)
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        if status == 3:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        sys.exit(status)
