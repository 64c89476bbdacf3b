"""add email and created_at"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade():
    op.add_column("users", sa.Column("email", sa.String(200), nullable=False))
    op.create_unique_constraint("users_email_key", "users", ["email"])
    op.add_column(
        "users",
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )


def downgrade():
    op.drop_column("users", "created_at")
    op.drop_column("users", "email")
