"""Log formatters and the default logging configuration of casgi.

The default output has the shapes uvicorn prints, so existing log parsing keeps
working::

    INFO:     Started server process [1234]
    INFO:     127.0.0.1:51234 - "GET /path?q HTTP/1.1" 200 OK

A dictConfig file can name these formatters with ``"()":
"casgi.logging.DefaultFormatter"`` / ``"casgi.logging.AccessFormatter"`` and
the keywords ``fmt``, ``datefmt``, ``style`` and ``use_colors``.
"""

import http
import logging
import sys
from typing import Any, Callable, Dict, Optional

__all__ = ["TRACE_LOG_LEVEL", "ColourizedFormatter", "DefaultFormatter", "AccessFormatter",
           "LOGGING_CONFIG"]

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
    full_path, http_version, status_code); adds ``%(client_addr)s``,
    ``%(request_line)s`` and ``%(status_code)s`` ("200 OK")."""

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
