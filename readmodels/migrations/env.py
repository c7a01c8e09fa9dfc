"""Alembic's environment for the read models: the engine comes from the caller
(``readmodels.database``), never from a file of settings."""

from __future__ import annotations

from alembic import context

from readmodels.tables import READ_MODELS

engine = context.config.attributes.get("engine")
if engine is None:
    raise RuntimeError("run the read models' migrations through `aisle projections migrate`")

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=READ_MODELS,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()
