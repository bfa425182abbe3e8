"""The training configuration: one typed dataclass holding the model's, one merge order.

    defaults (the dataclasses)  <  --config FILE.toml  <  flags given on the command line

``TrainConfig.model`` is the :class:`~cvae_video.models.svg.ModelConfig` the run builds (less what the data
decides: image channels and the condition's size). In a TOML file the model's keys go in a ``[model]`` table and
the training's at the top level or in any other table (``[training]``, ``[data]``, ...); a key in the wrong table
fails naming it, and so do unknown keys and values of the wrong type. Files written before the model had its own
table (every key at the top level) still load. On the command line every key is a flag of its own
(``--z_dim 16``, ``--lr 0.001``), and a study factor or a flat dict names it the same way: keys are unique across
the two. A run saves its config as ``config.toml``, with what it decided at start-up (the data set, the
precision) in a ``[resolved]`` table that is not read back as config, and inside every checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import ConfigError
from .models.backbones import BACKBONES
from .models.svg import CONDITIONS, LATENTS, OUTPUTS, POINT_FINDERS, PRIORS, ModelConfig
from .data.dataset import BAD_SAMPLE_POLICIES
from .runtime import PRECISIONS
from .tblog import MODES as TENSORBOARD_MODES

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
LR_SCHEDULES = ("constant", "cosine")
TRAIN_WINDOWS = ("random", "first")


# what the data decides, not the config: the model is built for the frames and conditions it is given
DATA_DEFINED = ("channels", "cond_dim")
MODEL_KEYS = tuple(f.name for f in fields(ModelConfig) if f.name not in DATA_DEFINED)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
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
    kl_balance: float = 0.0            # a in (0, 1), learned prior: weight a on the prior's side of the KL (0 = off)
    point_smoothness: float = 0.0      # with motion_points: weight of the found points' acceleration (0 = off),
                                       # reached over the first kl_anneal_ratio of training like the KL weight
    point_concentration: float = 0.0   # with motion_points: weight of how widely the points' maps spread (0 = off)
    # sequence protocol
    n_past: int = 2
    n_future: int = 10
    n_eval: int = 10                   # frames predicted after n_past at validation and in sample pictures
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
    device: str = "cpu"                # "cpu", "cuda", "cuda:1"; the flag --cuda sets "cuda"
    precision: str = "auto"            # auto: bf16 where it is faster (CUDA; a CPU by a start-up probe), else fp32
    channels_last: bool = True         # NHWC activations: faster convolutions on CPUs and tensor-core GPUs
    compile: bool = False              # torch.compile the training step (slower on the CPU here: off)
    compile_mode: str = "default"      # torch.compile's mode: "reduce-overhead" captures CUDA graphs (fewer launches)
    tensorboard: str = "auto"          # LOG_DIR/tb: "auto" when the tensorboard package is installed, "on", "off"
    sync_bn: bool = False              # under torchrun: BatchNorm statistics over all processes' batches
    n_pictures: int = 4                # sequences shown in the per-epoch prediction grid
    picture_samples: int = 3           # futures drawn per sequence in those grids (the best by SSIM first)
    # faults
    skip_nonfinite: int = 0            # batches with a NaN/inf loss skipped (no update) before the run stops
    on_bad_sample: str = "error"       # "error": a bad trajectory stops start-up; "skip": train without it

    def model_config(self, cond_dim: int = 7) -> ModelConfig:
        """The model to build for conditions of ``cond_dim`` numbers per frame."""
        return dataclasses.replace(self.model, cond_dim=cond_dim)

    def validate(self) -> None:
        """Raise ConfigError naming the first key whose value is impossible."""
        checks = [
            ("lr", self.lr > 0, "must be > 0"),
            ("beta1", 0 <= self.beta1 < 1, "must be in [0, 1)"),
            ("optimizer", self.optimizer in OPTIMIZERS, f"must be one of {OPTIMIZERS}"),
            ("lr_schedule", self.lr_schedule in LR_SCHEDULES, "must be 'constant' or 'cosine'"),
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
            ("kl_balance", 0 <= self.kl_balance < 1, "must be in [0, 1)"),
            ("point_smoothness", self.point_smoothness >= 0, "must be >= 0"),
            ("point_concentration", self.point_concentration >= 0, "must be >= 0"),
            ("n_past", self.n_past >= 1, "must be >= 1"),
            ("n_future", self.n_future >= 1, "must be >= 1"),
            ("n_eval", self.n_eval >= 1, "must be >= 1"),
            ("train_window", self.train_window in TRAIN_WINDOWS, "must be 'random' or 'first'"),
            ("precision", self.precision in PRECISIONS, f"must be one of {PRECISIONS}"),
            ("compile_mode", self.compile_mode in COMPILE_MODES, f"must be one of {COMPILE_MODES}"),
            ("tensorboard", self.tensorboard in TENSORBOARD_MODES, f"must be one of {TENSORBOARD_MODES}"),
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

    def to_dict(self) -> dict:
        """The training's keys and the model's under ``"model"`` (what checkpoints and ``config.toml`` hold)."""
        d = dataclasses.asdict(self)
        d["model"] = {k: d["model"][k] for k in MODEL_KEYS}
        return d

    def flat(self) -> dict:
        """Every key at one level, as flags and study factors name them."""
        d = self.to_dict()
        return d.pop("model") | d


TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig) if f.name != "model")
_TYPES = ({f.name: typing.get_type_hints(TrainConfig)[f.name] for f in fields(TrainConfig) if f.name != "model"}
          | {f.name: typing.get_type_hints(ModelConfig)[f.name] for f in fields(ModelConfig) if f.name in MODEL_KEYS})
KEYS = tuple(_TYPES)   # every key, flat
# keys whose value is one of a few names: their flags list the names, and refuse others
CHOICES = {"condition": CONDITIONS, "latent": LATENTS, "backbone": BACKBONES, "prior": PRIORS, "output": OUTPUTS,
           "motion_points_finder": POINT_FINDERS,
           "optimizer": OPTIMIZERS, "lr_schedule": LR_SCHEDULES, "train_window": TRAIN_WINDOWS,
           "precision": PRECISIONS, "compile_mode": COMPILE_MODES, "on_bad_sample": BAD_SAMPLE_POLICIES}
HELP = {"motion_points_finder": "learned: a small network finds the K motion points; change: one point, the "
                                "centroid of the frame's change since the frame before (needs motion_points 1)",
        "condition": "what the model is given of each frame's condition: full (actions and positions), actions, "
                     "positions, or none (action-free: no condition, and the data set needs no CSVs)",
        "latent": "step: a latent z_t per step (SVG); sequence: one z for the whole sequence, so a sample from "
                  "the prior is one whole future"}


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


def _check_table(key: str, table: str | None, source: str) -> None:
    """A model key belongs in [model] (or, in older files, at the top level); a training key anywhere else."""
    if key not in _TYPES:
        where = f" in [{table}]" if table else ""
        raise ConfigError(f"{source}: unknown key {key!r}{where}")
    if table == "model" and key not in MODEL_KEYS:
        raise ConfigError(f"{source}: key {key!r} is in the [model] table, but it is not a model key; move it to "
                          f"the top level or a [training] table")
    if table not in (None, "model") and key in MODEL_KEYS:
        raise ConfigError(f"{source}: key {key!r} is in the [{table}] table, but it is a model key; move it to the "
                          f"[model] table")


RESOLVED_TABLE = "resolved"   # the table of a run's config.toml that says what the run decided (see to_toml)


def load_toml(path: str | Path) -> dict:
    """The values of a TOML config file, type-checked and table-checked, as one flat dict of keys; a
    ``[resolved]`` table is skipped."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML ({e})") from None
    raw.pop(RESOLVED_TABLE, None)   # what a run decided, not config
    flat: dict = {}
    for key, value in raw.items():
        table = key if isinstance(value, dict) else None
        for k, v in (value.items() if table else [(key, value)]):
            if isinstance(v, dict):
                raise ConfigError(f"{path}: table [{key}.{k}]: tables do not nest")
            if k in flat:
                raise ConfigError(f"{path}: key {k!r} given twice")
            if k in OLDER_KEYS:   # read by flatten
                flat[k] = v
                continue
            _check_table(k, table, str(path))
            flat[k] = _check_type(k, v, str(path))
    return flat


