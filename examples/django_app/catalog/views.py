import dataclasses

from django.db import connection
from django.http import Http404, HttpRequest, JsonResponse

from catalog.models import Product


def product_detail(request: HttpRequest, pk: int) -> JsonResponse:
    """Two queries, as a typical page makes: the product, and a count for the listing."""
    product = Product.objects.filter(pk=pk).values("id", "name", "price_cents").first()
    if product is None:
        raise Http404("no such product")
    return JsonResponse({"product": product, "products": Product.objects.count()})


def pool_status(request: HttpRequest) -> JsonResponse:
    """The backend, and its pool's status as this process sees it (null without a dbpool pool).

    It checks out no connection, so it can be asked while the server is under load.
    """
    engine = getattr(connection, "dbpool_engine", None)  # only dbpool's backends have one
    status = dataclasses.asdict(engine.status()) if engine is not None else None
    return JsonResponse({"engine": connection.settings_dict["ENGINE"], "status": status})
