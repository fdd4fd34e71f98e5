//! Which command comes next. Each queue has a small model of its patients (waiting ids,
//! called ids) behind its own lock, held from choosing a command until its answer is
//! applied: commands on one queue are then issued in an order that succeeds, while
//! different queues run in parallel. Every command appends exactly one event.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::WorkloadKind;

const PRIORITIES: [&str; 4] = ["Low", "Medium", "High", "Urgent"];
/// Called patients a queue keeps at most before it completes some.
const MAX_CALLED: usize = 3;

/// One HTTP command against one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    CheckIn(String),
    CallNext,
    Complete(String),
    NoShow(String),
    Cancel(String),
}

impl Action {
    /// The request path below the base URL and the JSON body (if any).
    pub fn request(&self, queue: &str) -> (String, Option<Value>) {
        let patient = |id: &str, what: &str| format!("/api/queues/{queue}/patients/{id}/{what}");
        match self {
            Action::CheckIn(id) => (
                format!("/api/queues/{queue}/check-ins"),
                Some(json!({
                    "patientId": id,
                    "patientName": format!("Bench Patient {id}"),
                    "priority": PRIORITIES[fastrand::usize(..PRIORITIES.len())],
                    "consultationType": "General",
                })),
            ),
            Action::CallNext => (
                format!("/api/queues/{queue}/call-next"),
                Some(json!({ "consultingRoom": format!("Room {}", fastrand::u8(1..=9)) })),
            ),
            Action::Complete(id) => (patient(id, "complete"), None),
            Action::NoShow(id) => (patient(id, "no-show"), None),
            Action::Cancel(id) => (patient(id, "cancel"), None),
        }
    }
}

/// What the generator believes about one queue's active patients.
#[derive(Debug, Default)]
pub struct QueueModel {
    /// The queue id.
    pub queue: String,
    waiting: Vec<String>,
    called: Vec<String>,
}

impl QueueModel {
    /// Applies the answer to `action`: `Some(body)` when it succeeded, `None` when it failed.
    pub fn apply(&mut self, action: &Action, answer: Option<&Value>) {
        match (action, answer) {
            (Action::CheckIn(id), Some(_)) => self.waiting.push(id.clone()),
            (Action::CallNext, Some(body)) => {
                // The server picks by priority and queue time; the answer says whom.
                if let Some(id) = body.get("patientId").and_then(Value::as_str) {
                    remove(&mut self.waiting, id);
                    self.called.push(id.to_owned());
                }
            }
            (Action::Complete(id), Some(_)) => remove(&mut self.called, id),
            (Action::NoShow(id), Some(body)) => {
                remove(&mut self.called, id);
                if body.get("status").and_then(Value::as_str) == Some("WAITING") {
                    self.waiting.push(id.clone());
                }
            }
            (Action::Cancel(id), Some(_)) => remove(&mut self.waiting, id),
            (Action::CheckIn(_) | Action::CallNext, None) => {}
            // The patient is in a state we did not predict: forget it rather than fail again.
            (Action::Complete(id) | Action::NoShow(id) | Action::Cancel(id), None) => {
                remove(&mut self.waiting, id);
                remove(&mut self.called, id);
            }
        }
    }
}

fn remove(ids: &mut Vec<String>, id: &str) {
    if let Some(i) = ids.iter().position(|x| x == id) {
        ids.swap_remove(i);
    }
}

/// The command mix over every queue of the run; cheap to clone (shared state).
#[derive(Clone)]
pub struct Workload {
    kind: WorkloadKind,
    target: usize,
    queues: Arc<Vec<Arc<Mutex<QueueModel>>>>,
    next_patient: Arc<AtomicU64>,
}

