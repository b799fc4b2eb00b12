"""Soak test: the production-like stack under read load while it recalculates.

``python -m soak.run`` (``make soak``) builds the stack (``stack``), learns
what each calculation must serve (``oracle``), drives the API (``load``) and
prints a Markdown table. Everything it starts or creates is removed again.
"""
