"""A site policy is checked once, at start, and never fails open: a value of the wrong type or
an unknown key is refused, naming the file and the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoal.errors import ShoalError
from shoal.provision.kits import DEFAULT_SITE_POLICY
from shoal.site.policy import load_site_policy


def write_policy(kit: Path, text: str) -> Path:
    (kit / "local").mkdir(parents=True, exist_ok=True)
    path = kit / "local" / "site_policy.json"
    path.write_text(text)
    return path


def test_the_provisioned_default_policy_is_valid(tmp_path: Path) -> None:
    write_policy(tmp_path, json.dumps(DEFAULT_SITE_POLICY))
    assert load_site_policy(tmp_path) == DEFAULT_SITE_POLICY


def test_no_policy_file_allows_everything(tmp_path: Path) -> None:
    assert load_site_policy(tmp_path) == {}


def test_a_strict_policy_is_kept_as_written(tmp_path: Path) -> None:
    strict = {"allow_custom_code": False, "allow_log_streaming": False, "studies": ["default", "cancer"]}
    write_policy(tmp_path, json.dumps(strict))
    assert load_site_policy(tmp_path) == strict


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('{"allow_custom_code": "false"}', "allow_custom_code", "must be true or false"),
        ('{"allow_log_streaming": 0}', "allow_log_streaming", "must be true or false"),
        ('{"share_metrics": "no"}', "share_metrics", "must be true or false"),
        ('{"studies": "default"}', "studies", "list of strings"),
        ('{"studies": ["default", 3]}', "studies", "list of strings"),
        ('{"allow_custom_cod": false}', "allow_custom_cod", "unknown key"),
        ("[]", None, "JSON object"),
        ('{"studies": ', None, "cannot read"),
    ],
)
def test_a_bad_policy_is_refused_naming_file_and_key(
    tmp_path: Path, text: str, key: str | None, problem: str
) -> None:
    path = write_policy(tmp_path, text)
    with pytest.raises(ShoalError) as caught:
        load_site_policy(tmp_path)
    err = caught.value
    assert err.code == "LOCAL_FILE_ERROR" and err.exit_code == 4
    assert str(path) in str(err.detail) and problem in str(err.detail)
    if key is not None:
        assert err.context["key"] == key and f"'{key}'" in str(err.detail)


def test_the_site_uploads_no_more_log_than_the_server_accepts() -> None:
    """The site does not import server code; the two limits must still agree."""
    from shoal.server.site_jobs import MAX_LOG_BYTES
    from shoal.site.job_logs import LOG_UPLOAD_MAX

    assert LOG_UPLOAD_MAX == MAX_LOG_BYTES
