"""PostgreSQL (psycopg 3) through a dbpool pool: ``ENGINE: "dbpool.contrib.django.postgresql"``."""
