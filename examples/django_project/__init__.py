"""A minimal Django project under piggyback: a counter kept in ``request.session``,
shown with ``request.user``.

From the repository's root, create the database (``django_example.sqlite3`` in the
working directory) and a user to sign in as, once::

    export DJANGO_SETTINGS_MODULE=examples.django_project.settings
    python -m django migrate
    python -m django createsuperuser

then serve it with four workers sharing piggyback's default SQLite store::

    gunicorn -w 4 examples.django_project.wsgi:application

(or ``python -m django runserver 8000``) and open http://127.0.0.1:8000/.
"""
