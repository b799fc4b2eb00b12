"""The issue's targets, evaluated on one run's results: each ratio, its
limit, PASS or MISS and by how much."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    how: str  # what was divided by what, and where
    value: float
    op: str  # "<=" or ">="
    limit: float

    @property
    def passed(self) -> bool:
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit

    @property
    def verdict(self) -> str:
        if self.limit == 0:  # a count that must be zero
            return "PASS" if self.passed else f"MISS ({self.value:g} instead of 0)"
        share = self.value / self.limit
        if self.op == "<=":
            if self.passed:
                return f"PASS ({100 * (1 - share):.0f}% under the limit)"
            return f"MISS by {100 * (share - 1):.0f}% ({share:.2f}× the limit)"
        if self.passed:
            return f"PASS ({100 * (share - 1):.0f}% above the limit)"
        return f"MISS by {100 * (1 - share):.0f}% (needs {1 / share:.2f}× more)"

    def line(self) -> str:
        shown = f"{self.value:g}" if self.limit == 0 else f"{self.value:.3f}"
        return f"{self.name}: {shown} (target {self.op} {self.limit:g}) {self.verdict}"


def evaluate(results: dict) -> list[Target]:
    sizes = results["sizes"]
    labels = list(sizes)
    small, large = labels[0], labels[-1]
    found: list[Target] = []
    big = sizes[large]
    found.append(
        Target(
            "recalculation vs pandas round trip",
            f"flask calculate-rfm / pandas peer, medians at {large}",
            big["project_seconds"] / big["pandas_seconds"],
            "<=",
            0.5,
        )
    )
    found.append(
        Target(
            "recalculation vs bare statement",
            f"flask calculate-rfm / bare scoring statement, medians at {large}",
            big["project_seconds"] / big["floor_seconds"],
            "<=",
            1.3,
        )
    )
    found.append(
        Target(
            "calculate-rfm peak memory growth",
            f"max RSS at {large} / at {small}",
            big["project_rss_kb"] / sizes[small]["project_rss_kb"],
            "<=",
            1.2,
        )
    )
    imported = results.get("import")
    if imported:
        found.append(
            Target(
                "import-orders vs bare COPY",
                f"rows/s, {imported['rows']:,} orders of the {imported['size']} dataset",
                imported["project_rows_per_s"] / imported["copy_rows_per_s"],
                ">=",
                0.5,
            )
        )
    http = results.get("http") or {}
    if http:
        h_small, h_large = next(iter(http)), list(http)[-1]
        lo, hi = http[h_small]["api"], http[h_large]["api"]
        found.append(
            Target(
                "statistics latency growth",
                f"p50 of GET /api/rfm/statistics/ at {h_large} / at {h_small}",
                hi["statistics"]["p50_ms"] / lo["statistics"]["p50_ms"],
                "<=",
                1.5,
            )
        )
        found.append(
            Target(
                "list: last page vs first page",
                f"p50 of the last / the first page of GET /api/rfm/ at {h_large}",
                hi["list_last"]["p50_ms"] / hi["list_first"]["p50_ms"],
                "<=",
                2.0,
            )
        )
        found.append(
            Target(
                "GET /api/rfm/{id}/ vs bare endpoint",
                f"requests/s at {h_large} / the bare Flask endpoint's",
                hi["detail"]["rps"] / http[h_large]["bare"]["rps"],
                ">=",
                0.5,
            )
        )
        during = hi.get("detail_during_recalc")
        idle = hi.get("detail_idle", hi["detail"])
        if during:
            found.append(
                Target(
                    "reads during a recalculation: p99",
                    f"p99 of GET /api/rfm/{{id}}/ during / idle just before, at {h_large}",
                    during["p99_ms"] / idle["p99_ms"],
                    "<=",
                    3.0,
                )
            )
            found.append(
                Target(
                    "reads during a recalculation: errors",
                    f"failed requests (socket errors, timeouts, non-2xx) at {h_large}",
                    float(during["errors"]),
                    "<=",
                    0,
                )
            )
    return found
