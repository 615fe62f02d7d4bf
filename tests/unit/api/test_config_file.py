"""The config file: where it lives, its exact shape, atomic 0600 writes, and refusing a damaged file."""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path

import pytest

from shoal.api.config_file import ShoalConfig, config_path, load_config, render, save_config, shoal_home
from shoal.errors import ShoalError


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("SHOAL_HOME", str(home))
    return home


def test_shoal_home_comes_from_the_env_or_defaults_to_dot_shoal(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Path(shoal_home()) == home
    assert Path(config_path()) == home / "config.toml"
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("SHOAL_HOME", "  ")
    assert Path(shoal_home()) == tmp_path / "user" / ".shoal"
    monkeypatch.delenv("SHOAL_HOME")
    assert Path(config_path()) == tmp_path / "user" / ".shoal" / "config.toml"


def test_no_file_is_an_empty_config() -> None:
    config = load_config()
    assert (config.kits, config.active, config.poc_workspace) == ({}, None, None)
    assert not Path(config_path()).exists()


def test_the_file_has_the_documented_shape() -> None:
    save_config(ShoalConfig({"admin@example.com": "/abs/path"}, "admin@example.com", "/abs/ws"))
    assert Path(config_path()).read_text() == (
        "version = 1\n"
        "\n"
        "[startup_kits]\n"
        'active = "admin@example.com"\n'
        "\n"
        "[startup_kits.entries]\n"
        '"admin@example.com" = "/abs/path"\n'
        "\n"
        "[poc]\n"
        'workspace = "/abs/ws"\n'
    )


def test_an_empty_config_still_renders_valid_toml() -> None:
    assert tomllib.loads(render(ShoalConfig())) == {"version": 1, "startup_kits": {"entries": {}}}


@pytest.mark.parametrize(
    "awkward",
    ['quote"d', "back\\slash", "tab\there", "new\nline", "del\x7f", "ünïcødé ✓", "dots.and spaces", "a=b#c"],
)
def test_any_id_and_path_round_trip(awkward: str) -> None:
    config = ShoalConfig({awkward: f"/kits/{awkward}", "plain": "/p"}, awkward, f"/ws/{awkward}")
    save_config(config)
    again = load_config()
    assert (again.kits, again.active, again.poc_workspace) == (
        config.kits,
        config.active,
        config.poc_workspace,
    )


def test_writes_are_0600_and_leave_no_temporary_files(home: Path) -> None:
    save_config(ShoalConfig({"a": "/a"}))
    Path(config_path()).chmod(0o644)
    save_config(ShoalConfig({"b": "/b"}))
    assert stat.S_IMODE(Path(config_path()).stat().st_mode) == 0o600
    assert sorted(p.name for p in home.iterdir()) == [".config.parsed.json", "config.toml"]
    assert load_config().kits == {"b": "/b"}


def test_a_failed_write_keeps_the_old_file(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_config(ShoalConfig({"a": "/a"}, "a"))
    before = Path(config_path()).read_text()

    def crash(src: str, dst: str) -> None:
        raise OSError("power cut")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", crash)
        with pytest.raises(OSError):
            save_config(ShoalConfig({"b": "/b"}))
    assert Path(config_path()).read_text() == before
    assert sorted(p.name for p in home.iterdir()) == [".config.parsed.json", "config.toml"]


def test_the_write_is_a_rename_of_a_synced_file(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        calls.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save_config(ShoalConfig({"a": "/a"}))
    assert calls[:2] == ["fsync", "replace"]
    assert load_config().kits == {"a": "/a"}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("this is = = not toml", "cannot parse"),
        ("version = 2\n", "version 2"),
        ('startup_kits = "nope"\n', "'startup_kits' must be a table"),
        ("[startup_kits]\nentries = 3\n", "'entries' must be a table"),
        ("[startup_kits.entries]\na = 1\n", "path string"),
        ("[startup_kits]\nactive = 7\n", "'active' must be a string"),
        ("[poc]\nworkspace = []\n", "'workspace' must be a string"),
        (b"\xff\xfe".decode("latin-1"), "cannot parse"),
    ],
)
def test_a_damaged_file_is_an_error_with_a_hint(text: str, needle: str) -> None:
    Path(config_path()).parent.mkdir(parents=True)
    Path(config_path()).write_text(text, encoding="utf-8" if text.isascii() else "latin-1")
    with pytest.raises(ShoalError) as err:
        load_config()
    assert err.value.code == "STARTUP_KIT_MISSING"
    assert f"cannot parse {config_path()}" in err.value.message
    assert needle in err.value.message
    assert err.value.hint == "Fix the config file, or move it aside and run 'shoal poc prepare'."


def test_the_parse_is_kept_while_the_text_is_unchanged(home: Path) -> None:
    save_config(ShoalConfig(kits={"a": "/kits/a"}, active="a"))
    first = load_config()
    cache = home / ".config.parsed.json"
    assert cache.is_file() and stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert (first.kits, first.active) == ({"a": "/kits/a"}, "a")
    # a hand edit of the TOML is seen at once: the cache only answers for the exact same text
    Path(config_path()).write_text(render(ShoalConfig(kits={"b": "/kits/b"}, active="b")))
    assert (load_config().kits, load_config().active) == ({"b": "/kits/b"}, "b")
    # a damaged cache is ignored and rewritten; a damaged TOML is still refused
    cache.write_text("{not json")
    assert load_config().kits == {"b": "/kits/b"}
    Path(config_path()).write_text("version = [")
    with pytest.raises(ShoalError):
        load_config()


def test_a_save_leaves_the_parse_the_toml_would_give(home: Path) -> None:
    """The command after a save reads the saved parse: it must equal tomllib's reading."""
    from shoal.api.config_file import _parse

    config = ShoalConfig(kits={'odd "id"\\.x': "/kits/é", "b": "/b"}, active="b", poc_workspace="")
    save_config(config)
    text = Path(config_path()).read_text(encoding="utf-8")
    saved = load_config()  # answered from .config.parsed.json
    parsed = _parse(config_path(), text)
    assert (saved.kits, saved.active, saved.poc_workspace) == (
        parsed.kits,
        parsed.active,
        parsed.poc_workspace,
    )
    assert saved.poc_workspace is None
    assert json.loads((home / ".config.parsed.json").read_text())["source"] == text
