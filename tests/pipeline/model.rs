//! One owner for the rules: random command sequences over several queues, decided by the Rust
//! domain and appended by the store, must leave the SQL read model with the statuses,
//! positions, rooms and counts the domain itself derives from the same events. Checked
//! through the projector's step (`apply_batch`, with the events cut into random batches) and
//! through a rebuild.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use waitroom::app::Roles;
use waitroom::domain::{
    Capacity, Command, ConsultationType, ConsultingRoom, Event, MaxNoShows, PatientId, PatientName,
    PatientStatus, Priority, QueueId, QueueName, QueueState,
};
use waitroom::projector::{Delivered, WAITING_ROOM, apply_batch};
use waitroom::store::{CommandContext, Store, StoreError};
use waitroom::telemetry::Metrics;

use crate::helpers::{TestApp, isolated_settings};

const QUEUES: usize = 3;
const PATIENTS: usize = 5;

/// One step of a clinic day, on queue `queue` (an index).
#[derive(Debug, Clone)]
enum Step {
    CheckIn {
        queue: usize,
        patient: usize,
        priority: usize,
    },
    CallNext {
        queue: usize,
        room: usize,
    },
    Complete {
        queue: usize,
        patient: usize,
    },
    NoShow {
        queue: usize,
        patient: usize,
    },
    Cancel {
        queue: usize,
        patient: usize,
    },
}

/// A generated case: queue settings, the steps, and how the projector sees the events
/// (a sequence of deliveries: queue index and how far into its stream, as a fraction).
#[derive(Debug, Clone)]
struct Case {
    settings: Vec<(u32, u32)>,
    steps: Vec<Step>,
    deliveries: Vec<Vec<(usize, u8)>>,
}

fn step() -> impl Strategy<Value = Step> {
    let q = 0..QUEUES;
    let p = 0..PATIENTS;
    prop_oneof![
        7 => (q.clone(), p.clone(), 0..4usize)
            .prop_map(|(queue, patient, priority)| Step::CheckIn { queue, patient, priority }),
        4 => (q.clone(), 0..3usize).prop_map(|(queue, room)| Step::CallNext { queue, room }),
        3 => (q.clone(), p.clone()).prop_map(|(queue, patient)| Step::Complete { queue, patient }),
        3 => (q.clone(), p.clone()).prop_map(|(queue, patient)| Step::NoShow { queue, patient }),
        3 => (q, p).prop_map(|(queue, patient)| Step::Cancel { queue, patient }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec((2u32..6, 1u32..4), QUEUES),
        proptest::collection::vec(step(), 1..60),
        proptest::collection::vec(
            proptest::collection::vec((0..QUEUES, any::<u8>()), 1..4),
            0..12,
        ),
    )
        .prop_map(|(settings, steps, deliveries)| Case {
            settings,
            steps,
            deliveries,
        })
}

fn patient_id(p: usize) -> PatientId {
    PatientId::parse(&format!("p{p}")).expect("valid id")
}

fn command(step: &Step) -> (usize, Command) {
    const PRIORITIES: [&str; 4] = ["Low", "Medium", "High", "Urgent"];
    match step {
        Step::CheckIn {
            queue,
            patient,
            priority,
        } => (
            *queue,
            Command::CheckIn {
                patient_id: patient_id(*patient),
                patient_name: PatientName::parse(&format!("Patient {patient}")).unwrap(),
                priority: Priority::parse(PRIORITIES[*priority]).unwrap(),
                consultation_type: ConsultationType::parse("General").unwrap(),
                notes: None,
            },
        ),
        Step::CallNext { queue, room } => (
            *queue,
            Command::CallNext {
                consulting_room: ConsultingRoom::parse(&format!("Room {room}")).unwrap(),
            },
        ),
        Step::Complete { queue, patient } => (
            *queue,
            Command::Complete {
                patient_id: patient_id(*patient),
            },
        ),
        Step::NoShow { queue, patient } => (
            *queue,
            Command::MarkNoShow {
                patient_id: patient_id(*patient),
            },
        ),
        Step::Cancel { queue, patient } => (
            *queue,
            Command::Cancel {
                patient_id: patient_id(*patient),
            },
        ),
    }
}

fn context() -> CommandContext {
    CommandContext {
        correlation_id: "model".into(),
        causation_id: "model".into(),
        actor: "model".into(),
        idempotency: None,
        if_match: None,
    }
}

/// What a patient row of the read model should say.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    status: String,
    position: Option<i32>,
    /// Only for active patients (finished visits keep whatever room they had).
    room: Option<Option<String>>,
    no_show_count: Option<i32>,
}

/// What a queue should look like: patient rows and (waiting, called) counts.
type Expected = (BTreeMap<String, Row>, (i32, i32));

/// The domain's view of a stream: fold its events, and remember how each visit ended.
fn expected(events: &[(String, serde_json::Value)]) -> Expected {
    let mut state = QueueState::default();
    let mut finished: BTreeMap<String, &'static str> = BTreeMap::new();
    for (event_type, payload) in events {
        let event = Event::decode(event_type, payload.clone()).expect("stored events decode");
        match &event {
            Event::PatientCheckedIn(e) => {
                finished.remove(&e.patient_id);
            }
            Event::ConsultationCompleted(e) => {
                finished.insert(e.patient_id.clone(), "COMPLETED");
            }
            Event::CheckInCancelled(e) => {
                finished.insert(e.patient_id.clone(), "CANCELLED");
            }
            Event::PatientMarkedNoShow(e) if e.status == PatientStatus::NoShow => {
                finished.insert(e.patient_id.clone(), "NO_SHOW");
            }
            _ => {}
        }
        state.apply(&event);
    }
    let mut rows: BTreeMap<String, Row> = finished
        .into_iter()
        .map(|(p, status)| {
            (
                p,
                Row {
                    status: status.to_owned(),
                    position: None,
                    room: None,
                    no_show_count: None,
                },
            )
        })
        .collect();
    for p in &state.patients {
        rows.insert(
            p.patient_id.clone(),
            Row {
                status: p.status.as_str().to_owned(),
                position: state
                    .waiting_position(&p.patient_id)
                    .map(|n| i32::try_from(n).unwrap()),
                room: Some(p.consulting_room.clone()),
                no_show_count: Some(i32::try_from(p.no_show_count).unwrap()),
            },
        );
    }
    let waiting = state
        .patients
        .iter()
        .filter(|p| p.status == PatientStatus::Waiting)
        .count();
    let called = state.patients.len() - waiting;
    (
        rows,
        (
            i32::try_from(waiting).unwrap(),
            i32::try_from(called).unwrap(),
        ),
    )
}

