//! The queue aggregate tested as pure functions, in the given / when / then form:
//! `given(events)` folds a stream into a state, `.when(command)` decides at a fixed
//! `now`, and each test asserts the exact events or the exact rejection.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;

use super::events::{
    PatientCalled, PatientCheckInCancelled, PatientCheckedIn as CheckedIn,
    PatientConsultationCompleted, PatientMarkedNoShow, WaitingQueueCreated,
};
use super::*;

const QUEUE: &str = "clinic-a";
const ROOM: &str = "Room 3";

// ---------------------------------------------------------------------------
// given / when / then helpers
// ---------------------------------------------------------------------------

/// The instant every command is decided at.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
}

/// `minutes` after 08:00 on the same morning, i.e. before `now`.
fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 8, 0, 0).unwrap() + Duration::minutes(minutes)
}

fn given(events: Vec<Event>) -> QueueState {
    QueueState::from_events(&events)
}

trait When {
    fn when(&self, command: Command) -> Result<Vec<Event>, Rejection>;
    /// Decides `command` and folds the resulting events into a copy of the state.
    fn after(&self, command: Command) -> QueueState;
}

impl When for QueueState {
    fn when(&self, command: Command) -> Result<Vec<Event>, Rejection> {
        self.decide(&command, now())
    }

    fn after(&self, command: Command) -> QueueState {
        let mut state = self.clone();
        for event in self.when(command).expect("command accepted") {
            state.apply(&event);
        }
        state
    }
}

fn name_of(patient: &str) -> String {
    format!("Patient {patient}")
}

// Commands.

fn create_queue(max_capacity: i64, max_no_shows: MaxNoShows) -> Command {
    Command::CreateQueue {
        queue_id: QueueId::parse(QUEUE).unwrap(),
        name: QueueName::parse("Morning clinic").unwrap(),
        max_capacity: Capacity::parse(max_capacity).unwrap(),
        max_no_shows,
    }
}

fn check_in(patient: &str, priority: Priority) -> Command {
    Command::CheckIn {
        patient_id: PatientId::parse(patient).unwrap(),
        patient_name: PatientName::parse(&name_of(patient)).unwrap(),
        priority,
        consultation_type: ConsultationType::parse("General").unwrap(),
        notes: None,
    }
}

fn call_next() -> Command {
    Command::CallNext {
        consulting_room: ConsultingRoom::parse(ROOM).unwrap(),
    }
}

fn complete(patient: &str) -> Command {
    Command::Complete {
        patient_id: PatientId::parse(patient).unwrap(),
    }
}

fn mark_no_show(patient: &str) -> Command {
    Command::MarkNoShow {
        patient_id: PatientId::parse(patient).unwrap(),
    }
}

fn cancel(patient: &str) -> Command {
    Command::Cancel {
        patient_id: PatientId::parse(patient).unwrap(),
    }
}

// Events, shaped exactly as `decide` emits them.

fn queue_created(max_capacity: u32, max_no_shows: u32) -> Event {
    Event::QueueCreated(WaitingQueueCreated {
        queue_id: QUEUE.into(),
        name: "Morning clinic".into(),
        max_capacity,
        max_no_shows,
        created_at: at(0),
    })
}

/// A queue with room for 10 and the default no-show limit.
fn open_queue() -> Event {
    queue_created(10, 2)
}

fn checked_in(patient: &str, priority: Priority, checked_in_at: DateTime<Utc>) -> Event {
    Event::PatientCheckedIn(CheckedIn {
        queue_id: QUEUE.into(),
        patient_id: patient.into(),
        patient_name: name_of(patient),
        priority,
        consultation_type: "General".into(),
        notes: None,
        checked_in_at,
    })
}

fn called(patient: &str, priority: Priority, called_at: DateTime<Utc>) -> Event {
    Event::PatientCalled(PatientCalled {
        queue_id: QUEUE.into(),
        patient_id: patient.into(),
        patient_name: name_of(patient),
        priority,
        consultation_type: "General".into(),
        consulting_room: ROOM.into(),
        called_at,
    })
}

fn completed(patient: &str, completed_at: DateTime<Utc>) -> Event {
    Event::ConsultationCompleted(PatientConsultationCompleted {
        queue_id: QUEUE.into(),
        patient_id: patient.into(),
        completed_at,
    })
}

fn marked_no_show(
    patient: &str,
    no_show_count: u32,
    status: PatientStatus,
    marked_at: DateTime<Utc>,
) -> Event {
    Event::PatientMarkedNoShow(PatientMarkedNoShow {
        queue_id: QUEUE.into(),
        patient_id: patient.into(),
        no_show_count,
        status,
        marked_at,
    })
}

fn cancelled(patient: &str, previous_status: PatientStatus, cancelled_at: DateTime<Utc>) -> Event {
    Event::CheckInCancelled(PatientCheckInCancelled {
        queue_id: QUEUE.into(),
        patient_id: patient.into(),
        previous_status,
        cancelled_at,
    })
}

fn call_order(state: &QueueState) -> Vec<&str> {
    state
        .call_order()
        .iter()
        .map(|p| p.patient_id.as_str())
        .collect()
}

// ---------------------------------------------------------------------------
// Create queue
// ---------------------------------------------------------------------------

#[test]
fn creating_a_queue_emits_waiting_queue_created_with_its_settings() {
    let events = given(vec![]).when(create_queue(25, MaxNoShows::parse(3).unwrap()));

    assert_eq!(
        events,
        Ok(vec![Event::QueueCreated(WaitingQueueCreated {
            queue_id: QUEUE.into(),
            name: "Morning clinic".into(),
            max_capacity: 25,
            max_no_shows: 3,
            created_at: now(),
        })])
    );
}

