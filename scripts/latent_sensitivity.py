"""How much a trained model's predictions move with z: the samples' diversity (standard deviation across samples,
mean over pixels) with z drawn at 0, 1 and 5 times the prior's spread, and the posterior's mean spread across
sequences against its standard deviation. A model that has learnt to absorb z as noise stays near 0 at any scale.
Then how much the decoder uses what the predictor says at all: the PSNR of the predictions (one sample each)
with the predictor's output g_t as computed and with g_t of another test sequence in its place (the rows of the
batch rolled by one). A decoder that draws from its skip frame alone loses nothing when g_t is another's.
Last, how much the latent knows of the future: the PSNR of the model run on its own frames with z at the
posterior's mean for the true sequence, against z at the prior's mean. The difference is what z carries; how much
of it best of N reaches is up to the prior's samples.

    python scripts/latent_sensitivity.py --ckpt runs/x/last.pt [--sequences 16 --samples 4]
"""

import argparse
from unittest import mock

import torch

import cvae_video.models.svg as svg
from cvae_video.data.dataset import frames_to_float
from cvae_video.inference import open_for_inference, predict_batch, take_batch
from cvae_video.models.rnn import reparameterize


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--sequences", type=int, default=16)
    p.add_argument("--samples", type=int, default=4)
    args = p.parse_args()
    trained = open_for_inference(args.ckpt)
    n_past, n_future = 2, 10
    batch = take_batch(trained.open_split("", "test", n_past + n_future), list(range(args.sequences)))
    for scale in (0.0, 1.0, 5.0):
        def scaled(mu, logvar, generator=None, s=scale):
            return mu + s * (reparameterize(mu, logvar, generator) - mu)
        with mock.patch.object(svg, "reparameterize", scaled):
            pred = predict_batch(trained.model, batch, n_past=n_past, n_future=n_future, n_samples=args.samples,
                                 seed=0)
        print(f"z spread x{scale:g}: diversity {pred.samples.std(1).mean().item():.6f}")
    model = trained.model
    render = model.render
    for rolled in (False, True):
        def swapped(g, *args, **kwargs):   # g (sequences * samples, g_dim): one sample per sequence here
            return render(g.roll(1, 0) if rolled else g, *args, **kwargs)
        with mock.patch.object(model, "render", swapped):
            pred = predict_batch(model, batch, n_past=n_past, n_future=n_future, n_samples=1, seed=0)
        mse = ((pred.samples[:, 0] - pred.x[:, n_past:]) ** 2).mean((2, 3, 4))
        psnr = (-10 * torch.log10(mse.clamp_min(1e-10))).mean().item()
        print(f"g_t {'of another sequence' if rolled else 'as computed'}: PSNR {psnr:.2f} dB (one sample each)")
    with torch.no_grad():
        h, _ = model.encode(frames_to_float(batch["frames"]))
        (mu, logvar), _ = model.posterior(model._posterior_input(h))
    print(f"posterior mean: spread across sequences {mu.std(0).mean().item():.4f} (mean over steps and "
          f"dimensions), standard deviation {torch.exp(0.5 * logvar).mean().item():.4f}")
    x = frames_to_float(batch["frames"])
    cond = batch["cond"] if model.cfg.condition != "none" else None
    with torch.no_grad(), mock.patch.object(svg, "reparameterize", lambda mu, logvar, generator=None: mu):
        told = model(x, cond, n_past=n_past, teacher_forcing=False)["x_hat"][:, n_past - 1:]
        alone = model.predict(x[:, :n_past], cond, n_future, z_mode="mean")[:, 0]
    for name, pred in (("the posterior's mean (the true future known)", told), ("the prior's mean", alone)):
        mse = ((pred - x[:, n_past:]) ** 2).mean((2, 3, 4))
        print(f"z at {name}: PSNR {(-10 * torch.log10(mse.clamp_min(1e-10))).mean().item():.2f} dB "
              f"(frames fed back)")


if __name__ == "__main__":
    main()
