"""Lightning's progress bar, readable for step-limited training."""

from __future__ import annotations

from pytorch_lightning.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar. A fit limited by ``max_steps`` (``max_epochs`` -1, e.g.
    ``task=train_diffusion``) shows ``Epoch e, step s/max_steps`` instead of Lightning's
    ``Epoch e/-2``."""

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if trainer.max_epochs is not None and trainer.max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        description = f"Epoch {current_epoch}, step {trainer.global_step}/{trainer.max_steps}"
        if len(self.validation_description) > len(description):
            description = f"{description:{len(self.validation_description)}}"
        return description
