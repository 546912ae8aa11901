"""Log formatters and the default logging configuration of casgi.

The default output has the shapes uvicorn prints, so existing log parsing keeps
working::

    INFO:     Started server process [1234]
    INFO:     127.0.0.1:51234 - "GET /path?q HTTP/1.1" 200 OK

A dictConfig file can name these formatters with ``"()":
"casgi.logging.DefaultFormatter"`` / ``"casgi.logging.AccessFormatter"`` and
the keywords ``fmt``, ``datefmt``, ``style`` and ``use_colors``.

A configuration written for uvicorn works unchanged: its
``uvicorn.logging.*`` formatter names are served by the formatters here, and
when it configures the ``uvicorn``/``uvicorn.error``/``uvicorn.access``
loggers (and none of casgi's), casgi logs through those loggers.
"""

import configparser
import http
import logging
import logging.config
import sys
from typing import Any, Callable, Dict, Optional

__all__ = ["TRACE_LOG_LEVEL", "ColourizedFormatter", "DefaultFormatter", "AccessFormatter",
           "LOGGING_CONFIG", "MessageLogger"]

TRACE_LOG_LEVEL = 5
logging.addLevelName(TRACE_LOG_LEVEL, "TRACE")

_RESET = "\x1b[0m"


def _sgr(code: str) -> Callable[[str], str]:
    def paint(text: str) -> str:
        return "\x1b[" + code + "m" + text + _RESET

    return paint


_bold = _sgr("1")

# Level names: trace blue, debug cyan, info green, warning yellow, error red,
# critical bright red.
_LEVEL_COLOURS: Dict[int, Callable[[str], str]] = {
    TRACE_LOG_LEVEL: _sgr("34"),
    logging.DEBUG: _sgr("36"),
    logging.INFO: _sgr("32"),
    logging.WARNING: _sgr("33"),
    logging.ERROR: _sgr("31"),
    logging.CRITICAL: _sgr("91"),
}

# Status codes by class: 1xx bright white, 2xx green, 3xx yellow, 4xx red,
# 5xx bright red.
_STATUS_COLOURS: Dict[int, Callable[[str], str]] = {
    1: _sgr("97"),
    2: _sgr("32"),
    3: _sgr("33"),
    4: _sgr("31"),
    5: _sgr("91"),
}

_PHRASES: Dict[int, str] = {s.value: s.phrase for s in http.HTTPStatus}


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:
        return False


class _Fields:
    """Stands in for a record when formatting: the formatter's style reads only
    ``__dict__``, so a dict copy replaces ``copy.copy(record)`` (cheaper, and the
    record other handlers see is left untouched)."""

    __slots__ = ("__dict__",)


class ColourizedFormatter(logging.Formatter):
    """Adds ``%(levelprefix)s``: the level name and ':' padded to 9 columns,
    coloured when ``use_colors``. A record may carry ``color_message``, the
    message to use instead when colours are on."""

    stream_name = "stderr"

    def __init__(
        self,
        fmt: Optional[str] = None,
        datefmt: Optional[str] = None,
        style: str = "%",
        use_colors: Optional[bool] = None,
        **kwargs: Any,
    ) -> None:
        if use_colors is None:
            use_colors = _isatty(getattr(sys, self.stream_name, None))
        self.use_colors = bool(use_colors)
        self._prefixes: Dict[Any, str] = {}
        super().__init__(fmt=fmt, datefmt=datefmt, style=style, **kwargs)  # type: ignore[arg-type]

    def color_level_name(self, level_name: str, level_no: int) -> str:
        paint = _LEVEL_COLOURS.get(level_no)
        return paint(level_name) if paint else level_name

    def level_prefix(self, level_name: str, level_no: int) -> str:
        key = (level_name, level_no)
        prefix = self._prefixes.get(key)
        if prefix is None:
            pad = " " * (8 - len(level_name))
            name = self.color_level_name(level_name, level_no) if self.use_colors else level_name
            prefix = self._prefixes[key] = name + ":" + pad
        return prefix

    def _fields(self, record: logging.LogRecord) -> Dict[str, Any]:
        values = record.__dict__.copy()
        values["levelprefix"] = self.level_prefix(record.levelname, record.levelno)
        if self.use_colors and "color_message" in values:
            msg = values["color_message"]
            values["message"] = msg % record.args if record.args else msg
        return values

    def _format_fields(self, values: Dict[str, Any]) -> str:
        view = _Fields()
        view.__dict__ = values
        return self._style.format(view)  # type: ignore[arg-type]

    def formatMessage(self, record: logging.LogRecord) -> str:
        return self._format_fields(self._fields(record))


