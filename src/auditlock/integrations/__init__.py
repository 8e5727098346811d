"""Capture without boilerplate: request actors (ASGI/WSGI), job identities (Celery), SQLAlchemy record changes,
and typed helpers for authentication and permission events.

Each integration lives in its own module and imports its framework only there, so `import auditlock` stays light.
"""
