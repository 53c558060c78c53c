"""Top-level URLs: the API under /api/v1/, its schema and viewer, GA4GH WES under
/ga4gh/wes/v1/, OGC API - Processes under /ogcapi/, the admin, health, the README."""

from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path
from django.views.defaults import page_not_found
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from jobs.api.views import MetricsView, healthz, readme

urlpatterns = [
    path("", RedirectView.as_view(url="/api/v1/", permanent=False)),
    path("api/v1/", include("jobs.api.urls")),
    path("ga4gh/wes/v1/", include("jobs.api.wes.urls")),
    path("ogcapi/", include("jobs.api.ogc.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("api-auth/", include("rest_framework.urls")),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("readme", readme, name="readme"),
    path("metrics", MetricsView.as_view(), name="metrics"),
]


def _not_found(request, exception=None):
    """JSON for API clients, Django's page for people."""
    if request.path.startswith(("/api/", "/ga4gh/", "/ogcapi/")):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception)


handler404 = _not_found
