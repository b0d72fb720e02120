"""``python -m advpure.purify IN OUT``: purify your own images with a diffusion purifier.

IN is one image file or a folder of PNG/JPEG images (``*.png``, ``*.jpg``, ``*.jpeg``, not
recursive); OUT is the purified file (for a file IN; an existing folder takes ``<IN stem>.png``)
or a folder, created if needed, that receives one PNG per input under the input's stem
(``a.jpg`` -> ``OUT/a.png``).

The purifier is built as the evaluation builds it: the config is composed from ``conf/`` as
``python run.py`` composes it (same defaults, ``budget=cpu_quick`` included, so DiffPure takes 10
Euler-Maruyama steps at t* = 0.1), with ``purifier=<--purifier>``, ``diffusion=<--diffusion>``,
``purifier.t_star=<--t-star>``, ``seed=<--seed>`` and every ``--set key=value`` as overrides.

Images are converted to what the diffusion model takes: its channels (1: grayscale, 3: RGB;
alpha dropped, JPEG orientation applied) and values in [0, 1] (8-bit / 255, 16-bit / 65535). An
image of another size than the model's S x S is refused with the fix; ``--resize`` resizes it to
S x S first (area averaging when shrinking, bilinear when enlarging; aspect ratio not kept) and
the purified image is written at S x S. Outputs are 8-bit PNGs.

Randomness: image ``name`` is purified after ``torch.manual_seed(image_seed(seed, name))``, so an
output depends only on the seed, the file name and the image, not on the other files of the
folder nor on their order. Every input is read and checked before the model is built; exit
status 0 means every output was written, 2 a bad input or option (one ``error:`` line naming
it and the fix).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from advpure.errors import AdvpureError, ConfigError

if TYPE_CHECKING:
    from advpure.purifiers.protocol import Purifier

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
EXIT_BAD_INPUT = 2
# Pillow modes of 16-bit grayscale images (values 0..65535); 'I' is how older Pillows open them.
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
PROG = "python -m advpure.purify"


class UsageError(AdvpureError):
    """A bad input path, image or option: ``<what>: <problem>. Fix: <fix>``."""

    def __init__(self, what: str, problem: str, fix: str) -> None:
        super().__init__(f"{what}: {problem}. Fix: {fix}")


@dataclass(frozen=True)
class Job:
    """One image to purify: where it is read and where its purified PNG goes."""

    source: Path
    target: Path


# ----------------------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one ``error:`` line with a fix, exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message}. Fix: see {PROG} --help", file=sys.stderr, flush=True)
        sys.exit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (its epilog lists what each diffusion option takes)."""
    from advpure.api import config_options

    parser = _Parser(
        prog=PROG,
        description="Purify an image, or a folder of PNG/JPEG images, with a diffusion purifier built from conf/\n"
        "exactly as `python run.py` builds it: same defaults and budget (budget=cpu_quick, e.g. DiffPure with\n"
        "10 Euler-Maruyama steps at t*=0.1; --set budget=published for the published solver step).\n"
        "Outputs are 8-bit PNGs. Exit status 0: every output was written; 2: a bad input or option.",
        epilog=_shapes_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", metavar="IN", help="an image file, or a folder of *.png / *.jpg / *.jpeg images")
    parser.add_argument(
        "output",
        metavar="OUT",
        help="for a file IN: the output .png (an existing folder takes <IN stem>.png); for a folder IN: the output "
        "folder (created if needed), one <stem>.png per input",
    )
    parser.add_argument(
        "--purifier",
        default="diffpure",
        help=f"option of conf/purifier/: {', '.join(config_options('purifier'))} (default: diffpure)",
    )
    parser.add_argument(
        "--diffusion",
        default="digits_unet",
        help=f"option of conf/diffusion/: {', '.join(config_options('diffusion'))} (default: digits_unet, the shipped "
        "8x8 grayscale model)",
    )
    parser.add_argument("--t-star", type=float, default=None, help="purifier.t_star (default: the purifier's own)")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the purification noise (default: the config's seed, 0); the same seed gives the same outputs",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to purify (default: cpu)")
    parser.add_argument(
        "--resize",
        action="store_true",
        help="resize images of another size to the model's SxS (area when shrinking, bilinear when enlarging; "
        "aspect ratio not kept) instead of refusing them; outputs are SxS",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any further config override, as on run.py's command line (repeatable), e.g. --set budget=published "
        "--set purifier.dt=0.001 --set diffusion.precision=bf16",
    )
    return parser


def _shapes_epilog() -> str:
    """What each conf/diffusion option takes, read from its YAML (no composing, no model built)."""
    from omegaconf import OmegaConf

    from advpure.api import config_dir, config_options, purifier_input

    lines = ["images each diffusion option takes (channels x side x side, values in [0, 1]):"]
    for option in config_options("diffusion"):
        try:
            node = OmegaConf.create({"diffusion": OmegaConf.load(config_dir() / "diffusion" / f"{option}.yaml")})
            channels, side = purifier_input(node)
        except (AdvpureError, OSError, ValueError):
            continue
        kind = {1: "grayscale", 3: "RGB"}.get(channels, f"{channels}-channel")
        lines.append(f"  {option}: {channels}x{side}x{side} ({kind})")
    lines.append("other sizes are refused unless --resize; colour images are converted to the model's channels")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- inputs and outputs


def plan_jobs(input_path: str, output_path: str) -> list[Job]:
    """The (source, target) pairs for IN and OUT; :class:`UsageError` for a missing IN, a folder
    without images, an output path that is a folder, two inputs that would write the same output,
    or an output that would overwrite an input."""
    source = Path(input_path)
    if not source.exists():
        raise UsageError(f"IN {source}", "no such file or folder", "give an existing image file or folder of images")
    jobs = _folder_jobs(source, Path(output_path)) if source.is_dir() else [_file_job(source, output_path)]
    written_by: dict[Path, Path] = {}
    for job in jobs:
        if job.target.is_dir():
            raise UsageError(
                f"OUT {job.target}", "is a folder, where an output goes", "remove it or choose another OUT"
            )
        if job.target.exists() and job.target.resolve() == job.source.resolve():
            raise UsageError(f"OUT {job.target}", "is the input file", "write the purified image to another path")
        if job.target in written_by:
            raise UsageError(
                f"IN {source}",
                f"{written_by[job.target].name} and {job.source.name} would both be written to {job.target}",
                "rename one of them (outputs are <stem>.png)",
            )
        written_by[job.target] = job.source
    return jobs


def _folder_jobs(source: Path, target: Path) -> list[Job]:
    """One job per PNG/JPEG file of the folder ``source`` (sorted by name), into the folder ``target``."""
    if target.exists() and not target.is_dir():
        raise UsageError(f"OUT {target}", "is a file, but IN is a folder", "give a folder (created if needed) as OUT")
    if target.resolve() == source.resolve():
        raise UsageError(f"OUT {target}", "is the input folder", "write the purified images to another folder")
    try:
        entries = list(source.iterdir())
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise UsageError(f"IN {source}", f"cannot be listed ({reason})", "make it readable (chmod u+rx)") from None
    images = sorted(p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.name[0] != ".")
    if not images:
        raise UsageError(
            f"IN {source}",
            f"holds no PNG or JPEG image ({', '.join('*' + s for s in IMAGE_SUFFIXES)}; subfolders are not read)",
            "point IN at a folder of images, or at one image file",
        )
    return [Job(image, target / f"{image.stem}.png") for image in images]


def _file_job(source: Path, output_path: str) -> Job:
    """The job of one image file: into ``output_path`` (a .png), or into it as a folder if it is one
    (or ends with a separator)."""
    target = Path(output_path)
    if target.is_dir() or output_path.endswith(("/", os.sep)):
        return Job(source, target / f"{source.stem}.png")
    if target.suffix.lower() != ".png":
        raise UsageError(
            f"OUT {target}", "outputs are PNG files", f"name it {target.with_suffix('.png')} (or give a folder)"
        )
    return Job(source, target)


def require_output_folder(folder: Path) -> list[Path]:
    """Create ``folder`` if needed and prove it writable (a probe file), before any model is built;
    the folders it created, deepest first (:func:`remove_empty` takes them back)."""
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".advpure-purify-probe-"):
            pass
    except OSError as error:
        remove_empty(created)
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise UsageError(
            f"OUT {folder}", f"cannot write there ({reason})", "give a writable output path (chmod u+w, or elsewhere)"
        ) from None
    return created


def remove_empty(folders: Sequence[Path]) -> None:
    """Remove each of ``folders`` (deepest first) that exists and is empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # absent, not empty, or not ours to remove
            continue


def read_image(path: Path, channels: int) -> tuple[Any, str]:
    """The image at ``path`` as a float tensor (channels, H, W) in [0, 1], and a note of what was
    converted (``""`` if nothing): alpha dropped, colour converted to ``channels`` (1 or 3),
    16-bit values divided by 65535, JPEG orientation applied."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise UsageError(
            f"IN {path}", f"cannot be read as an image ({error})", "give a PNG or JPEG file, or remove it from IN"
        ) from None
    if channels not in (1, 3):
        raise UsageError(
            "--diffusion", f"the model takes {channels}-channel images", "use a grayscale (1) or RGB (3) model"
        )
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        if values.min() < 0 or values.max() > 65535:
            raise UsageError(f"IN {path}", f"{mode} pixel values outside 0..65535", "save it as an 8-bit PNG")
        gray = torch.from_numpy(values / 65535.0).float().unsqueeze(0)
        return gray.expand(channels, -1, -1).clone(), "16-bit values / 65535" + (" to RGB" if channels == 3 else "")
    if mode == "F":
        raise UsageError(f"IN {path}", "holds floating-point pixels (mode F)", "save it as an 8-bit PNG or JPEG")
    wanted = "L" if channels == 1 else "RGB"
    converted = image.convert(wanted)
    array = np.asarray(converted, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array.copy())
    tensor = tensor.unsqueeze(0) if channels == 1 else tensor.permute(2, 0, 1).contiguous()
    note = "" if mode == wanted else f"{mode} converted to {'grayscale' if channels == 1 else 'RGB'}"
    return tensor, note


