"""Bookinfo's details service: a Flask app answering book facts from memory. A leaf: it calls nobody.

No tracing code: run it under `meshtrace-run python details.py --port N`.
"""

from __future__ import annotations

import argparse

from flask import Flask

app = Flask(__name__)


@app.get("/details/<int:product>")
def details(product: int) -> dict[str, object]:
    return {
        "id": product,
        "title": "The Comedy of Errors",
        "author": "William Shakespeare",
        "year": 1595,
        "isbn": f"123456789{product % 10}",
    }


@app.get("/healthz")
def healthz() -> str:
    return "ok"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    app.run(host="127.0.0.1", port=parser.parse_args().port, threaded=True)
