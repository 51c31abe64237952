"""The last service of the e2e mesh: a Flask app that answers with the headers it received.

No tracing code: run it under `meshtrace-run python backend.py --port N`.
"""

from __future__ import annotations

import argparse
import os

from flask import Flask, request

app = Flask(__name__)


@app.get("/items/<int:item_id>")
def item(item_id: int) -> dict[str, object]:
    return {"service": "backend", "item": item_id, "headers": {k.lower(): v for k, v in request.headers.items()}}


@app.get("/pid")
def pid() -> dict[str, int]:
    """For the pre-fork test: which worker served this request (after a pause, so workers overlap)."""
    import time

    time.sleep(0.3)
    return {"pid": os.getpid()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    app.run(host="127.0.0.1", port=port, threaded=True)
