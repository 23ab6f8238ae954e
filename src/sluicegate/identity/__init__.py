"""Users, passwords, sessions and personal admin tokens."""
