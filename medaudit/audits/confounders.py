"""``confounders``: how far synthetic artifacts (tags, frames, filters, noise) move predictions."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from rich.console import RenderableType

from medaudit.audits.base import Audit, Context, MetricInfo, SummaryRow, number
from medaudit.errors import ConfigError
from medaudit.options import setting

if TYPE_CHECKING:
    from medaudit.confounders.config import DiscoveryConfig, ProbeConfig
    from medaudit.confounders.discovery import DiscoveryResult
    from medaudit.confounders.probe import ProbeResult
    from medaudit.data import AuditData
    from medaudit.sources import Prepared

PANEL = "Confounders"
DISCOVERY_PANEL = "Shortcut discovery"


@dataclass(frozen=True)
class ProbeOptions:
    """``--artifacts`` ... on the command line, ``[confounders]`` in the audit file."""

    artifacts: str | None = setting(
        None,
        "Comma list of artifacts (default: every artifact but stamp); see --list.",
        panel=PANEL,
        listed=True,
    )
    strengths: str = setting("0.25,0.5,1", "Strengths in (0, 1], comma separated.", panel=PANEL, listed=True)
    positions: str | None = setting(
        None,
        "Positions probed for tag, patch and stamp (default: the four corners and the centre).",
        panel=PANEL,
        listed=True,
    )
    positive_class: str | None = setting(
        None,
        "Class (name or index) whose other images get the artifact in the reversed test (default: the last class).",
        panel=PANEL,
        listed=True,
    )
    resamples: int = setting(
        1000,
        "Bootstrap resamples of the images for the intervals of each artifact's effect beyond its matched control.",
        panel=PANEL,
        min=10,
    )
    min_effect: float = setting(
        0.1,
        "A 'shortcut' verdict needs the whole interval of the effect beyond the matched control "
        "(probability push or AUC drop) at or above this.",
        panel=PANEL,
        min=0,
    )
    discover: bool = setting(
        False,
        "Also search for shortcuts the artifact library lacks (`confounders discover` with its defaults).",
        flag="--discover/--no-discover",
        panel=PANEL,
    )


@dataclass(frozen=True)
class DiscoveryOptions:
    """Search for a small universal patch that flips predictions, region by region (no artifact library)."""

    grid: int = setting(
        3,
        "Regions per side of the grid searched (3: top-left ... bottom-right).",
        panel=DISCOVERY_PANEL,
        min=1,
    )
    patch: float = setting(
        0.2, "Side of the searched patch as a fraction of the image width.", panel=DISCOVERY_PANEL, min=0.01
    )
    steps: int = setting(
        20,
        "Optimiser steps (white-box) or random-search candidates (black-box ONNX) per region and class.",
        panel=DISCOVERY_PANEL,
        min=1,
    )
    fit_images: int = setting(64, "Images each patch is fitted on.", panel=DISCOVERY_PANEL, min=1)
    eval_images: int = setting(
        256, "Other images its flip rate is measured on.", panel=DISCOVERY_PANEL, min=1
    )


def _worst(results: dict[str, Any], key: str) -> float:
    """The largest value over the ranking; NaN if any is unknown (a NaN must fail, not vanish in max())."""
    values = [number(r.get(key)) for r in results.get("ranking") or [] if isinstance(r, dict)]
    return math.nan if not values or any(math.isnan(v) for v in values) else max(values)


def _count(rows: list[Any], key: str, value: Any) -> float:
    """How many rows have ``key == value`` (NaN for a malformed list: a gate must fail, not pass)."""
    if not all(isinstance(r, dict) for r in rows):
        return math.nan
    return float(sum(r.get(key) == value for r in rows))


def names(text: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma list setting, or ``default`` when it is not given."""
    if text is None:
        return default
    return tuple(part.strip() for part in text.split(",") if part.strip())


