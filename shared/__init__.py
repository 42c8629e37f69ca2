"""Shared package: configuration, task model, queue core and database used by every process."""
