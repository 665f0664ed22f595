"""Settings: every knob declared once, with its type, default and meaning.

Layers, lowest first (as Flask's ``config.py`` does it):

1. the defaults declared in :data:`SETTINGS` below;
2. a TOML file named by ``HTTPQUEUE_CONFIG`` (keys are the setting names);
3. ``HTTPQUEUE_<NAME>`` environment variables;
4. explicit overrides (command-line options, a test's ``Settings.load(...)``).

The README's configuration table is generated from :data:`SETTINGS`
(``python -m httpqueue.config``) and a test checks the README against it, so
the documentation cannot drift from the code.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
import typing as t

from httpqueue.exceptions import ConfigError

ENV_PREFIX = "HTTPQUEUE_"

DAY = 86_400.0


@dataclasses.dataclass(frozen=True)
class Setting:
    """One declared setting: how to parse it and what it means."""

    name: str
    type: type
    default: t.Any
    help: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def parse(self, raw: t.Any) -> t.Any:
        """Turn a raw value from a file or the environment into ``self.type``."""
        if isinstance(raw, self.type) and (self.type is bool or not isinstance(raw, bool)):
            return raw
        text = str(raw).strip()
        try:
            if self.type is bool:
                return _parse_bool(text)
            if self.type is tuple:
                return tuple(p.strip() for p in text.replace(";", ",").split(",") if p.strip())
            return self.type(text)
        except ValueError as exc:
            raise ConfigError(f"{self.env}: cannot read {text!r} as {self.type.__name__}") from exc


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(text)


SETTINGS: tuple[Setting, ...] = (
    # -- where things run
    Setting("address", str, ":2356", "API listen address, `host:port` (`:port` listens on all interfaces)."),
    Setting("redis_url", str, "", "Redis for the task store (`redis://`, `rediss://`, `unix://` or `sentinel://host:port;...`). Empty: `httpqueue run` starts its own Redis."),
    Setting("broker_url", str, "", "Celery broker URL. Empty: the same Redis as `redis_url`."),
    Setting("sentinel_master", str, "mymaster", "Master name used with `sentinel://` URLs."),
    Setting("data_dir", str, "./httpqueue-data", "Where the embedded Redis keeps its append-only file."),
    Setting("key_prefix", str, "hq", "Prefix of every Redis key of the task store."),
    Setting("create_min_replicas", int, 0, "Acknowledge a create only once this many Redis replicas have it (Redis WAIT); else 503. 0: do not wait (asynchronous replication)."),
    Setting("create_replica_timeout", float, 1.0, "Seconds a create waits for `create_min_replicas` replicas."),
    Setting("shards", int, 16, "Timer and statistics shards (Redis Cluster hash tags); fixed once tasks exist."),
    Setting("api_workers", int, 0, "gunicorn worker processes for `httpqueue api` (0: 2 x cores + 1)."),
    Setting("worker_concurrency", int, 0, "Celery pool processes/threads (0: cores for prefork, 8 x cores for threads). Callbacks themselves run on 100 I/O threads per process."),
    Setting("worker_pool", str, "prefork", "Celery pool for `httpqueue worker`: prefork (uses every core), threads, solo."),
    # -- the seed's API limits
    Setting("max_delay", float, 366 * DAY, "Largest `delay` accepted, in seconds."),
    Setting("max_retry", int, 30, "Largest `retry` accepted."),
    Setting("max_body", int, 1_048_576, "Largest request body, in bytes (larger: 413)."),
    Setting("max_content", int, 262_144, "Largest `content`, in bytes of its JSON encoding."),
    Setting("max_topic", int, 128, "Longest `topic`, in characters."),
    Setting("max_callback", int, 2048, "Longest callback URL, in characters."),
    Setting("retention", float, 7 * DAY, "How long finished, failed and deleted tasks stay queryable, in seconds."),
    # -- retries and the callback
    Setting("retry_base", int, 10, "Backoff base in seconds: a failed attempt is retried after base x 2^n."),
    Setting("retry_backoff_max", int, 30 * 86_400, "Longest backoff between two attempts, in seconds."),
    Setting("retry_jitter", bool, False, "Randomise each backoff between 0 and its value (full jitter)."),
    Setting("callback_timeout", float, 10.0, "Seconds a callback may take (connect + response) before the attempt fails."),
    Setting("max_callback_timeout", float, 60.0, "Largest per-task `timeout` a create may ask for, in seconds."),
    Setting("throttle_limit", int, 20, "How many `code 101` answers a task may receive before one counts as a failure."),
    Setting("throttle_delay_max", float, 3600.0, "Longest wait after `code 101` (a larger Retry-After is cut to this)."),
    # -- the timer
    Setting("timer_horizon", float, 60.0, "Tasks due within this many seconds are handed to Celery as ETA messages; later ones wait in Redis."),
    Setting("promoter_interval", float, 0.25, "Seconds between two promoter passes in each worker."),
    Setting("promote_batch", int, 2000, "Most tasks one promoter pass moves from one shard."),
    Setting("lease", float, 30.0, "Seconds after its due time (or its attempt's timeout) before a task nobody completed is handed out again."),
    # -- topics
    Setting("dead_letter_retention", float, 30 * DAY, "How long tasks that failed for good stay in their topic's dead letters, in seconds."),
    Setting("topic_wait", float, 0.2, "Seconds a task waits before trying again when its topic's concurrency limit is reached."),
    Setting("breaker_threshold", int, 10, "Failed attempts in a row to one callback host that open its circuit (0: no circuit breaker)."),
    Setting("breaker_cooldown", float, 30.0, "Seconds an opened circuit stays open before one probe attempt; doubled on each reopening."),
    Setting("breaker_cooldown_max", float, 600.0, "Longest time a circuit stays open, in seconds."),
    # -- security and logs
    Setting("callback_allow", tuple, (), "Hosts or networks callbacks may reach although private or loopback (comma-separated; `*` allows all)."),
    Setting("follow_redirects", bool, False, "Follow HTTP redirects from callback receivers (each hop is checked like the first)."),
    Setting("api_tokens", tuple, (), "Bearer tokens accepted by the API (comma-separated). Empty: no authentication."),
    Setting("signing_secrets", tuple, (), "Standard Webhooks secrets (`whsec_...`, comma-separated, newest first). Empty: callbacks are not signed."),
    Setting("metrics_dir", str, "", "Directory for prometheus_client's multiprocess files (emptied at start). Empty: a fresh temporary one per command; `httpqueue run` shares it between API and worker."),
    Setting("worker_metrics_port", int, 0, "Port on which `httpqueue worker` serves its Prometheus metrics (0: off; with `httpqueue run` the API's /metrics has them)."),
    Setting("log_format", str, "text", "Log lines as `text` (the seed's format) or `json` (one object per line)."),
    Setting("visibility_timeout", int, 3600, "kombu's visibility_timeout for the Redis broker, in seconds; must exceed horizon + lease."),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclasses.dataclass(frozen=True)
class Settings:
    """The resolved settings, one attribute per :data:`SETTINGS` entry."""

    values: t.Mapping[str, t.Any]

    def __getattr__(self, name: str) -> t.Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    @classmethod
    def load(cls, overrides: t.Mapping[str, t.Any] | None = None, environ: t.Mapping[str, str] | None = None) -> Settings:
        """Resolve every setting through the layers described in the module docstring."""
        environ = os.environ if environ is None else environ
        layers: list[t.Mapping[str, t.Any]] = [
            {s.name: s.default for s in SETTINGS},
            _read_file(environ.get(ENV_PREFIX + "CONFIG", "")),
            {s.name: environ[s.env] for s in SETTINGS if s.env in environ},
            {k: v for k, v in (overrides or {}).items() if v is not None},
        ]
        merged: dict[str, t.Any] = {}
        for layer in layers:
            for name, raw in layer.items():
                if name not in _BY_NAME:
                    raise ConfigError(f"unknown setting {name!r}")
                merged[name] = _BY_NAME[name].parse(raw)
        settings = cls(merged)
        settings.validate()
        return settings

    def replace(self, **changes: t.Any) -> Settings:
        """A copy with some settings changed (parsed and validated like the rest)."""
        return Settings.load({**self.values, **changes}, environ={})

    def validate(self) -> None:
        """Refuse combinations that would break the timer's guarantees."""
        if self.timer_horizon + self.lease + self.callback_timeout >= self.visibility_timeout / 2:
            raise ConfigError(
                "timer_horizon + lease + callback_timeout must stay under half of visibility_timeout, "
                "or kombu would hand an ETA message out twice"
            )
        if self.shards < 1:
            raise ConfigError("shards must be at least 1")
        if self.retry_base < 1:
            raise ConfigError("retry_base must be at least 1 second (Celery's backoff works in whole seconds)")
        if self.worker_pool not in {"threads", "prefork", "solo"}:
            raise ConfigError("worker_pool must be threads, prefork or solo")
        if self.log_format not in {"text", "json"}:
            raise ConfigError("log_format must be text or json")
        from httpqueue.signing import parse_secret

        for secret in self.signing_secrets:
            parse_secret(secret)

    @property
    def store_url(self) -> str:
        return self.redis_url

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or self.redis_url


def _read_file(path: str) -> t.Mapping[str, t.Any]:
    if not path:
        return {}
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read HTTPQUEUE_CONFIG={path}: {exc}") from exc


TABLE_START = ".. config-table-start"
TABLE_END = ".. config-table-end"


def rst_table() -> str:
    """The configuration table as reST, for the README (``python -m httpqueue.config``)."""
    rows = [".. list-table::", "   :header-rows: 1", "", "   * - Environment variable", "     - Default", "     - Meaning"]
    for s in SETTINGS:
        default = s.default if s.default != "" else "(empty)"
        rows += [f"   * - ``{s.env}``", f"     - ``{default}``", f"     - {s.help.replace('`', '``')}"]
    return "\n".join(rows)


def readme_with_table(readme: str) -> str:
    """``readme`` with the text between the table markers replaced by :func:`rst_table`."""
    head, _, rest = readme.partition(TABLE_START)
    _, _, tail = rest.partition(TABLE_END)
    return f"{head}{TABLE_START}\n\n{rst_table()}\n\n{TABLE_END}{tail}"


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--write"]:
        with open("README.rst", encoding="utf-8") as handle:
            text = readme_with_table(handle.read())
        with open("README.rst", "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        print(rst_table())
