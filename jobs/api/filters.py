"""Filtering by query parameters, skipped when a request names none."""

from django_filters.rest_framework import DjangoFilterBackend


class QueryFilterBackend(DjangoFilterBackend):
    """django-filter, except that a request with none of the filter's parameters gets the
    queryset as it is: building and validating an empty filter form cost ~3 ms a request, a
    sixth of a job list's time (bench/, B1). The result is the same either way."""

    def filter_queryset(self, request, queryset, view):
        filterset_class = self.get_filterset_class(view, queryset)
        if filterset_class is not None:
            names = filterset_class.base_filters
            if not any(name in request.query_params for name in names):
                return queryset
        return super().filter_queryset(request, queryset, view)