class DefaultFormatter(ColourizedFormatter):
    """Server messages (casgi.error), written to stderr."""

    stream_name = "stderr"


class AccessFormatter(ColourizedFormatter):
    """Access lines (casgi.access). The record's args are (client_addr, method,
    full_path, http_version, status_code), or with --access-log-format
    gunicorn's atoms (a dict); adds ``%(client_addr)s``, ``%(request_line)s``
    and ``%(status_code)s`` ("200 OK")."""

    stream_name = "stdout"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._statuses: Dict[int, str] = {}

    def get_status_code(self, status_code: int) -> str:
        text = self._statuses.get(status_code)
        if text is None:
            text = "%d %s" % (status_code, _PHRASES.get(status_code, ""))
            if self.use_colors:
                paint = _STATUS_COLOURS.get(status_code // 100)
                if paint:
                    text = paint(text)
            if len(self._statuses) < 1024:
                self._statuses[status_code] = text
        return text

    def formatMessage(self, record: logging.LogRecord) -> str:
        values = self._fields(record)
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client_addr, method, full_path, http_version, status_code = args
            request_line = "%s %s HTTP/%s" % (method, full_path, http_version)
        elif isinstance(args, dict) and "r" in args:
            # An --access-log-format record: gunicorn's atoms (h, r, s, ...).
            client_addr, request_line, status_code = args["h"], args["r"], args["s"]
        else:
            return self._format_fields(values)
        if self.use_colors:
            request_line = _bold(request_line)
        values["client_addr"] = client_addr
        values["request_line"] = request_line
        values["status_code"] = self.get_status_code(int(status_code))
        return self._format_fields(values)


LOGGING_CONFIG: Dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "default": {
            "()": "casgi.logging.DefaultFormatter",
            "fmt": "%(levelprefix)s %(message)s",
            "use_colors": None,
        },
        "access": {
            "()": "casgi.logging.AccessFormatter",
            "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
            "use_colors": None,
        },
    },
    "handlers": {
        "default": {
            "formatter": "default",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
        },
        "access": {
            "formatter": "access",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
        },
    },
    "loggers": {
        "casgi": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "casgi.error": {"level": "INFO"},
        "casgi.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    },
}


# ---- configurations written for uvicorn ----

_UVICORN_MODULE = "uvicorn.logging."
_FIX = ("casgi.logging provides ColourizedFormatter, DefaultFormatter and AccessFormatter; "
        "name those in the log config instead")


def _casgi_name(name: Any) -> Any:
    """``uvicorn.logging.X`` as ``casgi.logging.X`` when this module has X, so
    the configuration works without uvicorn installed and prints the same."""
    if isinstance(name, str) and name.startswith(_UVICORN_MODULE):
        attr = name[len(_UVICORN_MODULE):]
        if attr in __all__ and attr.endswith("Formatter"):
            return __name__ + "." + attr
    return name


