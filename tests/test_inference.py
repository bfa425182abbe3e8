"""One inference path: cvae-eval (and training's validation), cvae-make-gif, cvae-predict and the training
pictures all predict through inference.predict_batch, with its seeding, so the same seed draws the same futures."""

import numpy as np
import torch
from PIL import Image

from cvae_video import evaluate, inference, make_gif, predict, train
from cvae_video.data import layout
from cvae_video.models import CVAE
from cvae_video.runtime import derive_seed
from helpers import TINY_FLAGS, read_trajectory

SEED = 3


def test_every_prediction_goes_through_predict_batch(synth_root, tmp_path, monkeypatch):
    through, drawn = [], []   # per predict_batch call: (module, seed, first index); per model.predict call: seed, out
    real_batch, real_predict = inference.predict_batch, CVAE.predict

    def spy_in(module):
        def spy(model, batch, **kw):
            through.append((module.__name__, kw["seed"], int(batch["index"][0])))
            return real_batch(model, batch, **kw)
        return spy
    for module in (evaluate, make_gif, predict, train):
        monkeypatch.setattr(module, "predict_batch", spy_in(module))

    def predict_spy(self, *args, generator=None, **kw):
        out = real_predict(self, *args, generator=generator, **kw)
        drawn.append((generator.initial_seed(), out))
        return out
    monkeypatch.setattr(CVAE, "predict", predict_spy)

    log_dir = tmp_path / "run"
    assert train.main(["--data_root", str(synth_root), "--log_dir", str(log_dir), "--niter", "1", "--epoch_size", "1",
                       "--n_pictures", "2", "--picture_samples", "2", "--val_sequences", "4", "--val_batch_size",
                       "2", "--seed", str(SEED), *TINY_FLAGS]) == 0
    ckpt = str(log_dir / "best.pt")
    first_eval = len(through)
    evaluate.evaluate(ckpt, evaluate.EvalConfig(data_root=str(synth_root), n_samples=2, batch_size=2, max_sequences=2,
                                                seed=SEED, precision="fp32"), progress=False)
    first_gif = len(through)
    make_gif.make_pictures(ckpt, str(tmp_path / "gifs"), make_gif.PictureConfig(
        indices=[0, 1], data_root=str(synth_root), n_samples=2, seed=SEED, precision="fp32"))
    frames, cond = read_trajectory(layout.list_trajectories(synth_root, "test")[0], 4)
    (tmp_path / "own").mkdir()
    for t in range(2):
        Image.fromarray(frames[t]).save(tmp_path / "own" / f"{t}.png")
    np.savetxt(tmp_path / "cond.csv", cond, delimiter=",")
    predict.predict_own(ckpt, str(tmp_path / "own"), str(tmp_path / "cond.csv"), None, 2, str(tmp_path / "pred"),
                        n_samples=2, seed=SEED, precision="fp32")

    # every model.predict call came through predict_batch, seeded by (seed, index of the batch's first sequence)
    assert len(drawn) == len(through)
    assert [s for s, _ in drawn] == [derive_seed(seed, index) for _, seed, index in through]
    assert {m for m, _, _ in through} == {"cvae_video.evaluate", "cvae_video.make_gif", "cvae_video.predict",
                                          "cvae_video.train"}
    assert [i for m, _, i in through[:first_eval] if m == "cvae_video.evaluate"] == [0, 2]   # validation batches
    assert [i for m, _, i in through[:first_eval] if m == "cvae_video.train"] == [0]         # the pictures
    # the same sequences, seed and number of samples: cvae-eval and cvae-make-gif draw the same futures
    assert through[first_eval][2] == through[first_gif][2] == 0
    assert torch.equal(drawn[first_eval][1], drawn[first_gif][1])
