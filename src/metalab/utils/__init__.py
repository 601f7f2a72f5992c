"""Small shared utilities (file I/O)."""
