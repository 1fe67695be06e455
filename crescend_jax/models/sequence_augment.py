"""Augmentation of score-aligned sequences, drawn on the device inside the jitted train step (``trunk.augment``).

The inputs are the `aligned` encoder's frames (`crescend_jax.encoders.aligned.FEATURE_NAMES`, one frame per score
position) as the model reads them: standardised per feature, x = (v - mu) / sigma with the fold's statistics
(mu, sigma [F], kept in the trunk), NaN where a position or a feature holds no value. Each transform is the exact
consequence, on the features, of a change to the performance MIDI, applied to v and standardised again (so, on x,
an affine map per feature; NaN stays NaN):

* **tempo** (``augment.tempo``, ``augment.tempo_range`` r): the whole performance played c times as slowly,
  c = exp(u log(1 + r)), u ~ U[-1, 1] per row (every performed time t -> c t). Then
    tempo_log_ratio                                     v -> v + log c     (log of performed / score time)
    onset_deviation_ms, onset_deviation_abs_ms,
    chord_async_ms, melody_lead_ms                      v -> c v           (performed time intervals)
  and nothing else: tempo_log_change_abs and tempo_log_dev_abs are differences of log ratios (a common log c
  cancels), articulation_log and legato_overlap are ratios of performed times, the pedal features are shares and
  counts over the position's performed span (which scales with it), velocities and note counts do not move.
* **velocity** (``augment.velocity``, ``augment.velocity_range`` w): every note d louder, d ~ U[-w, w] per row (MIDI
  velocity units). Then velocity_melody, velocity_rest: v -> v + d; the relative velocities and velocity_abs_dev are
  differences from the segment's mean velocity, which moves by d too: unchanged.
* **crop** (``augment.crop``, ``augment.crop_min_fraction`` f): a random contiguous run of score positions, the same
  for every row of one same-music group in the batch (drawn from the group id), so that aligned comparisons stay
  aligned: length L = ceil((f + (1 - f) u1) T_g), start = floor(u2 (T_g - L + 1)), u1, u2 ~ U[0, 1] per group, T_g
  the longest sequence of the group's rows in the batch (rows of one group share their score positions: their
  lengths agree). The crop is moved to position 0 and the rest is NaN padding.

With group-relative inputs (``data.group_relative``) the same maps act on the relative values: tempo shifts the
row's relative log tempo by log c and scales its relative time intervals by c (the group's reference scaled along
with it), velocity shifts the relative raw velocities by d.

Randomness: ``key`` is the step's key (the trunk's seed folded with the optimizer step, `models.sequence_trunk`): a
draw depends on the seed, the fold, the step and the row's place in the batch (or its group), never on the device
layout, so a sharded step augments exactly as one device does. Every switch off is the identity (``x`` returned as
it is).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from crescend_jax.config import ConfigError
from crescend_jax.encoders.aligned import FEATURE_NAMES

TEMPO_SHIFTED = ("tempo_log_ratio",)
TEMPO_SCALED = ("onset_deviation_ms", "onset_deviation_abs_ms", "chord_async_ms", "melody_lead_ms")
VELOCITY_SHIFTED = ("velocity_melody", "velocity_rest")


def _indicator(names: tuple[str, ...]) -> np.ndarray:
    """float32 [F]: 1 at the features ``names`` of `FEATURE_NAMES`."""
    return np.isin(np.array(FEATURE_NAMES), names).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """The ``trunk.augment`` settings (module doc), a hashable value."""

    tempo: bool = False
    tempo_range: float = 0.1
    velocity: bool = False
    velocity_range: float = 8.0
    crop: bool = False
    crop_min_fraction: float = 0.5

    @property
    def active(self) -> bool:
        return self.tempo or self.velocity or self.crop

    @property
    def needs_aligned_features(self) -> bool:
        """Whether a transform reads named `aligned` features (tempo, velocity; a crop reads any sequence)."""
        return self.tempo or self.velocity


def augmentation_from_config(config: ml_collections.ConfigDict) -> Augmentation:
    """`Augmentation` of ``config.trunk.augment`` (checked: a `ConfigError` names the field)."""
    augment = config.trunk.augment
    settings = Augmentation(tempo=bool(augment.tempo), tempo_range=float(augment.tempo_range),
                            velocity=bool(augment.velocity), velocity_range=float(augment.velocity_range),
                            crop=bool(augment.crop), crop_min_fraction=float(augment.crop_min_fraction))
    if not 0 <= settings.tempo_range < 1:
        raise ConfigError(f"trunk.augment.tempo_range={settings.tempo_range} must be in [0, 1) (0.1: tempo x 1/1.1 to "
                          "x 1.1)")
    if settings.velocity_range < 0:
        raise ConfigError(f"trunk.augment.velocity_range={settings.velocity_range} must be >= 0 (MIDI velocity)")
    if not 0 < settings.crop_min_fraction <= 1:
        raise ConfigError(f"trunk.augment.crop_min_fraction={settings.crop_min_fraction} must be in (0, 1]")
    return settings


def sequence_lengths(x: jax.Array) -> jax.Array:
    """int32 [B]: 1 + the last position of each row of x [B, T, F] holding any value (0 for an empty row)."""
    present = jnp.any(jnp.isfinite(x), axis=-1)
    return jnp.max(jnp.where(present, jnp.arange(1, x.shape[1] + 1)[None, :], 0), axis=-1).astype(jnp.int32)


def group_uniforms(key: jax.Array, group: jax.Array, count: int) -> jax.Array:
    """float32 [B, count] of U[0, 1) draws that depend only on each row's group id (rows of a group share them)."""
    return jax.vmap(lambda g: jax.random.uniform(jax.random.fold_in(key, g), (count,)))(group)


