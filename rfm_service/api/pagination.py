"""Page-number pagination shaped like Django REST framework's:
``{"count", "next", "previous", "results"}`` with absolute links."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask import request

from .errors import fail


@dataclass(frozen=True)
class Page:
    number: int
    size: int
    count: int

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    @property
    def last(self) -> int:
        return max(1, -(-self.count // self.size))  # page 1 exists even when empty

    def body(self, results: list[Any]) -> dict[str, Any]:
        return {
            "count": self.count,
            "next": _page_url(self.number + 1) if self.number < self.last else None,
            "previous": _page_url(self.number - 1) if self.number > 1 else None,
            "results": results,
        }


def paginate(count: int, number: int, size: int) -> Page:
    """The requested page, checked before any row is read (so a huge page
    number never reaches the database as an OFFSET)."""
    page = Page(number, size, count)
    if number > page.last:
        fail(404, "Invalid page.")  # DRF's wording
    return page


def _page_url(number: int) -> str:
    """This request's absolute URL with ``page`` replaced; page 1 drops it."""
    args = [(k, v) for k, v in request.args.items(multi=True) if k != "page"]
    if number > 1:
        args.append(("page", str(number)))
    return request.base_url + (f"?{urlencode(args)}" if args else "")