def fit_size(image: Any, side: int, resize: bool, path: Path) -> tuple[Any, str]:
    """``image`` (C, H, W) in [0, 1] at ``side`` x ``side``: unchanged if it is, resized if
    ``resize``, else :class:`UsageError` naming the sizes and the fix."""
    import torch.nn.functional as F

    height, width = image.shape[-2:]
    if (height, width) == (side, side):
        return image, ""
    if not resize:
        raise UsageError(
            f"IN {path}",
            f"is {width}x{height} but the diffusion model takes {side}x{side} images",
            f"add --resize to resize it to {side}x{side}, or resize it yourself",
        )
    mode = "area" if height >= side and width >= side else "bilinear"
    extra = {} if mode == "area" else {"align_corners": False}
    resized = F.interpolate(image.unsqueeze(0), size=(side, side), mode=mode, **extra).squeeze(0).clamp(0.0, 1.0)
    return resized, f"resized {width}x{height} -> {side}x{side}"


def write_png(image: Any, path: Path) -> None:
    """Write ``image`` (C, H, W) in [0, 1], C in {1, 3}, as an 8-bit PNG, atomically."""
    import numpy as np
    import torch
    from PIL import Image

    from advpure.errors import OutputError
    from advpure.io import write_atomic

    pixels = (image.detach().float().cpu().clamp(0.0, 1.0) * 255.0).round().to(dtype=torch.uint8)
    array = pixels[0].numpy() if pixels.shape[0] == 1 else np.ascontiguousarray(pixels.permute(1, 2, 0).numpy())
    try:
        write_atomic(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))
    except OutputError as error:
        raise UsageError(f"OUT {path}", f"cannot be written ({error})", "give a writable output path") from None


