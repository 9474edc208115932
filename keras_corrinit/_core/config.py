"""Configs and JSON files for the package's containers (private).

Every serializable object speaks Keras's vocabulary, `get_config()` and
`from_config(config)`; this module adds `save`/`load` of a JSON file through
them.
"""

import json

__all__ = ["Configurable", "JsonFile"]


class Configurable:
    """Mixin: a container that speaks Keras's `get_config()` / `from_config()` (0.4.0 removed `to_config`)."""


class JsonFile(Configurable):
    """Mixin: `save(path)` and `load(path)` through `get_config`/`from_config`."""

    def save(self, path):
        """Writes `get_config()` to a JSON file."""
        with open(path, "w") as f:
            json.dump(self.get_config(), f)

    @classmethod
    def load(cls, path):
        """Reads a file written by `save`."""
        with open(path) as f:
            return cls.from_config(json.load(f))