def positive_index(data: AuditData, value: str | None) -> int | None:
    """--positive-class as a class name or an index."""
    if value is None:
        return None
    if value in data.class_names:
        return data.class_names.index(value)
    try:
        return int(value)
    except ValueError:
        raise ConfigError(
            f"--positive-class '{value}' is not a class: choose from {', '.join(data.class_names)} or an index"
        ) from None


def probe_config(options: ProbeOptions, context: Context) -> ProbeConfig:
    """The probe's configuration from its settings; the positive class is resolved once the
    data is loaded (``ConfoundersAudit.run``)."""
    from medaudit.confounders.config import CORNERS, DEFAULT_ARTIFACTS, ProbeConfig
    from medaudit.sources import parse_floats

    strengths = parse_floats(options.strengths, "--strengths")
    assert strengths is not None  # the setting has a default
    return ProbeConfig(
        artifacts=names(options.artifacts, DEFAULT_ARTIFACTS), strengths=strengths,
        positions=names(options.positions, CORNERS), seed=context.seed, batch_size=context.batch_size,
        bootstrap=options.resamples, min_effect=options.min_effect,
    )  # fmt: skip


def discovery_config(options: DiscoveryOptions, context: Context) -> DiscoveryConfig:
    """The discovery search's configuration from its settings."""
    from medaudit.confounders.config import DiscoveryConfig

    return DiscoveryConfig(
        grid=options.grid, patch=options.patch, steps=options.steps, n_fit=options.fit_images,
        n_eval=options.eval_images, seed=context.seed, batch_size=context.batch_size,
    )  # fmt: skip


def run_discover(
    prepared: Prepared, options: DiscoveryOptions, context: Context
) -> tuple[dict[str, Any], DiscoveryResult]:
    """The discovery search on ``prepared`` with a progress bar: (its configuration record, the result);
    ``result.to_dict()`` gives ``results.discovery``, ``discovery_config`` and ``discovery_notes``."""
    from medaudit.confounders.discovery import run_discovery

    config = discovery_config(options, context)
    total = prepared.data.num_classes * config.grid**2
    with context.progress("searching for universal patches", total) as advance:
        result = run_discovery(prepared.model, prepared.data, config, advance)
    return config.to_dict(), result


def discovery_figures(prepared: Prepared, result: DiscoveryResult) -> dict[str, bytes]:
    """The found patches over the first image, by caption (for the HTML report)."""
    from medaudit.confounders.figures import discovery_png

    image = prepared.data.uint8_images(0, 1)[0].float() / 255
    caption = f"shortcut discovery: found patches over an example image ({prepared.data.describe()})"
    return {caption: discovery_png(image, result, prepared.data.describe())}


@dataclass(frozen=True)
class ProbeWithDiscovery:
    """The probe and the discovery search of one ``[confounders] discover = true`` run."""

    probe: ProbeResult
    discovery: DiscoveryResult

    @property
    def config(self) -> ProbeConfig:
        return self.probe.config

    def to_dict(self) -> dict[str, Any]:
        return {**self.probe.to_dict(), **self.discovery.to_dict()}