def crop_positions(x: jax.Array, group: jax.Array, key: jax.Array, min_fraction: float) -> jax.Array:
    """x [B, T, F] cut to one random contiguous run of positions per group (module doc), moved to the front, NaN
    after it."""
    lengths = sequence_lengths(x)
    same = group[:, None] == group[None, :]
    lengths = jnp.max(jnp.where(same, lengths[None, :], 0), axis=1)  # the group's longest row (rows agree)
    u = group_uniforms(key, group, 2)
    keep = jnp.ceil((min_fraction + (1.0 - min_fraction) * u[:, 0]) * lengths).astype(jnp.int32)
    keep = jnp.clip(keep, jnp.minimum(lengths, 1), lengths)
    start = jnp.minimum(jnp.floor(u[:, 1] * (lengths - keep + 1)).astype(jnp.int32), lengths - keep)
    t = jnp.arange(x.shape[1])[None, :]
    source = jnp.clip(start[:, None] + t, 0, x.shape[1] - 1)
    cropped = jnp.take_along_axis(x, source[..., None], axis=1)
    return jnp.where((t < keep[:, None])[..., None], cropped, jnp.nan)


def tempo_and_velocity(x: jax.Array, key: jax.Array, mean: jax.Array, std: jax.Array,
                       settings: Augmentation) -> jax.Array:
    """x [B, T, F] (standardised `aligned` features) after a per-row global tempo factor and velocity offset (module
    doc): on v = x sigma + mu, v -> a v + b per feature, then standardised again."""
    rows = x.shape[0]
    scale = jnp.ones((rows, x.shape[-1]), x.dtype)
    shift = jnp.zeros((rows, x.shape[-1]), x.dtype)
    tempo_key, velocity_key = jax.random.split(key)
    if settings.tempo:
        log_c = jax.random.uniform(tempo_key, (rows, 1), minval=-1.0, maxval=1.0) * np.log1p(settings.tempo_range)
        scaled = jnp.asarray(_indicator(TEMPO_SCALED))
        scale = scale + scaled * (jnp.exp(log_c) - 1.0)
        shift = shift + jnp.asarray(_indicator(TEMPO_SHIFTED)) * log_c
    if settings.velocity:
        offset = jax.random.uniform(velocity_key, (rows, 1), minval=-1.0, maxval=1.0) * settings.velocity_range
        shift = shift + jnp.asarray(_indicator(VELOCITY_SHIFTED)) * offset
    # (a (x sigma + mu) + b - mu) / sigma = a x + ((a - 1) mu + b) / sigma
    return scale[:, None, :] * x + (((scale - 1.0) * mean + shift) / std)[:, None, :]


def augment(x: jax.Array, group: jax.Array, key: jax.Array, mean: jax.Array, std: jax.Array,
            settings: Augmentation) -> jax.Array:
    """The switched-on transforms of ``settings`` on x [B, T, F] (crop first, then tempo and velocity), with the
    step's ``key`` and the rows' dense group ids ``group`` [B]; x itself when every switch is off."""
    if not settings.active:
        return x
    crop_key, value_key = jax.random.split(key)
    if settings.crop:
        x = crop_positions(x, group, crop_key, settings.crop_min_fraction)
    if settings.tempo or settings.velocity:
        if x.shape[-1] != len(FEATURE_NAMES):
            raise ValueError(f"tempo / velocity augmentation reads the {len(FEATURE_NAMES)} aligned features, got "
                             f"{x.shape[-1]}")
        x = tempo_and_velocity(x, value_key, mean, std, settings)
    return x
