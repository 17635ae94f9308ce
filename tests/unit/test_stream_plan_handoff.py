"""A stream's own inputs (its target languages) go from the manager to its worker process as one typed value, JSON
on the way: a list end to end, validated by the child before it builds anything, the service's settings unchanged."""

from __future__ import annotations

import json
import multiprocessing
from multiprocessing.connection import Connection
from typing import Any

import pytest
from media_fakes import FakeClient, FakeFleet, make_manager

from livedub.media.metrics import WorkerMetrics
from livedub.media.pipeline.plan import StreamInputs, StreamInputsError, StreamPlan
from livedub.media.service.worker_process import ProcessRunner, _child
from livedub.media.settings import MediaSettings

pytestmark = pytest.mark.unit


def settings(**values: object) -> MediaSettings:
    return MediaSettings(_env_file=None, RTMP_BASE_URL="rtmp://h/live", **values)  # type: ignore[call-arg, arg-type]


def test_the_inputs_round_trip_as_a_json_list() -> None:
    inputs = StreamInputs(targets=("fr", "it"))
    text = inputs.to_json()
    assert json.loads(text) == {"targets": ["fr", "it"]}
    assert StreamInputs.from_json("abc", text) == inputs


def test_the_plan_of_the_inputs_is_the_plan_the_worker_builds_from_its_settings() -> None:
    service = settings(WORKER_TARGET_LANGUAGES="es", OUTPUT_DELAY_MS=4000)
    inputs = StreamInputs(targets=("fr", "it"))
    plan = StreamPlan.build("abc", service, inputs)
    assert plan.targets == ("fr", "it") and plan.rtmp_urls()["out"] == "rtmp://h/live/abc/out"
    assert plan.outputs_of("fr")[0].name == "out" and plan.delay_s == 4.0
    assert StreamPlan.for_stream("abc", service).targets == ("es",)  # the service's own settings stay its defaults


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("not json", "Invalid JSON"),
        ("{}", "targets: Field required"),
        ('{"targets": []}', "at least 1 item"),
        ('{"targets": "es,fr"}', "targets: Input should be a valid array"),
        ('{"targets": ["es,fr"]}', "targets.0: String should match pattern"),
        ('{"targets": ["es", 7]}', "targets.1: Input should be a valid string"),
        ('{"targets": ["es", "es"]}', "target languages named twice: es"),
        ('{"targets": ["es"], "delay_s": 3}', "delay_s: Extra inputs are not permitted"),
    ],
)
def test_a_malformed_value_is_refused_naming_the_stream_and_the_fault(text: str, fault: str) -> None:
    with pytest.raises(StreamInputsError, match=r"^stream abc: malformed stream inputs") as refused:
        StreamInputs.from_json("abc", text)
    assert fault in str(refused.value)


def test_a_stream_without_operator_targets_gets_the_service_defaults() -> None:
    manager = make_manager(FakeFleet(), WORKER_TARGET_LANGUAGES="es,fr")
    manager.set_next_targets("chosen", ["it"])
    assert manager.inputs_for("plain") == StreamInputs(targets=("es", "fr"))
    assert manager.inputs_for("chosen") == StreamInputs(targets=("it",))
    one = make_manager(FakeFleet(), WORKER_TARGET_LANGUAGE="de")
    assert one.inputs_for("plain") == StreamInputs(targets=("de",))


def test_a_process_worker_gets_the_service_settings_and_its_own_inputs() -> None:
    fleet = FakeFleet()
    manager = make_manager(fleet, WORKER_TARGET_LANGUAGES="es")
    manager.set_next_targets("abc", ["fr", "it"])
    handle = manager._create_process("abc", "hook")  # built only: nothing is spawned before run()
    assert isinstance(handle.runner, ProcessRunner)
    assert handle.runner.settings is manager.settings
    assert handle.runner.inputs == handle.inputs == StreamInputs(targets=("fr", "it"))


async def test_a_worker_on_a_thread_is_built_with_its_targets_and_listed_with_them() -> None:
    seen: list[list[str]] = []
    fleet = FakeFleet()
    build_runner = fleet.runner

    def runner(plan: StreamPlan, service: MediaSettings, client: Any, metrics: WorkerMetrics) -> Any:
        seen.append(list(plan.targets))
        assert service.targets == ["es"]  # the service's settings go unchanged: the stream's targets are in its plan
        return build_runner(plan, service, client, metrics)

    manager = make_manager(fleet, WORKER_TARGET_LANGUAGES="es")
    manager._runner_factory = runner
    manager.set_next_targets("abc", ["fr", "it"])
    try:
        assert (await manager.start_stream("abc")).accepted
        assert (await manager.start_stream("plain")).accepted
        listed = {entry["stream_id"]: entry["target_languages"] for entry in manager.list_streams()}
    finally:
        await manager.shutdown()
    assert seen == [["fr", "it"], ["es"]]
    assert listed == {"abc": ["fr", "it"], "plain": ["es"]}


# --- the child's side, run here on a pipe (no process) ---


class EndsAtOnce:
    def __init__(self) -> None:
        self.state = "starting"

    async def run(self) -> None:
        self.state = "stopped"

    def stop(self) -> None: ...

    def status(self) -> dict[str, Any]:
        return {"state": self.state}

    def hold_output(self) -> None: ...

    def release_output(self) -> None: ...


async def run_child(inputs_json: str) -> tuple[list[list[str]], list[Any]]:
    """The messages the child sends its parent, and the targets its factories were given."""
    built: list[list[str]] = []

    def runner(plan: StreamPlan, service: MediaSettings, client: Any, metrics: WorkerMetrics) -> Any:
        built.append(list(plan.targets))
        return EndsAtOnce()

    def client(plan: StreamPlan, service: MediaSettings, metrics: WorkerMetrics) -> Any:
        built.append(list(plan.targets))
        return FakeClient()

    parent, child = multiprocessing.Pipe()
    await _child("abc", settings(WORKER_TARGET_LANGUAGES="es"), inputs_json, runner, client, child, 60.0)
    return built, drain(parent)


def drain(conn: Connection) -> list[Any]:
    messages = []
    while conn.poll(0):
        messages.append(conn.recv())
    return messages


async def test_the_child_builds_its_worker_from_the_inputs() -> None:
    built, messages = await run_child(StreamInputs(targets=("fr", "it")).to_json())
    assert built == [["fr", "it"], ["fr", "it"]]
    assert messages[-1] == ("exit", None)


async def test_the_child_refuses_a_malformed_value_before_building_anything() -> None:
    built, messages = await run_child('{"targets": "fr,it"}')
    assert built == []
    [(kind, error)] = messages
    assert kind == "exit"
    assert error.startswith("StreamInputsError: stream abc: malformed stream inputs")
    assert "targets: Input should be a valid array" in error
