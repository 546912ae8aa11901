"""An ASGI 2 application that detection takes for ASGI 3: a plain callable
object whose __call__ is not a coroutine function and returns the ASGI 2
instance. Only --interface asgi2 serves it."""

from asgi2_app import App


class Factory:
    def __call__(self, scope, *rest):
        if rest:
            raise TypeError("called as ASGI 3")
        return App(scope)


app = Factory()
