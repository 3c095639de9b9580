from django.apps import AppConfig


class DjangoSupportConfig(AppConfig):
    name = "tests.django_support"
    label = "django_support"
    default_auto_field = "django.db.models.BigAutoField"
