"""The shared kernel's database: the schema (``models``, typed SQLAlchemy 2.0 with a
constraint naming convention), the base types (``base``) and sessions and transactions
(``session``). Alembic revisions in ``migrations/`` build it.

May import: nothing else of ``services``. Imported by every context (at any depth)."""
