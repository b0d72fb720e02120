"""``python -m advpure.purify IN OUT``: purified PNGs of the digits model's size, different from
the inputs, reproducible under a seed; every bad input one ``error:`` line and exit status 2.

Most runs call :func:`advpure.purify.main` in this process (the imports are paid once); two run
the module as a user does, in a subprocess, to check the entry point and that no traceback leaks.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from advpure import purify
from tests.conftest import ROOT, group_options

pytestmark = pytest.mark.usefixtures("single_thread")

N_DIGITS = 3


def write_digits(folder: Path, n: int = N_DIGITS) -> list[Path]:
    """``n`` of scikit-learn's 8x8 digits as 8-bit grayscale PNGs ``digit_<i>.png`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    images = load_digits().images[:n]
    paths = []
    for index, image in enumerate(images):
        path = folder / f"digit_{index}.png"
        Image.fromarray((image * 255 / 16).round().astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image).astype(np.int16)


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("digits_in")
    write_digits(folder)
    return folder


def run_main(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """``(exit status, stdout, stderr)`` of ``python -m advpure.purify *argv``, in this process."""
    try:
        status = purify.main([str(a) for a in argv])
    except SystemExit as stop:  # argparse's --help and usage errors
        status = int(stop.code or 0)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_folder_is_purified_into_pngs_of_the_model_size(digits_folder, tmp_path, capsys):
    out = tmp_path / "out"
    status, stdout, stderr = run_main(capsys, digits_folder, out)
    assert status == 0, stderr
    inputs = sorted(digits_folder.glob("*.png"))
    for index, source in enumerate(inputs, start=1):
        target = out / source.name
        with Image.open(target) as image:
            assert (image.mode, image.size, image.format) == ("L", (8, 8), "PNG")
        assert np.abs(pixels(target) - pixels(source)).max() > 0, f"{target} equals its input"
        assert f"[{index}/{N_DIGITS}] {source} -> {target}" in stdout
    assert "1x8x8 grayscale" in stdout and "budget cpu_quick" in stdout
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in inputs]


def test_same_seed_same_outputs_another_seed_others(digits_folder, tmp_path, capsys):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        status, _, stderr = run_main(capsys, digits_folder, tmp_path / name, "--seed", seed)
        assert status == 0, stderr
        runs[name] = {p.name: p.read_bytes() for p in (tmp_path / name).iterdir()}
    assert runs["a"] == runs["b"]
    assert all(runs["a"][name] != runs["c"][name] for name in runs["a"])
    # An image's output depends on (seed, its name, itself), not on the rest of the folder.
    status, _, stderr = run_main(capsys, digits_folder / "digit_1.png", tmp_path / "single.png", "--seed", 0)
    assert status == 0, stderr
    assert (tmp_path / "single.png").read_bytes() == runs["a"]["digit_1.png"]


def test_t_star_and_set_reach_the_purifier(digits_folder, tmp_path, capsys):
    status, stdout, stderr = run_main(
        capsys, digits_folder / "digit_0.png", tmp_path, "--t-star", 0.2, "--set", "purifier.dt=0.05"
    )
    assert status == 0, stderr
    assert "t_star=0.2, n_steps=4" in stdout  # 0.2 / 0.05 steps
    assert (tmp_path / "digit_0.png").is_file()  # an existing folder as OUT takes <stem>.png


@pytest.mark.parametrize("option", group_options("purifier"))
def test_every_purifier_option_purifies(option, digits_folder, tmp_path, capsys):
    status, _, stderr = run_main(capsys, digits_folder / "digit_2.png", tmp_path / "out.png", "--purifier", option)
    assert status == 0, stderr
    assert pixels(tmp_path / "out.png").shape == (8, 8)
    if option == "none":  # the identity writes its input back
        assert np.array_equal(pixels(tmp_path / "out.png"), pixels(digits_folder / "digit_2.png"))
    else:
        assert not np.array_equal(pixels(tmp_path / "out.png"), pixels(digits_folder / "digit_2.png"))


def test_colour_and_16_bit_images_are_converted_to_the_models_channels(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.full((8, 8, 3), 180, np.uint8)).save(folder / "colour.jpg")
    Image.fromarray(np.full((8, 8, 4), 200, np.uint8)).save(folder / "alpha.png")
    Image.fromarray((np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)).save(folder / "deep.png")
    status, stdout, stderr = run_main(capsys, folder, tmp_path / "out")
    assert status == 0, stderr
    assert "colour.jpg -> " in stdout and "RGB converted to grayscale" in stdout
    assert "RGBA converted to grayscale" in stdout and "16-bit values / 65535" in stdout
    for name in ("colour.png", "alpha.png", "deep.png"):
        with Image.open(tmp_path / "out" / name) as image:
            assert (image.mode, image.size) == ("L", (8, 8))


def test_read_image_scales_to_unit_range(tmp_path):
    Image.fromarray(np.array([[0, 255]], np.uint8)).save(tmp_path / "8.png")
    Image.fromarray(np.array([[0, 65535]], np.uint16)).save(tmp_path / "16.png")
    for name in ("8.png", "16.png"):
        image, _ = purify.read_image(tmp_path / name, channels=1)
        assert image.shape == (1, 1, 2) and image.dtype == torch.float32
        assert image.flatten().tolist() == [0.0, 1.0]
    rgb, note = purify.read_image(tmp_path / "8.png", channels=3)
    assert rgb.shape == (3, 1, 2) and note == "L converted to RGB"


