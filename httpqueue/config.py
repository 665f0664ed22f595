"""Settings: every knob declared once, with its type, default and meaning.

:class:`Settings` is a frozen dataclass, so code reads ``settings.lease`` with
the type mypy knows, and values derived from several settings or converted to
milliseconds are properties computed in one place (``settings.lease_ms``).

Layers, lowest first (as Flask's ``config.py`` does it):

1. the defaults declared on :class:`Settings` below;
2. a TOML file named by ``HTTPQUEUE_CONFIG`` (keys are the setting names);
3. ``HTTPQUEUE_<NAME>`` environment variables;
4. explicit overrides (command-line options, a test's ``Settings.load(...)``).

The configuration table of the docs is generated from the declaration
(``python -m httpqueue.config --write``) and a test checks docs/configuration.rst against it, so
the documentation cannot drift from the code. This module imports nothing of
httpqueue: everything else may depend on it.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import tomllib
import typing as t

ENV_PREFIX = "HTTPQUEUE_"

DAY = 86_400.0

LOOPBACK_DEFAULT_ADDRESS = "127.0.0.1:2356"
"""Where ``httpqueue run`` (the development command) listens unless told otherwise."""

AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})
"""Broker URL schemes that mean RabbitMQ (kombu's amqp transports)."""

LAUNCHER_ROUNDS = 4
"""Rounds of callbacks a worker process may hold handed off (``MAX_PENDING`` in ``worker/tasks.py``)."""

API_SERVERS = ("granian", "gunicorn")
"""The WSGI servers ``httpqueue api`` can run (setting ``api_server``; see :mod:`httpqueue.api.wsgi`)."""


class ConfigError(ValueError):
    """A setting is missing, malformed or inconsistent with another.

    Defined here, not in :mod:`httpqueue.exceptions`, so that configuration
    depends on nothing else of the project; ``exceptions`` re-exports it.
    """


def _setting(default: t.Any, help: str) -> t.Any:
    """A dataclass field with its default and its one-line meaning (the docs' table reads it)."""
    return dataclasses.field(default=default, metadata={"help": help})


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
        if self.type is tuple and isinstance(raw, list):
            return tuple(str(item) for item in raw)
        text = str(raw).strip()
        try:
            if self.type is bool:
                return _parse_bool(text)
            if self.type is tuple:
                return tuple(p.strip() for p in text.replace(";", ",").split(",") if p.strip())
            return self.type(text)
        except ValueError as exc:
            raise ConfigError(f"{self.env}: cannot read {text!r} as {self.type.__name__}") from exc


SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24
"""Shortest signing secret accepted (the Standard Webhooks specification suggests 24 to 64 random bytes)."""


def parse_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_<base64>`` secret; :class:`ConfigError` if it is not one."""
    text = secret.strip()
    if not text.startswith(SECRET_PREFIX):
        raise ConfigError("each HTTPQUEUE_SIGNING_SECRETS entry must look like whsec_<base64 key>")
    try:
        key = base64.b64decode(text[len(SECRET_PREFIX):] + "==", validate=False)
    except (binascii.Error, ValueError):
        raise ConfigError("a HTTPQUEUE_SIGNING_SECRETS entry is not valid base64 after whsec_") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigError(f"a HTTPQUEUE_SIGNING_SECRETS key has {len(key)} bytes; use at least {MIN_SECRET_BYTES}")
    return key



def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(text)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The resolved settings: one typed attribute per setting, and the values derived from them."""

    # -- where things run
    address: str = _setting(":2356",
        "API listen address, `host:port` (`:port` listens on all interfaces).")
    redis_url: str = _setting("",
        "Redis for the task store (`redis://`, `rediss://`, `unix://` or `sentinel://host:port;...`). Empty: `httpqueue run` starts its own Redis.")
    broker_url: str = _setting("",
        "Celery broker URL. Empty: the same Redis as `redis_url`.")
    sentinel_master: str = _setting("mymaster",
        "Master name used with `sentinel://` URLs.")
    data_dir: str = _setting("./httpqueue-data",
        "Where the embedded Redis keeps its append-only file.")
    key_prefix: str = _setting("hq",
        "Prefix of every Redis key of the task store.")
    create_min_replicas: int = _setting(0,
        "Acknowledge a create only once this many Redis replicas have it (Redis WAIT); else 503. 0: do not wait (asynchronous replication).")
    create_replica_timeout: float = _setting(1.0,
        "Seconds a create waits for `create_min_replicas` replicas.")
    shards: int = _setting(16,
        "Timer and statistics shards (Redis Cluster hash tags); fixed once tasks exist.")
    api_server: str = _setting("granian",
        "WSGI server of `httpqueue api` and `httpqueue run`: `granian` or `gunicorn` (gthread); both serve the same Flask app.")
    api_workers: int = _setting(0,
        "API worker processes (0: one per core for granian, 2 x cores + 1 for gunicorn).")
    worker_concurrency: int = _setting(0,
        "Celery pool processes/threads (0: cores for prefork, 8 x cores for threads). Callbacks themselves run on one event loop thread per process, up to 100 at once.")
    worker_pool: str = _setting("prefork",
        "Celery pool for `httpqueue worker`: prefork (uses every core), threads, solo.")
    # -- API limits (the original Go httpqueue's, plus httpqueue's own)
    max_delay: float = _setting(366 * DAY,
        "Largest `delay` accepted, in seconds.")
    max_retry: int = _setting(30,
        "Largest `retry` accepted.")
    max_body: int = _setting(1_048_576,
        "Largest request body, in bytes (larger: 413).")
    max_content: int = _setting(262_144,
        "Largest `content`, in bytes of its JSON encoding.")
    max_topic: int = _setting(128,
        "Longest `topic`, in characters.")
    max_callback: int = _setting(2048,
        "Longest callback URL, in characters.")
    retention: float = _setting(7 * DAY,
        "How long finished, failed and deleted tasks stay queryable, in seconds.")
    # -- retries and the callback
    retry_base: int = _setting(10,
        "Backoff base in seconds: a failed attempt is retried after base x 2^n.")
    retry_backoff_max: int = _setting(30 * 86_400,
        "Longest backoff between two attempts, in seconds.")
    retry_jitter: bool = _setting(False,
        "Randomise each backoff between 0 and its value (full jitter).")
    callback_timeout: float = _setting(10.0,
        "Seconds a callback may take (connect + response) before the attempt fails.")
    max_callback_timeout: float = _setting(60.0,
        "Largest per-task `timeout` a create may ask for, in seconds.")
    throttle_limit: int = _setting(20,
        "How many `code 101` answers a task may receive before one counts as a failure.")
    throttle_delay_max: float = _setting(3600.0,
        "Longest wait after `code 101` (a larger Retry-After is cut to this).")
    # -- the timer
    timer_horizon: float = _setting(60.0,
        "Tasks due within this many seconds are handed to Celery as ETA messages; later ones wait in Redis.")
    promoter_interval: float = _setting(0.25,
        "Seconds between two promoter passes in each worker.")
    promote_batch: int = _setting(2000,
        "Most tasks one promoter pass moves from one shard.")
    lease: float = _setting(30.0,
        "Seconds after its due time (or its attempt's timeout) before a task nobody completed is handed out again.")
    # -- topics
    dead_letter_retention: float = _setting(30 * DAY,
        "How long tasks that failed for good stay in their topic's dead letters, in seconds.")
    topic_wait: float = _setting(0.2,
        "Seconds a task waits before trying again when its topic's concurrency limit is reached.")
    breaker_threshold: int = _setting(10,
        "Failed attempts in a row to one callback host that open its circuit (0: no circuit breaker).")
    breaker_cooldown: float = _setting(30.0,
        "Seconds an opened circuit stays open before one probe attempt; doubled on each reopening.")
    breaker_cooldown_max: float = _setting(600.0,
        "Longest time a circuit stays open, in seconds.")
    # -- security and logs
    callback_allow: tuple[str, ...] = _setting((),
        "Hosts or networks callbacks may reach although private or loopback (comma-separated; `*` allows all).")
    follow_redirects: bool = _setting(False,
        "Follow HTTP redirects from callback receivers (each hop is checked like the first).")
    api_tokens: tuple[str, ...] = _setting((),
        "Bearer tokens accepted by the API (comma-separated). Empty: no authentication.")
    signing_secrets: tuple[str, ...] = _setting((),
        "Standard Webhooks secrets (`whsec_...`, comma-separated, newest first). Empty: callbacks are not signed.")
    metrics_dir: str = _setting("",
        "Directory for prometheus_client's multiprocess files (emptied at start). Empty: a fresh temporary one per command; `httpqueue run` shares it between API and worker.")
    worker_metrics_port: int = _setting(0,
        "Port on which `httpqueue worker` serves its Prometheus metrics (0: off; with `httpqueue run` the API's /metrics has them).")
    log_format: str = _setting("text",
        "Log lines as `text` (the original Go httpqueue's format) or `json` (one object per line).")
    visibility_timeout: int = _setting(3600,
        "kombu's visibility_timeout for the Redis broker, in seconds; must exceed horizon + lease.")
    consumer_timeout: float = _setting(1800.0,
        "RabbitMQ's `consumer_timeout` (a server setting) in seconds, for an `amqp://` broker: httpqueue checks at start that nothing it holds unacknowledged comes near it.")

    # -- exporting events (httpqueue export)
    export_max_events: int = _setting(0,
        "Lifecycle events kept per shard in Redis for `httpqueue export` (XADD MAXLEN ~; beyond it the oldest are dropped, and counted). A process started with it above 0 turns event writing on for the whole store; 0 leaves it as it is (`httpqueue export --off` turns it off).")
    export_sinks: tuple[str, ...] = _setting((),
        "Where `httpqueue export` writes events: `clickhouse://`, `elasticsearch://`, `mongodb://` URLs (comma-separated).")
    export_batch: int = _setting(500,
        "Most events `httpqueue export` sends to a sink in one request.")
    export_claim_idle: float = _setting(60.0,
        "Seconds events handed to an exporter may stay unacknowledged before another exporter takes them over.")
    export_metrics_port: int = _setting(0,
        "Port on which `httpqueue export` serves its Prometheus metrics on loopback (0: off).")

    # -- etcd (cluster-wide settings)
    etcd_endpoints: tuple[str, ...] = _setting((),
        "etcd client URLs (comma-separated, e.g. `http://10.0.0.1:2379,http://10.0.0.2:2379`). Set: topic settings, schedules and the callback allow-list live in etcd, every node watches them, and cron ticks and the node registry use it; empty: all of it stays in Redis.")
    etcd_prefix: str = _setting("/httpqueue/",
        "Prefix of every etcd key httpqueue writes (deployments sharing one etcd cluster need different ones).")
    etcd_timeout: float = _setting(2.0,
        "Seconds one etcd request may take before the next endpoint is tried.")

    @classmethod
    def load(cls, overrides: t.Mapping[str, t.Any] | None = None,
             environ: t.Mapping[str, str] | None = None) -> Settings:
        """Resolve every setting through the layers described in the module docstring."""
        environ = os.environ if environ is None else environ
        layers: list[t.Mapping[str, t.Any]] = [
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
        settings = cls(**merged)
        settings.validate()
        return settings

    def replace(self, **changes: t.Any) -> Settings:
        """A copy with some settings changed (parsed and validated like the rest)."""
        return Settings.load({**self.as_dict(), **changes}, environ={})

    def as_dict(self) -> dict[str, t.Any]:
        return {s.name: getattr(self, s.name) for s in SETTINGS}

    def validate(self) -> None:
        """Refuse combinations that would break the timer's guarantees."""
        if self.rabbitmq_broker:
            self._validate_unacked_hold()
        elif self.timer_horizon + self.lease + self.callback_timeout >= self.visibility_timeout / 2:
            raise ConfigError(
                "timer_horizon + lease + callback_timeout must stay under half of visibility_timeout, "
                "or kombu would hand an ETA message out twice"
            )
        if self.shards < 1:
            raise ConfigError("shards must be at least 1")
        if self.export_max_events < 0 or self.export_batch < 1:
            raise ConfigError("export_max_events must be 0 or more and export_batch at least 1")
        if self.retry_base < 1:
            raise ConfigError("retry_base must be at least 1 second (Celery's backoff works in whole seconds)")
        if self.worker_pool not in {"threads", "prefork", "solo"}:
            raise ConfigError("worker_pool must be threads, prefork or solo")
        if self.api_server not in API_SERVERS:
            raise ConfigError(f"api_server must be one of {', '.join(API_SERVERS)}")
        if self.log_format not in {"text", "json"}:
            raise ConfigError("log_format must be text or json")
        for secret in self.signing_secrets:
            parse_secret(secret)
        for endpoint in self.etcd_endpoints:
            if not endpoint.startswith(("http://", "https://")):
                raise ConfigError(f"each HTTPQUEUE_ETCD_ENDPOINTS entry must be an http:// or https:// URL, not {endpoint!r}")
        if self.etcd_endpoints and not (self.etcd_prefix.startswith("/") and self.etcd_prefix.endswith("/")):
            raise ConfigError("etcd_prefix must start and end with / (e.g. /httpqueue/)")

    def _validate_unacked_hold(self) -> None:
        """RabbitMQ closes a channel whose message stays unacknowledged past ``consumer_timeout``.

        A delivery message is acknowledged once its tasks are handed to the
        worker's launcher, which may first wait for room: up to
        :data:`LAUNCHER_ROUNDS` rounds of callbacks, each as long as the longest
        callback timeout a task may ask for. The timer horizon is counted too,
        for a deployment that turns native delayed delivery off (then messages
        wait in worker memory, as on Redis). Half the timeout, as for Redis.
        """
        longest_attempt = max(self.callback_timeout, self.max_callback_timeout)
        hold = self.timer_horizon + self.lease + LAUNCHER_ROUNDS * longest_attempt
        if hold >= self.consumer_timeout / 2:
            raise ConfigError(
                f"with a RabbitMQ broker, timer_horizon + lease + {LAUNCHER_ROUNDS} x max_callback_timeout "
                f"({hold:g} s) must stay under half of consumer_timeout ({self.consumer_timeout:g} s), or "
                f"RabbitMQ would close the worker's channel on a message held that long; lower them or "
                f"raise RabbitMQ's consumer_timeout and HTTPQUEUE_CONSUMER_TIMEOUT with it")

    # -- derived values, computed in one place

    @property
    def rabbitmq_broker(self) -> bool:
        """Whether the broker is RabbitMQ (an ``amqp://``, ``amqps://`` or ``pyamqp://`` URL)."""
        return self.broker_url.split("://", 1)[0].lower() in AMQP_SCHEMES

    @property
    def celery_broker_url(self) -> str:
        """The broker: ``broker_url``, else the store's Redis."""
        return self.broker_url or self.redis_url

    @property
    def horizon_ms(self) -> int:
        return _ms(self.timer_horizon)

    @property
    def lease_ms(self) -> int:
        return _ms(self.lease)

    @property
    def callback_timeout_ms(self) -> int:
        return _ms(self.callback_timeout)

    @property
    def attempt_lease_ms(self) -> int:
        """How long a started attempt is leased: the callback's timeout plus the lease."""
        return _ms(self.callback_timeout + self.lease)

    @property
    def retention_ms(self) -> int:
        return _ms(self.retention)

    @property
    def dead_retention_ms(self) -> int:
        return _ms(self.dead_letter_retention)

    @property
    def direct_ms(self) -> int:
        """Created tasks due sooner than this are published at once instead of waiting for a promoter pass."""
        return _ms(max(0.5, 2 * self.promoter_interval + 0.1))

    @property
    def replica_timeout_ms(self) -> int:
        return _ms(self.create_replica_timeout)

    @property
    def topic_wait_ms(self) -> int:
        return _ms(self.topic_wait)

    @property
    def breaker_cooldown_ms(self) -> int:
        return _ms(self.breaker_cooldown)

    @property
    def breaker_cooldown_max_ms(self) -> int:
        return _ms(self.breaker_cooldown_max)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool, "tuple[str, ...]": tuple}
"""Annotation (a string: this module uses postponed annotations) -> the type values are parsed as."""

SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, _TYPES[str(f.type)], f.default, f.metadata["help"]) for f in dataclasses.fields(Settings))
"""Every setting, in declaration order (the docs' table, the environment variables)."""

_BY_NAME = {s.name: s for s in SETTINGS}


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


CONFIGURATION_PAGE = "docs/configuration.rst"
"""The documentation page that holds the table between the markers (``python -m httpqueue.config --write``)."""


def rst_table() -> str:
    """The configuration table as reST, for the documentation (``python -m httpqueue.config``)."""
    rows = [".. list-table::", "   :header-rows: 1", "", "   * - Environment variable", "     - Default", "     - Meaning"]
    for s in SETTINGS:
        default = s.default if s.default != "" else "(empty)"
        rows += [f"   * - ``{s.env}``", f"     - ``{default}``", f"     - {s.help.replace('`', '``')}"]
    return "\n".join(rows)


def with_table(page: str) -> str:
    """``page`` with the text between the table markers replaced by :func:`rst_table`."""
    head, _, rest = page.partition(TABLE_START)
    _, _, tail = rest.partition(TABLE_END)
    return f"{head}{TABLE_START}\n\n{rst_table()}\n\n{TABLE_END}{tail}"


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--write"]:
        with open(CONFIGURATION_PAGE, encoding="utf-8") as handle:
            text = with_table(handle.read())
        with open(CONFIGURATION_PAGE, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        print(rst_table())
