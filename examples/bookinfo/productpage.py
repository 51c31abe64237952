"""Bookinfo's front end: a Flask app that asks `details` and `reviews` (with requests) and renders one page.

No tracing code. Outbound calls go through this service's sidecar because the demo sets HTTP_PROXY; the service
only knows plain URLs (`--details`, `--reviews`). When `reviews` fails, the page degrades instead of failing,
as Istio's Bookinfo does: the error still shows in the trace and in the sidecars' metrics.
"""

from __future__ import annotations

import argparse
import random

import requests
from flask import Flask, request

app = Flask(__name__)
CONFIG = {"details": "http://127.0.0.1:9081", "reviews": ["http://127.0.0.1:9082"]}
session = requests.Session()


@app.get("/productpage")
def productpage() -> tuple[dict[str, object], int]:
    product = request.args.get("id", "0")
    details = session.get(f"{CONFIG['details']}/details/{product}", timeout=10)
    if details.status_code != 200:
        return {"error": f"details answered {details.status_code}"}, 502
    page: dict[str, object] = {"product": details.json()}
    reviews = session.get(f"{random.choice(CONFIG['reviews'])}/reviews/{product}", timeout=10)
    if reviews.status_code == 200:
        page["reviews"] = reviews.json()
    else:
        page["reviews"] = {"error": f"reviews unavailable ({reviews.status_code})"}
    return page, 200


@app.get("/healthz")
def healthz() -> str:
    return "ok"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--details", required=True)
    parser.add_argument("--reviews", required=True,
                        help="the reviews URL; a comma-separated list makes this app pick one at random per request "
                             "(only for sidecars without traffic rules: with rules the sidecar splits `reviews`)")
    options = parser.parse_args()
    CONFIG.update(details=options.details, reviews=options.reviews.split(","))
    app.run(host="127.0.0.1", port=options.port, threaded=True)
