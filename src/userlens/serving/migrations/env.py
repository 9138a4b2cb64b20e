"""Alembic environment: runs on the connection handed over by ``Storage.migrate``."""

from alembic import context

from userlens.serving.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # `alembic -x url=...` from the command line
    from sqlalchemy import create_engine

    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("pass the database with: alembic -x url=DATABASE_URL upgrade head")
    with create_engine(url).begin() as connection:
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
