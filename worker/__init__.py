"""Celery edge: the app, its configuration, and thin tasks that call services."""
