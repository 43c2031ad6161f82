"""Built-in architectures for state_dict checkpoints (``--arch NAME``).

Each factory takes ``in_channels`` and ``num_classes``; both are read from the
checkpoint's weights when the user does not give them. ``--arch
package.module:factory`` names a user factory instead.
"""

from medaudit.registry import Registry

architectures: Registry = Registry("architecture")
architectures.register("resnet18_28", "medaudit.models.archs.resnet:resnet18_28")
architectures.register("resnet50_28", "medaudit.models.archs.resnet:resnet50_28")
architectures.register("resnet18_224", "medaudit.models.archs.resnet:resnet18_224")
architectures.register("resnet50_224", "medaudit.models.archs.resnet:resnet50_224")
architectures.register("resnet18_tv28", "medaudit.models.archs.resnet:resnet18_tv28")
architectures.register("resnet50_tv28", "medaudit.models.archs.resnet:resnet50_tv28")
architectures.register("smallcnn", "medaudit.models.archs.small_cnn:small_cnn")
architectures.register("rescnn", "medaudit.models.archs.small_cnn:res_cnn")
