"""Chaos drill: a fleet of consumers and Redis killed while paid tasks flow."""
