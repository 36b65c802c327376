"""Camera encoders: ResNet-18 with GroupNorm and spatial-softmax keypoints, plus crop handling."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torchvision
from torch import nn

from dp_policy.config import VisionConfig

CHANNELS_PER_GROUP = 16


def replace_batchnorm_with_groupnorm(module: nn.Module) -> nn.Module:
    """Swap every BatchNorm2d for GroupNorm(channels // 16, channels), in place.

    BatchNorm's running statistics misbehave with the EMA weights and small, correlated batches
    of a demonstration dataset; GroupNorm has no running state.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            channels = child.num_features
            groups = max(1, channels // CHANNELS_PER_GROUP)
            setattr(module, name, nn.GroupNorm(groups, channels))
        else:
            replace_batchnorm_with_groupnorm(child)
    return module


def load_resnet18_weights(model: nn.Module, path: str) -> None:
    """Load torchvision resnet18 weights from a local safetensors file (never downloaded)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"pretrained ResNet-18 weights not found: {file}")
    try:
        state = load_file(str(file))
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{file}: not a readable safetensors file ({error})") from error
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(
            f"{file}: not a torchvision resnet18 state dict (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]})"
        )


class SpatialSoftmax(nn.Module):
    """Feature map ``(N, C, H, W)`` -> keypoints ``(N, K, 2)``, each (x, y) in [-1, 1].

    A 1x1 conv makes K maps; each is a softmax distribution over pixels whose expected pixel
    coordinate is the keypoint, which keeps where things are instead of pooling it away.
    """

    def __init__(self, in_channels: int, num_keypoints: int) -> None:
        super().__init__()
        self.keypoint_maps = nn.Conv2d(in_channels, num_keypoints, kernel_size=1)
        self.num_keypoints = num_keypoints

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        maps = self.keypoint_maps(features)
        n, k, h, w = maps.shape
        attention = torch.softmax(maps.reshape(n, k, h * w), dim=-1)
        ys = torch.linspace(-1.0, 1.0, h, device=maps.device, dtype=maps.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=maps.device, dtype=maps.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        positions = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1)  # (H*W, 2)
        return attention @ positions


def crop_images(images: torch.Tensor, crop: tuple[int, int], random: bool) -> torch.Tensor:
    """Crop ``(N, C, H, W)`` to ``(N, C, h, w)``: independent random windows or the centre."""
    n, _, height, width = images.shape
    crop_h, crop_w = crop
    if (crop_h, crop_w) == (height, width):
        return images
    if not random:
        top = (height - crop_h) // 2
        left = (width - crop_w) // 2
        return images[:, :, top : top + crop_h, left : left + crop_w]
    tops = torch.randint(0, height - crop_h + 1, (n,), device=images.device)
    lefts = torch.randint(0, width - crop_w + 1, (n,), device=images.device)
    rows = tops[:, None] + torch.arange(crop_h, device=images.device)  # (N, h)
    cols = lefts[:, None] + torch.arange(crop_w, device=images.device)  # (N, w)
    batch = torch.arange(n, device=images.device)[:, None, None]
    # Advanced indices separated by a slice put the broadcast (N, h, w) first: (N, h, w, C).
    cropped = images[batch, :, rows[:, :, None], cols[:, None, :]]
    return cropped.permute(0, 3, 1, 2)


class CameraEncoder(nn.Module):
    """Images ``(N, C, H, W)`` in [-1, 1] -> features ``(N, feature_dim)``."""

    def __init__(self, in_channels: int, config: VisionConfig) -> None:
        super().__init__()
        resnet = torchvision.models.resnet18(weights=None)
        if config.pretrained_weights is not None:
            load_resnet18_weights(resnet, config.pretrained_weights)
        if in_channels != 3:
            resnet.conv1 = nn.Conv2d(
                in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False
            )
        replace_batchnorm_with_groupnorm(resnet)
        # Everything up to the last residual stage; avgpool and fc are replaced by keypoints.
        self.trunk = nn.Sequential(
            resnet.conv1,
            resnet.bn1,
            resnet.relu,
            resnet.maxpool,
            resnet.layer1,
            resnet.layer2,
            resnet.layer3,
            resnet.layer4,
        )
        self.keypoints = SpatialSoftmax(512, config.num_keypoints)
        self.projection = nn.Linear(2 * config.num_keypoints, config.feature_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        keypoints = self.keypoints(self.trunk(images))
        return self.projection(keypoints.flatten(1))


class ObservationEncoder(nn.Module):
    """Normalised observations ``{key: (B, To, ...)}`` -> per-step features ``(B, To, F)``.

    Camera features come first (config order), then the low-dim vectors (config order).
    """

    def __init__(
        self,
        cameras: Mapping[str, tuple[int, int, int]],
        low_dim: Mapping[str, int],
        config: VisionConfig,
    ) -> None:
        super().__init__()
        self.camera_keys = tuple(cameras)
        self.low_dim_keys = tuple(low_dim)
        self.crop_shape = config.crop_shape
        self.share_encoder = config.share_encoder
        if not cameras:
            self.encoders = nn.ModuleDict()
        elif config.share_encoder:
            channels = next(iter(cameras.values()))[0]
            self.encoders = nn.ModuleDict({"shared": CameraEncoder(channels, config)})
        else:
            self.encoders = nn.ModuleDict(
                {key: CameraEncoder(shape[0], config) for key, shape in cameras.items()}
            )
        self.feature_dim = config.feature_dim * len(cameras) + sum(low_dim.values())

    def _encoder_for(self, key: str) -> CameraEncoder:
        return self.encoders["shared" if self.share_encoder else key]  # type: ignore[return-value]

    def forward(self, observations: Mapping[str, torch.Tensor]) -> torch.Tensor:
        features = []
        for key in self.camera_keys:
            images = observations[key]
            batch, steps = images.shape[:2]
            flat = images.reshape(batch * steps, *images.shape[2:])
            if self.crop_shape is not None:
                flat = crop_images(flat, self.crop_shape, random=self.training)
            encoded = self._encoder_for(key)(flat)
            features.append(encoded.reshape(batch, steps, -1))
        for key in self.low_dim_keys:
            features.append(observations[key])
        return torch.cat(features, dim=-1)
