"""Integrations with web frameworks; each is imported only when used."""
