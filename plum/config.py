"""Configuration: defaults < plum.toml < .env < environment < command-line flags.

Loaded once into a frozen tree. Nothing else in Plum reads `os.environ`. A bad value stops
start-up with one `ConfigError` naming the key (`server.addr`, or the variable's name).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any

import msgspec

from plum.errors import ConfigError


class Role(StrEnum):
    CONTROLLER = "controller"
    AGENT = "agent"
    ALL = "all"


class RunMode(StrEnum):
    PROCESS = "process"
    DOCKER = "docker"


class LogFormat(StrEnum):
    AUTO = "auto"
    CONSOLE = "console"
    JSON = "json"


class Synchronous(StrEnum):
    FULL = "full"
    NORMAL = "normal"


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerConfig(_Section):
    role: Role = Role.ALL
    addr: str = "127.0.0.1:8080"
    grpc_addr: str = "127.0.0.1:9090"
    data_dir: str = ".plum"
    auth_tokens: tuple[str, ...] = ()
    max_body_mb: int = 64
    shutdown_grace_sec: float = 10.0
    sse_keepalive_sec: float = 15.0
    log_level: str = "info"
    log_format: LogFormat = LogFormat.AUTO


class StoreConfig(_Section):
    db: str = ""
    synchronous: Synchronous = Synchronous.FULL
    read_connections: int = 2


class ControllerConfig(_Section):
    heartbeat_ttl_sec: float = 15.0
    auto_migration_enabled: bool = False
    migration_grace_sec: float = 30.0
    app_max_uncompressed_mb: int = 256
    app_max_entry_mb: int = 128
    app_max_entries: int = 10_000


class WorkersConfig(_Section):
    # Capacity of a worker that declares none.
    default_capacity: int = 8
    # A worker that sends nothing (not even its 30 s heartbeat) for this long is lost.
    idle_timeout_sec: float = 90.0
    # After a worker's stream ends, its unanswered tasks wait this long for a result on a
    # new stream before they are lost (retried or failed "worker lost").
    reconnect_grace_sec: float = 10.0
    # HTTP/2 pings from the controller on idle worker connections.
    ping_interval_sec: float = 10.0


class ContainerConfig(_Section):
    base_image: str = "plum-base:latest"
    memory: str = ""
    cpus: str = ""
    host_lib_paths: tuple[str, ...] = ()
    env: tuple[str, ...] = ()


class AgentConfig(_Section):
    node_id: str = ""
    controller: str = "http://127.0.0.1:8080"
    ip: str = "127.0.0.1"
    data_dir: str = ""
    run_mode: RunMode = RunMode.PROCESS
    heartbeat_sec: float = 5.0
    token: str = ""
    capacity: int = 0
    stop_apps_on_exit: bool = False
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    container: ContainerConfig = msgspec.field(default_factory=ContainerConfig)


class Config(_Section):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    controller: ControllerConfig = msgspec.field(default_factory=ControllerConfig)
    agent: AgentConfig = msgspec.field(default_factory=AgentConfig)
    workers: WorkersConfig = msgspec.field(default_factory=WorkersConfig)

    # Derived values: always read these, never recompute them elsewhere.
    @property
    def data_path(self) -> Path:
        return Path(self.server.data_dir)

    @property
    def db_path(self) -> Path:
        return Path(self.store.db) if self.store.db else self.data_path / "plum.db"

    @property
    def artifacts_path(self) -> Path:
        return self.data_path / "artifacts"

    @property
    def agent_data_path(self) -> Path:
        return Path(self.agent.data_dir) if self.agent.data_dir else self.data_path / "agent"

    @property
    def node_id(self) -> str:
        return self.agent.node_id or socket.gethostname()

    @property
    def agent_token(self) -> str | None:
        """The bearer token an agent presents: `agent.token`, else the first auth token."""
        if self.agent.token:
            return self.agent.token
        return self.server.auth_tokens[0] if self.server.auth_tokens else None

    @property
    def max_body_bytes(self) -> int:
        return self.server.max_body_mb * 1024 * 1024


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _labels(value: str) -> dict[str, str]:
    pairs = {}
    for item in _csv(value):
        key, sep, val = item.partition("=")
        if not sep:
            raise ValueError(f"expected key=value pairs, got {item!r}")
        pairs[key.strip()] = val.strip()
    return pairs


# Environment variable -> (section, key, parser). The original Plum's names come first.
ENV_VARS: dict[str, tuple[str, str, Any]] = {
    "CONTROLLER_ADDR": ("server", "addr", str),
    "CONTROLLER_GRPC_ADDR": ("server", "grpc_addr", str),
    "CONTROLLER_DATA_DIR": ("server", "data_dir", str),
    "CONTROLLER_DB": ("store", "db", str),
    "HEARTBEAT_TTL_SEC": ("controller", "heartbeat_ttl_sec", float),
    "AUTO_MIGRATION_ENABLED": ("controller", "auto_migration_enabled", _bool),
    "MIGRATION_GRACE_SEC": ("controller", "migration_grace_sec", float),
    "PLUM_APP_MAX_UNCOMPRESSED_MB": ("controller", "app_max_uncompressed_mb", int),
    "PLUM_APP_MAX_ENTRY_MB": ("controller", "app_max_entry_mb", int),
    "PLUM_APP_MAX_ENTRIES": ("controller", "app_max_entries", int),
    "AGENT_NODE_ID": ("agent", "node_id", str),
    "CONTROLLER_BASE": ("agent", "controller", str),
    "AGENT_IP": ("agent", "ip", str),
    "AGENT_HEARTBEAT_SEC": ("agent", "heartbeat_sec", float),
    "PLUM_AGENT_TOKEN": ("agent", "token", str),
    "AGENT_DATA_DIR": ("agent", "data_dir", str),
    "AGENT_RUN_MODE": ("agent", "run_mode", str),
    "AGENT_LABELS": ("agent", "labels", _labels),
    "PLUM_STOP_APPS_ON_EXIT": ("agent", "stop_apps_on_exit", _bool),
    "PLUM_BASE_IMAGE": ("agent.container", "base_image", str),
    "PLUM_CONTAINER_MEMORY": ("agent.container", "memory", str),
    "PLUM_CONTAINER_CPUS": ("agent.container", "cpus", str),
    "PLUM_HOST_LIB_PATHS": ("agent.container", "host_lib_paths", _csv),
    "PLUM_CONTAINER_ENV": ("agent.container", "env", _csv),
    "PLUM_ROLE": ("server", "role", str),
    "PLUM_AUTH_TOKENS": ("server", "auth_tokens", _csv),
    "PLUM_MAX_BODY_MB": ("server", "max_body_mb", int),
    "PLUM_LOG_LEVEL": ("server", "log_level", str),
    "PLUM_LOG_FORMAT": ("server", "log_format", str),
    "PLUM_DB_SYNCHRONOUS": ("store", "synchronous", str),
}

# Command-line flag (argparse dest) -> (section, key).
FLAGS: dict[str, tuple[str, str]] = {
    "role": ("server", "role"),
    "addr": ("server", "addr"),
    "grpc_addr": ("server", "grpc_addr"),
    "data_dir": ("server", "data_dir"),
    "controller": ("agent", "controller"),
    "node_id": ("agent", "node_id"),
    "agent_ip": ("agent", "ip"),
}


def load_config(
    config_file: str | os.PathLike | None = None,
    *,
    environ: dict[str, str] | None = None,
    dotenv: str | os.PathLike | None = ".env",
    flags: dict[str, Any] | None = None,
) -> Config:
    """Build the frozen config from every layer. `environ` defaults to the process's."""
    tree: dict[str, Any] = {}
    if config_file is not None:
        _merge(tree, _read_toml(Path(config_file)))
    env = dict(os.environ if environ is None else environ)
    layered_env = {**_read_dotenv(dotenv), **env}
    for name, (section, key, parse) in ENV_VARS.items():
        if name in layered_env:
            try:
                value = parse(layered_env[name])
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}", field=name) from None
            _set(tree, section, key, value)
    for dest, value in (flags or {}).items():
        if value is not None and dest in FLAGS:
            _set(tree, *FLAGS[dest], value)
    try:
        config = msgspec.convert(tree, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(_describe(exc), field=_path_of(exc)) from None
    _check(config)
    return config


def default_config_file(explicit: str | None) -> Path | None:
    """`--config` when given (it must exist); else `./plum.toml` when present."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file not found: {explicit}", field="--config")
        return path
    path = Path("plum.toml")
    return path if path.is_file() else None


def parse_hostport(value: str, key: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{key}: expected HOST:PORT, got {value!r}", field=key)
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check(config: Config) -> None:
    host, _ = parse_hostport(config.server.addr, "server.addr")
    grpc_host, _ = parse_hostport(config.server.grpc_addr, "server.grpc_addr")
    for bound in (host, grpc_host):
        if config.server.role != Role.AGENT and not is_loopback(bound) \
                and not config.server.auth_tokens:
            raise ConfigError(
                f"server.auth_tokens: bound to {bound}, which is not loopback; "
                "set auth tokens (PLUM_AUTH_TOKENS) before listening beyond this machine",
                field="server.auth_tokens",
            )
    if config.server.max_body_mb <= 0:
        raise ConfigError("server.max_body_mb: must be positive", field="server.max_body_mb")
    if config.controller.heartbeat_ttl_sec <= config.agent.heartbeat_sec:
        raise ConfigError(
            "controller.heartbeat_ttl_sec: must be longer than agent.heartbeat_sec",
            field="controller.heartbeat_ttl_sec",
        )
    for key in ("migration_grace_sec", "app_max_uncompressed_mb", "app_max_entry_mb",
                "app_max_entries"):
        if getattr(config.controller, key) <= 0:
            raise ConfigError(f"controller.{key}: must be positive", field=f"controller.{key}")
    if config.store.read_connections < 1:
        raise ConfigError(
            "store.read_connections: must be at least 1", field="store.read_connections"
        )
    for key in ("default_capacity", "idle_timeout_sec", "reconnect_grace_sec",
                "ping_interval_sec"):
        if getattr(config.workers, key) <= 0:
            raise ConfigError(f"workers.{key}: must be positive", field=f"workers.{key}")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", field=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}", field=str(path)) from None


def _read_dotenv(path: str | os.PathLike | None) -> dict[str, str]:
    if path is None or not Path(path).is_file():
        return {}
    values = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep:
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE", field=str(path))
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _set(tree: dict, section: str, key: str, value: Any) -> None:
    node = tree
    for part in section.split("."):
        node = node.setdefault(part, {})
    node[key] = value


def _merge(into: dict, other: dict) -> None:
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _path_of(exc: msgspec.ValidationError) -> str | None:
    text = str(exc)
    marker = " - at `$."
    if marker not in text:
        return None
    return text.split(marker, 1)[1].rstrip("`")


def _describe(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    path = _path_of(exc)
    message = text.split(" - at `", 1)[0]
    if message.startswith("Object contains unknown field"):
        unknown = message.split("`")[1]
        key = f"{path}.{unknown}" if path else unknown
        return f"{key}: unknown key"
    return f"{path}: {message}" if path else message