def test_another_size_is_refused_unless_resize(tmp_path, capsys):
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((28, 20), np.uint8)).save(big)
    status, _, stderr = run_main(capsys, big, tmp_path / "out.png")
    assert status == 2
    assert stderr.strip() == (
        f"error: IN {big}: is 20x28 but the diffusion model takes 8x8 images. "
        "Fix: add --resize to resize it to 8x8, or resize it yourself"
    )
    assert not (tmp_path / "out.png").exists()
    status, stdout, stderr = run_main(capsys, big, tmp_path / "out.png", "--resize")
    assert status == 0, stderr
    assert "resized 20x28 -> 8x8" in stdout
    with Image.open(tmp_path / "out.png") as image:
        assert image.size == (8, 8)


def bad_inputs(root: Path) -> dict[str, tuple[list[object], str]]:
    """name -> (argv, a string the error line must hold); paths under ``root`` (prepared by the test)."""
    digits, image = root / "digits", root / "digits" / "digit_0.png"
    return {
        "missing input": ([root / "nowhere", root / "o"], f"IN {root / 'nowhere'}: no such file or folder"),
        "empty folder": ([root / "empty", root / "o"], f"IN {root / 'empty'}: holds no PNG or JPEG image"),
        "unreadable image": ([root / "broken", root / "o"], f"IN {root / 'broken' / 'x.png'}: cannot be read"),
        "output not writable": ([digits, root / "a_file" / "o"], f"OUT {root / 'a_file' / 'o'}: cannot write there"),
        "output is a file": ([digits, root / "a_file"], f"OUT {root / 'a_file'}: is a file, but IN is a folder"),
        "output is the input": ([digits, digits], f"OUT {digits}: is the input folder"),
        "output not png": ([image, root / "o.jpg"], f"OUT {root / 'o.jpg'}: outputs are PNG files"),
        "output is a folder": ([digits, root / "clash"], f"OUT {root / 'clash' / 'digit_0.png'}: is a folder"),
        "unknown purifier": ([digits, root / "o", "--purifier", "diffpur"], "--purifier diffpur: no such option"),
        "unknown diffusion": ([digits, root / "o", "--diffusion", "x"], "--diffusion x: no such option"),
        "misspelt key": ([digits, root / "o", "--set", "purifier.tstar=0.1"], "did you mean purifier.t_star"),
        "bad value": ([digits, root / "o", "--set", "purifier.t_star=abc"], "set purifier.t_star to a number"),
        "not key=value": ([digits, root / "o", "--set", "budget"], "--set budget: is not key=value"),
        "t* out of range": ([digits, root / "o", "--t-star", "1.5"], "--t-star 1.5: 1.5 is out of range"),
        "no t* to set": ([digits, root / "o", "--purifier", "none", "--t-star", "0.1"], "purifier none has no t_star"),
        "wrong type": ([digits, root / "o", "--seed", "x"], "argument --seed: invalid int value"),
        "missing OUT": ([digits], "the following arguments are required: OUT"),
        "no weights": ([digits, root / "o", "--diffusion", "ddpm_cifar10", "--resize"], "diffusion.checkpoint"),
    }


@pytest.mark.parametrize("case", list(bad_inputs(Path("/"))))
def test_bad_input_is_one_error_line_and_exit_2(case, tmp_path, capsys):
    write_digits(tmp_path / "digits", 1)
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_text("not an image")
    (tmp_path / "a_file").write_text("")
    (tmp_path / "clash" / "digit_0.png").mkdir(parents=True)
    argv, needle = bad_inputs(tmp_path)[case]
    status, stdout, stderr = run_main(capsys, *argv)
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Fix: " in lines[0], stderr
    assert needle in lines[0]
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.jpg").exists()
    assert "purified" not in stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_refused(digits_folder, tmp_path, capsys):
    status, _, stderr = run_main(capsys, digits_folder, tmp_path / "o", "--device", "cuda")
    assert status == 2
    assert (
        stderr.startswith("error: --device cuda: this machine has no CUDA device") and "Fix: use --device cpu" in stderr
    )


def test_a_failed_write_exits_2_naming_the_file(digits_folder, tmp_path, capsys, monkeypatch):
    """Exit 0 only when every output was written: the second write fails (a full disk)."""
    from advpure import io

    real_write = io.write_atomic

    def full_disk_on_second(path, write):
        if Path(path).name == "digit_1.png":
            raise io.output_error(Path(path), OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        return real_write(path, write)

    monkeypatch.setattr(io, "write_atomic", full_disk_on_second)
    status, stdout, stderr = run_main(capsys, digits_folder, tmp_path / "out")
    assert status == 2
    assert stderr.startswith(f"error: OUT {tmp_path / 'out' / 'digit_1.png'}: cannot be written")
    assert "No space left on device" in stderr and len(stderr.strip().splitlines()) == 1
    assert "[1/3]" in stdout and "[2/3]" not in stdout and "purified 3" not in stdout


def test_help_says_what_each_model_takes(capsys):
    status, stdout, _ = run_main(capsys, "--help")
    assert status == 0
    assert "digits_unet: 1x8x8 (grayscale)" in stdout and "--resize" in stdout and "--set KEY=VALUE" in stdout
    assert all(option in stdout for option in group_options("purifier"))


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_module_entry_point_writes_outputs_and_errors_without_traceback(digits_folder, tmp_path):
    good = subprocess.run(
        [sys.executable, "-m", "advpure.purify", str(digits_folder), str(tmp_path / "out")],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert good.returncode == 0, good.stderr
    assert f"purified {N_DIGITS} images: {tmp_path / 'out'}" in good.stdout
    assert len(list((tmp_path / "out").glob("*.png"))) == N_DIGITS
    bad = subprocess.run(
        [sys.executable, "-m", "advpure.purify", str(tmp_path / "missing"), str(tmp_path / "o"), "--purifier", "nope"],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and bad.stderr.startswith("error: --purifier nope: no such option")