impl Workload {
    /// A workload over `queues`, keeping `patients` waiting per queue (`clinic`).
    pub fn new(kind: WorkloadKind, queues: Vec<String>, patients: u32) -> Self {
        let queues = queues
            .into_iter()
            .map(|queue| {
                Arc::new(Mutex::new(QueueModel {
                    queue,
                    ..QueueModel::default()
                }))
            })
            .collect();
        Self {
            kind,
            target: patients as usize,
            queues: Arc::new(queues),
            next_patient: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Locks a queue (a free one when there is one, so queues run in parallel) and picks its
    /// next command. Apply the answer through the guard before dropping it.
    pub async fn next(&self) -> (OwnedMutexGuard<QueueModel>, Action) {
        let n = self.queues.len();
        let offset = fastrand::usize(..n);
        let mut guard = None;
        for i in 0..n {
            if let Ok(g) = self.queues[(offset + i) % n].clone().try_lock_owned() {
                guard = Some(g);
                break;
            }
        }
        let guard = match guard {
            Some(g) => g,
            None => self.queues[offset].clone().lock_owned().await,
        };
        let action = self.choose(&guard);
        (guard, action)
    }

    fn new_patient(&self) -> String {
        format!("p{}", self.next_patient.fetch_add(1, Ordering::Relaxed))
    }

    fn choose(&self, model: &QueueModel) -> Action {
        if self.kind == WorkloadKind::Growth || model.waiting.len() < self.target {
            return Action::CheckIn(self.new_patient());
        }
        let pick = |ids: &[String]| ids[fastrand::usize(..ids.len())].clone();
        if !model.called.is_empty() && (model.called.len() >= MAX_CALLED || fastrand::bool()) {
            // Most consultations complete; some patients do not show up (and requeue).
            return if fastrand::u8(..100) < 85 {
                Action::Complete(pick(&model.called))
            } else {
                Action::NoShow(pick(&model.called))
            };
        }
        if fastrand::u8(..100) < 85 {
            Action::CallNext
        } else {
            Action::Cancel(pick(&model.waiting))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(waiting: &[&str], called: &[&str]) -> QueueModel {
        QueueModel {
            queue: "q".into(),
            waiting: waiting.iter().map(|s| s.to_string()).collect(),
            called: called.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn clinic_checks_in_below_the_target_and_never_asks_for_the_impossible() {
        let w = Workload::new(WorkloadKind::Clinic, vec!["q".into()], 2);
        assert!(matches!(w.choose(&model(&["a"], &[])), Action::CheckIn(_)));
        for _ in 0..500 {
            match w.choose(&model(&["a", "b"], &["c"])) {
                Action::Complete(id) | Action::NoShow(id) => assert_eq!(id, "c"),
                Action::Cancel(id) => assert!(id == "a" || id == "b"),
                Action::CallNext => {}
                Action::CheckIn(_) => panic!("the queue is at its target"),
            }
            let full = w.choose(&model(&["a", "b"], &["c", "d", "e"]));
            assert!(matches!(full, Action::Complete(_) | Action::NoShow(_)));
        }
    }

    #[test]
    fn growth_only_checks_in_with_unique_patients() {
        let w = Workload::new(WorkloadKind::Growth, vec!["q".into()], 1);
        let a = w.choose(&model(&["x"; 10], &["y"]));
        let b = w.choose(&model(&[], &[]));
        assert!(matches!((&a, &b), (Action::CheckIn(x), Action::CheckIn(y)) if x != y));
    }

    #[test]
    fn answers_move_patients_between_waiting_and_called() {
        let mut m = model(&["a", "b"], &[]);
        m.apply(&Action::CallNext, Some(&json!({"patientId": "b"})));
        assert_eq!(
            (m.waiting.clone(), m.called.clone()),
            (vec!["a".into()], vec!["b".into()])
        );
        m.apply(
            &Action::NoShow("b".into()),
            Some(&json!({"status": "WAITING"})),
        );
        assert_eq!(m.waiting.len(), 2);
        m.apply(&Action::CallNext, Some(&json!({"patientId": "a"})));
        m.apply(
            &Action::NoShow("a".into()),
            Some(&json!({"status": "NO_SHOW"})),
        );
        assert_eq!((m.waiting.len(), m.called.len()), (1, 0));
        m.apply(&Action::Cancel("b".into()), None);
        assert!(m.waiting.is_empty());
    }
}
