"""The action-conditioned SVG model: a conditional VAE over video frames.

Per step t = 1 .. T-1 (zero-based frames; ``n_past`` ground-truth frames come first):

    h_t            = E(x_t)                                 frame encoder (all ground-truth frames in one call)
    q(z_t | x_1..t) = posterior LSTM on h_t                 inference network
    p(z_t | x_1..t-1) = N(0, I), or learned LSTM on h_{t-1}
    g_t            = predictor LSTM on concat(h_{t-1}, z_t, c_t)
    x_hat_t        = D(g_t, skip features)

c_t is row t of the condition (action_t, position_t): the row of the frame being predicted, so the position
is where the gripper is in frame t and the action is the command issued at frame t.

Input frames are ground truth whenever they are past frames (t - 1 < n_past), in training and prediction alike.
For later steps, training with teacher forcing feeds the ground-truth x_{t-1}; without it, the model's own
x_hat_{t-1} (re-encoded), exactly as at prediction time. Skip features come from frame min(t - 1, n_past - 1)
(the newest ground-truth input), or, with ``last_frame_skip``, from the input frame of every step.

With ``latent="sequence"`` one z serves every step of a sequence (a time-invariant latent, as in SV2P, Babaeizadeh
et al. 2018): q(z | x_1..T-1) is the posterior LSTM's output after the last frame, p(z | x_0..n_past-1) is
N(0, I) or the learned LSTM's output after the last given frame, and z_t = z for every t. A prior sample is then
one whole future (the arm heads for one place and then another) rather than a new draw at every step. Its KL is
shared out evenly over the steps, so the per-step KL and free bits mean what they mean for a latent per step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import BACKBONES, SeparableMaps, build_backbone
from .rnn import GaussianLSTM, PredictorLSTM, gaussian_kl, reparameterize

PRIORS = ("fixed", "learned")
OUTPUTS = ("direct", "compose")
# which part of the condition c_t = (action_t, position_t) the model receives; "none" is action-free
CONDITIONS = ("full", "actions", "positions", "none")
POSTERIOR_INPUTS = ("frame", "change")
LATENTS = ("step", "sequence")
POINT_FINDERS = ("learned", "change")
ACTION_DIM = 4   # the first ACTION_DIM numbers of c_t are the action, the rest the position


def condition_columns(condition: str, cond_dim: int) -> list[int]:
    """The columns of a ``cond_dim``-number condition that ``condition`` keeps."""
    if condition == "full":
        return list(range(cond_dim))
    if condition == "none":
        return []
    if cond_dim <= ACTION_DIM:
        raise ValueError(f"condition {condition!r} needs actions and positions in the condition "
                         f"({ACTION_DIM} + at least 1 numbers), got cond_dim={cond_dim}")
    return list(range(ACTION_DIM)) if condition == "actions" else list(range(ACTION_DIM, cond_dim))


def _frames(x: torch.Tensor, index: int | list[int]) -> torch.Tensor:
    """x[:, index] for feature maps x (B, L, C, H, W). Channels-last maps are indexed as (B, L, H, W, C), so the
    result and its gradient stay channels-last (the gradient of indexing is laid out contiguously: NCHW here,
    which would make every kernel downstream of it convert layouts)."""
    cl = x.dim() == 5 and x.shape[2] > 1 and x.movedim(2, -1).is_contiguous()
    y = x.movedim(2, -1) if cl else x
    if isinstance(index, int):
        y = y[:, index]
    elif index == list(range(index[0], index[0] + len(index))):
        y = y[:, index[0]:index[0] + len(index)]
    else:   # index_select: its gradient (index_add) is much cheaper than that of advanced indexing
        y = y.index_select(1, torch.tensor(index, device=x.device))
    return y.movedim(-1, -3) if cl else y


class ConditionKeypoints(nn.Module):
    """``n`` image points per condition vector, each an affine function of it, drawn as Gaussian blobs.

    A robot's end-effector position seen by a fixed camera lands at an image point that is close to an affine
    function of it; a blob there is a picture the decoder can paint the gripper into with one convolution. The
    points' maps (and their widths, which start at a quarter of the image's half-width so that every blob
    overlaps the gripper wherever it is) are learnt with the rest of the model.
    """

    def __init__(self, cond_dim: int, n: int, init_sigma: float = 0.25):
        super().__init__()
        self.n = n
        self.proj = nn.Linear(cond_dim, 2 * n)
        self.log_sigma = nn.Parameter(torch.full((n,), math.log(init_sigma)))

    def points(self, c: torch.Tensor) -> torch.Tensor:
        """c (N, cond_dim) -> (N, n, 2) points (x, y), in the [-1, 1] coordinates of ``coordinate_maps``."""
        return self.proj(c.to(self.proj.weight.dtype)).unflatten(-1, (self.n, 2))

    def profiles(self, c: torch.Tensor, size: int) -> SeparableMaps:
        """c (N, cond_dim) -> the blobs as :class:`SeparableMaps`, profiles (N, n, size) along y and x in float32:
        a Gaussian blob is the outer product of one along the rows and one along the columns."""
        uv = self.points(c).float()
        r = torch.linspace(-1.0, 1.0, size, device=c.device)
        k = (0.5 * torch.exp(-2 * self.log_sigma.float()))[None, :, None]       # (1, n, 1)
        return SeparableMaps(gy=torch.exp(-k * (r - uv[..., 1:]) ** 2), gx=torch.exp(-k * (r - uv[..., :1]) ** 2))

    def forward(self, c: torch.Tensor, size: int) -> torch.Tensor:
        """c (N, cond_dim) -> (N, n, size, size) blobs exp(-|p - point|^2 / (2 sigma^2)) over pixel centres p."""
        return self.profiles(c, size).dense().to(c.dtype)


class MotionKernels(nn.Module):
    """K normalised k x k kernels per frame, predicted from g, each applied to the previous frame (CDNA, Finn et
    al. 2016): a kernel whose weight sits off centre moves the frame's pixels by that offset, up to k // 2 pixels
    per step. They start near the identity (83% of the weight at the centre): the previous frame, a little blurred."""

    SIZE = 9

    def __init__(self, g_dim: int, n: int):
        super().__init__()
        self.n = n
        self.head = nn.Linear(g_dim, n * self.SIZE ** 2)
        with torch.no_grad():
            self.head.weight.mul_(0.1)
            self.head.bias.zero_()
            self.head.bias.view(n, self.SIZE ** 2)[:, self.SIZE ** 2 // 2] = 6.0   # 83% of the weight

    def kernels(self, g: torch.Tensor) -> torch.Tensor:
        """g (N, g_dim) -> (N, K, k, k), each kernel non-negative and summing to one."""
        k = self.SIZE
        return torch.softmax(self.head(g).float().unflatten(-1, (self.n, k * k)), -1).unflatten(-1, (k, k))

    def forward(self, g: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """g (N, g_dim), prev (N, C, H, W) -> the K moved frames (N, K, C, H, W), edges replicated."""
        N, C, H, W = prev.shape
        k, K = self.SIZE, self.n
        kern = self.kernels(g).to(prev.dtype)                              # (N, K, k, k)
        x = F.pad(prev.reshape(1, N * C, H, W), (k // 2,) * 4, mode="replicate")
        w = kern[:, None].expand(N, C, K, k, k).reshape(N * C * K, 1, k, k)
        out = F.conv2d(x, w, groups=N * C)                                 # (1, N * C * K, H, W)
        return out.view(N, C, K, H, W).transpose(1, 2)


def shift_by_points(frame: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """frame (N, C, H, W) and c (N, 4K), per row the K points (x, y in [-1, 1]) of the frame being drawn and then
    the K points of ``frame`` -> K copies of the frame, copy k translated by point k's move (N, K, C, H, W), edges
    replicated: what was at point k of ``frame`` is at point k of the drawn frame, as sharp as it was."""
    N, C, H, W = frame.shape
    now, src = c.float().chunk(2, -1)
    K = now.shape[-1] // 2
    shift = (now - src).view(N, K, 1, 1, 2)
    xs = torch.linspace(-1, 1, W, device=frame.device)
    ys = torch.linspace(-1, 1, H, device=frame.device)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)          # (H, W, 2): (x, y) of each pixel
    grid = (base - shift).reshape(N * K, H, W, 2)
    src_frames = frame.float()[:, None].expand(N, K, C, H, W).reshape(N * K, C, H, W)
    moved = F.grid_sample(src_frames, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return moved.view(N, K, C, H, W).to(frame.dtype)


class SpatialSoftmaxPoints(nn.Module):
    """K image points found in a feature map: a 1x1 convolution to K maps, a softmax over each map's pixels, and
    the expected pixel coordinates under it (a spatial soft-argmax, as in Finn et al. 2016's deep spatial
    autoencoders). Where something is in the frame becomes two numbers that move with it, which the recurrent
    parts can carry and the posterior can read, instead of a pattern spread over a vector of features."""

    def __init__(self, channels: int, n: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, n, 1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """f (N, C, H, W) -> (N, 2 n): (x, y) of each point in [-1, 1], x along columns."""
        return self.points_and_spread(f)[0]

    def points_and_spread(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The points (N, 2 n) and how widely each map's softmax spreads around its point (N, n): the expected
        squared distance from it. A map with two distant peaks has a large spread, and a point between them."""
        a = self.conv(f).float()
        points, spread = centroid_and_spread(torch.softmax(a.flatten(2), -1).view(a.shape))
        return points.flatten(1), spread


