from catalog import views
from django.urls import path

urlpatterns = [
    path("products/<int:pk>/", views.product_detail),
    path("pool/", views.pool_status),
]
