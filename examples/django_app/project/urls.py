from __future__ import annotations

from catalog.models import Category
from django.http import HttpRequest
from django.http import JsonResponse
from django.urls import path


def categories(request: HttpRequest) -> JsonResponse:
    names = list(Category.objects.order_by("name").values_list("name", flat=True))
    return JsonResponse({"categories": names})


urlpatterns = [path("categories/", categories)]
