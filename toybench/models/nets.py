"""Convolutional encoder/decoder backbones shared by the VAE families.

``conv64`` is the architecture of Burgess et al. 2018 (https://arxiv.org/abs/1804.03599) as used by
disentanglement_lib (Locatello et al. 2019, https://arxiv.org/abs/1811.12359, Table 1): four 4×4
stride-2 convolutions with 32, 32, 64, 64 channels and ReLU (64 -> 4 pixels), a 256-unit fully
connected layer, and the mirrored decoder (FC 256, FC 4·4·64, four 4×4 stride-2 transposed
convolutions with 64, 32, 32, C channels). ``conv32`` is the same design one stage shorter for
32×32 images (32, 32, 64 channels; 32 -> 4 pixels), about half the compute per image.

The encoder stops at the hidden features ``(B, hidden)``: each family puts its own posterior heads
on top (one Gaussian head for the VAE, one head per concept for CSVAE, a ladder for HVAE), so no
family ever squeezes image features through a layer smaller than ``hidden``.

Both backbones run under ``torch.autocast("cpu", dtype=torch.bfloat16)`` and accept
``channels_last`` inputs (only convolutions, linear layers, ReLU and ``flatten``/``reshape``).
The decoder's last transposed convolution, whose few output channels (1 or 3) oneDNN handles
poorly, is computed in the equivalent sub-pixel form (``subpixel_conv_transpose``): same
parameters, same function, about 5 % faster training of the 32×32 nets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toybench.configs import ARCH_NAMES
from toybench.errors import ToybenchError


@dataclass(frozen=True)
class ConvArch:
    """A backbone: stride-2 conv channels (each halves the image) and the FC width."""

    image_size: int
    channels: tuple[int, ...]
    hidden: int = 256

    @property
    def final_size(self) -> int:
        """Spatial size after the last convolution (4 for both shipped archs)."""
        return self.image_size // 2 ** len(self.channels)


ARCHS: dict[str, ConvArch] = {
    "conv64": ConvArch(image_size=64, channels=(32, 32, 64, 64)),
    "conv32": ConvArch(image_size=32, channels=(32, 32, 64)),
}
assert sorted(ARCHS) == sorted(ARCH_NAMES), "toybench.configs.ARCH_NAMES names these archs"


def resolve_arch(arch: str, image_shape: tuple[int, int, int]) -> ConvArch:
    """Return the backbone for ``arch`` (``"auto"`` picks by image size) checked against the images.

    Parameters
    ----------
    arch : str
        ``"auto"`` or a key of ``ARCHS``.
    image_shape : (int, int, int)
        ``(C, H, W)`` of the data.

    Returns
    -------
    ConvArch

    Raises
    ------
    ToybenchError
        Unknown arch, non-square images, or an image size the arch was not built for.
    """
    _, height, width = image_shape
    if height != width:
        raise ToybenchError(f"conv backbones need square images, got {height}x{width}")
    if arch == "auto":
        by_size = {spec.image_size: name for name, spec in ARCHS.items()}
        if height not in by_size:
            sizes = ", ".join(str(s) for s in sorted(by_size))
            raise ToybenchError(f"no conv backbone for {height}x{width} images; sizes: {sizes}")
        arch = by_size[height]
    if arch not in ARCHS:
        raise ToybenchError(f"unknown arch {arch!r}; valid: auto, {', '.join(ARCHS)}")
    spec = ARCHS[arch]
    if spec.image_size != height:
        raise ToybenchError(f"arch {arch!r} is for {spec.image_size}x{spec.image_size} images, "
                            f"got {height}x{width}")
    return spec


# Kernel index (into the 4×4 kernel zero-padded to 6×6) for output phase p and 3×3 offset a.
# On the CPU explicitly: this module may first be imported inside a `torch.device("meta")` block.
_SUBPIXEL_TAPS = torch.tensor([[p + 4 - 2 * a for a in range(3)] for p in range(2)],
                              device="cpu")  # (2, 3)


def subpixel_conv_transpose(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``conv_transpose2d(x, weight, bias, stride=2, padding=1)`` for 4×4 kernels, as a 3×3
    convolution to ``4·C_out`` channels followed by ``pixel_shuffle(2)`` (Shi et al. 2016,
    https://arxiv.org/abs/1609.05158).

    Output row ``2m + p`` receives input row ``m + d`` through kernel tap ``k = p + 1 - 2d``
    (``d`` in {-1, 0, 1}; taps outside 0..3 contribute nothing), and the same for columns. So the
    3×3 kernel of phase ``(p, q)`` at offset ``(a, b)`` (``a = d + 1``) holds tap
    ``(p + 3 - 2a, q + 3 - 2b)``, or zero: index ``p + 4 - 2a`` into the kernel padded by one.
    Exact up to floating-point summation order; gradients reach ``weight`` and ``bias`` as usual.

    Parameters
    ----------
    x : Tensor
        ``(B, C_in, H, W)``.
    weight : Tensor
        ``(C_in, C_out, 4, 4)``, a ``ConvTranspose2d`` weight.
    bias : Tensor or None
        ``(C_out,)``.

    Returns
    -------
    Tensor
        ``(B, C_out, 2H, 2W)``.
    """
    c_in, c_out = weight.shape[:2]
    taps = _SUBPIXEL_TAPS.to(weight.device)
    padded = F.pad(weight, (1, 1, 1, 1))  # (C_in, C_out, 6, 6)
    kernel = padded[:, :, taps[:, :, None, None], taps[None, None, :, :]]  # (Ci, Co, p, a, q, b)
    kernel = kernel.permute(1, 2, 4, 0, 3, 5).reshape(4 * c_out, c_in, 3, 3)  # channel = 4co+2p+q
    phase_bias = None if bias is None else bias.repeat_interleave(4)
    return F.pixel_shuffle(F.conv2d(x, kernel, phase_bias, padding=1), 2)  # (B, Co, 2H, 2W)


