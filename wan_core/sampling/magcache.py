"""Fast mode: diffusers' MagCache (`MagCacheConfig`, `WanTransformer3DModel.enable_cache`) with Wan 2.1's ratios.

MagCache skips every transformer block of a pass and adds the residual (output of the last block minus input of
the first) of the branch's last full pass instead, while the product of the per-step magnitude ratios
(|residual_t| / |residual_t-1|) since that pass keeps the accumulated error under `threshold`, at most
`max_skip_steps` passes in a row, never in the first `retention_ratio` of the steps. The ratios belong to a model
and a schedule:

- the Wan 2.1 files MagCache's authors calibrated (I2V 14B 480p and 720p, T2V 14B, T2V 1.3B; recognised by the
  transformer's width, depth and input channels; 480p and 720p I2V share their shapes, so the run's size picks the
  table) use their published ratios (magcache_wan21.json, source cited there), the conditional half, which
  MagCacheConfig interpolates to the run's step count with MagCache's own nearest rule;
- any other model (tiny, mini, a fine-tune) is calibrated by the first fast-mode run of a schedule with MagCache's
  own calibrate mode (a full run that records the ratios), stored under $WANFLOW_CACHE/magcache keyed by the model
  file, its LoRA stack, the compute dtype and the sigma list; later runs with that key skip.

The defaults keep the loss small: MagCache4Wan2.1's own defaults (threshold 0.12, retention 0.2) and at most 3
skipped passes in a row (diffusers' default K; the reference script uses 2, its 2.8x setting 6 with threshold 0.24).
Each guidance branch keeps its own state through the pipeline's cache_context("cond"/"uncond"), as in diffusers'
Wan pipelines.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..cache import wanflow_cache_dir

if TYPE_CHECKING:
    from .models import WanModels

RATIOS_FILE = Path(__file__).with_name("magcache_wan21.json")
FAST_MODE = dict(threshold=0.12, max_skip_steps=3, retention_ratio=0.2)
# (width, layers, input channels) -> the published table's name; I2V: + "_480p" or "_720p" by the run's size
PUBLISHED_SHAPES = {(5120, 40, 36): "i2v_14b", (5120, 40, 16): "t2v_14b", (1536, 30, 16): "t2v_1.3b"}
CALIBRATION_LOG = "diffusers.hooks.mag_cache"  # calibrate mode logs "MagCache Calibration Results: [...]" there


@dataclass
class FastModePlan:
    """What fast mode does in one run: skip with these ratios, or calibrate and store them at `store`."""

    ratios: list[float] | None  # one per step; None: calibrate
    store: Path | None  # where a calibration goes (None for published ratios)
    source: str  # "published <table>" or "calibrated <file>" or "calibrating"


def published_table(transformer, width: int, height: int) -> str | None:
    """The published ratio table for this transformer's shapes, or None for a model MagCache did not calibrate."""
    config = transformer.config
    shape = (config.num_attention_heads * config.attention_head_dim, config.num_layers, config.in_channels)
    name = PUBLISHED_SHAPES.get(shape)
    if name == "i2v_14b":
        name += "_720p" if width * height > 832 * 480 else "_480p"
    return name


def published_ratios(table: str) -> list[float]:
    """The conditional passes' ratios of a published table (even entries: the tables interleave cond, uncond)."""
    return json.loads(RATIOS_FILE.read_text())["models"][table]["ratios"][0::2]


def calibration_file(models: WanModels, sigmas: list[float]) -> Path:
    """Where this model's (file, LoRA stack, dtype) calibration for this sigma list is kept."""
    source = models.source
    if source is not None and Path(source).exists():
        stat = Path(source).stat()
        identity = [str(Path(source).resolve()), stat.st_size, stat.st_mtime_ns]
    else:  # a bundle built in Python from modules: its weights' own fingerprint
        identity = [float(param.detach().double().sum()) for param in islice(models.transformer.parameters(), 8)]
    key = json.dumps([identity, repr(models.lora.signature), str(models.dtype), [round(s, 6) for s in sigmas]])
    return wanflow_cache_dir() / "magcache" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def plan_fast_mode(models: WanModels, sigmas: list[float], width: int, height: int) -> FastModePlan:
    table = published_table(models.transformer, width, height)
    if table is not None:
        return FastModePlan(published_ratios(table), None, f"published MagCache ratios for Wan 2.1 {table}")
    path = calibration_file(models, sigmas)
    if path.is_file():
        return FastModePlan(json.loads(path.read_text())["ratios"], None, f"calibration {path}")
    return FastModePlan(None, path, "calibrating it for this model and schedule")


def mag_cache_config(ratios: list[float] | None, steps: int):
    """diffusers' MagCacheConfig with fast mode's settings; ratios None: calibrate mode."""
    from diffusers.hooks import MagCacheConfig

    if ratios is None:
        return MagCacheConfig(calibrate=True, num_inference_steps=steps, **FAST_MODE)
    return MagCacheConfig(mag_ratios=torch.tensor(ratios, dtype=torch.float64), num_inference_steps=steps,
                          **FAST_MODE)


class _Results(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.ratios: list[list[float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("MagCache Calibration Results:"):
            self.ratios.append(ast.literal_eval(message.split(":", 1)[1].strip()))


@contextmanager
def calibration_results() -> Iterator[list[list[float]]]:
    """The ratio lists MagCache's calibrate mode logs (one per guidance branch, the conditional first) while the
    block runs; its printout of the same to stdout is dropped."""
    logger, handler = logging.getLogger(CALIBRATION_LOG), _Results()
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False  # diffusers' own handlers keep their level: the list is not printed to the log either
    logger.addHandler(handler)
    try:
        with redirect_stdout(io.StringIO()):
            yield handler.ratios
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def store_calibration(path: Path, ratios: list[float], sigmas: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".partial")
    temporary.write_text(json.dumps({"sigmas": sigmas, "ratios": ratios}))
    temporary.replace(path)


@contextmanager
def fast_mode(models: WanModels, sigmas: list[float], width: int, height: int) -> Iterator[FastModePlan]:
    """MagCache on the transformer for one sampling loop over `sigmas`; a calibration run stores its ratios."""
    steps = len(sigmas) - 1
    plan = plan_fast_mode(models, sigmas, width, height)
    models.transformer.enable_cache(mag_cache_config(plan.ratios, steps))
    try:
        if plan.ratios is not None:
            yield plan
            return
        with calibration_results() as results:
            yield plan
        if results and len(results[0]) == steps:
            store_calibration(plan.store, results[0], sigmas)
    finally:
        models.transformer.disable_cache()
