"""A small notes service: the example application `make serve` runs.

Run it with `casgi notes:app` from this directory (or `uvicorn notes:app`:
the same command line works with either server).

The lifespan startup opens an SQLite database and creates its table; the
shutdown closes it. The database file is taken from the NOTES_DB environment
variable, default `notes.db` in the current directory (`:memory:` keeps
everything in memory for the life of the process).

Endpoints, all JSON:
    GET    /             service information
    GET    /notes        every note, oldest first
    POST   /notes        {"text": "..."} -> 201 with the new note
    GET    /notes/{id}   one note, 404 when there is none
    DELETE /notes/{id}   204, or 404 when there is none
"""

import contextlib
import json
import os
import sqlite3
import sys
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

MAX_TEXT_LENGTH = 10_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    text TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def database_path() -> str:
    return os.environ.get("NOTES_DB", "notes.db")


def note_to_json(row: sqlite3.Row) -> dict:
    return {"id": row["id"], "text": row["text"], "created": row["created"]}


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    # One connection for the process. The handlers below never await while
    # holding a cursor, so the single event-loop thread is the only user.
    db = sqlite3.connect(database_path(), check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute(SCHEMA)
    db.commit()
    app.state.db = db
    count = db.execute("SELECT COUNT(*) FROM notes").fetchone()[0]
    print(f"notes: opened {database_path()} ({count} notes)", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        db.close()
        print(f"notes: closed {database_path()}", file=sys.stderr, flush=True)


def db_of(request: Request) -> sqlite3.Connection:
    return request.app.state.db


async def service_info(request: Request) -> JSONResponse:
    count = db_of(request).execute("SELECT COUNT(*) FROM notes").fetchone()[0]
    return JSONResponse(
        {
            "service": "notes",
            "notes": count,
            "database": database_path(),
            "endpoints": ["GET /notes", "POST /notes", "GET /notes/{id}", "DELETE /notes/{id}"],
        }
    )


async def list_notes(request: Request) -> JSONResponse:
    rows = db_of(request).execute("SELECT id, text, created FROM notes ORDER BY id").fetchall()
    return JSONResponse([note_to_json(row) for row in rows])


async def create_note(request: Request) -> JSONResponse:
    try:
        payload = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        return error(400, "body must be JSON")
    text = payload.get("text") if isinstance(payload, dict) else None
    if not isinstance(text, str) or not text.strip():
        return error(400, 'body must be {"text": "..."} with a non-empty string')
    if len(text) > MAX_TEXT_LENGTH:
        return error(413, f"text longer than {MAX_TEXT_LENGTH} characters")
    db = db_of(request)
    created = time.time()
    cursor = db.execute("INSERT INTO notes (text, created) VALUES (?, ?)", (text, created))
    db.commit()
    note = {"id": cursor.lastrowid, "text": text, "created": created}
    return JSONResponse(note, status_code=201, headers={"location": f"/notes/{note['id']}"})


async def get_note(request: Request) -> JSONResponse:
    note_id = request.path_params["note_id"]
    row = db_of(request).execute(
        "SELECT id, text, created FROM notes WHERE id = ?", (note_id,)
    ).fetchone()
    if row is None:
        return error(404, f"no note {note_id}")
    return JSONResponse(note_to_json(row))


async def delete_note(request: Request) -> Response:
    note_id = request.path_params["note_id"]
    db = db_of(request)
    cursor = db.execute("DELETE FROM notes WHERE id = ?", (note_id,))
    db.commit()
    if cursor.rowcount == 0:
        return error(404, f"no note {note_id}")
    return Response(status_code=204)


routes = [
    Route("/", service_info, methods=["GET"]),
    Route("/notes", list_notes, methods=["GET"]),
    Route("/notes", create_note, methods=["POST"]),
    Route("/notes/{note_id:int}", get_note, methods=["GET"]),
    Route("/notes/{note_id:int}", delete_note, methods=["DELETE"]),
]

app = Starlette(routes=routes, lifespan=lifespan)
