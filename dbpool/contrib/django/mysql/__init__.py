"""MySQL and MariaDB (PyMySQL) through a dbpool pool: ``ENGINE: "dbpool.contrib.django.mysql"``."""
