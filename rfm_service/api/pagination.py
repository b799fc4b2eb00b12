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

    def body(self, results: list[Any], pin: dict[str, str] | None = None) -> dict[str, Any]:
        """The page; its links carry ``pin``'s query values (replacing the
        request's), e.g. the run the first page came from."""
        return {
            "count": self.count,
            "next": _page_url(self.number + 1, pin) if self.number < self.last else None,
            "previous": _page_url(self.number - 1, pin) if self.number > 1 else None,
            "results": results,
        }


def paginate(count: int, number: int, size: int) -> Page:
    """The requested page, checked before any row is read (so a huge page
    number never reaches the database as an OFFSET)."""
    page = Page(number, size, count)
    if number > page.last:
        fail(404, "Invalid page.")  # DRF's wording
    return page


def _page_url(number: int, pin: dict[str, str] | None = None) -> str:
    """This request's absolute URL with ``page`` replaced (page 1 drops it)
    and ``pin``'s values set."""
    pin = pin or {}
    args = [(k, v) for k, v in request.args.items(multi=True) if k != "page" and k not in pin]
    args.extend(pin.items())
    if number > 1:
        args.append(("page", str(number)))
    return request.base_url + (f"?{urlencode(args)}" if args else "")
