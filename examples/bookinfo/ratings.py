"""Bookinfo's ratings service: a Flask app that checks the book with `details` (over httpx) and answers stars.

No tracing code. `--fail-percent P` makes it answer 503 to P% of requests: a stand-in for the sidecar's fault
injection where the rules are not available, so the demo still has errors to show.
"""

from __future__ import annotations

import argparse
import random

import httpx
from flask import Flask

app = Flask(__name__)
CONFIG: dict[str, object] = {"details": "http://127.0.0.1:9081", "fail_percent": 0.0}
client = httpx.Client(timeout=10)


@app.get("/ratings/<int:product>")
def ratings(product: int) -> tuple[dict[str, object], int]:
    if random.random() * 100 < float(str(CONFIG["fail_percent"])):
        return {"error": "ratings backend overloaded"}, 503
    book = client.get(f"{CONFIG['details']}/details/{product}")
    if book.status_code != 200:
        return {"error": f"details answered {book.status_code}"}, 502
    return {"id": product, "isbn": book.json()["isbn"], "ratings": {"Reviewer1": 5, "Reviewer2": 4}}, 200


@app.get("/healthz")
def healthz() -> str:
    return "ok"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--details", required=True)
    parser.add_argument("--fail-percent", type=float, default=0.0)
    options = parser.parse_args()
    CONFIG.update(details=options.details, fail_percent=options.fail_percent)
    app.run(host="127.0.0.1", port=options.port, threaded=True)
