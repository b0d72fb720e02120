"""advpure's command line: ``python run.py purifier=diffpure attack=autoattack``.

Config groups live in conf/ (see README.md); ``python run.py --help`` lists them.
"""

import sys

import hydra
from omegaconf import DictConfig

from advpure.cli import check_mode_flags, check_output_folder, override_hints
from advpure.cli import main as run_main
from advpure.config.registry import register_config
from advpure.errors import AdvpureError

register_config()  # the schemas and resolvers, before Hydra composes (also in launchers' worker processes)


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Run the task; the value of ``task.objective`` (if set) goes back to a search sweeper (Optuna)."""
    results = run_main(cfg) or {}
    return results.get("objective", {}).get("value")


if __name__ == "__main__":
    try:  # Hydra creates the output folder before advpure runs, and fails there with a traceback
        check_mode_flags(sys.argv[1:])
        check_output_folder(sys.argv[1:])
    except AdvpureError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    try:
        main()
    except SystemExit as stop:
        if stop.code == 1:  # Hydra could not compose the config: add a fix for misspelt keys and unquoted values
            for hint in override_hints(sys.argv[1:]):
                print(hint, file=sys.stderr)
        raise