class ConvEncoder(nn.Module):
    """Images ``(B, C, S, S)`` -> features ``(B, hidden)`` (post-ReLU)."""

    def __init__(self, arch: ConvArch, in_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for width in arch.channels:
            layers += [nn.Conv2d(previous, width, kernel_size=4, stride=2, padding=1),
                       nn.ReLU(inplace=True)]
            previous = width
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear(previous * arch.final_size**2, arch.hidden)
        self.out_features = arch.hidden

    def forward(self, x: Tensor) -> Tensor:
        h = self.convs(x)  # (B, C, S, S) -> (B, c_last, 4, 4)
        return self.fc(h.flatten(1)).relu()  # (B, c_last*16) -> (B, hidden)


class ConvDecoder(nn.Module):
    """Latents ``(B, in_features)`` -> output maps ``(B, out_channels, S, S)`` (unbounded)."""

    def __init__(self, arch: ConvArch, in_features: int, out_channels: int) -> None:
        super().__init__()
        self.start_channels = arch.channels[-1]
        self.start_size = arch.final_size
        self.fc = nn.Sequential(
            nn.Linear(in_features, arch.hidden),
            nn.ReLU(),
            nn.Linear(arch.hidden, self.start_channels * self.start_size**2),
            nn.ReLU(),
        )
        # Mirror of the encoder: c_last -> c_last, c_{n-2}, ..., c_1 -> out_channels.
        widths = (*reversed(arch.channels[:-1]), out_channels)
        layers: list[nn.Module] = []
        previous = self.start_channels
        for i, width in enumerate(widths):
            layers.append(nn.ConvTranspose2d(previous, width, kernel_size=4, stride=2, padding=1))
            if i < len(widths) - 1:
                layers.append(nn.ReLU(inplace=True))
            previous = width
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        h = self.fc(z)  # (B, in_features) -> (B, c_last*16)
        size = self.start_size
        h = h.reshape(-1, self.start_channels, size, size)  # (B, c_last, 4, 4)
        h = self.deconvs[:-1](h)  # -> (B, c_1, S/2, S/2)
        last = self.deconvs[-1]
        return subpixel_conv_transpose(h, last.weight, last.bias)  # -> (B, out_channels, S, S)
