"""Page-number pagination with a caller-chosen page size, a page and its count in one query."""

from django.core.paginator import EmptyPage, PageNotAnInteger, Paginator
from django.db.models import F, Func, QuerySet, Subquery
from rest_framework.pagination import PageNumberPagination

# The annotation that carries the total count on every row of a page.
_TOTAL = "page_total_count"
# Past this offset no row can exist (PostgreSQL's OFFSET is a bigint).
_LARGEST_OFFSET = 2**62


class OneQueryPaginator(Paginator):
    """Django's paginator, except that a page of a plain queryset is fetched with its total
    count in the same query, as an uncorrelated scalar subquery (PostgreSQL runs it once, from
    the index): the separate COUNT was a round trip of its own, a fifth of a job list's time
    on a busy machine (bench/, B1). Pages, counts and errors are the same as Django's."""

    def page(self, number):
        if "count" in self.__dict__ or not self._one_query(self.object_list):
            return super().page(number)
        number = self._positive(number)
        bottom = (number - 1) * self.per_page
        if bottom > _LARGEST_OFFSET:
            raise EmptyPage(self.error_messages["no_results"])
        total = self.object_list.order_by().annotate(n=Func(F("pk"), function="COUNT"))
        rows = list(
            self.object_list.annotate(**{_TOTAL: Subquery(total.values("n"))})[
                bottom : bottom + self.per_page
            ]
        )
        if not rows and number > 1:
            # No row at this offset: the page is past the last one, as Django would say.
            raise EmptyPage(self.error_messages["no_results"])
        if not rows:
            self.count = 0
        elif isinstance(rows[0], dict):  # a values() queryset
            self.count = rows[0][_TOTAL]
        else:
            self.count = getattr(rows[0], _TOTAL)
        return self._get_page(rows, number, self)

    def _positive(self, number) -> int:
        """Django's checks of a page number that need no count, with its messages."""
        try:
            if isinstance(number, float) and not number.is_integer():
                raise ValueError
            number = int(number)
        except (TypeError, ValueError):
            raise PageNotAnInteger(self.error_messages["invalid_page"]) from None
        if number < 1:
            raise EmptyPage(self.error_messages["min_page"])
        return number

    def _one_query(self, object_list) -> bool:
        if not isinstance(object_list, QuerySet) or self.orphans:
            return False
        query = object_list.query
        return not (
            query.distinct or query.is_sliced or query.combinator or query.group_by is not None
        )


class Pagination(PageNumberPagination):
    django_paginator_class = OneQueryPaginator
    page_size_query_param = "page_size"
    max_page_size = 500
