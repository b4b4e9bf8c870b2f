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
