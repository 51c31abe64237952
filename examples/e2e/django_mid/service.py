"""The middle service of the e2e mesh: a one-file Django project that calls the backend with httpx.

No tracing code: run it under `meshtrace-run python service.py --port N --backend http://127.0.0.1:B`
(Django's own server, WSGI), adding `--asgi` to serve it under ASGI with uvicorn instead.
"""

from __future__ import annotations

import argparse
import os

import django
import httpx
from django.conf import settings
from django.http import JsonResponse
from django.urls import path

CONFIG = {"backend": os.environ.get("BACKEND_URL", "http://127.0.0.1:8002")}


def stock(request, sku):  # type: ignore[no-untyped-def]
    with httpx.Client(timeout=10) as client:
        downstream = client.get(f"{CONFIG['backend']}/items/{sku}")
    downstream.raise_for_status()
    return JsonResponse({
        "service": "mid",
        "headers": {k.lower(): v for k, v in request.headers.items()},
        "downstream": downstream.json(),
    })


urlpatterns = [path("stock/<int:sku>/", stock)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--asgi", action="store_true", help="serve with uvicorn (ASGI) instead of runserver")
    options = parser.parse_args()
    CONFIG["backend"] = options.backend
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__,
        SECRET_KEY="e2e-only",
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        INSTALLED_APPS=[],
    )
    django.setup()
    if options.asgi:
        import uvicorn
        from django.core.asgi import get_asgi_application

        uvicorn.run(get_asgi_application(), host="127.0.0.1", port=options.port, lifespan="off")
        return
    from django.core.management import call_command

    call_command("runserver", f"127.0.0.1:{options.port}", use_reloader=False, use_threading=True)


if __name__ == "__main__":
    main()
