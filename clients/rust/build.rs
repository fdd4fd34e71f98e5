//! Hands progenitor a copy of `openapi/waitroom.json` it can generate from. progenitor types
//! one error body per operation (it asserts so); `getProjectionsHealth` answers 503 with its
//! own JSON body (`ProjectionsHealth`) and 401 with a problem+json, so its 401 is left out of
//! this copy: the client sees that answer as `Error::UnexpectedResponse` with status 401.
//! Every other operation's errors are all problem+json, and keep their 401.

use std::path::PathBuf;

use serde_json::Value;

const SPEC: &str = "../../openapi/waitroom.json";

fn is_problem_only(response: &Value) -> bool {
    response["content"]
        .as_object()
        .is_none_or(|content| content.keys().all(|ct| ct == "application/problem+json"))
}

fn main() {
    println!("cargo::rerun-if-changed={SPEC}");
    let text = std::fs::read_to_string(SPEC).expect("openapi/waitroom.json is readable");
    let mut doc: Value = serde_json::from_str(&text).expect("openapi/waitroom.json is JSON");
    if let Some(paths) = doc["paths"].as_object_mut() {
        for operation in paths
            .values_mut()
            .filter_map(Value::as_object_mut)
            .flat_map(|item| item.values_mut())
        {
            let Some(responses) = operation["responses"].as_object_mut() else {
                continue;
            };
            let typed_errors = responses.iter().any(|(status, r)| {
                !status.starts_with('2') && status != "401" && !is_problem_only(r)
            });
            if typed_errors {
                responses.remove("401");
            }
        }
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set"));
    std::fs::write(
        out.join("waitroom.json"),
        serde_json::to_string_pretty(&doc).expect("JSON serialises"),
    )
    .expect("OUT_DIR is writable");
}
