"""casgi: an ASGI server whose core is written in C."""

from typing import Any

from casgi import _casgi

__version__ = _casgi.__version__
__all__ = ["run", "__version__"]


def run(app: Any, **options: Any) -> None:
    """Serve `app` (an ASGI application or a "module:attr" string) until shutdown.

    Keywords are the command-line options with '_' for '-', e.g.
    ``run("main:app", port=8080, log_level="debug")``, and take uvicorn.run()'s
    types: ``log_config`` a dict, a path or None (leave the app's logging
    alone), ``log_level`` a name or an int, ``forwarded_allow_ips`` a str or a
    list. Exits the process with status 3 when startup fails, as the command
    line does.
    """
    status = _casgi.run(app, options)
    if status:
        raise SystemExit(status)
