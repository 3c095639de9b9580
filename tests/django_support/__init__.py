"""A Django app and settings for the tests of dbpool's Django backends.

``inprocess.configure()`` sets Django up inside the pytest process (aliases on the test
servers, see there); ``settings`` is the settings module of the ``manage.py test``
runs, which pick their database from the environment.
"""
