"""Configuration: one `auditlock.toml` read by the handler, the agent and every command."""

from auditlock.config.load import build_config, load_config
from auditlock.config.model import (
    AgentConfig,
    Config,
    ErasureConfig,
    EventsConfig,
    HmacConfig,
    HmacKeySource,
    QueryConfig,
    RetentionClass,
    RetentionConfig,
    SinkConfig,
    SpoolConfig,
    TargetConfig,
    UiConfig,
)

__all__ = [
    "AgentConfig",
    "Config",
    "ErasureConfig",
    "EventsConfig",
    "HmacConfig",
    "HmacKeySource",
    "QueryConfig",
    "RetentionClass",
    "RetentionConfig",
    "SinkConfig",
    "SpoolConfig",
    "TargetConfig",
    "UiConfig",
    "build_config",
    "load_config",
]
