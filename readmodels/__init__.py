"""The read models: SQL tables projected from the log, exactly once (``docs/readmodels.md``).

What the API and the dashboard need of it: the database (``make_engine``, ``database_url``,
``check_schema``, ``migrate``), the tables (``readmodels.tables``), and the projections
(``ProjectionService`` follows the log; ``rebuild`` starts over; ``standings`` says where
each projection stands).
"""

from readmodels.database import SchemaMismatch, check_schema, database_url, make_engine, migrate
from readmodels.maintenance import Standing, rebuild, standings
from readmodels.projection import Projection, Unexpected
from readmodels.runner import ALL_STORES, PositionMoved, ProjectionService, projections

__all__ = [
    "ALL_STORES",
    "PositionMoved",
    "Projection",
    "ProjectionService",
    "SchemaMismatch",
    "Standing",
    "Unexpected",
    "check_schema",
    "database_url",
    "make_engine",
    "migrate",
    "projections",
    "rebuild",
    "standings",
]