def _refers_to_uvicorn(exc: BaseException) -> bool:
    while exc is not None:
        if "uvicorn" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def dict_config(config: Dict[str, Any], use_colors: Optional[bool] = None) -> None:
    """``logging.config.dictConfig`` for --log-config and run(log_config=dict):
    uvicorn's formatter names are mapped (see _casgi_name), and ``use_colors``
    (when not None) is set on the formatters "default" and "access", as uvicorn
    does. The caller's dict is not changed."""
    config = dict(config)
    formatters = config.get("formatters")
    if isinstance(formatters, dict):
        formatters = {name: dict(f) if isinstance(f, dict) else f for name, f in formatters.items()}
        for f in formatters.values():
            if isinstance(f, dict):
                for key in ("()", "class"):
                    if key in f:
                        f[key] = _casgi_name(f[key])
        if use_colors is not None:
            for name in ("default", "access"):
                if isinstance(formatters.get(name), dict):
                    formatters[name]["use_colors"] = use_colors
        config["formatters"] = formatters
    try:
        logging.config.dictConfig(config)
    except Exception as exc:
        if _refers_to_uvicorn(exc):
            raise ValueError("%s (%s)" % (exc, _FIX)) from exc
        raise


def file_config(path: str) -> None:
    """``logging.config.fileConfig`` for an INI --log-config, with uvicorn's
    formatter class names mapped as in dict_config."""
    parser = configparser.ConfigParser()
    if not parser.read(path):
        raise FileNotFoundError("cannot read %r" % path)
    for section in parser.sections():
        if section.startswith("formatter_") and parser.has_option(section, "class"):
            parser.set(section, "class", _casgi_name(parser.get(section, "class", raw=True)))
    try:
        logging.config.fileConfig(parser, disable_existing_loggers=False)
    except Exception as exc:
        if _refers_to_uvicorn(exc):
            raise ValueError("%s (%s)" % (exc, _FIX)) from exc
        raise


_FAMILY_NAMES = ("", ".error", ".access", ".asgi")


def _configured(family: str) -> bool:
    loggers = logging.Logger.manager.loggerDict
    for suffix in _FAMILY_NAMES:
        logger = loggers.get(family + suffix)
        if isinstance(logger, logging.Logger) and (logger.handlers or logger.level):
            return True
    return False


def logger_family() -> str:
    """The prefix of the loggers casgi logs through once a configuration is
    applied: "uvicorn" when it configured uvicorn's loggers (handlers or a
    level) and none of casgi's, else "casgi"."""
    if _configured("uvicorn") and not _configured("casgi"):
        return "uvicorn"
    return "casgi"


# ---- ASGI messages at trace level ----

_PLACEHOLDERS = {
    "body": "<%d bytes>",
    "bytes": "<%d bytes>",
    "text": "<%d chars>",
}


def _loggable(message: Any) -> Any:
    """The message with bodies replaced by their size and headers elided."""
    shown = dict(message)
    for key, placeholder in _PLACEHOLDERS.items():
        value = shown.get(key)
        if value is not None:
            shown[key] = placeholder % len(value)
    if shown.get("headers") is not None:
        shown["headers"] = "<...>"
    return shown


class MessageLogger:
    """Wraps the app at trace level (only then: it costs a Python frame per
    message) and logs every ASGI scope and message at TRACE, as uvicorn's
    message logger does: ``127.0.0.1:5000 - ASGI [2] Send {...}``."""

    def __init__(self, app: Any, logger_name: str) -> None:
        self.app = app
        self.logger = logging.getLogger(logger_name)
        self.count = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.count += 1
        number = self.count
        client = scope.get("client")
        prefix = "%s:%d - ASGI" % (client[0], client[1]) if client else "ASGI"
        log = self.logger.log

        async def logged_receive() -> Any:
            message = await receive()
            log(TRACE_LOG_LEVEL, "%s [%d] Receive %s", prefix, number, _loggable(message))
            return message

        async def logged_send(message: Any) -> None:
            log(TRACE_LOG_LEVEL, "%s [%d] Send %s", prefix, number, _loggable(message))
            await send(message)

        log(TRACE_LOG_LEVEL, "%s [%d] Started scope=%s", prefix, number, _loggable(scope))
        try:
            await self.app(scope, logged_receive, logged_send)
        except BaseException:
            log(TRACE_LOG_LEVEL, "%s [%d] Raised exception", prefix, number)
            raise
        log(TRACE_LOG_LEVEL, "%s [%d] Completed", prefix, number)
