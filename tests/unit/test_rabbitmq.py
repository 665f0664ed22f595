"""RabbitMQ as the broker, without a broker: the Celery settings it gets and the settings it refuses."""
from __future__ import annotations

import pytest
from celery import Celery

from httpqueue import rabbitmq
from httpqueue.celery import celery_config
from httpqueue.config import ConfigError, Settings

AMQP = "amqp://guest:guest@127.0.0.1:5672/hq"


def app_for(settings: Settings) -> Celery:
    app = Celery("probe", set_as_current=False)
    app.conf.update(celery_config(settings, "redis://127.0.0.1:1/0"))
    return app


def test_an_amqp_broker_gets_quorum_queues_a_topic_exchange_and_confirms() -> None:
    config = celery_config(Settings.load({"broker_url": AMQP}, environ={}), "redis://127.0.0.1:1/0")
    assert config["broker_url"] == AMQP
    assert config["task_default_queue_type"] == "quorum"
    assert config["task_default_exchange_type"] == "topic"
    assert config["broker_transport_options"] == {"confirm_publish": True}  # nothing of kombu's Redis options


def test_native_delayed_delivery_is_decided_from_the_configuration_alone() -> None:
    """No connection is opened: the API decides as the worker does, from the same queue settings."""
    assert rabbitmq.native_delayed(app_for(Settings.load({"broker_url": AMQP}, environ={})))
    assert not rabbitmq.native_delayed(app_for(Settings.load({}, environ={})))
    redis_broker = celery_config(Settings.load({}, environ={}), "redis://127.0.0.1:1/0")
    assert "visibility_timeout" in redis_broker["broker_transport_options"]


@pytest.mark.parametrize("url, amqp", [
    (AMQP, True), ("amqps://u:p@mq.example:5671/v", True), ("pyamqp://127.0.0.1//", True),
    ("redis://127.0.0.1:1/0", False), ("sentinel://a:26379;sentinel://b:26379", False), ("", False)])
def test_rabbitmq_is_recognised_by_the_url_scheme(url: str, amqp: bool) -> None:
    assert rabbitmq.is_amqp(url) is amqp
    assert Settings.load({"broker_url": url}, environ={}).rabbitmq_broker is amqp


def test_the_redis_visibility_timeout_does_not_apply_to_rabbitmq() -> None:
    Settings.load({"broker_url": AMQP, "visibility_timeout": 60}, environ={})  # no error
    with pytest.raises(ConfigError, match="visibility_timeout"):
        Settings.load({"visibility_timeout": 60}, environ={})


def test_settings_that_would_hold_a_message_near_the_consumer_timeout_are_refused() -> None:
    with pytest.raises(ConfigError, match="consumer_timeout"):
        Settings.load({"broker_url": AMQP, "max_callback_timeout": 300}, environ={})  # 4 x 300 s > 900 s
    Settings.load({"broker_url": AMQP, "max_callback_timeout": 300, "consumer_timeout": 7200}, environ={})
    Settings.load({"max_callback_timeout": 300}, environ={})  # a Redis broker has no consumer timeout
