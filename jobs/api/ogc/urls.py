"""Routes of /ogcapi/."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.LandingView.as_view(), name="ogc-landing"),
    path("conformance", views.ConformanceView.as_view(), name="ogc-conformance"),
    path("processes", views.ProcessesView.as_view(), name="ogc-processes"),
    path("processes/<str:process_id>", views.ProcessView.as_view(), name="ogc-process"),
    path(
        "processes/<str:process_id>/execution",
        views.ExecutionView.as_view(),
        name="ogc-execution",
    ),
    path("jobs", views.JobsView.as_view(), name="ogc-jobs"),
    path("jobs/<str:job_id>", views.JobView.as_view(), name="ogc-job"),
    path("jobs/<str:job_id>/results", views.ResultsView.as_view(), name="ogc-results"),
]
