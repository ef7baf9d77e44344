"""The project's WSGI application, in piggyback's middleware, with its handlers.

Serve it with ``gunicorn -w 4 examples.django_project.wsgi:application``.
"""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

import piggyback.django

from . import views

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_project.settings")

application = live = piggyback.django.wrap(get_wsgi_application())
views.install(live)
