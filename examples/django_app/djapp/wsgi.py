"""The WSGI application gunicorn serves (``gunicorn djapp.wsgi``)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djapp.settings")

application = get_wsgi_application()
