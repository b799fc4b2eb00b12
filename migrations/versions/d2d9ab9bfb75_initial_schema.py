"""initial schema

Revision ID: d2d9ab9bfb75
Revises: 
Create Date: 2026-11-24 09:59:19.185200

Customers, orders, calculation runs and their score rows (SPEC §1).

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = 'd2d9ab9bfb75'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('customers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_customers'))
    )
    op.create_table('rfm_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('trigger', sa.String(length=16), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('customers_scored', sa.Integer(), nullable=True),
    sa.Column('segment_counts', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=True),
    sa.Column('statistics', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.Column('attempts', sa.SmallInteger(), server_default='0', nullable=False),
    sa.Column('is_current', sa.Boolean(), nullable=False),
    sa.Column('active_slot', sa.SmallInteger(), nullable=True),
    sa.CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed')", name=op.f('ck_rfm_runs_status_valid')),
    sa.CheckConstraint("trigger IN ('api', 'cli', 'schedule')", name=op.f('ck_rfm_runs_trigger_valid')),
    sa.CheckConstraint('active_slot = 1', name=op.f('ck_rfm_runs_active_slot_is_one')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rfm_runs')),
    sa.UniqueConstraint('active_slot', name=op.f('uq_rfm_runs_active_slot'))
    )
    with op.batch_alter_table('rfm_runs', schema=None) as batch_op:
        batch_op.create_index('uq_rfm_runs_one_current', ['is_current'], unique=True, postgresql_where=sa.text('is_current'), sqlite_where=sa.text('is_current'))

    op.create_table('orders',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('ordered_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('total_amount', sa.Numeric(precision=12, scale=2), nullable=False),
    sa.CheckConstraint('total_amount >= 0', name=op.f('ck_orders_total_amount_non_negative')),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_orders_customer_id_customers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_orders'))
    )
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.create_index('ix_orders_customer_id_ordered_at', ['customer_id', 'ordered_at'], unique=False, postgresql_include=['total_amount'])

    op.create_table('rfm_scores',
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('recency_days', sa.Integer(), nullable=False),
    sa.Column('frequency', sa.Integer(), nullable=False),
    sa.Column('monetary', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('recency_score', sa.SmallInteger(), nullable=False),
    sa.Column('frequency_score', sa.SmallInteger(), nullable=False),
    sa.Column('monetary_score', sa.SmallInteger(), nullable=False),
    sa.Column('segment', sa.String(length=64), nullable=False),
    sa.Column('calculated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.CheckConstraint('frequency_score BETWEEN 1 AND 5', name=op.f('ck_rfm_scores_frequency_score_range')),
    sa.CheckConstraint('monetary_score BETWEEN 1 AND 5', name=op.f('ck_rfm_scores_monetary_score_range')),
    sa.CheckConstraint('recency_score BETWEEN 1 AND 5', name=op.f('ck_rfm_scores_recency_score_range')),
    sa.PrimaryKeyConstraint('run_id', 'customer_id', name=op.f('pk_rfm_scores')),
    postgresql_partition_by='LIST (run_id)',
    )
    op.create_table('rfm_page_marks',
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('mark', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('run_id', 'mark', name=op.f('pk_rfm_page_marks'))
    )
    with op.batch_alter_table('rfm_scores', schema=None) as batch_op:
        batch_op.create_index('ix_rfm_scores_run_id_segment_customer_id', ['run_id', 'segment', 'customer_id'], unique=False)



def downgrade():
    op.drop_table('rfm_page_marks')
    with op.batch_alter_table('rfm_scores', schema=None) as batch_op:
        batch_op.drop_index('ix_rfm_scores_run_id_segment_customer_id')

    op.drop_table('rfm_scores')
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index('ix_orders_customer_id_ordered_at')

    op.drop_table('orders')
    with op.batch_alter_table('rfm_runs', schema=None) as batch_op:
        batch_op.drop_index('uq_rfm_runs_one_current', postgresql_where=sa.text('is_current'), sqlite_where=sa.text('is_current'))

    op.drop_table('rfm_runs')
    op.drop_table('customers')
