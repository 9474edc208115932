"""Configs and JSON files for the package's containers (private).

Every serializable object speaks Keras's vocabulary, `get_config()` and
`from_config(config)`; this module adds the deprecated `to_config` name and
`save`/`load` of a JSON file through them.
"""

import json
import warnings

__all__ = ["Configurable", "JsonFile"]


class Configurable:
    """Mixin: the deprecated `to_config` name of `get_config` (until 0.4.0)."""

    def to_config(self):
        """Deprecated since 0.3.0: use `get_config()` (Keras's name)."""
        warnings.warn(
            f"{type(self).__name__}.to_config() is deprecated since 0.3.0 and will be removed in 0.4.0; "
            "use get_config().",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.get_config()


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
