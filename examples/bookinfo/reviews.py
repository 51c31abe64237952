"""Bookinfo's reviews service: a one-file Django project in three versions, chosen with `--version`.

v1 shows no ratings; v2 asks `ratings` (with requests) and shows black stars; v3 does the same with red stars.
No tracing code: run it under `meshtrace-run python reviews.py --port N --version v2 --ratings URL`.
"""

from __future__ import annotations

import argparse

import django
import requests
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import path

CONFIG = {"version": "v1", "ratings": "http://127.0.0.1:9083"}
session = requests.Session()


def reviews(request: HttpRequest, product: int) -> JsonResponse:
    body: dict[str, object] = {
        "id": product,
        "version": CONFIG["version"],
        "reviews": [
            {"reviewer": "Reviewer1", "text": "An extremely entertaining play by Shakespeare."},
            {"reviewer": "Reviewer2", "text": "Absolutely fun and entertaining."},
        ],
    }
    if CONFIG["version"] == "v1":
        return JsonResponse(body)
    answer = session.get(f"{CONFIG['ratings']}/ratings/{product}", timeout=10)
    if answer.status_code != 200:
        body["ratings"] = {"error": f"ratings unavailable ({answer.status_code})"}
        return JsonResponse(body, status=503)
    body["ratings"] = answer.json()["ratings"]
    body["stars"] = "black" if CONFIG["version"] == "v2" else "red"
    return JsonResponse(body)


urlpatterns = [path("reviews/<int:product>", reviews)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--version", choices=["v1", "v2", "v3"], required=True)
    parser.add_argument("--ratings", required=True)
    options = parser.parse_args()
    CONFIG.update(version=options.version, ratings=options.ratings)
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        SECRET_KEY="bookinfo-demo-only",
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
    )
    django.setup()
    from django.core.management import call_command

    call_command("runserver", f"127.0.0.1:{options.port}", use_reloader=False, use_threading=True)


if __name__ == "__main__":
    main()
