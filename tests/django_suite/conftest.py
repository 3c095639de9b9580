# Nothing here is a pytest test: run.py drives Django's own runner, and importing the
# settings modules outside it would configure Django for the whole pytest session.
collect_ignore_glob = ["*"]
