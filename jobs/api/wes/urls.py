"""Routes of /ga4gh/wes/v1/."""

from django.urls import path

from . import views

urlpatterns = [
    path("service-info", views.ServiceInfoView.as_view(), name="wes-service-info"),
    path("runs", views.RunsView.as_view(), name="wes-runs"),
    path("runs/<str:run_id>", views.RunView.as_view(), name="wes-run"),
    path("runs/<str:run_id>/status", views.RunStatusView.as_view(), name="wes-run-status"),
    path("runs/<str:run_id>/cancel", views.RunCancelView.as_view(), name="wes-run-cancel"),
    path("runs/<str:run_id>/tasks", views.TasksView.as_view(), name="wes-tasks"),
    path("runs/<str:run_id>/tasks/<str:task_id>", views.TaskView.as_view(), name="wes-task"),
]
