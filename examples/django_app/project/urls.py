from __future__ import annotations

from catalog.models import Category
from django.http import HttpRequest
from django.http import JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
def categories(request: HttpRequest) -> JsonResponse:
    if request.method == "POST":  # the live server's own thread and connection write
        made = Category.objects.create(name=request.POST["name"])
        return JsonResponse({"id": made.id}, status=201)
    names = list(Category.objects.order_by("name").values_list("name", flat=True))
    return JsonResponse({"categories": names})


urlpatterns = [path("categories/", categories)]
