"""advpure: diffusion-based adversarial purification, evaluated with adaptive attacks.

Every image tensor that crosses a module boundary is NCHW float in [0, 1]; modules
that need another range (diffusion models: [-1, 1]) convert inside themselves.
"""

__version__ = "0.1.0"