/// The read model's view of a queue, in the same shape.
async fn projected(app: &TestApp, queue: &str) -> Expected {
    let client = app.pool.get().await.unwrap();
    let mut rows = BTreeMap::new();
    for r in client
        .query(
            "SELECT patient_id, status, position_in_queue, consulting_room, no_show_count \
             FROM waiting_patients_view WHERE queue_id = $1",
            &[&queue],
        )
        .await
        .unwrap()
    {
        let status: String = r.get(1);
        let active = status == "WAITING" || status == "CALLED";
        rows.insert(
            r.get::<_, String>(0),
            Row {
                status,
                position: r.get(2),
                room: active.then(|| r.get(3)),
                no_show_count: active.then(|| r.get(4)),
            },
        );
    }
    let counts = client
        .query_one(
            "SELECT waiting_count, called_count FROM waiting_queue_view WHERE queue_id = $1",
            &[&queue],
        )
        .await
        .unwrap();
    (rows, (counts.get(0), counts.get(1)))
}

async fn stored_events(app: &TestApp, queue: &str) -> Vec<(String, serde_json::Value)> {
    let client = app.pool.get().await.unwrap();
    client
        .query(
            "SELECT event_type, payload FROM waiting_room_events WHERE stream_id = $1 ORDER BY version",
            &[&queue],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Runs one case on fresh queues and checks the live projection; returns its queue ids.
async fn run_case(app: &TestApp, store: &Store, n: usize, case: &Case) -> Vec<String> {
    let queues: Vec<String> = (0..QUEUES).map(|q| format!("c{n}-q{q}")).collect();
    for (queue, (capacity, no_shows)) in queues.iter().zip(&case.settings) {
        let create = Command::CreateQueue {
            queue_id: QueueId::parse(queue).unwrap(),
            name: QueueName::parse("Model").unwrap(),
            max_capacity: Capacity::parse(i64::from(*capacity)).unwrap(),
            max_no_shows: MaxNoShows::parse(i64::from(*no_shows)).unwrap(),
        };
        store
            .execute(queue, &create, &context(), |_| ())
            .await
            .unwrap();
    }
    for step in &case.steps {
        let (queue, command) = command(step);
        match store
            .execute(&queues[queue], &command, &context(), |_| ())
            .await
        {
            Ok(_) | Err(StoreError::Rejected(_)) => {}
            Err(e) => panic!("{step:?}: {e}"),
        }
    }
    let mut tops = Vec::new();
    for queue in &queues {
        tops.push(stored_events(app, queue).await.len());
    }
    // The projector sees the streams in random slices (duplicates and gaps included), then
    // everything.
    for batch in &case.deliveries {
        let deliveries: Vec<Delivered> = batch
            .iter()
            .map(|(q, f)| {
                let version = 1 + tops[*q] * usize::from(*f) / 256;
                Delivered::new(queues[*q].clone(), i32::try_from(version).unwrap())
            })
            .collect();
        apply_batch(&app.pool, WAITING_ROOM, &deliveries)
            .await
            .unwrap();
    }
    let all: Vec<Delivered> = queues
        .iter()
        .zip(&tops)
        .map(|(q, top)| Delivered::new(q.clone(), i32::try_from(*top).unwrap()))
        .collect();
    let outcome = apply_batch(&app.pool, WAITING_ROOM, &all).await.unwrap();
    assert!(outcome.parked.is_empty(), "no stream parks: {outcome:?}");
    for queue in &queues {
        let want = expected(&stored_events(app, queue).await);
        let got = projected(app, queue).await;
        assert_eq!(got, want, "queue {queue} after {:?}", case.steps);
    }
    queues
}

#[test]
fn the_read_model_agrees_with_the_domain_live_and_after_a_rebuild() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(TestApp::spawn_with(isolated_settings(), Roles::API));
    let store = Store::new(app.pool.clone(), Arc::new(Metrics::new()));
    let counter = AtomicUsize::new(0);
    let all_queues = std::sync::Mutex::new(Vec::new());
    let mut runner = TestRunner::new(Config {
        cases: 40,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&case(), |case| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let queues = runtime.block_on(run_case(&app, &store, n, &case));
            all_queues.lock().unwrap().extend(queues);
            Ok(())
        })
        .unwrap();

    // A rebuild replays every stream in one go (whole streams per batch) to the same result.
    let all_queues = all_queues.into_inner().unwrap();
    runtime.block_on(async {
        waitroom::projector::rebuild::rebuild(&app.pool, WAITING_ROOM, |_, _| {})
            .await
            .unwrap();
        for queue in &all_queues {
            let want = expected(&stored_events(&app, queue).await);
            assert_eq!(
                projected(&app, queue).await,
                want,
                "queue {queue} after a rebuild"
            );
        }
    });
    drop(app);
}
