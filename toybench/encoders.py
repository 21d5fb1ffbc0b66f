"""A toybench model as the numpy functions `toybench.evaluate` scores: encode, decode, ELBO.

`toybench.evaluate` imports no torch, so that scoring an external encoder (``toybench score``,
`toybench.evaluate.evaluate_functions`) and reading results never load it; this module is the only
place where a ``torch.nn.Module`` meets the evaluation. Every pass runs under ``torch.no_grad()``
with the model in eval mode, ``BATCH_SIZE`` images at a time, uint8 images converted to float32
in [0, 1] per batch. Codes are posterior means (Kingma & Welling 2014,
https://arxiv.org/abs/1312.6114), so the encoder is deterministic, as `toybench.evaluate`
requires.

The batch size is part of the results: with more than one thread, torch's CPU kernels round a
row's code differently depending on the batch it is in (measured with 2 threads: up to 2.4e-7
between a batch of 24 and one of 500), so it stays at 500, the value every earlier run used.
`toybench.evaluate` hands ``encode`` 1,024 images per call (``EvalConfig.encode_batch``), which
this module runs as batches of 500, 500 and 24, exactly as before.

Each pass runs on the model's device (`model_device`: a model trained with ``--device cuda``
stays there); the images go there batch by batch and the codes come back to the CPU as numpy.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from toybench import seeds

#: Images (or codes) per forward pass.
BATCH_SIZE = 500
#: The step passed to ``model.loss`` in the ELBO pass: past every warm-up and schedule.
_EVAL_STEP = 10**9


def float_batch(images_u8: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` → float32 tensor in [0, 1] on ``device`` (a contiguous copy)."""
    return torch.from_numpy(np.ascontiguousarray(images_u8)).to(device).float().div_(255.0)


def model_device(model) -> torch.device:
    """The device of a model's first parameter or buffer (the CPU for a model with neither)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def encode_images(model, images: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Codes (posterior means) of uint8 images ``(n, C, H, W)`` → ``(n, n_codes)`` float64."""
    model.eval()
    device = model_device(model)
    out = []
    for start in range(0, len(images), batch_size):
        x = float_batch(images[start : start + batch_size], device)  # (B, C, H, W)
        out.append(model.encode(x).float().cpu().numpy().astype(np.float64))  # (B, L)
    return np.concatenate(out)


@torch.no_grad()
def decode_codes(model, codes: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Mean images in [0, 1] decoded from ``codes (n, L)`` → ``(n, C, H, W)`` float32."""
    model.eval()
    device = model_device(model)
    out = []
    for start in range(0, len(codes), batch_size):
        z = torch.from_numpy(np.ascontiguousarray(codes[start : start + batch_size]))
        z = z.to(device).float()  # (B, L)
        out.append(model.decode(z).float().clamp(0, 1).cpu().numpy())  # (B, C, H, W)
    return np.concatenate(out)


class ELBOTerms(NamedTuple):
    """ELBO per image (nats, higher-better) and the KL of each code column, both split means."""

    elbo: float
    kl_per_unit: np.ndarray  # (L,)


@torch.no_grad()
def elbo_terms(model, images: np.ndarray, *, seed: int,
               batch_size: int = BATCH_SIZE) -> ELBOTerms:
    """``−(recon + KL)`` per image and KL per unit of a trainable model on uint8 ``images``.

    ``model.loss`` with KL and reconstruction weights 1, one reparameterized sample per image
    from a ``torch.Generator`` seeded by ``seed`` (the same stream for every split, as before),
    and ``diagnostics=False`` (no logging-only extras such as the VAE's TC estimate). Batch
    means are weighted by batch size.
    """
    model.eval()
    device = model_device(model)
    generator = seeds.torch_generator(seed, "elbo")  # the ELBO's noise stream (on the CPU)
    elbo, kl_units, n = 0.0, None, 0
    for start in range(0, len(images), batch_size):
        x = float_batch(images[start : start + batch_size], device)  # (B, C, H, W)
        out = model.loss(x, _EVAL_STEP, kl_weight=1.0, recon_weight=1.0, generator=generator,
                         diagnostics=False)
        b = x.shape[0]
        elbo += -(float(out.recon) + float(out.kl)) * b
        units = out.kl_per_unit.float().cpu().numpy().astype(np.float64) * b  # (L,)
        kl_units = units if kl_units is None else kl_units + units
        n += b
    return ELBOTerms(elbo / n, kl_units / n)
