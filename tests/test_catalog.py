"""The README's config-group table is the one generated from conf/, and --help lists the same groups."""

from __future__ import annotations

from advpure.config.catalog import GROUP_PURPOSE, config_groups, groups_table, readme_block
from tests.conftest import ROOT


def test_readme_config_group_table_is_current():
    assert readme_block((ROOT / "README.md").read_text()) == groups_table(), (
        "README.md's config-group table is stale: run python -m advpure.config.catalog --readme README.md"
    )


def test_every_option_file_of_every_user_facing_group_is_listed():
    groups = {g.name: g for g in config_groups()}
    for folder in (ROOT / "conf").iterdir():
        if folder.is_dir() and folder.name not in ("schema", "protocol", "hydra"):
            assert set(groups[folder.name].options) == {p.stem for p in folder.glob("*.yaml")}
            assert groups[folder.name].purpose, f"GROUP_PURPOSE lacks {folder.name}"
    assert set(GROUP_PURPOSE) == set(groups)
    assert groups["attack"].options[0] == groups["attack"].default == "diffhammer"
    assert groups["experiment"].selector == "+experiment"  # not selected by default


def test_readme_front_door_is_short():
    assert len((ROOT / "README.md").read_bytes()) < 12 * 1024