OLDER_KEYS = ("cuda",)   # keys of older versions' files that flatten reads as today's


def flatten(values: dict) -> dict:
    """A config dict with the model's keys under ``"model"`` (a checkpoint's, or :meth:`TrainConfig.to_dict`) or
    at the top level (files of older versions) as one flat dict. Files of older versions also had ``cuda = true``
    beside ``device``: it is read as ``device = "cuda"`` (an empty device as "cpu")."""
    values = dict(values)
    model = values.pop("model", None)
    flat = (model or {}) | values
    if "cuda" in flat:
        cuda = flat.pop("cuda")
        if not isinstance(cuda, bool):
            raise ConfigError(f"key 'cuda' must be bool, got {type(cuda).__name__} {cuda!r}")
        if not flat.get("device"):
            flat["device"] = "cuda" if cuda is True else "cpu"
    elif flat.get("device") == "":
        flat["device"] = "cpu"
    return flat


def from_dict(values: dict, source: str = "config") -> TrainConfig:
    """The config of a dict of keys (flat, or with the model's under ``"model"``), type-checked and validated."""
    flat = {k: _check_type(k, v, source) for k, v in flatten(values).items()}
    try:
        model = ModelConfig(**{k: v for k, v in flat.items() if k in MODEL_KEYS})
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None
    cfg = TrainConfig(model=model, **{k: v for k, v in flat.items() if k not in MODEL_KEYS})
    cfg.validate()
    return cfg


