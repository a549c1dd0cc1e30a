"""Studies: a config dataclass and a ``run(config)`` each, driven by the CLI or a notebook."""