def image_seed(seed: int, name: str) -> int:
    """The 63-bit torch seed under which the image named ``name`` is purified, from (seed, name)."""
    digest = hashlib.sha256(f"advpure-purify/{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# ----------------------------------------------------------------------------- purification


def config_overrides(args: argparse.Namespace) -> list[str]:
    """The Hydra overrides the options stand for, in order (``--set`` last, so it wins)."""
    overrides = [f"purifier={args.purifier}", f"diffusion={args.diffusion}"]
    if args.t_star is not None:
        overrides.append(f"purifier.t_star={args.t_star}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    return overrides + list(args.overrides)


def check_options(args: argparse.Namespace) -> None:
    """Options checked before anything is read: known purifier and diffusion options, ``--set``
    items of the form key=value, CUDA for ``--device cuda``."""
    from advpure.api import config_dir, config_options

    for option, group in ((args.purifier, "purifier"), (args.diffusion, "diffusion")):
        if option not in config_options(group):
            raise UsageError(
                f"--{group} {option}",
                f"no such option in {config_dir() / group}",
                f"choose one of: {', '.join(config_options(group))}",
            )
    for item in args.overrides:
        if "=" not in item:
            raise UsageError(f"--set {item}", "is not key=value", "write e.g. --set purifier.dt=0.001")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError(
                "--device cuda",
                "this machine has no CUDA device (torch.cuda.is_available() is false)",
                "use --device cpu",
            )


def describe(purifier: Purifier, cfg: Any, channels: int, side: int, device: str) -> str:
    """One line naming the purifier, its main settings, the images it takes and the seed."""
    settings = purifier.settings()
    parts = [f"{key}={settings[key]}" for key in ("t_star", "n_steps") if key in settings]
    kind = {1: "grayscale", 3: "RGB"}.get(channels, f"{channels}-channel")
    return (
        f"purifier {purifier.name} ({', '.join(parts) or 'no settings'}; "
        f"budget {cfg.get('budget')}) on {channels}x{side}x{side} {kind} images in [0, 1], device {device}, "
        f"seed {cfg.seed}"
    )


def compose_for(args: argparse.Namespace) -> Any:
    """The config the options stand for (:func:`advpure.api.compose_config`); a bad ``--t-star``
    is reported under its option."""
    from advpure.api import compose_config

    try:
        return compose_config(*config_overrides(args))
    except ConfigError as error:
        if args.t_star is None or not error.key.startswith("purifier.t_star"):
            raise
        if "Could not override" in error.problem:  # the purifier has no such key (purifier=none)
            raise UsageError(
                f"--t-star {args.t_star}", f"purifier {args.purifier} has no t_star", "drop --t-star"
            ) from None
        raise UsageError(f"--t-star {args.t_star}", error.problem, error.fix or "see --help") from None


def load_input(job: Job, channels: int, side: int, resize: bool) -> tuple[Any, str]:
    """The input image of ``job`` as the model takes it, (channels, side, side) in [0, 1], and a
    note of the conversions made (``""`` if none)."""
    image, note = read_image(job.source, channels)
    image, resize_note = fit_size(image, side, resize, job.source)
    return image, "; ".join(n for n in (note, resize_note) if n)


def purify_files(args: argparse.Namespace) -> list[Job]:
    """Check the options, every input and the output folders, build the purifier, then purify and
    write each image in turn; the jobs done. Nothing is written (and no folder left behind) when a
    check fails."""
    import torch

    from advpure.api import load_purifier, purifier_input

    check_options(args)
    jobs = plan_jobs(args.input, args.output)
    cfg = compose_for(args)
    channels, side = purifier_input(cfg)
    for job in jobs:  # read and checked now, read again when purified (memory stays one image)
        load_input(job, channels, side, args.resize)
    created: list[Path] = []
    try:
        for folder in sorted({job.target.parent for job in jobs}):
            created += require_output_folder(folder)
        purifier = load_purifier(cfg).to(args.device)
    except AdvpureError:
        remove_empty(created)
        raise
    print(describe(purifier, cfg, channels, side, args.device), flush=True)
    for index, job in enumerate(jobs, start=1):
        image, note = load_input(job, channels, side, args.resize)
        torch.manual_seed(image_seed(int(cfg.seed), job.source.name))
        with torch.no_grad():
            purified = purifier(image.unsqueeze(0).to(args.device))[0]
        write_png(purified, job.target)
        print(f"[{index}/{len(jobs)}] {job.source} -> {job.target}" + (f" ({note})" if note else ""), flush=True)
    return jobs


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m advpure.purify IN OUT [options]``: 0 when every output was written, 2 on a bad
    input or option (one ``error:`` line on stderr, no traceback)."""
    args = build_parser().parse_args(argv)
    try:
        jobs = purify_files(args)
    except AdvpureError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    where = jobs[0].target if len(jobs) == 1 and Path(args.input).is_file() else jobs[0].target.parent
    print(f"purified {len(jobs)} image{'s' if len(jobs) != 1 else ''}: {where}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
