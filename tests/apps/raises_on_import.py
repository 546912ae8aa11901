"""A module whose import fails: the server must show the full traceback."""


def _helper():
    raise ValueError("import-time-failure-marker")


_helper()


async def app(scope, receive, send):  # pragma: no cover - never reached
    pass
