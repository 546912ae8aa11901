"""A module that exists but imports a module that does not."""

import casgi_test_module_that_does_not_exist  # noqa: F401


async def app(scope, receive, send):  # pragma: no cover - never reached
    pass
