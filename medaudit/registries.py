"""The built-in registries that ``medaudit list`` prints, declared without importing them.

One line per entry: its name, where it lives and a one-line description. Listing them,
checking a name (``--attack``, ``--corruptions``, ``--artifact``) and describing one import
nothing but this module, so those answers come without torch (about 3 s to import);
``Registry.get`` imports an implementation when it is first used.

``register(name, "package.module:attr", description)``: the object itself (architectures).
``declare(name, "package.module", description)``: a module that registers the entry when it is
imported, with the options its decorator gives there: an attack (``@attacks.register``), a shift
corruption (``shift/corrupt.py``'s ``register``), a confounder artifact
(``confounders/artifacts.py``'s ``register_artifact``). Adding a built-in is one line here and
the implementation (with its decorator) in its own file; the description written here must be
the implementation's own (its docstring's first line, or the decorator's), which
``tests/test_startup_registry.py`` checks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from medaudit.registry import Registry

if TYPE_CHECKING:
    from medaudit.attacks.base import Attack
    from medaudit.confounders.artifacts import Artifact
    from medaudit.harden.methods import Method
    from medaudit.shift.corrupt import Corruption

# -- architectures for state_dict checkpoints (``--arch NAME``): factories(in_channels, num_classes)

architectures: Registry[Any] = Registry("architecture")
_RESNET, _SMALL = "medaudit.models.archs.resnet", "medaudit.models.archs.small_cnn"
architectures.register(
    "resnet18_28", f"{_RESNET}:resnet18_28", "ResNet-18 for 28 px inputs (MedMNIST's CIFAR-style variant)."
)
architectures.register(
    "resnet50_28", f"{_RESNET}:resnet50_28", "ResNet-50 for 28 px inputs (MedMNIST's CIFAR-style variant)."
)
architectures.register(
    "resnet18_224", f"{_RESNET}:resnet18_224", "ResNet-18 for 224 px inputs (torchvision layout)."
)
architectures.register(
    "resnet50_224", f"{_RESNET}:resnet50_224", "ResNet-50 for 224 px inputs (torchvision layout)."
)
architectures.register(
    "resnet18_tv28",
    f"{_RESNET}:resnet18_tv28",
    "torchvision ResNet-18 adapted to 28 px: 3x3 stride-1 conv1, maxpool = Identity.",
)
architectures.register(
    "resnet50_tv28",
    f"{_RESNET}:resnet50_tv28",
    "torchvision ResNet-50 adapted to 28 px: 3x3 stride-1 conv1, maxpool = Identity.",
)
architectures.register(
    "smallcnn", f"{_SMALL}:small_cnn", "Three conv stages with pooling (about 100 k parameters)."
)
architectures.register(
    "rescnn",
    f"{_SMALL}:res_cnn",
    "Compact residual CNN (about 0.31 M parameters), the sample models' architecture.",
)

# -- attacks (``--attack``): ``Attack`` subclasses, registered by their module's ``@attacks.register``

attacks: Registry[type[Attack]] = Registry("attack")
attacks.declare(
    "apgd-ce", "medaudit.attacks.apgd", "APGD on the cross-entropy loss (per-label BCE for multi-label)."
)
attacks.declare(
    "apgd-dlr",
    "medaudit.attacks.apgd",
    "APGD on the DLR loss; with fewer than 3 classes (or multi-label) the CW margin instead.",
)
attacks.declare(
    "fgsm", "medaudit.attacks.fgsm", "One signed-gradient step of size eps: a quick, weak baseline."
)
attacks.declare(
    "pgd",
    "medaudit.attacks.pgd",
    "Projected gradient descent on the cross-entropy loss, from a random start.",
)
attacks.declare(
    "pgd-cw",
    "medaudit.attacks.pgd",
    "PGD on the CW margin loss, which does not saturate on very confident models.",
)
attacks.declare(
    "bim", "medaudit.attacks.pgd", "Iterative FGSM: PGD with no random start and small steps (eps / 10)."
)
attacks.declare(
    "square",
    "medaudit.attacks.square",
    "Square Attack: score-based random search (L-inf and L2), no gradients, so black-box models too.",
)

# -- shift corruptions (``--corruptions``): registered by their module's ``@register``

corruptions: Registry[Corruption] = Registry("corruption")
_BLUR, _COLOR, _DIGITAL = "medaudit.shift.blur", "medaudit.shift.color", "medaudit.shift.digital"
_MARKS, _NOISE = "medaudit.shift.marks", "medaudit.shift.noise"
corruptions.declare("defocus_blur", _BLUR, "disc-kernel blur of an out-of-focus lens")
corruptions.declare("gaussian_blur", _BLUR, "Gaussian blur (torchvision's kernel and sigma)")
corruptions.declare(
    "motion_blur", _BLUR, "blur along a random direction per image (camera or patient motion)"
)
corruptions.declare("zoom_blur", _BLUR, "mean of the image and its zooms about the centre")
corruptions.declare("brightness_up", _COLOR, "brighter: blend with black at a factor above 1")
corruptions.declare("brightness_down", _COLOR, "darker: blend with black at a factor below 1")
corruptions.declare("contrast_up", _COLOR, "more contrast: blend away from the mean grey level")
corruptions.declare("contrast_down", _COLOR, "less contrast: blend towards the mean grey level")
corruptions.declare("gamma_corr_up", _COLOR, "gamma above 1: darker mid-tones")
corruptions.declare("gamma_corr_down", _COLOR, "gamma below 1: brighter mid-tones")
corruptions.declare("saturate", _COLOR, "more colour saturation in HSV (grey images become tinted)")
corruptions.declare("pixelate", _DIGITAL, "downsample and upsample with a box filter (blocky pixels)")
corruptions.declare("jpeg_compression", _DIGITAL, "lossy JPEG encode and decode at a low quality")
corruptions.declare(
    "black_corner", _MARKS, "black outside a centred disc (a microscope's round field of view)"
)
corruptions.declare("stain_deposit", _MARKS, "black ink blots (dirt or stain deposits on a slide)")
corruptions.declare("bubble", _MARKS, "translucent white discs (air bubbles under a cover slip)")
corruptions.declare("characters", _MARKS, "random coloured words (pen marks and labels on dermoscopy images)")
corruptions.declare("gaussian_noise", _NOISE, "additive Gaussian noise")
corruptions.declare("speckle_noise", _NOISE, "multiplicative noise (ultrasound and OCT speckle)")
corruptions.declare("shot_noise", _NOISE, "Poisson photon noise")
corruptions.declare("impulse_noise", _NOISE, "salt and pepper: random pixels set to black or white")

# -- confounder artifacts (``--artifact``): registered by ``@register_artifact``

artifacts: Registry[Artifact] = Registry("artifact")
_ARTIFACTS = "medaudit.confounders.artifacts"
artifacts.declare(
    "tag", _ARTIFACTS, "a letter or short word (laterality marker 'R'), like the paper's text tag"
)
artifacts.declare("patch", _ARTIFACTS, "a filled square (a sticker, electrode or burnt-in box)")
artifacts.declare(
    "border", _ARTIFACTS, "a frame around the image (padding or collimation edges differing by site)"
)
artifacts.declare("ruler", _ARTIFACTS, "a ruler / scale bar: a line of tick marks along one edge")
artifacts.declare(
    "lowpass", _ARTIFACTS, "a circular FFT low-pass filter (a site's denoising or reconstruction kernel)"
)
artifacts.declare(
    "dose_noise", _ARTIFACTS, "Poisson photon noise of a lower dose (a scanner or protocol's noise)"
)
artifacts.declare("stamp", _ARTIFACTS, "a user-supplied mask (a logo, a hospital stamp) placed at a corner")

# -- hardening methods (``harden --method``): registered by ``@methods.register``

methods: Registry[type[Method]] = Registry("hardening method")
_METHODS = "medaudit.harden.methods"
methods.declare("pgd-at", _METHODS, "Madry et al. (ICLR 2018): train on max-loss PGD examples only.")
methods.declare(
    "trades",
    _METHODS,
    "Zhang et al. (ICML 2019): clean cross-entropy plus beta times the KL to a PGD example.",
)
methods.declare(
    "ima", _METHODS, "Ma & Liang (CMPB 2023): per-sample margins, trained on points of the decision boundary."
)

BUILT_IN: dict[str, Registry[Any]] = {
    "archs": architectures,
    "attacks": attacks,
    "corruptions": corruptions,
    "artifacts": artifacts,
    "methods": methods,
}
"""What ``medaudit list WHAT`` prints, by WHAT."""
