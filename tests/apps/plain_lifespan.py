"""The lifespan of the test apps that need nothing at startup or shutdown:
every event answered complete. Apps that are served in place (--app-dir
tests/apps) share it; apps copied elsewhere by their tests keep their own."""


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
