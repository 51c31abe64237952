"""What the Django integration tests (WSGI and ASGI) share: Django set up once per process, and the plain views.

Each test module keeps its own `urlpatterns` and points ROOT_URLCONF at itself with `override_settings` while
its tests run, so either module may be the one that configured Django first.
"""

from __future__ import annotations

from typing import Any

import django  # type: ignore[import-untyped]
from django.conf import settings  # type: ignore[import-untyped]
from django.http import HttpResponse, JsonResponse  # type: ignore[import-untyped]


def configure(urlconf: str) -> None:
    """Configure and set up Django for the tests, unless another test module already did."""
    if not settings.configured:
        settings.configure(DEBUG=False, ALLOWED_HOSTS=["*"], ROOT_URLCONF=urlconf, SECRET_KEY="itest",
                           MIDDLEWARE=[], INSTALLED_APPS=[], LOGGING_CONFIG=None)
        django.setup()


def user(request: Any, uid: int) -> Any:
    return JsonResponse({"uid": uid})


def boom(request: Any) -> Any:
    raise RuntimeError("kaput")


def healthz(request: Any) -> Any:
    return HttpResponse("ok")