def centroid_and_spread(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps w (..., H, W) of weights that sum to one -> each map's centroid (..., 2), (x, y) in the [-1, 1] image
    coordinates with x along columns, and its spread (...,): the expected squared distance from the centroid."""
    H, W = w.shape[-2:]
    ys, xs = (torch.linspace(-1.0, 1.0, k, device=w.device) for k in (H, W))
    px, py = w.sum(-2), w.sum(-1)   # (..., W), (..., H)
    x, y = (px * xs).sum(-1), (py * ys).sum(-1)
    spread = (px * (xs - x[..., None]) ** 2).sum(-1) + (py * (ys - y[..., None]) ** 2).sum(-1)
    return torch.stack([x, y], -1), spread


def change_centroid(x: torch.Tensor, before: torch.Tensor | None, eps: float = 1e-3
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a frame changed since the frame before it: the centroid of |x - before| (summed over channels) in the
    [-1, 1] image coordinates, x along columns, (N, 2), and how widely the change spreads around it (N, 1), for x and
    before (N, C, H, W). Nothing is learnt: what moves (the arm, and what it pushes) is what changes, and the
    centroid of a moving thing's change (where it was and where it is) moves with it. A frame with no change (or no
    frame before it) has its point at the centre."""
    if before is None:
        return x.new_zeros(x.shape[0], 2).float(), x.new_zeros(x.shape[0], 1).float()
    d = (x.float() - before.float()).abs().sum(1)                        # (N, H, W)
    points, spread = centroid_and_spread(d / (d.sum((1, 2), keepdim=True) + eps))
    return points, spread[:, None]


class ChangePoint(nn.Module):
    """One image point per frame with nothing to learn: the centroid of the frame's change since the frame before
    it (:func:`change_centroid`). The same finder in every run, so what the point follows does not depend on the
    seed; the model still learns to predict it (with z) and to draw from it."""

    def forward(self, x: torch.Tensor, before: torch.Tensor | None) -> torch.Tensor:
        return change_centroid(x, before)[0]

    def spread(self, x: torch.Tensor, before: torch.Tensor | None) -> torch.Tensor:
        return change_centroid(x, before)[1]


class MotionPoints(nn.Module):
    """K image points per frame, found from the frame and its change since the frame before it: three small
    convolutions at half resolution and a spatial soft-argmax (:class:`SpatialSoftmaxPoints`) whose maps start
    peaked, so that the points follow what the convolutions find from the first steps. What moves (the arm, a
    pushed object) stands out in the change, which a point then follows."""

    def __init__(self, channels: int, n: int, w: int = 32, change: bool = True):
        super().__init__()
        self.change = change   # False: the change is not read (zeros in its place), only the frame
        self.trunk = nn.Sequential(nn.Conv2d(2 * channels, w, 4, 2, 1), nn.ReLU(inplace=True),
                                   nn.Conv2d(w, w, 3, 1, 1), nn.ReLU(inplace=True),
                                   nn.Conv2d(w, w, 3, 1, 1), nn.ReLU(inplace=True))
        self.points = SpatialSoftmaxPoints(w, n)
        with torch.no_grad():
            self.points.conv.weight.mul_(10.0)

    def forward(self, x: torch.Tensor, before: torch.Tensor | None) -> torch.Tensor:
        """x (N, C, H, W) and the frames before them (None: no change, a sequence's first frame) -> (N, 2K)."""
        return self.points(self._features(x, before))

    def spread(self, x: torch.Tensor, before: torch.Tensor | None) -> torch.Tensor:
        """How widely each point's map spreads around it (:meth:`SpatialSoftmaxPoints.points_and_spread`), (N, K)."""
        return self.points.points_and_spread(self._features(x, before))[1]

    def _features(self, x: torch.Tensor, before: torch.Tensor | None) -> torch.Tensor:
        change = torch.zeros_like(x) if before is None or not self.change else x - before
        return self.trunk(torch.cat([x, change], 1))


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "vgg"
    width: float = 1.0          # channel multiplier of the backbone (1.0 = lab widths 64..512)
    channels: int = 3
    g_dim: int = 128
    z_dim: int = 64
    rnn_size: int = 256
    cond_dim: int = 7           # numbers per frame in the data's condition (BAIR: 4 action + 3 position)
    condition: str = "full"     # what of it the model sees: full, actions, positions or none (action-free)
    prior: str = "fixed"
    posterior_rnn_layers: int = 1
    prior_rnn_layers: int = 1
    predictor_rnn_layers: int = 2
    last_frame_skip: bool = False
    output: str = "direct"      # "direct": decoder -> 3 channels + sigmoid (SVG); "compose": see CVAE
    spatial_cond: bool = False  # the decoder also sees the condition broadcast over its maps: see CVAE.render
    keypoints: int = 0          # with spatial_cond or spatial_state: image points learnt from it, drawn as blobs
    frame_feedback: bool = True  # False: predicted frames are not fed back; past the given frames the predictor
                                 # sees no frame and z carries what is new (the dynamics live in the LSTM state)
    frame_keypoints: int = 0    # K > 0: h_t also holds K image points found in frame t (spatial softmax), see CVAE
    posterior_input: str = "frame"   # what q(z_t | ...) reads per step: "frame" h_t, or "change" (h_t, h_t - h_t-1)
    posterior_logvar_init: float = 0.0   # initial log-variance of q(z_t | x_1..t): below 0, z starts sharp
    spatial_state: int = 0      # D > 0: the decoder sees D numbers per frame made from the predictor's output g_t
                                # (and D for the skip frame) as it sees a spatial condition: see CVAE.render
    motion_kernels: int = 0     # with compose: K kernels that move the previous frame's pixels (CDNA), see render
    decoder_z: bool = False     # with spatial_state: the drawn numbers are made from (g_t, z_t), so z reaches the
                                # decoder's maps directly and not only through the predictor
    motion_points: int = 0      # K > 0: K image points per frame found from the frame and its change (MotionPoints)
                                # are in h and are what the decoder draws; the model predicts them: see CVAE
    motion_points_width: int = 32   # channels of the point finder's convolutions (at half resolution)
    motion_points_change: bool = True   # the point finder reads the frame's change since the frame before too
    motion_points_finder: str = "learned"   # "learned": MotionPoints; "change": one point, the centroid of the
                                            # frame's change (ChangePoint), nothing learnt
    latent: str = "step"        # "step": a z_t per step (SVG); "sequence": one z for the whole sequence, see CVAE
    point_warp: bool = False    # with motion_points and compose: the frame also mixes K copies of the skip frame,
                                # each moved by one point's move (shift_by_points), see CVAE.render
    finder_from_drawn_frame: bool = True  # with motion_points: the points found in the frame being drawn carry the
                                          # image loss's gradient to the finder (False: only those of the skip frame
                                          # and the predictor's input do)
    draw_predicted_points: float = 0.0    # with motion_points: the share of training batches that draw the points
                                          # the model predicts (from the frame before's and z), as prediction does,
                                          # not those found in the frame being drawn

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {self.output!r}")
        if not self.frame_feedback and (self.last_frame_skip or self.motion_kernels or self.prior == "learned"):
            raise ValueError("frame_feedback=False feeds no predicted frame back, so last_frame_skip, "
                             "motion_kernels and the learned prior (which read the previous frame) cannot be "
                             "used with it")
        if self.posterior_input not in POSTERIOR_INPUTS:
            raise ValueError(f"posterior_input must be one of {POSTERIOR_INPUTS}, got {self.posterior_input!r}")
        if self.latent not in LATENTS:
            raise ValueError(f"latent must be one of {LATENTS}, got {self.latent!r}")
        if self.condition not in CONDITIONS:
            raise ValueError(f"condition must be one of {CONDITIONS}, got {self.condition!r}")
        if self.condition == "none" and self.spatial_cond:
            drawn = [f"{k}={getattr(self, k)}" for k in ("spatial_cond", "keypoints") if getattr(self, k)]
            raise ValueError(f"condition 'none' gives the decoder no condition to draw: turn off "
                             f"{', '.join(drawn)}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        for name in ("g_dim", "z_dim", "rnn_size", "posterior_rnn_layers", "prior_rnn_layers",
                     "predictor_rnn_layers", "channels", "motion_points_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.width <= 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        if self.motion_kernels < 0 or self.motion_kernels and self.output != "compose":
            raise ValueError(f"motion_kernels must be >= 0 and need output 'compose', got "
                             f"motion_kernels={self.motion_kernels}, output={self.output!r}")
        if self.spatial_state < 0 or self.spatial_state and self.spatial_cond:
            raise ValueError(f"spatial_state must be >= 0 and cannot be combined with spatial_cond, got "
                             f"spatial_state={self.spatial_state}, spatial_cond={self.spatial_cond}")
        self._check_motion_points()
        if self.decoder_z and not self.spatial_state:
            raise ValueError("decoder_z draws z through the spatial state: it needs spatial_state > 0")
        if self.keypoints < 0 or self.keypoints and not (self.spatial_cond or self.spatial_state):
            raise ValueError(f"keypoints must be >= 0 and need spatial_cond or spatial_state, got "
                             f"keypoints={self.keypoints}, spatial_state={self.spatial_state}, "
                             f"spatial_cond={self.spatial_cond}")

    def _check_motion_points(self) -> None:
        """The motion points' options: what they need and what they cannot be combined with."""
        if self.motion_points < 0 or self.motion_points and (self.spatial_cond or self.spatial_state
                                                             or self.keypoints or not self.frame_feedback):
            raise ValueError(f"motion_points must be >= 0; it draws its own points, so it cannot be combined with "
                             f"spatial_cond, spatial_state or keypoints, and it reads the predicted frames back, so "
                             f"it needs frame_feedback; got motion_points={self.motion_points}")
        if self.motion_points_finder not in POINT_FINDERS:
            raise ValueError(f"motion_points_finder must be one of {POINT_FINDERS}, got "
                             f"{self.motion_points_finder!r}")
        if self.motion_points_finder == "change" and self.motion_points != 1:
            raise ValueError(f"motion_points_finder 'change' finds one point per frame (the centroid of its change): "
                             f"it needs motion_points = 1, got {self.motion_points}")
        if not self.finder_from_drawn_frame and not self.motion_points:
            raise ValueError("finder_from_drawn_frame=False stops a gradient to the motion points' finder: it needs "
                             "motion_points > 0")
        if not 0 <= self.draw_predicted_points <= 1 or self.draw_predicted_points and not self.motion_points:
            raise ValueError(f"draw_predicted_points is a share of batches in [0, 1] that draw the motion points the "
                             f"model predicts: it needs motion_points > 0; got draw_predicted_points="
                             f"{self.draw_predicted_points}, motion_points={self.motion_points}")
        if self.point_warp and not (self.motion_points and self.output == "compose" and not self.motion_kernels):
            raise ValueError(f"point_warp moves the skip frame by the motion points' moves: it needs motion_points "
                             f"> 0 and output 'compose', without motion_kernels; got motion_points="
                             f"{self.motion_points}, output={self.output!r}, motion_kernels={self.motion_kernels}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def cond_in(self) -> int:
        """How many numbers of the condition the model takes per frame."""
        return len(condition_columns(self.condition, self.cond_dim))


@dataclass
class _Feedback:
    """What :meth:`CVAE._feedback_steps` reads of a batch: its frames x and their encodings h, the ground truth's
    skips, the latent samples z, the conditions and what is drawn, the rows taught by the ground truth (``keep``,
    (B, 1)), the given frames' count, the fixed skip context, the recurrent states after the first steps, and
    whether the batch draws the points the model predicts."""
    x: torch.Tensor
    h: torch.Tensor
    skips: list
    z: torch.Tensor
    cond: torch.Tensor
    drawn: torch.Tensor
    keep: torch.Tensor
    n_past: int
    skip_in: list
    p_state: object
    prior_state: object
    predicted: bool   # the batch draws the predicted points, not the found ones


class CVAE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.compose = cfg.output == "compose"
        K = cfg.motion_kernels or (cfg.motion_points if cfg.point_warp else 0)   # moved frames in the mixture
        out_channels = cfg.channels + (2 + K if K else 1) if self.compose else cfg.channels
        self.columns = condition_columns(cfg.condition, cfg.cond_dim)
        blobs = cfg.keypoints or cfg.motion_points
        self.encoder, self.decoder = build_backbone(
            cfg.backbone, g_dim=cfg.g_dim, channels=cfg.channels, width=cfg.width, out_channels=out_channels,
            cond_channels=2 * self.drawn_dim, map_channels=2 * blobs)
        self.keypoints = ConditionKeypoints(self.drawn_dim, blobs) if blobs else None
        self.motion_points = (None if not cfg.motion_points else ChangePoint()
                              if cfg.motion_points_finder == "change" else
                              MotionPoints(cfg.channels, cfg.motion_points, cfg.motion_points_width,
                                           cfg.motion_points_change))
        if cfg.motion_points:   # blobs exactly at the points to start with; a residual step of the points from (g, z)
            with torch.no_grad():
                self.keypoints.proj.weight.copy_(torch.eye(2 * cfg.motion_points))
                self.keypoints.proj.bias.zero_()
            self.point_head = nn.Linear(cfg.g_dim + cfg.z_dim, 2 * cfg.motion_points)
            nn.init.zeros_(self.point_head.weight)
            nn.init.zeros_(self.point_head.bias)
        self.state_head = (nn.Linear(cfg.g_dim + cfg.z_dim * cfg.decoder_z, 2 * cfg.spatial_state)
                           if cfg.spatial_state else None)
        self.motion = MotionKernels(cfg.g_dim, K) if cfg.motion_kernels else None
        h_dim = cfg.g_dim + 2 * cfg.frame_keypoints + 2 * cfg.motion_points
        self.predictor = PredictorLSTM(h_dim + cfg.z_dim + cfg.cond_in, cfg.g_dim, cfg.rnn_size,
                                       cfg.predictor_rnn_layers)
        self.frame_points = (SpatialSoftmaxPoints(self.encoder.point_channels, cfg.frame_keypoints)
                             if cfg.frame_keypoints else None)
        post_in = h_dim * (2 if cfg.posterior_input == "change" else 1)
        self.posterior = GaussianLSTM(post_in, cfg.z_dim, cfg.rnn_size, cfg.posterior_rnn_layers)
        if cfg.posterior_logvar_init:
            with torch.no_grad():
                self.posterior.logvar.bias.fill_(cfg.posterior_logvar_init)
        self.prior = (GaussianLSTM(h_dim, cfg.z_dim, cfg.rnn_size, cfg.prior_rnn_layers)
                      if cfg.prior == "learned" else None)

    def select_condition(self, cond: torch.Tensor | None, batch: int, steps: int, like: torch.Tensor
                         ) -> torch.Tensor:
        """The part of cond (B, T, cond_dim) the model sees: (B, T, cond_in). With condition ``none`` cond may be
        None (a data set without conditions) and the result is (batch, steps, 0)."""
        if self.cfg.condition == "none":
            return like.new_zeros(batch, steps, 0)
        if cond is None:
            raise ValueError(f"condition {self.cfg.condition!r} needs the condition; only 'none' predicts without")
        if cond.shape[-1] != self.cfg.cond_dim:
            raise ValueError(f"cond has {cond.shape[-1]} numbers per frame, the model was built for "
                             f"{self.cfg.cond_dim}")
        return cond if self.cfg.condition == "full" else cond[..., self.columns]

    @property
    def drawn_dim(self) -> int:
        """Numbers per frame that the decoder draws spatially (for the drawn frame and again for the skip frame)."""
        if self.cfg.spatial_state:
            return self.cfg.spatial_state
        if self.cfg.motion_points:
            return 2 * self.cfg.motion_points
        return self.cfg.cond_in if self.cfg.spatial_cond else 0

    # ---- frame-level helpers: time folded into the batch -------------------------------------------------
    def encode_frames(self, x: torch.Tensor, before: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x (N, C, H, W) -> h (N, g_dim) and the skip features; with ``compose`` the frame itself is the last.
        ``before``: the frames before x, whose change ``motion_points`` reads (None: no change)."""
        h, skips = self.encoder(x)
        if self.frame_points is not None:
            h = torch.cat([h, self.frame_points(skips[self.encoder.point_skip]).to(h.dtype)], -1)
        if self.motion_points is not None:
            h = torch.cat([h, self.motion_points(x, before).to(h.dtype)], -1)
        return h, (skips + [x] if self.compose else skips)

    def points_of(self, h: torch.Tensor) -> torch.Tensor:
        """The ``motion_points`` part of h (..., h_dim): (..., 2K)."""
        return h[..., -2 * self.cfg.motion_points:]

    def step_points(self, h_prev: torch.Tensor, g: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The points the model predicts for a frame: those of the frame before it (in h_prev) moved by a step made
        from (g_t, z_t). The point loss does not reach the point finder through the frame before's points (it
        would teach it points that do not move, which are the easiest to predict): the finder learns what to
        follow from the frames it helps draw."""
        return self.points_of(h_prev).detach().float() + self.point_head(torch.cat([g, z.to(g.dtype)], -1)).float()

    def point_error(self, h_prev: torch.Tensor, g: torch.Tensor, z: torch.Tensor, h_next: torch.Tensor
                    ) -> torch.Tensor:
        """Squared error of the predicted points (:meth:`step_points`) against those found in the next frame (h_next),
        mean over the batch (dim 0) and the points: one number per step, (steps,)."""
        err = (self.step_points(h_prev, g, z) - self.points_of(h_next).detach().float()) ** 2
        return err.mean(-1).mean(0).reshape(-1)

    def point_acceleration(self, h: torch.Tensor) -> torch.Tensor:
        """How much the points found in frames (h (B, L, h_dim)) change their motion from frame to frame: the squared
        second difference p_{t+1} - 2 p_t + p_{t-1}, mean over the batch and the points, summed over the L - 2
        frames that have one. A point that follows a thing moves smoothly; one that jumps between things (a soft
        argmax over a map with two peaks) is what no step of the points can predict. The gradient reaches the
        point finder."""
        p = self.points_of(h).float()
        return ((p[:, 2:] - 2 * p[:, 1:-1] + p[:, :-2]) ** 2).mean((0, 2)).sum()

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x (B, L, C, H, W) -> h (B, L, g_dim) and skips [(B, L, c_i, h_i, w_i)] in one encoder call; each frame's
        change for ``motion_points`` is from the frame before it (none for the first)."""
        B, L = x.shape[:2]
        before = torch.cat([x[:, :1], x[:, :-1]], 1).flatten(0, 1) if self.motion_points is not None else None
        h, skips = self.encode_frames(x.flatten(0, 1), before)
        return h.unflatten(0, (B, L)), [s.unflatten(0, (B, L)) for s in skips]

    def skip_inputs(self, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        """Skip features of M frames -> what rendering takes from them: the decoder's skip terms (the skip parts
        of its convolutions, see ``backbones``), and with ``compose`` the skip frame, last. Computed once for
        frames that many predictions share."""
        if self.compose:
            return self.decoder.skip_terms(skips[:-1]) + [skips[-1]]
        return self.decoder.skip_terms(skips)

    def render(self, g: torch.Tensor, skip_in: list[torch.Tensor], c: torch.Tensor | None = None,
               prev: torch.Tensor | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        """g (N, g_dim) and the ``skip_inputs`` of M frames, M dividing N -> frames (N, C, H, W) in [0, 1]. Their
        row i serves rows i * N/M .. (i + 1) * N/M - 1 of g (the samples of one sequence, say).

        ``direct``: the decoder's sigmoid output. ``compose``: the decoder also emits a mask m, and the frame is
        m * (skip frame) + (1 - m) * (decoded colours), so unchanged pixels can be copied exactly from the frame
        the skips come from (compositing as in Finn et al. 2016).

        ``spatial_cond``: c (N, 2 * cond_dim) is, per frame, the condition of the frame being drawn and that of
        the frame the skips come from; the decoder sees both broadcast over its maps beside coordinate channels,
        so it can place what the condition says (the gripper, at its position) and erase what the skip frame
        shows at its own position. With ``keypoints`` J it also sees, for each of the two conditions, J Gaussian
        blobs at image points that are learnt affine functions of the condition (:class:`ConditionKeypoints`).

        ``motion_kernels`` K (with ``compose``): prev (N, C, H, W) is each frame's previous frame (ground truth
        or the model's own). K kernels predicted from g move its pixels (:class:`MotionKernels`), and the frame
        is the mixture of the skip frame, the decoded colours and the K moved frames under K + 2 per-pixel
        weights that the decoder emits (normalised to sum to one): motion-based output as in CDNA (Finn et al.
        2016). What moves a little from one frame to the next, a pushed object, is moved rather than drawn.

        ``point_warp`` (with ``motion_points``): the K moved frames are the skip frame translated by each motion
        point's move from the skip frame to the drawn frame (:func:`shift_by_points`, c holding both frames'
        points), so what a point follows, the gripper, is copied sharply to where the point is predicted, and the
        weights can fill in where it was.
        """
        if self.state_head is not None:   # what the predictor says about the drawn frame and the skip frame
            c = torch.tanh(self.state_head(torch.cat([g, z.to(g.dtype)], -1) if self.cfg.decoder_z else g))
        maps = None
        if self.keypoints is not None:   # blobs at the points of the drawn frame's and the skip frame's condition
            c_now, c_src = c.chunk(2, -1)
            maps = lambda size: SeparableMaps(*(torch.cat(pair, 1) for pair in zip(
                self.keypoints.profiles(c_now, size), self.keypoints.profiles(c_src, size))))
        terms = self.decoder.cond_terms(c if self.drawn_dim else None, maps)
        if not self.compose:
            return self.decoder.decode(g, skip_in, terms)
        out = self.decoder.decode(g, skip_in[:-1], terms)
        C = self.cfg.channels
        frame = skip_in[-1].repeat_interleave(g.shape[0] // skip_in[-1].shape[0], 0)
        if self.motion is None and not self.cfg.point_warp:
            rgb, mask = out[:, :C], out[:, C:]
            return mask * frame + (1 - mask) * rgb
        rgb, w = out[:, :C], out[:, C:]                                    # w: (N, K + 2, H, W) in (0, 1)
        moved = self.motion(g, prev) if self.motion is not None else shift_by_points(frame, c)   # (N, K, C, H, W)
        w = w / (w.sum(1, keepdim=True) + 1e-6)
        return w[:, :1] * frame + w[:, 1:2] * rgb + (w[:, 2:, None] * moved).sum(1)

    def _skip_index(self, t: int, n_past: int) -> int:
        """Frame whose encoder features are the skip connections at step t (ground-truth path)."""
        return t - 1 if self.cfg.last_frame_skip else min(t - 1, n_past - 1)

    def _posterior_input(self, h: torch.Tensor) -> torch.Tensor:
        """Encoded frames h (B, L, g) -> the posterior's inputs for steps 1 .. L-1."""
        if self.cfg.posterior_input == "change":
            return torch.cat([h[:, 1:], h[:, 1:] - h[:, :-1]], -1)
        return h[:, 1:]

    def _prior_stats(self, h_prev: torch.Tensor, state):
        if self.prior is None:
            zeros = h_prev.new_zeros(*h_prev.shape[:-1], self.cfg.z_dim)
            return (zeros, zeros), None
        return self.prior(h_prev, state)

    def _posterior_stats(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoded frames h (B, L, g) -> q's (mu, logvar): (B, L-1, z) per step, or with ``latent="sequence"``
        (B, 1, z), the posterior LSTM's output once it has read every frame."""
        (mu, logvar), _ = self.posterior(self._posterior_input(h))
        return (mu[:, -1:], logvar[:, -1:]) if self.cfg.latent == "sequence" else (mu, logvar)

    def _sequence_prior(self, h_past: torch.Tensor):
        """p(z | given frames) for ``latent="sequence"`` from their encodings h_past (B, n_past, g): (mu, logvar)
        (B, 1, z) and the prior LSTM's state."""
        (mu, logvar), state = self._prior_stats(h_past, None)
        return (mu[:, -1:], logvar[:, -1:]), state

    def _per_step(self, v: torch.Tensor, steps: int) -> torch.Tensor:
        """A latent quantity (B, L, ...) with L = steps, or L = 1 for ``latent="sequence"``, as (B, steps, ...): a
        sample or mean is repeated over the steps; a KL (``v`` (B, 1)) is shared out over them."""
        if v.shape[1] == steps:
            return v
        if v.dim() == 2:   # a KL: the sequence's, spread evenly
            return (v / steps).expand(-1, steps)
        return v.expand(-1, steps, *v.shape[2:])

    # ---- training ---------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, cond: torch.Tensor, n_past: int,
                teacher_forcing: bool | torch.Tensor = True, point_spread: bool = False) -> dict[str, torch.Tensor]:
        """Loss terms for one batch.

        x: (B, T, C, H, W) frames in [0, 1]; cond: (B, T, cond_dim); teacher_forcing: one bool for the batch,
        or a (B,) bool tensor for a per-sample choice.

        Returns ``recon`` = sum over steps of the per-step MSE (mean over batch and pixels), ``kl`` = sum over
        steps of KL(q || p) (summed over latent dims, mean over batch), their per-step values (T-1,) and the
        predictions ``x_hat`` (B, T-1, C, H, W) of frames 1 .. T-1. With motion points, also the point loss and
        the found points' acceleration, and with ``point_spread`` how widely their maps spread (see
        :meth:`point_spread`).
        """
        B, T = x.shape[:2]
        if not 1 <= n_past < T:
            raise ValueError(f"need 1 <= n_past < T, got n_past={n_past}, T={T}")
        tf = torch.as_tensor(teacher_forcing, device=x.device).expand(B)
        cond = self.select_condition(cond, B, T, x)
        h, skips = self.encode(x)                                   # (B, T, g), [(B, T, c, h, w)]
        mu_q, logvar_q = self._posterior_stats(h)                  # q(z_t | x_1..t), t = 1..T-1, or q(z | x)
        z = self._per_step(reparameterize(mu_q, logvar_q), T - 1)  # (B, T-1, z)
        # what the decoder draws: the condition, or with motion_points the ground truth's points (an autoencoding
        # path that teaches the point finder and the decoder; the predicted points learn from the point loss)
        drawn = self.points_of(h) if self.motion_points is not None else cond

        # Steps whose input frame is ground truth run as one sequence: all of them under full teacher forcing,
        # else the past steps 1 .. n_past.
        n_seq = T - 1 if bool(tf.all()) or not self.cfg.frame_feedback else n_past
        h_in = h[:, :n_seq]
        if not self.cfg.frame_feedback:   # steps whose input frame is not a past frame see none
            h_in = torch.cat([h_in[:, :n_past], h_in.new_zeros(B, n_seq - n_past, h_in.shape[-1])], 1)
        g, p_state = self.predictor(torch.cat([h_in, z[:, :n_seq], cond[:, 1:n_seq + 1]], -1))
        if self.cfg.latent == "sequence":
            (mu_p, logvar_p), prior_state = self._sequence_prior(h[:, :n_past])
        else:
            (mu_p, logvar_p), prior_state = self._prior_stats(h_in, None)
        idx = [self._skip_index(t, n_past) for t in range(1, n_seq + 1)]
        skip_in, skip_in_seq = self._skip_contexts(skips, idx, n_past)
        share = self.cfg.draw_predicted_points   # this batch draws the predicted points (a draw of the global RNG)
        predicted = share >= 1 or (share > 0 and bool(torch.rand(()) < share))
        if predicted:
            target = self.step_points(h_in, g, z[:, :n_seq]).to(drawn.dtype)
        else:
            target = drawn[:, 1:n_seq + 1] if self.cfg.finder_from_drawn_frame else drawn[:, 1:n_seq + 1].detach()
        c_seq = torch.cat([target, _frames(drawn, idx)], -1).flatten(0, 1)   # (B * n_seq, 2 cond)
        point_err = []
        if self.motion_points is not None:
            point_err.append(self.point_error(h_in, g, z[:, :n_seq], h[:, 1:n_seq + 1]))
        prev_seq = x[:, :n_seq].flatten(0, 1) if self.motion is not None else None   # frame t - 1 of step t
        x_hat = [self.render(g.flatten(0, 1), skip_in_seq, c_seq, prev_seq, z[:, :n_seq].flatten(0, 1))
                 .unflatten(0, (B, n_seq))]
        if n_seq < T - 1:
            steps = _Feedback(x=x, h=h, skips=skips, z=z, cond=cond, drawn=drawn, keep=tf[:, None], n_past=n_past,
                              skip_in=skip_in, p_state=p_state, prior_state=prior_state, predicted=predicted)
            x_hat, mu_p, logvar_p = self._feedback_steps(steps, x_hat, mu_p, logvar_p, point_err)
        out = self._loss_terms(x, h, torch.cat(x_hat, 1), (mu_q, logvar_q), (mu_p, logvar_p), point_err)
        if point_spread and self.motion_points is not None:
            out["point_spread"] = self.point_spread(x)
        return out

    def point_spread(self, x: torch.Tensor) -> torch.Tensor:
        """How widely the motion points' maps spread around the points in frames x (B, L, C, H, W): the expected
        squared distance from each point under its softmax, mean over the batch and the points, summed over the
        frames. A point between two peaks of its map (that could swing from one to the other) spreads widely."""
        before = torch.cat([x[:, :1], x[:, :-1]], 1).flatten(0, 1)
        spread = self.motion_points.spread(x.flatten(0, 1), before).unflatten(0, x.shape[:2])   # (B, L, K)
        return spread.mean((0, 2)).sum()

    def _skip_contexts(self, skips: list[torch.Tensor], idx: list[int], n_past: int):
        """The skip context of each frame that gives skips, computed once however many steps share it: (the
        context of the last given frame, n_past - 1, which the fed-back steps use; that of the steps' frames
        ``idx``, one per step and row, or one per row when every step has the same frame)."""
        B = skips[0].shape[0]
        sources = sorted(set(idx) | {n_past - 1})
        skip_in = [c.unflatten(0, (B, len(sources)))
                   for c in self.skip_inputs([_frames(s, sources).flatten(0, 1) for s in skips])]
        fixed = [_frames(c, sources.index(n_past - 1)) for c in skip_in]
        if len(set(idx)) == 1:   # one source frame for every step: its context rows serve all of them
            return fixed, [_frames(c, sources.index(idx[0])) for c in skip_in]
        pos = [sources.index(i) for i in idx]
        return fixed, [_frames(c, pos).flatten(0, 1) for c in skip_in]

    def _feedback_steps(self, s: "_Feedback", x_hat: list, mu_p, logvar_p, point_err: list):
        """The steps after the teacher-forced ones, each fed the model's own last prediction (the ground truth
        instead for the rows of ``s.keep``). Appends to ``x_hat`` and ``point_err``; returns x_hat and the prior's
        statistics of every step."""
        x, h, z, drawn, n_past = s.x, s.h, s.z, s.drawn, s.n_past
        n_seq, T = x_hat[0].shape[1], x.shape[1]
        mu_ps, logvar_ps = [mu_p], [logvar_p]
        prev = x_hat[0][:, -1]
        p_state, prior_state = s.p_state, s.prior_state
        before = x[:, n_seq - 1]   # the frame before prev, whose change motion_points reads
        for t in range(n_seq + 1, T):
            h_pred, skip_pred = self.encode_frames(prev, before)
            h_prev = torch.where(s.keep, h[:, t - 1], h_pred)
            if self.cfg.last_frame_skip:
                skip_in_t = self.skip_inputs([torch.where(s.keep[:, :, None, None], gt[:, t - 1], sp)
                                              for gt, sp in zip(s.skips, skip_pred)])
            else:
                skip_in_t = s.skip_in
            if self.cfg.latent != "sequence":
                (mu_p, logvar_p), prior_state = self._prior_stats(h_prev, prior_state)
                mu_ps.append(mu_p[:, None])
                logvar_ps.append(logvar_p[:, None])
            g_t, p_state = self.predictor(torch.cat([h_prev, z[:, t - 1], s.cond[:, t]], -1), p_state)
            if s.predicted:
                target = self.step_points(h_prev, g_t, z[:, t - 1]).to(drawn.dtype)
            else:
                target = drawn[:, t] if self.cfg.finder_from_drawn_frame else drawn[:, t].detach()
            c_t = torch.cat([target, drawn[:, self._skip_index(t, n_past)]], -1)
            if self.motion_points is not None:
                point_err.append(self.point_error(h_prev, g_t, z[:, t - 1], h[:, t]))
            prev_t = torch.where(s.keep[:, :, None, None], x[:, t - 1], prev) if self.motion is not None else None
            before = prev
            prev = self.render(g_t, skip_in_t, c_t, prev_t, z[:, t - 1])
            x_hat.append(prev[:, None])
        return x_hat, torch.cat(mu_ps, 1), torch.cat(logvar_ps, 1)

    def _loss_terms(self, x, h, x_hat, q, p, point_err: list) -> dict[str, torch.Tensor]:
        """The outputs of :meth:`forward` from the predictions x_hat (B, T-1, C, H, W), the posterior's and the
        prior's statistics and the per-step point errors; the losses in float32 whatever the autocast precision."""
        recon_t = ((x_hat.float() - x[:, 1:].float()) ** 2).mean(dim=(0, 2, 3, 4))            # (T-1,)
        (mu_q, logvar_q), (mu_p, logvar_p) = [(m.float(), lv.float()) for m, lv in (q, p)]
        steps = x.shape[1] - 1
        kl_t = self._per_step(gaussian_kl(mu_q, logvar_q, mu_p, logvar_p).mean(0)[None], steps)[0]  # (T-1,)
        out = {"recon": recon_t.sum(), "kl": kl_t.sum(), "recon_per_step": recon_t, "kl_per_step": kl_t,
               "x_hat": x_hat}
        if point_err:   # squared error of the predicted points against the found ones, summed over steps
            out["points"] = torch.cat(point_err).sum()
            out["point_accel"] = self.point_acceleration(h)
        if self.prior is not None:   # for a loss that treats the prior's and the posterior's sides apart
            out["q"], out["p"] = (mu_q, logvar_q), (mu_p, logvar_p)
        return out

    def latent_kl(self, x: torch.Tensor, n_past: int = 1) -> torch.Tensor:
        """KL(q(z_t | x_1..t) || p(z_t | x_1..t-1)) for frames x (B, T, C, H, W): (B, T-1), summed over latent
        dimensions; steps t = 1 .. T-1 on the ground truth, as in training with teacher forcing. Near zero when
        the posterior has collapsed onto the prior (z then carries nothing about the frames). With
        ``latent="sequence"`` the KL of q(z | x) against the prior given the first ``n_past`` frames, shared out
        over the steps."""
        return self.latent_stats(x, n_past)[0]

    # ---- prediction -------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, x_past: torch.Tensor, cond: torch.Tensor, n_future: int, *, n_samples: int = 1,
                z_mode: str = "sample", generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample futures given the past.

        x_past: (B, n_past, C, H, W) ground truth; cond: (B, >= n_past + n_future, cond_dim).
        Returns (B, n_samples, n_future, C, H, W). Samples are folded into the batch, so all of them run in one
        pass. z comes from the posterior for the past steps (to warm up the LSTMs, as SVG does) and from the
        prior for future steps: drawn (``z_mode="sample"``), or the posterior's and then the prior's mean
        (``z_mode="mean"``: deterministic).
        Call under ``model.eval()`` for BatchNorm running statistics.
        """
        if z_mode not in ("sample", "mean"):
            raise ValueError(f"z_mode must be 'sample' or 'mean', got {z_mode!r}")
        B, n_past = x_past.shape[:2]
        T = n_past + n_future
        cond = self.select_condition(cond, B, T, x_past)
        if cond.shape[1] < T:
            raise ValueError(f"cond has {cond.shape[1]} steps, need {T}")
        h, skips = self.encode(x_past)
        S = n_samples
        h = h.repeat_interleave(S, 0)                              # (B*S, n_past, g): sample s of b is row b*S+s
        # B rows, each serving the S samples of one sequence
        skip_in = self.skip_inputs([s[:, n_past - 1] for s in skips])
        cond = cond[:, :T].repeat_interleave(S, 0)

        def draw(mu, logvar):
            return mu if z_mode == "mean" else reparameterize(mu, logvar, generator)

        z_seq = None
        if self.cfg.latent == "sequence":   # one z from the prior, for the warm-up and every future step
            (mu_p, logvar_p), _ = self._sequence_prior(h)
            z_seq = draw(mu_p[:, 0], logvar_p[:, 0])
        p_state, prior_state = self._warm_up(h, cond, z_seq, draw)
        h_prev = h[:, -1]
        prev = x_past[:, -1].repeat_interleave(S, 0) if self.motion is not None else None
        last = x_past[:, -1].repeat_interleave(S, 0) if self.motion_points is not None else None
        out = []
        for t in range(n_past, T):
            if z_seq is not None:
                z_t = z_seq
            else:
                (mu_p, logvar_p), prior_state = self._prior_stats(h_prev, prior_state)
                z_t = draw(mu_p, logvar_p)
            g_t, p_state = self.predictor(torch.cat([h_prev, z_t, cond[:, t]], -1), p_state)
            if self.motion_points is not None:   # the points it predicts, and the skip frame's
                h_src = h_prev if self.cfg.last_frame_skip else h[:, n_past - 1]
                c_t = torch.cat([self.step_points(h_prev, g_t, z_t).to(h.dtype), self.points_of(h_src)], -1)
            else:
                src = t - 1 if self.cfg.last_frame_skip else n_past - 1
                c_t = torch.cat([cond[:, t], cond[:, src]], -1)
            x_t = self.render(g_t, skip_in, c_t, prev, z_t)
            out.append(x_t)
            prev = x_t if prev is not None else None
            if t < T - 1 and not self.cfg.frame_feedback:
                h_prev = torch.zeros_like(h_prev)
            elif t < T - 1:
                h_prev, skip_t = self.encode_frames(x_t, last)
                last = x_t if last is not None else None
                if self.cfg.last_frame_skip:
                    skip_in = self.skip_inputs(skip_t)
        return torch.stack(out, 1).unflatten(0, (B, S))

    def _warm_up(self, h: torch.Tensor, cond: torch.Tensor, z_seq: torch.Tensor | None, draw):
        """The predictor's and the prior's states after the past steps 1 .. n_past - 1 of the given frames'
        encodings h (B, n_past, h_dim), with the sequence's z or the posterior's samples (or means, by ``draw``);
        (None, None) with one given frame."""
        n_past = h.shape[1]
        if n_past == 1:
            return None, None
        if z_seq is not None:
            z = z_seq[:, None].expand(-1, n_past - 1, -1)
        else:
            (mu_q, logvar_q), _ = self.posterior(self._posterior_input(h))
            z = draw(mu_q, logvar_q)
        _, p_state = self.predictor(torch.cat([h[:, :-1], z, cond[:, 1:n_past]], -1))
        prior_state = None
        if self.prior is not None and z_seq is None:
            _, prior_state = self.prior(h[:, :-1])
        return p_state, prior_state

    def latent_stats(self, x: torch.Tensor, n_past: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`latent_kl` (B, T-1) and the posterior means mu_q (B, T-1, z_dim) it compares with the prior,
        from one pass over the ground-truth frames x (B, T, C, H, W), float32. How much mu_q varies across the
        data per dimension says which latent dimensions are in use (active units, Burda et al. 2016)."""
        h, _ = self.encode(x)
        mu_q, logvar_q = self._posterior_stats(h)
        if self.cfg.latent == "sequence":   # the prior given the frames before the first predicted one
            (mu_p, logvar_p), _ = self._sequence_prior(h[:, :n_past])
        else:
            (mu_p, logvar_p), _ = self._prior_stats(h[:, :-1], None)
        kl = gaussian_kl(mu_q.float(), logvar_q.float(), mu_p.float(), logvar_p.float())
        steps = x.shape[1] - 1
        return self._per_step(kl, steps), self._per_step(mu_q.float(), steps)