#[test]
fn creating_a_queue_that_already_exists_is_rejected() {
    let rejection = given(vec![open_queue()]).when(create_queue(25, MaxNoShows::DEFAULT));

    assert_eq!(
        rejection,
        Err(Rejection::QueueAlreadyExists {
            queue_id: QUEUE.into()
        })
    );
}

#[test]
fn max_no_shows_defaults_to_two() {
    assert_eq!(MaxNoShows::default(), MaxNoShows::DEFAULT);
    assert_eq!(MaxNoShows::default().get(), 2);

    let state = given(vec![]).after(create_queue(5, MaxNoShows::default()));

    assert_eq!(state.settings.unwrap().max_no_shows, 2);
}

#[test]
fn every_other_command_on_a_missing_queue_is_rejected_as_queue_not_found() {
    let commands = [
        check_in("p1", Priority::Medium),
        call_next(),
        complete("p1"),
        mark_no_show("p1"),
        cancel("p1"),
    ];

    for command in commands {
        assert_eq!(
            given(vec![]).when(command.clone()),
            Err(Rejection::QueueNotFound),
            "{command:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Check in
// ---------------------------------------------------------------------------

#[test]
fn checking_in_emits_patient_checked_in_with_priority_and_notes() {
    let command = Command::CheckIn {
        patient_id: PatientId::parse("p1").unwrap(),
        patient_name: PatientName::parse("  Ada Lovelace ").unwrap(),
        priority: Priority::parse("high").unwrap(),
        consultation_type: ConsultationType::parse("Cardiology").unwrap(),
        notes: Notes::parse(Some(" chest pain ")).unwrap(),
    };

    let events = given(vec![open_queue()]).when(command);

    assert_eq!(
        events,
        Ok(vec![Event::PatientCheckedIn(CheckedIn {
            queue_id: QUEUE.into(),
            patient_id: "p1".into(),
            patient_name: "Ada Lovelace".into(),
            priority: Priority::High,
            consultation_type: "Cardiology".into(),
            notes: Some("chest pain".into()),
            checked_in_at: now(),
        })])
    );
}

#[test]
fn checking_in_without_notes_records_none() {
    let events = given(vec![open_queue()]).when(check_in("p1", Priority::Low));

    assert_eq!(events, Ok(vec![checked_in("p1", Priority::Low, now())]));
}

#[test]
fn a_checked_in_patient_is_waiting_and_queued_at_check_in_time() {
    let state = given(vec![open_queue()]).after(check_in("p1", Priority::Medium));

    let patient = state.patient("p1").unwrap();
    assert_eq!(patient.status, PatientStatus::Waiting);
    assert_eq!(patient.queued_at, now());
    assert_eq!(patient.no_show_count, 0);
    assert_eq!(patient.consulting_room, None);
}

#[test]
fn check_in_is_rejected_when_the_patient_is_already_waiting() {
    let rejection = given(vec![open_queue(), checked_in("p1", Priority::Low, at(1))])
        .when(check_in("p1", Priority::Urgent));

    assert_eq!(
        rejection,
        Err(Rejection::AlreadyCheckedIn {
            patient_id: "p1".into(),
            status: PatientStatus::Waiting,
        })
    );
}

#[test]
fn check_in_is_rejected_when_the_patient_is_already_called() {
    let rejection = given(vec![
        open_queue(),
        checked_in("p1", Priority::Low, at(1)),
        called("p1", Priority::Low, at(2)),
    ])
    .when(check_in("p1", Priority::Low));

    assert_eq!(
        rejection,
        Err(Rejection::AlreadyCheckedIn {
            patient_id: "p1".into(),
            status: PatientStatus::Called,
        })
    );
}

#[test]
fn check_in_is_rejected_when_the_queue_is_full() {
    // One waiting and one called patient: both hold a place.
    let rejection = given(vec![
        queue_created(2, 2),
        checked_in("p1", Priority::Low, at(1)),
        checked_in("p2", Priority::Low, at(2)),
        called("p1", Priority::Low, at(3)),
    ])
    .when(check_in("p3", Priority::Urgent));

    assert_eq!(
        rejection,
        Err(Rejection::QueueFull {
            active: 2,
            capacity: 2
        })
    );
}

#[test]
fn check_in_is_accepted_while_one_place_is_left() {
    let events = given(vec![
        queue_created(2, 2),
        checked_in("p1", Priority::Low, at(1)),
    ])
    .when(check_in("p2", Priority::Low));

    assert_eq!(events, Ok(vec![checked_in("p2", Priority::Low, now())]));
}

#[test]
fn completed_cancelled_and_no_show_patients_do_not_count_toward_capacity() {
    let state = given(vec![
        queue_created(1, 1),
        checked_in("done", Priority::Low, at(1)),
        called("done", Priority::Low, at(2)),
        completed("done", at(3)),
        checked_in("gone", Priority::Low, at(4)),
        cancelled("gone", PatientStatus::Waiting, at(5)),
        checked_in("absent", Priority::Low, at(6)),
        called("absent", Priority::Low, at(7)),
        marked_no_show("absent", 1, PatientStatus::NoShow, at(8)),
    ]);

    assert_eq!(
        state.when(check_in("p4", Priority::Low)),
        Ok(vec![checked_in("p4", Priority::Low, now())])
    );
}

#[test]
fn a_patient_who_completed_may_check_in_again() {
    let events = given(vec![
        open_queue(),
        checked_in("p1", Priority::Low, at(1)),
        called("p1", Priority::Low, at(2)),
        completed("p1", at(3)),
    ])
    .when(check_in("p1", Priority::High));

    assert_eq!(events, Ok(vec![checked_in("p1", Priority::High, now())]));
}

#[test]
fn a_patient_whose_check_in_was_cancelled_may_check_in_again() {
    let events = given(vec![
        open_queue(),
        checked_in("p1", Priority::Low, at(1)),
        cancelled("p1", PatientStatus::Waiting, at(2)),
    ])
    .when(check_in("p1", Priority::Low));

    assert_eq!(events, Ok(vec![checked_in("p1", Priority::Low, now())]));
}

#[test]
fn a_patient_who_ended_as_no_show_may_check_in_again_with_a_fresh_no_show_count() {
    let state = given(vec![
        open_queue(),
        checked_in("p1", Priority::Medium, at(1)),
        called("p1", Priority::Medium, at(2)),
        marked_no_show("p1", 1, PatientStatus::Waiting, at(3)),
        called("p1", Priority::Medium, at(4)),
        marked_no_show("p1", 2, PatientStatus::NoShow, at(5)),
    ]);

    assert_eq!(
        state.when(check_in("p1", Priority::Medium)),
        Ok(vec![checked_in("p1", Priority::Medium, now())])
    );

    let state = state.after(check_in("p1", Priority::Medium));
    let patient = state.patient("p1").unwrap();
    assert_eq!(patient.status, PatientStatus::Waiting);
    assert_eq!(patient.no_show_count, 0);
}

#[test]
fn a_patient_sent_back_by_a_no_show_cannot_check_in_twice() {
    let rejection = given(vec![
        open_queue(),
        checked_in("p1", Priority::Medium, at(1)),
        called("p1", Priority::Medium, at(2)),
        marked_no_show("p1", 1, PatientStatus::Waiting, at(3)),
    ])
    .when(check_in("p1", Priority::Medium));

    assert_eq!(
        rejection,
        Err(Rejection::AlreadyCheckedIn {
            patient_id: "p1".into(),
            status: PatientStatus::Waiting,
        })
    );
}

// ---------------------------------------------------------------------------
// Call next
// ---------------------------------------------------------------------------

#[test]
fn call_next_calls_the_highest_priority_waiting_patient_to_the_consulting_room() {
    let events = given(vec![
        open_queue(),
        checked_in("low", Priority::Low, at(1)),
        checked_in("high", Priority::High, at(2)),
        checked_in("medium", Priority::Medium, at(3)),
    ])
    .when(call_next());

    assert_eq!(events, Ok(vec![called("high", Priority::High, now())]));
}

#[test]
fn patients_are_called_urgent_then_high_then_medium_then_low() {
    let state = given(vec![
        open_queue(),
        checked_in("low", Priority::Low, at(1)),
        checked_in("medium", Priority::Medium, at(2)),
        checked_in("high", Priority::High, at(3)),
        checked_in("urgent", Priority::Urgent, at(4)),
    ]);

    assert_eq!(call_order(&state), ["urgent", "high", "medium", "low"]);
    assert_eq!(
        state.when(call_next()),
        Ok(vec![called("urgent", Priority::Urgent, now())])
    );
}

#[test]
fn among_equal_priority_the_earliest_queued_patient_is_called_first() {
    // Stream order deliberately disagrees with queue time.
    let events = given(vec![
        open_queue(),
        checked_in("later", Priority::Medium, at(5)),
        checked_in("earlier", Priority::Medium, at(1)),
    ])
    .when(call_next());

    assert_eq!(events, Ok(vec![called("earlier", Priority::Medium, now())]));
}

#[test]
fn among_equal_queue_times_the_earlier_stream_version_is_called_first() {
    let state = given(vec![
        open_queue(),
        checked_in("zed", Priority::Medium, at(1)),
        checked_in("amy", Priority::Medium, at(1)),
    ]);
    assert_eq!(call_order(&state), ["zed", "amy"]);

    // zed was checked in first but re-queued by a no-show at amy's queue time, after amy's check-in.
    let state = given(vec![
        open_queue(),
        checked_in("zed", Priority::Medium, at(1)),
        called("zed", Priority::Medium, at(2)),
        checked_in("amy", Priority::Medium, at(3)),
        marked_no_show("zed", 1, PatientStatus::Waiting, at(3)),
    ]);
    assert_eq!(call_order(&state), ["amy", "zed"]);
    assert_eq!(
        state.when(call_next()),
        Ok(vec![called("amy", Priority::Medium, now())])
    );
}

#[test]
fn call_next_is_rejected_when_nobody_is_in_the_queue() {
    assert_eq!(
        given(vec![open_queue()]).when(call_next()),
        Err(Rejection::QueueEmpty)
    );
}

#[test]
fn call_next_is_rejected_when_everyone_active_is_already_called() {
    let rejection = given(vec![
        open_queue(),
        checked_in("p1", Priority::Low, at(1)),
        called("p1", Priority::Low, at(2)),
    ])
    .when(call_next());

    assert_eq!(rejection, Err(Rejection::QueueEmpty));
}

#[test]
fn a_called_patient_has_a_consulting_room_and_leaves_the_call_order() {
    let state = given(vec![
        open_queue(),
        checked_in("p1", Priority::High, at(1)),
        checked_in("p2", Priority::Low, at(2)),
    ])
    .after(call_next());

    let patient = state.patient("p1").unwrap();
    assert_eq!(patient.status, PatientStatus::Called);
    assert_eq!(patient.consulting_room.as_deref(), Some(ROOM));
    assert_eq!(call_order(&state), ["p2"]);
    assert_eq!(
        state.when(call_next()),
        Ok(vec![called("p2", Priority::Low, now())])
    );
}

// ---------------------------------------------------------------------------
// Complete
// ---------------------------------------------------------------------------

#[test]
fn completing_a_called_patient_emits_consultation_completed_and_ends_the_visit() {
    let state = given(vec![
        open_queue(),
        checked_in("p1", Priority::Low, at(1)),
        called("p1", Priority::Low, at(2)),
    ]);

    assert_eq!(state.when(complete("p1")), Ok(vec![completed("p1", now())]));
    assert_eq!(state.after(complete("p1")).patient("p1"), None);
}

#[test]
fn completing_a_waiting_patient_is_rejected_because_they_must_be_called() {
    let rejection =
        given(vec![open_queue(), checked_in("p1", Priority::Low, at(1))]).when(complete("p1"));

    assert_eq!(
        rejection,
        Err(Rejection::InvalidPatientState {
            patient_id: "p1".into(),
            status: PatientStatus::Waiting,
            expected: "CALLED".into(),
        })
    );
}

#[test]
fn completing_an_unknown_patient_is_rejected_as_patient_not_found() {
    let rejection =
        given(vec![open_queue(), checked_in("p1", Priority::Low, at(1))]).when(complete("p2"));

    assert_eq!(
        rejection,
        Err(Rejection::PatientNotFound {
            patient_id: "p2".into()
        })
    );
}

#[test]
fn completing_a_patient_whose_visit_already_ended_is_rejected_as_patient_not_found() {
    let rejection = given(vec![
        open_queue(),
        checked_in("p1", Priority::Low, at(1)),
        called("p1", Priority::Low, at(2)),
        completed("p1", at(3)),
    ])
    .when(complete("p1"));

    assert_eq!(
        rejection,
        Err(Rejection::PatientNotFound {
            patient_id: "p1".into()
        })
    );
}

// ---------------------------------------------------------------------------
// No-show
// ---------------------------------------------------------------------------

#[test]
fn a_first_no_show_sends_the_patient_back_to_waiting() {
    let events = given(vec![
        open_queue(),
        checked_in("p1", Priority::Medium, at(1)),
        called("p1", Priority::Medium, at(2)),
    ])
    .when(mark_no_show("p1"));

    assert_eq!(
        events,
        Ok(vec![marked_no_show("p1", 1, PatientStatus::Waiting, now())])
    );
}

#[test]
fn a_patient_sent_back_by_a_no_show_queues_behind_patients_of_the_same_priority() {
    let state = given(vec![
        open_queue(),
        checked_in("p1", Priority::Medium, at(1)),
        checked_in("p2", Priority::Medium, at(2)),
        // Same queue time as the no-show below: stream order must still put p3 first.
        checked_in("p3", Priority::Medium, now()),
        checked_in("p4", Priority::Low, at(3)),
        called("p1", Priority::Medium, at(4)),
    ])
    .after(mark_no_show("p1"));

    let patient = state.patient("p1").unwrap();
    assert_eq!(patient.status, PatientStatus::Waiting);
    assert_eq!(patient.no_show_count, 1);
    assert_eq!(patient.queued_at, now());
    assert_eq!(patient.consulting_room, None);
    assert_eq!(call_order(&state), ["p2", "p3", "p1", "p4"]);
}

#[test]
fn a_second_no_show_ends_the_visit_as_no_show() {
    let state = given(vec![
        open_queue(),
        checked_in("p1", Priority::Medium, at(1)),
        called("p1", Priority::Medium, at(2)),
        marked_no_show("p1", 1, PatientStatus::Waiting, at(3)),
        called("p1", Priority::Medium, at(4)),
    ]);

    assert_eq!(
        state.when(mark_no_show("p1")),
        Ok(vec![marked_no_show("p1", 2, PatientStatus::NoShow, now())])
    );
    assert_eq!(state.after(mark_no_show("p1")).patient("p1"), None);
}

#[test]
fn a_visit_ended_by_no_shows_frees_its_place() {
    let state = given(vec![
        queue_created(1, 2),
        checked_in("p1", Priority::Medium, at(1)),
        called("p1", Priority::Medium, at(2)),
        marked_no_show("p1", 1, PatientStatus::Waiting, at(3)),
        called("p1", Priority::Medium, at(4)),
    ]);
    assert_eq!(
        state.when(check_in("p2", Priority::Low)),
        Err(Rejection::QueueFull {
            active: 1,
            capacity: 1
        })
    );

    let state = state.after(mark_no_show("p1"));

    assert_eq!(
        state.when(check_in("p2", Priority::Low)),
        Ok(vec![checked_in("p2", Priority::Low, now())])
    );
}

#[test]
fn with_max_no_shows_of_one_the_first_no_show_ends_the_visit() {
    let events = given(vec![
        queue_created(10, 1),
        checked_in("p1", Priority::Medium, at(1)),
        called("p1", Priority::Medium, at(2)),
    ])
    .when(mark_no_show("p1"));

    assert_eq!(
        events,
        Ok(vec![marked_no_show("p1", 1, PatientStatus::NoShow, now())])
    );
}

#[test]
fn marking_a_waiting_patient_as_no_show_is_rejected_because_they_must_be_called() {
    let rejection =
        given(vec![open_queue(), checked_in("p1", Priority::Low, at(1))]).when(mark_no_show("p1"));

    assert_eq!(
        rejection,
        Err(Rejection::InvalidPatientState {
            patient_id: "p1".into(),
            status: PatientStatus::Waiting,
            expected: "CALLED".into(),
        })
    );
}

#[test]
fn marking_an_unknown_patient_as_no_show_is_rejected_as_patient_not_found() {
    let rejection = given(vec![open_queue()]).when(mark_no_show("p1"));

    assert_eq!(
        rejection,
        Err(Rejection::PatientNotFound {
            patient_id: "p1".into()
        })
    );
}

// ---------------------------------------------------------------------------
// Cancel
// ---------------------------------------------------------------------------

#[test]
fn cancelling_a_waiting_patient_records_waiting_as_the_previous_status() {
    let events =
        given(vec![open_queue(), checked_in("p1", Priority::Low, at(1))]).when(cancel("p1"));

    assert_eq!(
        events,
        Ok(vec![cancelled("p1", PatientStatus::Waiting, now())])
    );
}

#[test]
fn cancelling_a_called_patient_records_called_as_the_previous_status() {
    let events = given(vec![
        open_queue(),
        checked_in("p1", Priority::Low, at(1)),
        called("p1", Priority::Low, at(2)),
    ])
    .when(cancel("p1"));

    assert_eq!(
        events,
        Ok(vec![cancelled("p1", PatientStatus::Called, now())])
    );
}

#[test]
fn cancelling_a_patient_without_an_active_visit_is_rejected_as_patient_not_found() {
    let state = given(vec![
        open_queue(),
        checked_in("done", Priority::Low, at(1)),
        called("done", Priority::Low, at(2)),
        completed("done", at(3)),
        checked_in("gone", Priority::Low, at(4)),
        cancelled("gone", PatientStatus::Waiting, at(5)),
        checked_in("absent", Priority::Low, at(6)),
        called("absent", Priority::Low, at(7)),
        marked_no_show("absent", 1, PatientStatus::Waiting, at(8)),
        called("absent", Priority::Low, at(9)),
        marked_no_show("absent", 2, PatientStatus::NoShow, at(10)),
    ]);

    for patient in ["done", "gone", "absent", "stranger"] {
        assert_eq!(
            state.when(cancel(patient)),
            Err(Rejection::PatientNotFound {
                patient_id: patient.into()
            }),
            "{patient}"
        );
    }
}

#[test]
fn cancelling_frees_the_patients_place() {
    let state = given(vec![
        queue_created(1, 2),
        checked_in("p1", Priority::Low, at(1)),
    ])
    .after(cancel("p1"));

    assert!(state.patients.is_empty());
    assert_eq!(
        state.when(check_in("p2", Priority::Low)),
        Ok(vec![checked_in("p2", Priority::Low, now())])
    );
}

// ---------------------------------------------------------------------------
// Waiting position
// ---------------------------------------------------------------------------

#[test]
fn waiting_position_is_one_based_and_follows_call_order() {
    let state = given(vec![
        open_queue(),
        checked_in("low", Priority::Low, at(1)),
        checked_in("urgent", Priority::Urgent, at(2)),
        checked_in("medium", Priority::Medium, at(3)),
    ]);

    assert_eq!(state.waiting_position("urgent"), Some(1));
    assert_eq!(state.waiting_position("medium"), Some(2));
    assert_eq!(state.waiting_position("low"), Some(3));
}

#[test]
fn waiting_position_is_none_for_called_and_unknown_patients() {
    let state = given(vec![
        open_queue(),
        checked_in("p1", Priority::High, at(1)),
        checked_in("p2", Priority::Low, at(2)),
        called("p1", Priority::High, at(3)),
    ]);

    assert_eq!(state.waiting_position("p1"), None);
    assert_eq!(state.waiting_position("p2"), Some(1));
    assert_eq!(state.waiting_position("stranger"), None);
}

// ---------------------------------------------------------------------------
// Apply and version
// ---------------------------------------------------------------------------

#[test]
fn an_empty_stream_is_a_queue_that_does_not_exist_yet() {
    assert_eq!(given(vec![]), QueueState::default());
    assert_eq!(given(vec![]).version, 0);
    assert_eq!(given(vec![]).settings, None);
}

#[test]
fn applying_an_event_increments_the_version() {
    let mut state = given(vec![open_queue()]);
    assert_eq!(state.version, 1);

    state.apply(&checked_in("p1", Priority::Low, at(1)));

    assert_eq!(state.version, 2);
    assert_eq!(state.patient("p1").unwrap().queue_seq, 2);
}

#[test]
fn folding_n_events_gives_version_n() {
    let events = vec![
        open_queue(),
        checked_in("p1", Priority::Low, at(1)),
        checked_in("p2", Priority::Low, at(2)),
        called("p1", Priority::Low, at(3)),
        marked_no_show("p1", 1, PatientStatus::Waiting, at(4)),
        cancelled("p2", PatientStatus::Waiting, at(5)),
    ];

    assert_eq!(QueueState::from_events(&events).version, 6);
}

#[test]
fn the_state_holds_only_active_patients() {
    let state = given(vec![open_queue()])
        .after(check_in("p1", Priority::Low))
        .after(call_next())
        .after(complete("p1"));

    assert_eq!(state.version, 4);
    assert!(state.patients.is_empty());
}

#[test]
fn the_state_round_trips_through_its_json_snapshot() {
    let state = given(vec![
        open_queue(),
        checked_in("p1", Priority::Urgent, at(1)),
        checked_in("p2", Priority::Low, at(2)),
        called("p1", Priority::Urgent, at(3)),
    ]);

    let snapshot = serde_json::to_value(&state).unwrap();

    assert_eq!(snapshot["patients"][0]["status"], "CALLED");
    assert_eq!(
        serde_json::from_value::<QueueState>(snapshot).unwrap(),
        state
    );
}

// ---------------------------------------------------------------------------
// Value parsing
// ---------------------------------------------------------------------------

fn field_of<T: std::fmt::Debug>(result: Result<T, ValidationError>) -> &'static str {
    result.expect_err("value should be rejected").field
}

#[test]
fn queue_name_accepts_1_to_200_characters_after_trimming() {
    assert_eq!(QueueName::parse("  A  ").unwrap().as_str(), "A");
    assert_eq!(
        QueueName::parse(&"n".repeat(200)).unwrap().as_str().len(),
        200
    );
    // Characters, not bytes: 200 two-byte characters fit.
    assert!(QueueName::parse(&"é".repeat(200)).is_ok());
    assert!(QueueName::parse(&format!("  {}  ", "n".repeat(200))).is_ok());
}

#[test]
fn queue_name_rejects_empty_blank_and_201_characters() {
    for raw in [String::new(), "   ".into(), "n".repeat(201)] {
        assert_eq!(field_of(QueueName::parse(&raw)), "name", "{raw:?}");
    }
}

#[test]
fn capacity_accepts_1_to_10000_and_rejects_anything_else() {
    assert_eq!(Capacity::parse(1).unwrap().get(), 1);
    assert_eq!(Capacity::parse(10_000).unwrap().get(), 10_000);
    for raw in [0, 10_001, -1, i64::MIN, i64::MAX] {
        assert_eq!(field_of(Capacity::parse(raw)), "maxCapacity", "{raw}");
    }
}

#[test]
fn max_no_shows_accepts_1_to_10_and_rejects_anything_else() {
    assert_eq!(MaxNoShows::parse(1).unwrap().get(), 1);
    assert_eq!(MaxNoShows::parse(10).unwrap().get(), 10);
    for raw in [0, 11, -1] {
        assert_eq!(field_of(MaxNoShows::parse(raw)), "maxNoShows", "{raw}");
    }
}

#[test]
fn patient_id_accepts_1_to_64_characters_without_a_slash() {
    assert_eq!(PatientId::parse(" x ").unwrap().as_str(), "x");
    assert!(PatientId::parse(&"p".repeat(64)).is_ok());
    assert!(PatientId::parse("MRN 0042-b.c").is_ok());

    for raw in [
        String::new(),
        "p".repeat(65),
        "a/b".into(),
        "/".into(),
        ".".into(),
        "..".into(),
    ] {
        assert_eq!(field_of(PatientId::parse(&raw)), "patientId", "{raw:?}");
    }
    assert!(PatientId::parse("...").is_ok());
}

#[test]
fn patient_name_accepts_1_to_200_characters_after_trimming() {
    assert_eq!(PatientName::parse(" Ada ").unwrap().as_str(), "Ada");
    assert!(PatientName::parse("A").is_ok());
    assert!(PatientName::parse(&"a".repeat(200)).is_ok());

    for raw in [" ".into(), "a".repeat(201)] {
        assert_eq!(field_of(PatientName::parse(&raw)), "patientName", "{raw:?}");
    }
}

#[test]
fn consultation_type_needs_2_to_100_characters() {
    assert!(ConsultationType::parse("GP").is_ok());
    assert!(ConsultationType::parse(&"c".repeat(100)).is_ok());

    for raw in ["G".into(), " G ".into(), "c".repeat(101)] {
        assert_eq!(
            field_of(ConsultationType::parse(&raw)),
            "consultationType",
            "{raw:?}"
        );
    }
}

#[test]
fn consulting_room_needs_1_to_100_characters() {
    assert_eq!(ConsultingRoom::parse(" 7 ").unwrap().as_str(), "7");
    assert!(ConsultingRoom::parse(&"r".repeat(100)).is_ok());

    for raw in [String::new(), "\t".into(), "r".repeat(101)] {
        assert_eq!(
            field_of(ConsultingRoom::parse(&raw)),
            "consultingRoom",
            "{raw:?}"
        );
    }
}

#[test]
fn notes_that_are_missing_or_blank_mean_no_notes() {
    assert_eq!(Notes::parse(None), Ok(None));
    assert_eq!(Notes::parse(Some("")), Ok(None));
    assert_eq!(Notes::parse(Some(" \n\t ")), Ok(None));
}

#[test]
fn notes_are_trimmed_and_limited_to_1000_characters() {
    assert_eq!(
        Notes::parse(Some("  bring X-rays "))
            .unwrap()
            .unwrap()
            .as_str(),
        "bring X-rays"
    );
    assert!(Notes::parse(Some(&"n".repeat(1000))).unwrap().is_some());
    assert_eq!(field_of(Notes::parse(Some(&"n".repeat(1001)))), "notes");
}

#[test]
fn notes_may_span_lines_but_reject_other_control_characters() {
    let multiline = "line one\nline two\r\n\tindented";
    assert_eq!(
        Notes::parse(Some(multiline)).unwrap().unwrap().as_str(),
        multiline
    );

    // A NUL cannot be stored in Postgres text or jsonb.
    for raw in ["nul\0byte", "bell\u{7}", "escape\u{1b}[31m"] {
        assert_eq!(field_of(Notes::parse(Some(raw))), "notes", "{raw:?}");
    }
}

#[test]
fn text_values_reject_control_characters() {
    assert_eq!(field_of(QueueName::parse("Morning\0clinic")), "name");
    assert_eq!(field_of(PatientId::parse("p\n1")), "patientId");
    assert_eq!(field_of(PatientName::parse("Ada\u{7}")), "patientName");
    assert_eq!(
        field_of(ConsultationType::parse("Gen\teral")),
        "consultationType"
    );
    assert_eq!(
        field_of(ConsultingRoom::parse("Room\u{1b}3")),
        "consultingRoom"
    );
    assert_eq!(field_of(QueueId::parse("queue\u{0}1")), "queueId");
}

#[test]
fn queue_id_accepts_letters_digits_dots_underscores_and_dashes() {
    assert_eq!(
        QueueId::parse(" clinic-A_2.east ").unwrap().as_str(),
        "clinic-A_2.east"
    );
    assert!(QueueId::parse("7").is_ok());
    assert!(QueueId::parse(&"q".repeat(64)).is_ok());
}

#[test]
fn queue_id_rejects_bad_characters_a_leading_symbol_and_65_characters() {
    let rejected = [
        String::new(),
        "-clinic".into(),
        ".clinic".into(),
        "_clinic".into(),
        "clinic a".into(),
        "clinic/a".into(),
        "clinic*".into(),
        "clïnic".into(),
        "q".repeat(65),
    ];
    for raw in rejected {
        assert_eq!(field_of(QueueId::parse(&raw)), "queueId", "{raw:?}");
    }
}

#[test]
fn a_generated_queue_id_parses_back() {
    let id = QueueId::generate();

    assert_eq!(QueueId::parse(id.as_str()), Ok(id.clone()));
    assert_ne!(QueueId::generate(), id);
}

#[test]
fn priority_is_parsed_in_any_letter_case_and_stored_capitalised() {
    assert_eq!(Priority::parse("urgent"), Ok(Priority::Urgent));
    assert_eq!(Priority::parse("HIGH"), Ok(Priority::High));
    assert_eq!(Priority::parse("mEdIuM"), Ok(Priority::Medium));
    assert_eq!(Priority::parse(" low "), Ok(Priority::Low));

    let stored: Vec<&str> = Priority::ALL.iter().map(|p| p.as_str()).collect();
    assert_eq!(stored, ["Low", "Medium", "High", "Urgent"]);
    assert_eq!(Priority::Urgent.to_string(), "Urgent");
    assert_eq!(serde_json::to_value(Priority::High).unwrap(), json!("High"));
}

#[test]
fn priority_ranks_low_below_medium_below_high_below_urgent() {
    assert!(
        Priority::Low < Priority::Medium
            && Priority::Medium < Priority::High
            && Priority::High < Priority::Urgent
    );
    let ranks: Vec<i16> = Priority::ALL.iter().map(|p| p.rank()).collect();
    assert_eq!(ranks, [1, 2, 3, 4]);
}

#[test]
fn an_unknown_priority_is_rejected_on_the_priority_field() {
    for raw in ["critical", "", "Urgent!"] {
        assert_eq!(field_of(Priority::parse(raw)), "priority", "{raw:?}");
    }
}

#[test]
fn validation_errors_name_the_camel_case_api_field() {
    let long = "x".repeat(2000);
    let fields = [
        field_of(QueueId::parse("")),
        field_of(QueueName::parse("")),
        field_of(Capacity::parse(0)),
        field_of(MaxNoShows::parse(0)),
        field_of(PatientId::parse("")),
        field_of(PatientName::parse("")),
        field_of(Priority::parse("x")),
        field_of(ConsultationType::parse("")),
        field_of(Notes::parse(Some(&long))),
        field_of(ConsultingRoom::parse("")),
    ];

    assert_eq!(
        fields,
        [
            "queueId",
            "name",
            "maxCapacity",
            "maxNoShows",
            "patientId",
            "patientName",
            "priority",
            "consultationType",
            "notes",
            "consultingRoom",
        ]
    );
    let error = Capacity::parse(0).unwrap_err();
    assert!(error.to_string().starts_with("maxCapacity: "), "{error}");
}

#[test]
fn patient_statuses_have_their_stored_names_and_only_waiting_and_called_are_active() {
    let statuses = [
        (PatientStatus::Waiting, "WAITING", true),
        (PatientStatus::Called, "CALLED", true),
        (PatientStatus::Completed, "COMPLETED", false),
        (PatientStatus::Cancelled, "CANCELLED", false),
        (PatientStatus::NoShow, "NO_SHOW", false),
    ];
    for (status, name, active) in statuses {
        assert_eq!(status.as_str(), name);
        assert_eq!(serde_json::to_value(status).unwrap(), json!(name));
        assert_eq!(status.is_active(), active, "{name}");
    }
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

/// One event of every variant, with notes set so the optional field is exercised.
fn one_of_each_event() -> Vec<Event> {
    let mut with_notes = checked_in("p1", Priority::Urgent, at(1));
    if let Event::PatientCheckedIn(e) = &mut with_notes {
        e.notes = Some("allergic to penicillin".into());
    }
    vec![
        open_queue(),
        with_notes,
        called("p1", Priority::Urgent, at(2)),
        completed("p1", at(3)),
        marked_no_show("p1", 2, PatientStatus::NoShow, at(4)),
        cancelled("p1", PatientStatus::Called, at(5)),
    ]
}

#[test]
fn payloads_are_camel_case_json_carrying_queue_id_and_patient_id() {
    for event in one_of_each_event() {
        let payload = event.payload();
        let object = payload.as_object().unwrap();

        assert_eq!(payload["queueId"], QUEUE, "{event:?}");
        assert_eq!(
            payload.get("patientId").and_then(|v| v.as_str()),
            event.patient_id(),
            "{event:?}"
        );
        for key in object.keys() {
            assert!(!key.contains('_'), "{key} is not camelCase");
        }
    }
    assert_eq!(open_queue().patient_id(), None);
}

#[test]
fn payloads_use_the_stored_names_and_rfc3339_times() {
    let payload = one_of_each_event()[1].payload();

    assert_eq!(
        payload,
        json!({
            "queueId": QUEUE,
            "patientId": "p1",
            "patientName": "Patient p1",
            "priority": "Urgent",
            "consultationType": "General",
            "notes": "allergic to penicillin",
            "checkedInAt": "2026-03-02T08:01:00Z",
        })
    );
    assert_eq!(one_of_each_event()[4].payload()["status"], "NO_SHOW");
    assert_eq!(one_of_each_event()[5].payload()["previousStatus"], "CALLED");
}

#[test]
fn every_event_round_trips_through_its_type_name_and_payload() {
    let mut events = one_of_each_event();
    events.push(checked_in("p2", Priority::Low, at(6)));

    for event in events {
        let decoded = Event::decode(event.event_type(), event.payload()).unwrap();
        assert_eq!(decoded, event);
    }
}

#[test]
fn a_checked_in_payload_without_notes_decodes_as_no_notes() {
    let mut payload = checked_in("p1", Priority::Low, at(1)).payload();
    payload.as_object_mut().unwrap().remove("notes");

    assert_eq!(
        Event::decode("PatientCheckedIn", payload).unwrap(),
        checked_in("p1", Priority::Low, at(1))
    );
}

#[test]
fn event_type_names_match_event_types() {
    let names: Vec<&str> = one_of_each_event().iter().map(Event::event_type).collect();

    assert_eq!(names, EVENT_TYPES);
    assert_eq!(
        EVENT_TYPES,
        [
            "WaitingQueueCreated",
            "PatientCheckedIn",
            "PatientCalled",
            "PatientConsultationCompleted",
            "PatientMarkedNoShow",
            "PatientCheckInCancelled",
        ]
    );
}

#[test]
fn decoding_an_unknown_event_type_fails_with_unknown_type() {
    let result = Event::decode("PatientTeleported", open_queue().payload());

    assert!(
        matches!(result, Err(DecodeError::UnknownType(ref t)) if t == "PatientTeleported"),
        "{result:?}"
    );
}

#[test]
fn decoding_a_malformed_payload_fails_with_a_payload_error() {
    let mut unknown_status = marked_no_show("p1", 1, PatientStatus::Waiting, at(1)).payload();
    unknown_status["status"] = json!("GONE");
    let cases = [
        ("PatientCalled", json!({ "queueId": QUEUE })),
        ("WaitingQueueCreated", json!("not an object")),
        ("PatientMarkedNoShow", unknown_status),
    ];

    for (event_type, payload) in cases {
        match Event::decode(event_type, payload) {
            Err(DecodeError::Payload { event_type: t, .. }) => assert_eq!(t, event_type),
            other => panic!("{event_type}: expected a payload error, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Rejections
// ---------------------------------------------------------------------------

fn one_of_each_rejection() -> [Rejection; 7] {
    [
        Rejection::QueueAlreadyExists {
            queue_id: QUEUE.into(),
        },
        Rejection::QueueNotFound,
        Rejection::AlreadyCheckedIn {
            patient_id: "p1".into(),
            status: PatientStatus::Called,
        },
        Rejection::QueueFull {
            active: 2,
            capacity: 2,
        },
        Rejection::QueueEmpty,
        Rejection::PatientNotFound {
            patient_id: "p1".into(),
        },
        Rejection::InvalidPatientState {
            patient_id: "p1".into(),
            status: PatientStatus::Waiting,
            expected: "CALLED".into(),
        },
    ]
}

#[test]
fn each_rejection_has_its_stable_slug() {
    let slugs: Vec<&str> = one_of_each_rejection()
        .iter()
        .map(Rejection::slug)
        .collect();

    assert_eq!(
        slugs,
        [
            "queue-exists",
            "queue-not-found",
            "already-checked-in",
            "queue-full",
            "queue-empty",
            "patient-not-found",
            "invalid-patient-state",
        ]
    );
}

#[test]
fn only_a_missing_queue_or_patient_is_not_found() {
    let not_found: Vec<bool> = one_of_each_rejection()
        .iter()
        .map(Rejection::is_not_found)
        .collect();

    assert_eq!(not_found, [false, true, false, false, false, true, false]);
}

#[test]
fn rejection_messages_say_what_is_wrong() {
    let messages: Vec<String> = one_of_each_rejection()
        .iter()
        .map(ToString::to_string)
        .collect();

    assert_eq!(messages[2], "patient p1 is already CALLED in this queue");
    assert_eq!(messages[3], "queue is full: 2 of 2 places are taken");
    assert_eq!(messages[6], "patient p1 is WAITING, but must be CALLED");
}