class ConfoundersAudit(Audit):
    name = "confounders"
    Options = ProbeOptions
    title = "Confounder probes"
    help = (
        "Flip rate, probability push and reversed-correlation AUC under synthetic confounders (no training)."
    )

    def check(self, options: ProbeOptions, context: Context) -> None:
        probe_config(options, context)
        if options.discover and context.sharded:
            raise ConfigError(
                "--discover fits each patch on images of the whole audit: run it without --shard"
            )

    def run(
        self, prepared: Prepared, options: ProbeOptions, context: Context
    ) -> tuple[dict[str, Any], ProbeResult | ProbeWithDiscovery]:
        from medaudit.confounders.probe import resolve_positive, run_probe

        positive = positive_index(prepared.data, options.positive_class)
        resolve_positive(prepared.data, positive)
        config = replace(probe_config(options, context), positive_class=positive)
        total = prepared.data.n * len(config.cells)
        with context.progress("adding artifacts and predicting", total) as advance:
            result = run_probe(prepared.model, prepared.data, config, advance)
        if not options.discover:
            return config.to_dict(), result
        found, discovery = run_discover(prepared, DiscoveryOptions(), context)
        return {**config.to_dict(), "discovery": found}, ProbeWithDiscovery(result, discovery)

    def figures(self, prepared: Prepared, result: Any) -> dict[str, bytes]:
        return discovery_figures(prepared, result.discovery) if isinstance(result, ProbeWithDiscovery) else {}

    metrics: ClassVar[dict[str, MetricInfo]] = {
        "shortcuts": MetricInfo(
            "number of artifacts (x position) with a 'shortcut' verdict: a push or reversed AUC drop beyond "
            "a matched control whose whole interval lies at or above min_effect",
            False,
            False,
        ),
        "largest_effect": MetricInfo(
            "largest effect beyond the matched control over the ranking (probability push or AUC drop)",
            False,
            True,
        ),
        "discovery_flagged": MetricInfo(
            "number of grid regions where a small universal patch flips predictions far more than elsewhere "
            "(only when discovery ran)",
            False,
            False,
        ),
        "worst_flip_rate": MetricInfo(
            "largest share of predictions any probed artifact flips (ranking worst_flip_rate)", False, True
        ),
        "worst_auc_drop_reversed": MetricInfo(
            "largest AUC drop with an artifact on the other classes only (reversed correlation)", False, True
        ),
    }

    def extract(self, results: dict[str, Any]) -> dict[str, float]:
        out: dict[str, float] = {}
        ranking = results.get("ranking")
        if isinstance(ranking, list):
            out["confounders.shortcuts"] = _count(ranking, "verdict", "shortcut")
            for key, name in (("effect", "largest_effect"), ("worst_flip_rate", "worst_flip_rate")):
                out[f"confounders.{name}"] = _worst(results, key)
            out["confounders.worst_auc_drop_reversed"] = _worst(results, "worst_auc_drop_reversed")
        if isinstance(results.get("discovery"), list):
            out["confounders.discovery_flagged"] = _count(results["discovery"], "flagged", True)
        return out

    def summary(self, results: dict[str, Any]) -> list[SummaryRow]:
        rows = []
        if isinstance(results.get("ranking"), list):  # not the subgroup and fine-tune modes
            shortcuts = [
                f"{r.get('artifact')}{' ' + str(r['position']) if r.get('position') else ''}"
                for r in results["ranking"]
                if isinstance(r, dict) and r.get("verdict") == "shortcut"
            ]
            rows += [
                SummaryRow("shortcut verdicts", len(shortcuts)),
                SummaryRow("largest effect beyond the control", _worst(results, "effect")),
                SummaryRow("shortcuts", ", ".join(shortcuts) or "none"),
                SummaryRow("worst flip rate", _worst(results, "worst_flip_rate")),
            ]
        if isinstance(results.get("discovery"), list):
            flagged = [
                str(r.get("region")) for r in results["discovery"] if isinstance(r, dict) and r.get("flagged")
            ]
            rows.append(SummaryRow("discovery: flagged regions", ", ".join(flagged) or "none"))
        return rows

    def html(self, results: dict[str, Any], data_label: str) -> str | None:
        from medaudit.report.html import confounders_section

        if not any(isinstance(results.get(key), list) for key in ("ranking", "discovery")):
            return None  # the subgroup and fine-tune modes: the generic view
        return confounders_section(results, f"Flip rate under artifacts: {data_label}")

    def tables(self, results: dict[str, Any], data_label: str) -> list[RenderableType]:
        from medaudit.report import confounder_tables as ct

        if isinstance(results.get("finetune"), dict):
            return [ct.finetune_table(results["finetune"], f"Shortcut susceptibility: {data_label}")]
        if isinstance(results.get("subgroups"), dict):
            return [ct.subgroup_table(results["subgroups"], f"Subgroups: {data_label}")]
        return list(ct.confounder_tables(results, f"Confounders: {data_label}"))
