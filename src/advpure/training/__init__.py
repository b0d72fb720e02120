"""LightningModules that train the models purification needs."""
