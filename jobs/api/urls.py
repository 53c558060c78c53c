"""Routes of /api/v1/."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from .views import (
    CallbackSecretView,
    DatasetViewSet,
    JobViewSet,
    LiveLogView,
    ServiceInfoView,
    WorkflowViewSet,
)

router = DefaultRouter()
router.register("jobs", JobViewSet, basename="job")
router.register("datasets", DatasetViewSet, basename="dataset")
router.register("workflows", WorkflowViewSet, basename="workflow")

urlpatterns = [
    path("service-info/", ServiceInfoView.as_view(), name="service-info"),
    path("callback-secret/", CallbackSecretView.as_view(), name="callback-secret"),
    path(
        "live-logs/<uuid:job_id>/<str:stage>/<str:rule>",
        LiveLogView.as_view(),
        name="live-log",
    ),
    path(
        "jobs/<uuid:pk>/outputs/<path:path>",
        JobViewSet.as_view({"get": "output_file"}),
        name="job-output-file",
    ),
    path(
        "jobs/<uuid:pk>/tasks/<str:task>/log",
        JobViewSet.as_view({"get": "task_log"}),
        name="job-task-log",
    ),
    *router.urls,
]