def to_toml(cfg: TrainConfig, resolved: dict | None = None) -> str:
    """The config as TOML: the training's keys, then the model's in a [model] table, and with ``resolved`` (what
    a run decided: its data set, precision and device) a [resolved] table, which :func:`load_toml` skips."""
    d = cfg.to_dict()
    tables = {"model": d.pop("model")} | ({RESOLVED_TABLE: resolved} if resolved is not None else {})
    lines = [f"{key} = {json.dumps(value)}" for key, value in d.items()]   # JSON scalars are valid TOML scalars
    for name, table in tables.items():
        lines += ["", f"[{name}]"] + [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per config key, default None so that only flags actually given override the file."""
    parser.add_argument("--config", help="TOML file of config values; command-line flags override it")
    defaults = TrainConfig().flat()
    for key, typ in _TYPES.items():
        help_ = (f"{HELP[key]} " if key in HELP else "") + f"(default: {defaults[key]!r})"
        if typ is bool:
            parser.add_argument(f"--{key}", action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif key == "tensorboard":   # a bare --tensorboard means on
            parser.add_argument("--tensorboard", nargs="?", const="on", choices=TENSORBOARD_MODES, default=None,
                                help=f"{help_}; a bare --tensorboard is 'on'")
        else:
            parser.add_argument(f"--{key}", type=typ, default=None, choices=CHOICES.get(key), help=help_)
    add_cuda_flag(parser, default=None)


def add_cuda_flag(parser: argparse.ArgumentParser, default) -> None:
    """``--cuda``: a short way to say ``--device cuda`` (whichever of the two comes last wins)."""
    parser.add_argument("--cuda", dest="device", action="store_const", const="cuda", default=default,
                        help="train or predict on the GPU: the same as --device cuda")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the package's kind of error: one line, ``prog: error: what`` (a parser of every config key
    would otherwise print a usage of dozens of lines first); ``--help`` shows the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (--help lists the flags)\n")


def resolve(args: argparse.Namespace, base: dict | None = None) -> TrainConfig:
    """defaults < ``base`` (a resumed run's saved config) < config file < given flags."""
    values = flatten(base or {})
    if getattr(args, "config", None):
        values.update(load_toml(args.config))
    for key in KEYS:
        v = getattr(args, key, None)
        if v is not None:
            values[key] = v
    return from_dict(values, source=getattr(args, "config", None) or "command line")


# What a resumed run may change: how long it runs (a larger ``niter`` extends it), where and how fast it runs,
# and how it reacts to faults. The model's shape never; any other key would change the training being continued.
RESUME_MAY_CHANGE = ("niter", "log_dir", "data_root", "num_workers", "device", "compile", "channels_last",
                     "compile_mode", "tensorboard", "val_every", "n_pictures", "picture_samples", "skip_nonfinite",
                     "on_bad_sample", "sync_bn", "val_batch_size")


def check_resume_changes(saved: TrainConfig, cfg: TrainConfig, source: str) -> None:
    """Raise ConfigError if ``cfg`` changes a key of the run saved in ``source`` (with config ``saved``) that a
    resumed run must keep."""
    old, new = saved.flat(), cfg.flat()
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
