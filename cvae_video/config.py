"""The training configuration: one typed dataclass, one merge order.

    defaults (the dataclass)  <  --config FILE.toml  <  flags given on the command line

Unknown keys and values of the wrong type fail at start-up with the key's name. The resolved config is saved
as ``config.toml`` / inside every checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from dataclasses import dataclass, fields
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import ConfigError
from .models.svg import ModelConfig
from .runtime import PRECISIONS

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
BAD_SAMPLE_POLICIES = ("error", "skip")


@dataclass
class TrainConfig:
    # optimisation
    lr: float = 0.002
    beta1: float = 0.9
    optimizer: str = "adam"
    batch_size: int = 16
    niter: int = 300
    epoch_size: int = 600
    grad_clip: float = 0.0              # max grad norm; 0 = off
    lr_schedule: str = "constant"       # "constant" or "cosine" (down to 5% of lr at the end of training)
    # teacher forcing (per epoch)
    tfr: float = 1.0
    tfr_start_decay_epoch: int = 0
    tfr_decay_step: float = 0.0
    tfr_lower_bound: float = 0.0
    tf_per_sample: bool = False        # decide teacher forcing per sample instead of once per batch
    # KL annealing (per iteration)
    kl_anneal_cyclical: bool = False
    kl_anneal_ratio: float = 0.5
    kl_anneal_cycle: int = 4
    kl_weight_max: float = 1.0
    free_bits: float = 0.0             # nats per step: the KL term counts max(KL_t, free_bits) (0 = off)
    # sequence protocol
    n_past: int = 2
    n_future: int = 10
    n_eval: int = 10                   # frames predicted after n_past at validation and in sample pictures
    # model
    backbone: str = "vgg"
    width: float = 1.0
    prior: str = "fixed"
    g_dim: int = 128
    z_dim: int = 64
    rnn_size: int = 256
    posterior_rnn_layers: int = 1
    prior_rnn_layers: int = 1
    predictor_rnn_layers: int = 2
    last_frame_skip: bool = False
    output: str = "direct"             # "direct" (SVG: sigmoid frame) or "compose" (mask over the skip frame)
    spatial_cond: bool = False         # the decoder also sees the condition broadcast over its maps, with coordinates
    keypoints: int = 0                 # with spatial_cond: image points learnt from the condition, drawn as blobs
    motion_kernels: int = 0            # with compose: kernels moving the previous frame's pixels (CDNA)
    # data
    data_root: str = ""                # empty: the built-in synthetic push world, generated once into a cache
    synth_n_train: int = 2048
    synth_seed: int = 0
    train_window: str = "random"       # "random": a random window of each training trajectory; "first": frame 0
    num_workers: int = 2
    val_sequences: int = 0             # 0: the whole validate split
    val_batch_size: int = 32           # sequences per validation batch (per process)
    # run
    log_dir: str = "runs/default"
    seed: int = 1
    val_every: int = 1
    device: str = ""                   # "", "cpu", "cuda", "cuda:1"; empty = cpu, or cuda with --cuda
    cuda: bool = False
    precision: str = "fp32"
    channels_last: bool = True         # NHWC activations: faster convolutions on CPUs and tensor-core GPUs
    compile: bool = False              # torch.compile the training step (slower on the CPU here: off)
    sync_bn: bool = False              # under torchrun: BatchNorm statistics over all processes' batches
    n_pictures: int = 4                # sequences shown in the per-epoch prediction grid
    picture_samples: int = 3           # futures drawn per sequence in those grids (the best by SSIM first)
    # faults
    skip_nonfinite: int = 0            # batches with a NaN/inf loss skipped (no update) before the run stops
    on_bad_sample: str = "error"       # "error": a bad trajectory stops start-up; "skip": train without it

    def model_config(self, cond_dim: int = 7) -> ModelConfig:
        return ModelConfig(backbone=self.backbone, width=self.width, g_dim=self.g_dim, z_dim=self.z_dim,
                           rnn_size=self.rnn_size, cond_dim=cond_dim, prior=self.prior,
                           posterior_rnn_layers=self.posterior_rnn_layers, prior_rnn_layers=self.prior_rnn_layers,
                           predictor_rnn_layers=self.predictor_rnn_layers, last_frame_skip=self.last_frame_skip,
                           output=self.output, spatial_cond=self.spatial_cond,
                           keypoints=self.keypoints, motion_kernels=self.motion_kernels)

    def validate(self) -> None:
        """Raise ConfigError naming the first key whose value is impossible."""
        checks = [
            ("lr", self.lr > 0, "must be > 0"),
            ("beta1", 0 <= self.beta1 < 1, "must be in [0, 1)"),
            ("optimizer", self.optimizer in OPTIMIZERS, f"must be one of {OPTIMIZERS}"),
            ("lr_schedule", self.lr_schedule in ("constant", "cosine"), "must be 'constant' or 'cosine'"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("niter", self.niter >= 1, "must be >= 1"),
            ("epoch_size", self.epoch_size >= 1, "must be >= 1"),
            ("tfr", 0 <= self.tfr <= 1, "must be in [0, 1]"),
            ("tfr_lower_bound", 0 <= self.tfr_lower_bound <= 1, "must be in [0, 1]"),
            ("tfr_decay_step", self.tfr_decay_step >= 0, "must be >= 0"),
            ("kl_anneal_ratio", 0 < self.kl_anneal_ratio <= 1, "must be in (0, 1]"),
            ("kl_anneal_cycle", self.kl_anneal_cycle >= 1, "must be >= 1"),
            ("kl_weight_max", self.kl_weight_max >= 0, "must be >= 0"),
            ("free_bits", self.free_bits >= 0, "must be >= 0"),
            ("n_past", self.n_past >= 1, "must be >= 1"),
            ("n_future", self.n_future >= 1, "must be >= 1"),
            ("n_eval", self.n_eval >= 1, "must be >= 1"),
            ("train_window", self.train_window in ("random", "first"), "must be 'random' or 'first'"),
            ("precision", self.precision in PRECISIONS, f"must be one of {PRECISIONS}"),
            ("num_workers", self.num_workers >= 0, "must be >= 0"),
            ("val_every", self.val_every >= 1, "must be >= 1"),
            ("val_batch_size", self.val_batch_size >= 1, "must be >= 1"),
            ("n_pictures", self.n_pictures >= 0, "must be >= 0"),
            ("picture_samples", self.picture_samples >= 1, "must be >= 1"),
            ("synth_n_train", self.synth_n_train >= 1, "must be >= 1"),
            ("skip_nonfinite", self.skip_nonfinite >= 0, "must be >= 0"),
            ("on_bad_sample", self.on_bad_sample in BAD_SAMPLE_POLICIES, f"must be one of {BAD_SAMPLE_POLICIES}"),
        ]
        for key, ok, why in checks:
            if not ok:
                raise ConfigError(f"{key} = {getattr(self, key)!r}: {why}")
        try:
            self.model_config()
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_TYPES = {f.name: typing.get_type_hints(TrainConfig)[f.name] for f in fields(TrainConfig)}


def _check_type(key: str, value, source: str):
    """Return value coerced to the field's type (int -> float allowed), or raise ConfigError."""
    if key not in _TYPES:
        raise ConfigError(f"{source}: unknown key {key!r}")
    want = _TYPES[key]
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is bool and isinstance(value, bool) or want is not bool and isinstance(value, want) \
            and not isinstance(value, bool):
        return value
    raise ConfigError(f"{source}: key {key!r} must be {want.__name__}, got {type(value).__name__} {value!r}")


