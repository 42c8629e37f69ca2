"""Database fixtures (filled in by the data layer)."""
