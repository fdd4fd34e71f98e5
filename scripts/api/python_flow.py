"""The clinic flow through the Python client that openapi-python-client generated from
openapi/waitroom.json (see scripts/api/python-client.sh): create a queue, check two patients
in, call the next one (the Urgent one), complete, read the queue, read the lag statistics,
and a 404 decoded as the Problem model; with a token, first a 401 without it, decoded as the
Problem model too. Usage: python_flow.py BASE_URL [API_TOKEN]"""

import sys
import time

from waitroom_client import AuthenticatedClient, Client
from waitroom_client.api.lag import get_lag_statistics
from waitroom_client.api.queues import (
    call_next,
    check_in,
    complete_consultation,
    create_queue,
    get_queue,
)
from waitroom_client.models import (
    CallNextRequest,
    CheckInRequest,
    CreateQueueRequest,
    PatientStatus,
    Priority,
    Problem,
)


def expect(condition, what):
    if not condition:
        raise SystemExit(f"python client flow: {what}")


def main(base_url, token=None):
    if token:
        r = get_queue.sync_detailed("cardiology", client=Client(base_url=base_url))
        expect(r.status_code == 401, f"no token: {r.status_code} {r.content!r}")
        expect(isinstance(r.parsed, Problem), f"401 decodes as Problem, got {type(r.parsed).__name__}")
        expect(r.parsed.type_.endswith("/unauthorized"), "problem type unauthorized")
        print(f"401 without a token: {r.parsed.detail} ({r.headers['www-authenticate']})")
        client = AuthenticatedClient(base_url=base_url, token=token, raise_on_unexpected_status=True)
    else:
        client = Client(base_url=base_url, raise_on_unexpected_status=True)

    r = create_queue.sync_detailed(
        client=client,
        body=CreateQueueRequest(queue_id="cardiology", name="Cardiology", max_capacity=20),
        x_actor="reception",
    )
    expect(r.status_code == 201, f"create queue: {r.status_code} {r.content!r}")
    print(f"created queue {r.parsed.queue_id} at version {r.parsed.version}, ETag {r.headers['etag']}")

    for patient_id, name, priority in [
        ("p-1", "Grace Hopper", Priority.LOW),
        ("p-2", "Ada Lovelace", Priority.URGENT),
    ]:
        r = check_in.sync_detailed(
            "cardiology",
            client=client,
            body=CheckInRequest(
                patient_id=patient_id,
                patient_name=name,
                priority=priority,
                consultation_type="General",
            ),
        )
        expect(r.status_code == 201, f"check in {patient_id}: {r.status_code} {r.content!r}")
        print(f"checked in {patient_id} ({priority.value}) at position {r.parsed.position}, version {r.parsed.version}")

    r = call_next.sync_detailed(
        "cardiology", client=client, body=CallNextRequest(consulting_room="Room 3")
    )
    expect(r.status_code == 200, f"call next: {r.status_code} {r.content!r}")
    called = r.parsed
    print(f"called {called.patient_id} ({called.priority.value}) to {called.consulting_room}")
    expect(called.patient_id == "p-2" and called.priority == Priority.URGENT, "the Urgent patient is called first")

    r = complete_consultation.sync_detailed(
        "cardiology", called.patient_id, client=client, if_match=f'"{called.version}"'
    )
    expect(r.status_code == 200, f"complete: {r.status_code} {r.content!r}")
    completed = r.parsed
    print(f"completed {called.patient_id} at version {completed.version}")

    # The read model trails the store by milliseconds.
    deadline = time.monotonic() + 15
    while True:
        r = get_queue.sync_detailed("cardiology", client=client)
        expect(r.status_code == 200, f"get queue: {r.status_code} {r.content!r}")
        queue = r.parsed
        if queue.version >= completed.version or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    waiting = [(p.patient_id, p.status.value, p.position) for p in queue.patients]
    print(f"read model: {queue.name} at version {queue.version}, ETag {r.headers['etag']}, patients {waiting}")
    expect(queue.version == completed.version, "the read model caught up")
    expect(
        len(queue.patients) == 1
        and queue.patients[0].patient_id == "p-1"
        and queue.patients[0].status == PatientStatus.WAITING,
        "only p-1 waits",
    )

    r = get_lag_statistics.sync_detailed(client=client, window_seconds=3600)
    expect(r.status_code == 200, f"lag statistics: {r.status_code} {r.content!r}")
    lag = r.parsed
    by_type = [(e.event_type.value, e.count) for e in lag.by_event]
    print(f"lag: {lag.overall.count} events, p95 {lag.overall.p_95_ms} ms, by type {by_type}")

    r = get_queue.sync_detailed("radiology", client=client)
    expect(r.status_code == 404, f"missing queue: {r.status_code}")
    expect(isinstance(r.parsed, Problem), f"404 decodes as Problem, got {type(r.parsed).__name__}")
    print(f"404: {r.parsed.status} {r.parsed.type_} ({r.parsed.detail})")
    expect(r.parsed.type_.endswith("/queue-not-found"), "problem type queue-not-found")
    print("python client flow: ok")


if __name__ == "__main__":
    main(*sys.argv[1:3])
