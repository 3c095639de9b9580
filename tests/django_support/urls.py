"""Views that the load tests drive through Django's own WSGI handler."""

from django.db import connections, transaction
from django.http import HttpRequest, HttpResponse
from django.urls import path

from tests.django_support.models import Item


def two_queries(request: HttpRequest) -> HttpResponse:
    alias = request.GET["db"]
    count = Item.objects.using(alias).count()
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT 1")
        (one,) = cursor.fetchone()
    return HttpResponse(f"{count} {one}")


def fail_in_transaction(request: HttpRequest) -> HttpResponse:
    alias = request.GET["db"]
    with transaction.atomic(using=alias):
        Item.objects.using(alias).create(name=request.GET["name"])
        raise RuntimeError("the view failed halfway")


urlpatterns = [
    path("two-queries", two_queries),
    path("fail", fail_in_transaction),
]
