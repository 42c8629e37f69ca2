"""The shared relational database: models, engine, migrations and repositories."""
