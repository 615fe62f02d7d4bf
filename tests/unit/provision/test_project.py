"""The project file parser: shoal's example, a real FLARE project.yml, and every kind of bad input."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import pytest

from shoal.errors import ShoalError
from shoal.provision.project import load_project, parse_project

# NVIDIA FLARE's examples/tutorials/project.yml, as a FLARE user brings it (api_version 3).
FLARE_PROJECT = """\
api_version: 3
name: example_project
description: NVIDIA FLARE sample project yaml file

participants:
  - name: server1
    type: server
    org: nvidia
    fed_learn_port: 8002
    admin_port: 8003
  - name: site-1
    type: client
    org: nvidia
  - name: site-2
    type: client
    org: nvidia
  - name: admin@nvidia.com
    type: admin
    org: nvidia
    role: project_admin

# The same methods in all builders are called in their order defined in builders section
builders:
  - path: nvflare.lighter.impl.workspace.WorkspaceBuilder
    args:
      template_file:
        - master_template.yml
        - aws_template.yml
  - path: nvflare.lighter.impl.static_file.StaticFileBuilder
    args:
      config_folder: config
  - path: nvflare.lighter.impl.cert.CertBuilder
  - path: nvflare.lighter.impl.signature.SignatureBuilder
"""


def test_a_flare_project_yml_is_read_with_notices_for_what_shoal_does_not_use() -> None:
    project = parse_project(FLARE_PROJECT)
    assert project.name == "example_project"
    assert (project.server.name, project.server.port, project.server.hosts) == ("server1", 8002, ("server1",))
    assert project.server.listen == "0.0.0.0"
    assert [(s.name, s.org) for s in project.sites] == [("site-1", "nvidia"), ("site-2", "nvidia")]
    assert [(a.name, a.role) for a in project.admins] == [("admin@nvidia.com", "project_admin")]
    assert project.certificate_days == 365
    notices = "\n".join(project.notices)
    assert "builders" in notices and "admin_port 8003" in notices
    assert len(project.notices) == 2


def test_flare_server_extras_are_named_in_a_notice_not_dropped() -> None:
    text = FLARE_PROJECT.replace(
        "    admin_port: 8003\n", "    admin_port: 8002\n    connection_security: tls\n    default_host: x\n"
    )
    project = parse_project(text)
    assert any("connection_security, default_host" in n and "server1" in n for n in project.notices)
    assert not any("admin_port" in n for n in project.notices)  # the same port: nothing to say


def test_the_example_project_file_reads_as_it_is_written() -> None:
    text = files("shoal.provision").joinpath("example.yml").read_text()
    project = parse_project(text)
    assert project.notices == ()
    assert project.server.hosts == ("server.example.org", "fl.example.org")
    assert project.studies == {
        "cardiology": {
            "sites": ["hospital-a", "hospital-b"],
            "admins": [{"name": "lead@hospital-a.org", "org": "hospital-a.org"}],
            "orgs": ["hospital-b.org"],
        }
    }
    assert [a.role for a in project.admins] == ["project_admin", "lead"]


def bad(text: str) -> ShoalError:
    with pytest.raises(ShoalError) as err:
        parse_project(text, "p.yml")
    assert err.value.code == "PROJECT_FILE_INVALID"
    return err.value


SITE = "  - {name: site-1, type: client, org: a}\n"
SERVER = "  - {name: fl.test, type: server, org: a}\n"
ADMIN = "  - {name: a@b.org, type: admin, org: a, role: lead}\n"


def project(*rows: str, head: str = "name: p\n") -> str:
    return head + "participants:\n" + "".join(rows)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("name: p\nparticipants: [\n", 3, "not valid YAML"),
        (project(SERVER, SITE, SITE), 5, "named twice (first on line 4)"),
        (project(SERVER, SITE, "  - {name: SITE-1, type: client, org: a}\n"), 5, "named twice"),
        (project(SERVER, "  - {name: a@b.org, type: admin, org: a, role: boss}\n"), 4, "unknown role 'boss'"),
        (project(SERVER, "  - {name: a@b.org, type: admin, org: a}\n"), 4, "has no 'role'"),
        (project(SERVER, SITE, "  - {name: other.test, type: server, org: a}\n"), 5, "a second server"),
        (project(SITE), 2, "no participant of type 'server'"),
        (project("  - {name: 'bad host!', type: server, org: a}\n"), 3, "not a host name"),
        (project("  - {name: 10.0.0.300, type: server, org: a}\n"), 3, "not a host name"),
        (project(SERVER, "  - {name: x@y.org, type: client, org: a}\n"), 4, "names with '@' are admins'"),
        (project(SERVER, "  - {name: site-1, org: a}\n"), 4, "has no 'type'"),
        (project(SERVER, "  - {name: r, type: relay, org: a}\n"), 4, "'relay' is not supported"),
        (project(SERVER, "  - {name: r, type: robot, org: a}\n"), 4, "unknown type 'robot'"),
        (project(SERVER, "  - {name: 7, type: client, org: a}\n"), 4, "must be a non-empty string"),
        (project("  - {name: fl.test, type: server, org: a, fed_learn_port: 70000}\n"), 3, "from 1 to 65535"),
        (
            project("  - {name: fl.test, type: server, org: a, host_names: [ok.test, 'no way']}\n"),
            3,
            "'no way'",
        ),
        (project(SERVER, head="name: p\nname: q\n"), 2, "key 'name' appears twice (first on line 1)"),
        (project(SERVER, head="name: 'p/../q'\n"), 1, "a project name is"),
        (project(SERVER, head="certificate_days: 0\nname: p\n"), 1, "from 1 to 3650"),
        (project(SERVER, head="api_version: 9\nname: p\n"), 1, "api_version 9"),
        (project(SERVER, SITE) + "studies:\n  s1:\n    sites: [site-9]\n", 7, "'site-9' is not one of"),
        (project(SERVER, SITE) + "studies:\n  s1:\n    people: [x]\n", 7, "unknown key"),
        (project(SERVER, SITE) + "studies:\n  default: {sites: [site-1]}\n", 6, "'default' has every site"),
        (project(SERVER, SITE) + "studies:\n  'a b': {}\n", 6, "cannot name a study"),
        (project(SERVER, SITE) + "studies:\n  s1: {allow_custom_code: 'yes'}\n", 6, "true or false"),
        ("- just\n- a list\n", 1, "must be a mapping"),
        ("participants: []\n", 1, "no 'name'"),
    ],
)
def test_bad_input_names_the_line_and_what_is_wrong(text: str, line: int, words: str) -> None:
    err = bad(text)
    assert words in err.message, err.message
    assert f"p.yml, line {line}" in err.message, err.message
    assert err.context["line"] == line


def test_an_alias_bomb_is_refused() -> None:
    rows = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    rows += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(7)]
    err = bad("\n".join(rows) + "\n")
    assert "more than" in err.message


def test_a_missing_or_binary_file_is_project_file_invalid(tmp_path: Path) -> None:
    with pytest.raises(ShoalError) as err:
        load_project(tmp_path / "nope.yml")
    assert err.value.code == "PROJECT_FILE_INVALID" and "nope.yml" in err.value.message
    (tmp_path / "bin.yml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ShoalError) as err:
        load_project(tmp_path / "bin.yml")
    assert err.value.code == "PROJECT_FILE_INVALID" and "UTF-8" in err.value.message
