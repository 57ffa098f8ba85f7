"""Punctual: the Lambda code behind app.py, split by concept."""
