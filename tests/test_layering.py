"""The layering of src/bind (docs/ARCHITECTURE.md): which file may call which.

Calls between the extension's files are read from the sources: a file
"calls" another when it names a non-static cg_* function the other defines.
The graph must have no circle, the transport (conn.c) must know no HTTP, and
the ASGI files must reach a connection only through the stream interface.
"""

import re
from pathlib import Path

import pytest

BIND = Path(__file__).resolve().parent.parent / "src" / "bind"

DEFINITION = re.compile(r"^(?!static)[A-Za-z_][\w \*]*?\b(cg_\w+)\s*\([^;{]*\)\s*\{", re.M)
CALL = re.compile(r"\b(cg_\w+)\s*\(")
INCLUDE = re.compile(r'^#include "([\w.]+)"', re.M)


def _strip_comments(text):
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def _sources():
    if not BIND.is_dir():
        pytest.skip("the sources are not next to the tests")
    return {p.name: _strip_comments(p.read_text()) for p in sorted(BIND.glob("*.c"))}


def _call_graph():
    sources = _sources()
    defined_in = {}
    for name, text in sources.items():
        for m in DEFINITION.finditer(text):
            defined_in[m.group(1)] = name
    graph = {name: {} for name in sources}
    for name, text in sources.items():
        for m in CALL.finditer(text):
            target = defined_in.get(m.group(1))
            if target and target != name:
                graph[name].setdefault(target, set()).add(m.group(1))
    return graph


def _includes(name):
    headers, todo = set(), [name]
    while todo:
        text = (BIND / todo.pop()).read_text()
        for h in INCLUDE.findall(text):
            if h not in headers and (BIND / h).exists():
                headers.add(h)
                todo.append(h)
    return headers


def test_the_call_graph_has_no_circle():
    graph = _call_graph()
    assert graph, "no sources found"
    state = {}
    path = []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                circle = path[path.index(nxt) :] + [nxt]
                pytest.fail("files call each other in a circle: " + " -> ".join(circle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_transport_knows_no_http():
    text = _sources()["conn.c"]
    for prefix in ("cg_http1_", "cg_cycle_", "cg_ws_", "cg_scope_"):
        assert prefix not in text, f"conn.c uses {prefix}*"
    assert not {"protocols.h", "asgi.h", "stream.h", "http1.h"} & set(INCLUDE.findall(text))


@pytest.mark.parametrize("name", ["asgi_http.c", "asgi_ws.c"])
def test_asgi_files_write_only_through_the_stream(name):
    text = _sources()[name]
    assert "cg_conn" not in text, f"{name} touches a connection"
    assert not {"conn.h", "protocols.h"} & _includes(name), f"{name} includes the transport"
    # Wire bytes are the protocol's: no status line, no CRLF-framed header.
    assert "HTTP/1." not in text
    assert not re.search(r'"[^"\n]*\\r\\n', text), f"{name} formats HTTP/1 lines"


def test_the_http1_protocol_sits_above_the_asgi_cycle():
    graph = _call_graph()
    assert "asgi_http.c" in graph["h1.c"] and "conn.c" in graph["h1.c"]
    for below in ("asgi_http.c", "asgi_ws.c", "conn.c", "context.c", "lifespan.c"):
        assert "h1.c" not in graph[below]
        assert "server.c" not in graph[below]
