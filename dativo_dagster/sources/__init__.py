"""Connectors. One module per source type, each a small class on :class:`~.base.Source`."""
