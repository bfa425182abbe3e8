"""cvae-train with the latent noise fixed (eps = 0.5 everywhere): a torchrun entry point for test_distributed.

With random latents a run's result depends on how the draws fall into processes; fixed ones leave only the
arithmetic of data parallelism to compare between process counts.
"""

import sys

import torch

from cvae_video import train
from cvae_video.models import svg


def fixed_noise(mu, logvar, generator=None):
    return mu + torch.exp(0.5 * logvar) * 0.5


if __name__ == "__main__":
    svg.reparameterize = fixed_noise
    sys.exit(train.main())
