"""Certified robustness by randomized smoothing, with the diffusion model as the denoiser.

- :mod:`advpure.certify.smoothing`: Cohen et al.'s PREDICT and CERTIFY on any base classifier
  ``base(x_noisy) -> labels`` (Clopper-Pearson and binomial tests from scipy).
- :mod:`advpure.certify.denoisers`: the diffusion time for a noise level (Carlini et al.'s DDS),
  the one-shot and the multistep denoiser, and the denoise-then-classify base classifier with
  DensePure's majority vote.
- :mod:`advpure.certify.results`: certified accuracy at radii with intervals, the CSV, Markdown,
  PNG and sweep files.

``python run.py task=certify`` runs it (:mod:`advpure.tasks.certify`).
"""

from advpure.certify.denoisers import (
    DenoisedClassifier,
    DiffusionLevel,
    MultistepDenoiser,
    NoisyDraw,
    OneShotDenoiser,
    dds_level,
)
from advpure.certify.smoothing import (
    ABSTAIN,
    Certificate,
    certified_radius,
    certify,
    lower_confidence_bound,
    predict,
    sample_counts,
)

__all__ = [
    "ABSTAIN",
    "Certificate",
    "DenoisedClassifier",
    "DiffusionLevel",
    "MultistepDenoiser",
    "NoisyDraw",
    "OneShotDenoiser",
    "certified_radius",
    "certify",
    "dds_level",
    "lower_confidence_bound",
    "predict",
    "sample_counts",
]
