from pathlib import Path

import pytest

from plum.config import Role, RunMode, load_config
from plum.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_without_any_layer(tmp_path):
    config = load_config(None, environ={}, dotenv=tmp_path / "none")
    assert config.server.role == Role.ALL
    assert config.server.addr == "127.0.0.1:8080"
    assert config.db_path == Path(".plum/plum.db")
    assert config.controller.heartbeat_ttl_sec == 15.0


def test_layers_override_in_order(tmp_path):
    toml = write(
        tmp_path / "plum.toml",
        """
[server]
addr = "127.0.0.1:1111"
data_dir = "from-toml"
[controller]
heartbeat_ttl_sec = 20
[agent]
node_id = "toml-node"
""",
    )
    dotenv = write(
        tmp_path / ".env", "CONTROLLER_ADDR=127.0.0.1:2222\nAGENT_NODE_ID='dotenv-node'\n"
    )
    environ = {"CONTROLLER_ADDR": "127.0.0.1:3333"}
    config = load_config(toml, environ=environ, dotenv=dotenv, flags={"data_dir": "from-flag"})
    assert config.server.addr == "127.0.0.1:3333"  # environment beats .env and toml
    assert config.node_id == "dotenv-node"  # .env beats toml
    assert config.controller.heartbeat_ttl_sec == 20.0  # toml beats defaults
    assert config.server.data_dir == "from-flag"  # flags beat everything


def test_original_variable_names(tmp_path):
    environ = {
        "CONTROLLER_DB": "/x/plum.db",
        "HEARTBEAT_TTL_SEC": "30",
        "AUTO_MIGRATION_ENABLED": "true",
        "AGENT_RUN_MODE": "docker",
        "PLUM_HOST_LIB_PATHS": "/usr/lib,/opt/lib",
        "CONTROLLER_BASE": "http://127.0.0.1:9999",
    }
    config = load_config(None, environ=environ, dotenv=None)
    assert config.db_path == Path("/x/plum.db")
    assert config.controller.auto_migration_enabled is True
    assert config.agent.run_mode == RunMode.DOCKER
    assert config.agent.container.host_lib_paths == ("/usr/lib", "/opt/lib")
    assert config.agent.controller == "http://127.0.0.1:9999"


def test_config_is_frozen():
    config = load_config(None, environ={}, dotenv=None)
    with pytest.raises(AttributeError):
        config.server.addr = "0.0.0.0:1"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("toml", "environ", "key"),
    [
        ("[server]\nbogus = 1\n", {}, "server.bogus"),
        ("[server]\nmax_body_mb = 'big'\n", {}, "server.max_body_mb"),
        ("[server]\nrole = 'king'\n", {}, "server.role"),
        ("", {"HEARTBEAT_TTL_SEC": "soon"}, "HEARTBEAT_TTL_SEC"),
        ("", {"AUTO_MIGRATION_ENABLED": "maybe"}, "AUTO_MIGRATION_ENABLED"),
        ("", {"CONTROLLER_ADDR": "no-port"}, "server.addr"),
        ("[nonsense]\n", {}, "nonsense"),
    ],
)
def test_bad_values_name_their_key(tmp_path, toml, environ, key):
    path = write(tmp_path / "plum.toml", toml)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ, dotenv=None)
    assert key in info.value.message


def test_refuses_non_loopback_without_tokens():
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"CONTROLLER_ADDR": "0.0.0.0:8080"}, dotenv=None)
    assert "auth_tokens" in info.value.message
    config = load_config(
        None, environ={"CONTROLLER_ADDR": "0.0.0.0:8080", "PLUM_AUTH_TOKENS": "s3cret"}, dotenv=None
    )
    assert config.server.auth_tokens == ("s3cret",)


def test_repo_plum_toml_documents_a_valid_config():
    repo_toml = Path(__file__).parents[2] / "plum.toml"
    config = load_config(repo_toml, environ={}, dotenv=None)
    assert config.server.addr == "127.0.0.1:8080"
