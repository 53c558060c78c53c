"""The product's URLs, and /bench/bare/: a DRF view with the same authentication only."""

from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView

from lmweb.urls import handler404  # noqa: F401 (the product's JSON 404 under /api/)
from lmweb.urls import urlpatterns as product_urlpatterns


class BareView(APIView):
    """Authenticated and throttled like the product's views; no database work of its own."""

    def get(self, request):
        return Response({"ok": True})


urlpatterns = [path("bench/bare/", BareView.as_view()), *product_urlpatterns]
