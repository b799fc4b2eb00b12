"""segment byte order

Revision ID: 5b1e0c7a9d42
Revises: 783cad017b7a
Create Date: 2026-11-24 13:25:00

rfm_scores.segment compares bytes (COLLATE "C") on PostgreSQL, so every
run's segment index build sorts a million names by memcmp rather than by
the database locale's collation rules (costly for e.g. ICU or en_US
locales). Segment names are only matched for equality and listed in rule
order, so nothing a user sees changes; SQLite compares bytes already.

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '5b1e0c7a9d42'
down_revision = '783cad017b7a'
branch_labels = None
depends_on = None


def upgrade():
    if op.get_bind().dialect.name == 'postgresql':
        # Recurses into every run's partition and rebuilds their indexes.
        op.execute('ALTER TABLE rfm_scores ALTER COLUMN segment TYPE varchar(64) COLLATE "C"')


def downgrade():
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE rfm_scores ALTER COLUMN segment TYPE varchar(64) COLLATE "default"')
