"""casgi: an ASGI server whose core is written in C."""

import asyncio
import signal
from typing import Any, Dict, Iterable, List, Optional

from casgi import _casgi

__version__ = _casgi.__version__
__all__ = ["run", "Config", "Server", "__version__"]


def run(app: Any, **options: Any) -> None:
    """Serve `app` (an ASGI application or a "module:attr" string) until shutdown.

    Keywords are the command-line options with '_' for '-', e.g.
    ``run("main:app", port=8080, log_level="debug")``, and take uvicorn.run()'s
    types: ``log_config`` a dict, a path or None (leave the app's logging
    alone), ``log_level`` a name or an int, ``forwarded_allow_ips`` a str or a
    list. Works from any thread; signal handlers are set only in the main
    thread. Exits the process with status 3 when startup fails, as the command
    line does.
    """
    status = _casgi.run(app, options)
    if status:
        raise SystemExit(status)


class Config:
    """The configuration of an embedded server: ``Config(app, **options)``.

    `app` is an ASGI application or a "module:attr" string; the options are
    run()'s keywords, validated now (a bad one raises TypeError or ValueError).
    Every option is readable as an attribute (``config.host``, ``config.port``);
    an attribute changed before serving is what the server uses. ``workers``
    and ``reload`` are accepted and, as with uvicorn's Server, ignored: they
    belong to the command line's supervisor.
    """

    def __init__(self, app: Any, **options: Any) -> None:
        values = _casgi.config_values(options)
        self._options = options
        self._initial = values
        for name, value in values.items():
            setattr(self, name, value)
        self.app = app
        self.loaded = False

    @property
    def is_ssl(self) -> bool:
        return bool(getattr(self, "ssl_certfile", None))

    def _serve_options(self) -> Dict[str, Any]:
        options = dict(self._options)
        for name, initial in self._initial.items():
            if name == "app":
                continue
            current = getattr(self, name, initial)
            if current is not initial and current != initial:
                options[name] = current
        return options


def _socket_list(sockets: Optional[Iterable[Any]]) -> Optional[List[Any]]:
    return None if sockets is None else list(sockets)


class Server:
    """An embedded server: ``await Server(config).serve()`` in a running loop,
    or ``Server(config).run()`` on a loop of its own (in any thread).

    ``started`` is true once it listens; ``should_exit = True`` stops it as
    SIGTERM does (in-flight requests finish, lifespan shutdown runs);
    ``force_exit = True`` stops without waiting for them. Both may be set from
    any thread. In the main thread the server handles SIGINT and SIGTERM while
    it serves, then puts the previous handlers back and raises the signals it
    received again, as uvicorn does; a subclass whose
    ``install_signal_handlers`` does nothing serves without them.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self._core: Any = None
        self._done: Optional["asyncio.Future[int]"] = None
        self._running = False
        self._should_exit = False
        self._force_exit = False
        self._signals = False

    @property
    def started(self) -> bool:
        return bool(self._core is not None and self._core.started)

    @property
    def servers(self) -> List[Any]:
        """The loop's Server objects listening (``servers[0].sockets``)."""
        return self._core.listeners if self._core is not None else []

    @property
    def should_exit(self) -> bool:
        return self._should_exit or bool(self._core is not None and self._core.should_exit)

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._should_exit = bool(value)
        if value and self._core is not None:
            self._core.request_exit(False)

    @property
    def force_exit(self) -> bool:
        return self._force_exit or bool(self._core is not None and self._core.force_exit)

    @force_exit.setter
    def force_exit(self, value: bool) -> None:
        self._force_exit = bool(value)
        if value and self._core is not None:
            self._core.request_exit(True)

    def install_signal_handlers(self) -> None:
        """Called by serve() and run(): lets the server handle SIGINT and
        SIGTERM when it serves in the main thread."""
        self._signals = True

    def _make_core(self) -> Any:
        self._signals = False
        self.install_signal_handlers()
        core = _casgi.server(self.config.app, self.config._serve_options())
        self._core = core
        if core is not None:
            self.config.loaded = True
            if self._should_exit or self._force_exit:
                core.request_exit(self._force_exit)
        return core

    def _raise_captured(self, core: Any) -> None:
        for sig in reversed(core.captured_signals):
            signal.raise_signal(sig)

    async def serve(self, sockets: Optional[Iterable[Any]] = None) -> None:
        """Serve in the running loop until stopped; `sockets` (listening
        socket.socket objects) are served instead of binding. A startup failure
        is logged and serve() returns with ``started`` false. Cancelled, the
        server stops as with ``force_exit`` before the cancellation goes on."""
        core = self._make_core()
        if core is None:
            return
        self._running = True
        try:
            done = core.start(asyncio.get_running_loop(), _socket_list(sockets), self._signals)
            self._done = done
            try:
                await asyncio.shield(done)
            except asyncio.CancelledError:
                core.request_exit(True)
                await asyncio.shield(done)
                raise
        finally:
            self._running = False
        self._raise_captured(core)

    def run(self, sockets: Optional[Iterable[Any]] = None) -> None:
        """Serve on a new event loop (per the ``loop`` option) until stopped."""
        core = self._make_core()
        if core is None:
            return
        self._running = True
        try:
            core.run(_socket_list(sockets), self._signals)
        finally:
            self._running = False
        self._raise_captured(core)

    async def shutdown(self, sockets: Optional[Iterable[Any]] = None) -> None:
        """Stop gracefully and wait until the server has stopped."""
        self.should_exit = True
        done = self._done
        if done is not None and not done.done() and done.get_loop() is asyncio.get_running_loop():
            await asyncio.shield(done)
            return
        while self._running:
            await asyncio.sleep(0.01)
