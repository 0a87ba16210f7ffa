"""Access: the people who use the application, their roles and sites (``people``), their web
sessions (``web_sessions``) and the audit trail of every access to a case (``audit``).

May import: the shared kernel only."""

from services.access.people import password_matches

__all__ = ["password_matches"]