def load_toml(path: str | Path) -> dict:
    """Values of a TOML config file, type-checked. Tables ([model], [data], ...) are flattened."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML ({e})") from None
    flat: dict = {}
    for key, value in raw.items():
        items = value.items() if isinstance(value, dict) else [(key, value)]
        for k, v in items:
            if k in flat:
                raise ConfigError(f"{path}: key {k!r} given twice")
            flat[k] = _check_type(k, v, str(path))
    return flat


def from_dict(values: dict, source: str = "config") -> TrainConfig:
    cfg = TrainConfig(**{k: _check_type(k, v, source) for k, v in values.items()})
    cfg.validate()
    return cfg


def to_toml(cfg: TrainConfig) -> str:
    lines = []
    for key, value in cfg.to_dict().items():
        lines.append(f"{key} = {json.dumps(value)}")  # JSON scalars are valid TOML scalars
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per config field, default None so that only flags actually given override the file."""
    parser.add_argument("--config", help="TOML file of config values; command-line flags override it")
    for f in fields(TrainConfig):
        typ = _TYPES[f.name]
        help_ = f"(default: {f.default!r})"
        if typ is bool:
            parser.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, default=None, help=help_)
        else:
            parser.add_argument(f"--{f.name}", type=typ, default=None, help=help_)


def resolve(args: argparse.Namespace, base: dict | None = None) -> TrainConfig:
    """defaults < ``base`` (a resumed run's saved config) < config file < given flags."""
    values = dict(base or {})
    if getattr(args, "config", None):
        values.update(load_toml(args.config))
    for f in fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    return from_dict(values, source=getattr(args, "config", None) or "command line")


# What a resumed run may change: how long it runs (a larger ``niter`` extends it), where and how fast it runs,
# and how it reacts to faults. The model's shape never; any other key would change the training being continued.
RESUME_MAY_CHANGE = ("niter", "log_dir", "data_root", "num_workers", "device", "cuda", "compile", "channels_last",
                     "val_every", "n_pictures", "picture_samples", "skip_nonfinite", "on_bad_sample", "sync_bn",
                     "val_batch_size")
MODEL_KEYS = tuple(f.name for f in fields(TrainConfig) if f.name in {g.name for g in fields(ModelConfig)})


def check_resume_changes(saved: dict, cfg: TrainConfig, source: str) -> None:
    """Raise ConfigError if ``cfg`` changes a key of the run saved in ``source`` that a resumed run must keep.

    ``saved`` is the run's config dict (keys it lacks, from an older version, count as their defaults).
    """
    old = TrainConfig().to_dict() | {k: v for k, v in saved.items() if k in _TYPES}
    new = cfg.to_dict()
    changed = [k for k in new if k not in RESUME_MAY_CHANGE and old[k] != new[k]]
    if not changed:
        return
    what = "; ".join(f"{k}: the run has {old[k]!r}, now {new[k]!r}" for k in changed)
    shape = [k for k in changed if k in MODEL_KEYS]
    if shape:
        raise ConfigError(f"cannot resume {source}: the model's shape cannot change on resume ({what}); "
                          f"train a new model in another --log_dir, or start over with --overwrite")
    raise ConfigError(f"cannot resume {source}: {', '.join(changed)} would change the training being continued "
                      f"({what}); a resumed run may change only {', '.join(RESUME_MAY_CHANGE)}")
