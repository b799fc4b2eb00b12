"""The set-based end of every import path: validated rows sit in a TEMP
staging table (``line``, ``order_id``, ``customer_id``, ``ordered_at``,
``total_amount``) and a few statements merge them into ``customers`` and
``orders``, inside the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

from .bulk import bump_sequence
from .order_csv import MAX_ORDER_ID, ImportFailed, StagedFile

STAGING = "import_staging"


@dataclass(frozen=True)
class ImportSummary:
    rows_read: int
    orders_inserted: int
    orders_skipped: int
    customers_created: int
    # Which path loaded the file: "copy" (straight into an empty orders
    # table), "staged copy" or "validated" (Python checked every row).
    method: str = "validated"


def check_duplicates(conn: Connection) -> None:
    """An order_id used twice in the file names both lines."""
    duplicate = conn.execute(
        text(
            f"SELECT order_id FROM {STAGING} WHERE order_id IS NOT NULL "
            "GROUP BY order_id HAVING COUNT(*) > 1 ORDER BY MIN(line) LIMIT 1"
        )
    ).scalar()
    if duplicate is None:
        return
    first, second = conn.execute(
        text(f"SELECT line FROM {STAGING} WHERE order_id = :id ORDER BY line LIMIT 2"),
        {"id": duplicate},
    ).scalars()
    raise ImportFailed(
        f"line {second}, column order_id: {duplicate} is already used on line {first}"
    )


def check_ids_left(conn: Connection, without_ids: int) -> None:
    """Rows without an order_id are numbered above the largest id; refuse
    the file when that passes orders.id's maximum. PostgreSQL's sequence
    would fail mid-insert, and SQLite would pick random unused ids, which a
    later file's real order ids could then collide with."""
    largest = conn.execute(text("SELECT MAX(id) FROM orders")).scalar() or 0
    if largest > MAX_ORDER_ID - without_ids:
        raise ImportFailed(
            f"no order ids are left for the {without_ids:,} rows without order_id: "
            f"the largest order id is {largest}, the maximum {MAX_ORDER_ID}; "
            "give those rows an order_id"
        )


def customer_name_sql(customer_id: str) -> str:
    """The name every import path gives a customer it creates."""
    return f"'Customer ' || CAST({customer_id} AS TEXT)"


# Customers are created only for rows that will really be inserted, named
# by ``customer_name_sql``, created at their first imported order (the best
# signup estimate an order history gives).
_INSERT_CUSTOMERS = f"""
INSERT INTO customers (id, name, created_at)
SELECT s.customer_id, {customer_name_sql("s.customer_id")}, MIN(s.ordered_at)
FROM {STAGING} s
WHERE s.order_id IS NULL OR NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = s.order_id)
GROUP BY s.customer_id
ON CONFLICT (id) DO NOTHING
"""
# The WHERE before ON CONFLICT also avoids SQLite's INSERT ... SELECT parser ambiguity.
_INSERT_WITH_IDS = f"""
INSERT INTO orders (id, customer_id, ordered_at, total_amount)
SELECT order_id, customer_id, ordered_at, total_amount FROM {STAGING}
WHERE order_id IS NOT NULL ORDER BY line
ON CONFLICT (id) DO NOTHING
"""
_INSERT_WITHOUT_IDS = f"""
INSERT INTO orders (customer_id, ordered_at, total_amount)
SELECT customer_id, ordered_at, total_amount FROM {STAGING}
WHERE order_id IS NULL ORDER BY line
"""


def merge_staged(conn: Connection, staged: StagedFile, method: str) -> ImportSummary:
    """Merge the staging table into customers and orders (caller's transaction)."""
    check_duplicates(conn)
    customers = conn.execute(text(_INSERT_CUSTOMERS)).rowcount
    bump_sequence(conn, "customers")
    with_ids = conn.execute(text(_INSERT_WITH_IDS)).rowcount
    # Before any id is generated, or generated ids would collide with imported ones.
    bump_sequence(conn, "orders")
    without_ids = 0
    if staged.rows > staged.with_order_id:
        check_ids_left(conn, staged.rows - staged.with_order_id)
        without_ids = conn.execute(text(_INSERT_WITHOUT_IDS)).rowcount
    return ImportSummary(
        rows_read=staged.rows,
        orders_inserted=with_ids + without_ids,
        orders_skipped=staged.with_order_id - with_ids,
        customers_created=customers,
        method=method,
    )
