"""SQLite (sqlite3) through a dbpool pool: ``ENGINE: "dbpool.contrib.django.sqlite3"``."""
