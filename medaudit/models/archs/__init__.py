"""Built-in architectures for state_dict checkpoints (``--arch NAME``).

Each factory takes ``in_channels`` and ``num_classes``; both are read from the
checkpoint's weights when the user does not give them. ``--arch
package.module:factory`` names a user factory instead. The names are declared in
``medaudit/registries.py`` (importing nothing), the factories here.
"""

from medaudit.registries import architectures

__all__ = ["architectures"]
