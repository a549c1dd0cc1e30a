"""Dataset sources: one module per file format, each defining a ``Source`` for the registry."""
