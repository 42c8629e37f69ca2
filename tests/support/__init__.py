"""Test support: fake external servers, private Redis/PostgreSQL servers, harnesses."""
