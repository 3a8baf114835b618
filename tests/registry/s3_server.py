"""moto's S3 server in its own process, behind a counting (optionally slow) middleware.

    python tests/registry/s3_server.py   # prints the port, serves until stdin closes

Its own process: moto's request handling is pure Python, and in the test's
process it would share one interpreter lock with the scanner it is measuring.
``GET /__counts`` answers the counts as JSON; ``POST /__reset`` clears them and
moto's buckets; ``POST /__delay?seconds=S`` adds latency to every request.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any


def main() -> None:
    from moto.backends import get_backend
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    state: dict[str, Any] = {"delay": 0.0, "bytes": 0}
    counts: Counter[str] = Counter()
    gets: Counter[str] = Counter()
    lock = threading.Lock()
    moto = DomainDispatcherApplication(create_backend_app)

    def reply(start_response: Callable[..., Any], body: bytes) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        if path == "/__counts":
            with lock:
                body = {"counts": counts, "object_gets": gets, "model_bytes": state["bytes"]}
            return reply(start_response, json.dumps(body).encode())
        if path == "/__reset":
            with lock:
                counts.clear()
                gets.clear()
                state["bytes"] = 0
            if "moto" in query:
                get_backend("s3").reset()
            return reply(start_response, b"{}")
        if path == "/__delay":
            state["delay"] = float(urllib.parse.parse_qs(query)["seconds"][0])
            return reply(start_response, b"{}")
        if state["delay"]:
            time.sleep(state["delay"])
        method = environ["REQUEST_METHOD"]
        is_object = path.count("/") >= 2 and not query
        body = b"".join(moto(environ, start_response))
        with lock:
            counts[f"{method} {'object' if is_object else 'bucket'}"] += 1
            if method == "GET" and is_object:
                gets[path] += 1
                state["bytes"] += len(body)
        return [body]

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_port, flush=True)
    sys.stdin.read()  # the parent closes our stdin (or dies): stop
    server.shutdown()


if __name__ == "__main__":
    main()
