"""Placeholder: schedules are being written now."""
