"""casgi: an ASGI server whose core is written in C."""

import json
from typing import Any, Dict

from casgi import _casgi

__version__ = _casgi.__version__
__all__ = ["run", "__version__"]

# uvicorn's numeric log levels, by the --log-level name casgi takes.
_LEVEL_NAMES = ((5, "trace"), (10, "debug"), (20, "info"), (30, "warning"), (40, "error"))


def _level_name(level: int) -> str:
    """The least verbose --log-level showing every record at `level` or above
    that casgi logs (its records are at the named levels only)."""
    for value, name in _LEVEL_NAMES:
        if level <= value:
            return name
    return "critical"


def _uvicorn_types(options: Dict[str, Any]) -> None:
    """Converts the argument types uvicorn.run() takes beyond the option
    table's text: log_config as a dict (passed on as inline JSON, so workers
    get it too) or None (the app's logging is left alone), log_level as an
    int. (forwarded_allow_ips as a list is taken by the option table itself.)"""
    if "log_config" in options:
        config = options["log_config"]
        if config is None:
            options["log_config"] = ""
        elif isinstance(config, dict):
            try:
                options["log_config"] = json.dumps(config)
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    "run() argument 'log_config': a dict must be JSON-serialisable (%s); pass a "
                    "file path, or configure logging yourself and pass log_config=None" % exc
                ) from None
    level = options.get("log_level")
    if isinstance(level, int) and not isinstance(level, bool):
        options["log_level"] = _level_name(level)


def run(app: Any, **options: Any) -> None:
    """Serve `app` (an ASGI application or a "module:attr" string) until shutdown.

    Keywords are the command-line options with '_' for '-', e.g.
    ``run("main:app", port=8080, log_level="debug")``, and take uvicorn.run()'s
    types: ``log_config`` a dict, a path or None (leave the app's logging
    alone), ``log_level`` a name or an int, ``forwarded_allow_ips`` a str or a
    list. Exits the process with status 3 when startup fails, as the command
    line does.
    """
    _uvicorn_types(options)
    status = _casgi.run(app, options)
    if status:
        raise SystemExit(status)
