"""A toybench model as the numpy functions `toybench.evaluate` scores: encode, decode, ELBO.

`toybench.evaluate` imports no torch, so that scoring an external encoder (``toybench score``,
`toybench.evaluate.evaluate_functions`) and reading results never load it; this module is the only
place where a ``torch.nn.Module`` meets the evaluation. Every pass runs under ``torch.no_grad()``
with the model in eval mode, ``BATCH_SIZE`` images at a time, uint8 images converted to float32
in [0, 1] per batch. Codes are posterior means (Kingma & Welling 2014,
https://arxiv.org/abs/1312.6114), so the encoder is deterministic, as `toybench.evaluate`
requires.

Precision (``EvalConfig.precision``): ``"bf16"`` (the default, as in training) runs every pass
under CPU autocast to bfloat16 with channels-last images and weights; codes, images and losses
leave it as float32. On the 2-core AVX-512/AMX test machine that is 2.3x (encoder) and 2.8x
(decoder) less CPU time than plain fp32 for the 32x32 networks (1 thread, batches of 500); the
codes differ from fp32 ones by bf16 rounding (about 3 significant digits), the precision the
model was trained in. ``"fp32"`` is the plain pass.

The batch size is part of the results: with more than one thread, torch's CPU kernels round a
row's code differently depending on the batch it is in (measured with 2 threads: up to 2.4e-7
between a batch of 24 and one of 500), so it stays at 500, the value every earlier run used.
`toybench.evaluate` hands ``encode`` 1,024 images per call (``EvalConfig.encode_batch``), which
this module runs as batches of 500, 500 and 24, exactly as before.

Each pass runs on the model's device (`model_device`: a model trained with ``--device cuda``
stays there); the images go there batch by batch and the codes come back to the CPU as numpy.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import numpy as np
import torch

from toybench import seeds
from toybench.models.common import Paired

#: Images (or codes) per forward pass.
BATCH_SIZE = 500
#: The step passed to ``model.loss`` in the ELBO pass: past every warm-up and schedule.
_EVAL_STEP = 10**9


PRECISIONS = ("bf16", "fp32")


def float_batch(images_u8: np.ndarray, channels_last: bool = False,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` → float32 tensor in [0, 1] on ``device`` (a copy; channels-last
    if asked)."""
    x = torch.from_numpy(np.ascontiguousarray(images_u8)).to(device).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def model_device(model) -> torch.device:
    """The device of a model's first parameter or buffer (the CPU for a model with neither)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op work held to ``n`` threads, the thread count restored after.

    `toybench.evaluate` encodes the interventional images this way beside the DCI fits, half
    the CPUs each, so that on 2 cores each runs one job: one thread encodes at about 57% of two
    threads' speed (74,600 against 131,000 images/s on dsprites-pairs-32, bf16, 2-core AVX-512
    VM) with the same codes, bit for bit (`tests/test_evaluation.py`).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def inference(model, precision: str):
    """Eval mode, no gradients and the pass's precision on the model's device (see the module
    docstring); yields ``(channels_last, device)`` for the input tensors."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    model.eval()
    device = model_device(model)
    bf16 = precision == "bf16"
    if bf16:
        model.to(memory_format=torch.channels_last)  # conv weights only; values unchanged
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        yield bf16, device


def encode_images(model, images: np.ndarray, batch_size: int = BATCH_SIZE, *,
                  precision: str = "bf16") -> np.ndarray:
    """Codes (posterior means) of uint8 images ``(n, C, H, W)`` → ``(n, n_codes)`` float64."""
    out = []
    with inference(model, precision) as (channels_last, device):
        for start in range(0, len(images), batch_size):
            x = float_batch(images[start : start + batch_size], channels_last, device)
            out.append(model.encode(x).float().cpu().numpy().astype(np.float64))  # (B, L)
    return np.concatenate(out)


def decode_codes(model, codes: np.ndarray, batch_size: int = BATCH_SIZE, *,
                 precision: str = "bf16") -> np.ndarray:
    """Mean images in [0, 1] decoded from ``codes (n, L)`` → ``(n, C, H, W)`` float32."""
    out = []
    with inference(model, precision) as (_, device):
        for start in range(0, len(codes), batch_size):
            z = torch.from_numpy(np.ascontiguousarray(codes[start : start + batch_size]))
            z = z.to(device).float()  # (B, L)
            out.append(model.decode(z).float().clamp(0, 1).cpu().numpy())  # (B, C, H, W)
    return np.concatenate(out)


class ELBOTerms(NamedTuple):
    """ELBO per image (nats, higher-better) and the KL of each code column, both split means."""

    elbo: float
    kl_per_unit: np.ndarray  # (L,)


def elbo_terms(model, images: np.ndarray, *, seed: int, batch_size: int = BATCH_SIZE,
               precision: str = "bf16") -> ELBOTerms:
    """``−(recon + KL)`` per image and KL per unit of a trainable model on uint8 ``images``.

    ``model.loss`` with KL and reconstruction weights 1, one reparameterized sample per image
    from a ``torch.Generator`` seeded by ``seed`` (the same stream for every split, as before),
    and ``diagnostics=False`` (no logging-only extras such as the VAE's TC estimate). Batch
    means are weighted by batch size. A ``Paired`` model (trained on pairs) is scored with its
    ``image_loss``, the objective of single images.
    """
    generator = seeds.torch_generator(seed, "elbo")  # the ELBO's noise stream (on the CPU)
    # A model trained on pairs takes pairs in `loss`; its objective of one image is `image_loss`.
    loss = model.image_loss if isinstance(model, Paired) else model.loss
    elbo, kl_units, n = 0.0, None, 0
    with inference(model, precision) as (channels_last, device):
        for start in range(0, len(images), batch_size):
            x = float_batch(images[start : start + batch_size], channels_last, device)
            out = loss(x, _EVAL_STEP, kl_weight=1.0, recon_weight=1.0, generator=generator,
                       diagnostics=False)
            b = x.shape[0]
            elbo += -(float(out.recon) + float(out.kl)) * b
            units = out.kl_per_unit.float().cpu().numpy().astype(np.float64) * b  # (L,)
            kl_units = units if kl_units is None else kl_units + units
            n += b
    return ELBOTerms(elbo / n, kl_units / n)
