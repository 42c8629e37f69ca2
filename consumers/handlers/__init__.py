"""One handler class per task type."""
