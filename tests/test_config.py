from pathlib import Path

import pytest

from vo_service.config import load_settings


def test_defaults_without_file_or_environment():
    settings = load_settings(environ={})
    assert settings.data_roots == ()
    assert settings.limits.max_upload_rows == 10_000
    assert settings.index_path == Path("state") / "index.sqlite"


def test_toml_then_environment_override(tmp_path):
    config = tmp_path / "vo.toml"
    config.write_text(
        'data_roots = ["/data/a", "/data/b"]\nstate_dir = "/var/vo"\n'
        'base_url = "https://example.org/vo"\n[limits]\nmax_upload_rows = 500\n'
    )
    settings = load_settings(config, environ={"VO_SERVICE_LIMIT_MAX_UPLOAD_ROWS": "20",
                                              "VO_SERVICE_PORT": "9000"})
    assert settings.data_roots == (Path("/data/a"), Path("/data/b"))
    assert settings.state_dir == Path("/var/vo")
    assert settings.base_url == "https://example.org/vo"
    assert settings.limits.max_upload_rows == 20
    assert settings.port == 9000


def test_unknown_setting_is_refused(tmp_path):
    config = tmp_path / "vo.toml"
    config.write_text("data_rots = []\n")
    with pytest.raises(ValueError, match="data_rots"):
        load_settings(config, environ={})


def test_workers_from_toml_and_environment(tmp_path):
    config = tmp_path / "vo.toml"
    config.write_text("workers = 3\n")
    assert load_settings(config, environ={}).workers == 3
    assert load_settings(config, environ={"VO_SERVICE_WORKERS": "2"}).workers == 2
    assert load_settings(environ={}).workers == 1
    config.write_text("workers = 0\n")
    with pytest.raises(ValueError, match="workers must be a whole number of processes >= 1"):
        load_settings(config, environ={})


def test_settings_survive_the_trip_to_worker_processes():
    from dataclasses import replace

    from vo_service.config import Limits, Settings, settings_from_json, settings_to_json

    settings = replace(Settings(), data_roots=(Path("/data/a"), Path("/data/b")),
                       state_dir=Path("/var/vo"), workers=4, tokens="alice:secret",
                       mapping_file=Path("/etc/mapping.toml"),
                       limits=Limits(max_sync_concurrency=3, wait_cap_seconds=9.5))
    assert settings_from_json(settings_to_json(settings)) == settings
