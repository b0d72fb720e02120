"""advpure's command line: ``python run.py purifier=diffpure attack=autoattack``.

Config groups live in conf/ (see README.md); ``python run.py --help`` lists them.
"""

import hydra
from omegaconf import DictConfig

import advpure.config  # noqa: F401  (registers the schemas and resolvers before composing)
from advpure.cli import main as run_main


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_main(cfg)


if __name__ == "__main__":
    main()
