"""The node registry (SQLite) and the one path that registers and changes nodes."""
