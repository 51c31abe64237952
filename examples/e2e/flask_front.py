"""The first service of the e2e mesh: a Flask app that calls the Django service with requests.

No tracing code: run it under `meshtrace-run python flask_front.py --port N --mid http://127.0.0.1:M`.
"""

from __future__ import annotations

import argparse
import os

import requests
from flask import Flask, request

app = Flask(__name__)
CONFIG = {"mid": os.environ.get("MID_URL", "http://127.0.0.1:8001")}


@app.get("/orders/<int:order_id>")
def order(order_id: int) -> dict[str, object]:
    downstream = requests.get(f"{CONFIG['mid']}/stock/{order_id}/", timeout=10)
    downstream.raise_for_status()
    return {
        "service": "front",
        "headers": {k.lower(): v for k, v in request.headers.items()},
        "downstream": downstream.json(),
    }


@app.get("/healthz")
def healthz() -> str:
    return "ok"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mid", required=True)
    options = parser.parse_args()
    CONFIG["mid"] = options.mid
    app.run(host="127.0.0.1", port=options.port, threaded=True)
