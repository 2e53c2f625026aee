"""Codec tests: pure Python, no database."""
