//! What poem-openapi cannot say by itself, added to its document in one place: OpenAPI links
//! between operations (so generated clients and stateful fuzzers can chain them), the
//! canonical spelling of response header names, an example of the metrics text, and the
//! bearer-token scheme on every `/api` operation with its 401 (declared from the same rule the
//! middleware enforces, `auth::is_protected`). Also the `Allow` header of 405 answers, read
//! from the finished document's paths.

use serde_json::{Value, json};

use super::auth;

/// The security scheme's name in the document.
pub const BEARER_SCHEME: &str = "bearerAuth";

const BEARER_DESCRIPTION: &str = "An API token: `Authorization: Bearer <token>`. Required on \
every `/api` operation when the server is configured with `API_TOKEN` or `API_TOKENS_FILE` \
(tokens are 16–1024 characters; missing, malformed or wrong gives 401 `unauthorized` with a \
`WWW-Authenticate` challenge). A server without tokens ignores the header and accepts every \
request (it warns at start). `/health`, `/health/ready`, `/metrics`, `/openapi.json` and \
`/docs` never need one.";

const UNAUTHORIZED_DESCRIPTION: &str = "`unauthorized`: the server requires an API token and the \
request has none, a malformed `Authorization` header, or a token it does not accept.";

/// Response headers poem-openapi spells in capitals, and their canonical names.
const HEADER_NAMES: &[(&str, &str)] = &[("ETAG", "ETag")];

const METRICS_EXAMPLE: &str = "# HELP waitroom_events_appended Events appended to the store.\n\
# TYPE waitroom_events_appended counter\n\
waitroom_events_appended_total{event_type=\"PatientCheckedIn\"} 42\n\
# EOF\n";

/// Links from an operation's success response: (operation, status, link name, target
/// operation, parameters as runtime expressions).
type Link = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const QUEUE_FROM_BODY: &[(&str, &str)] = &[("queueId", "$response.body#/queueId")];
const QUEUE_FROM_PATH: &[(&str, &str)] = &[("queueId", "$request.path.queueId")];
const PATIENT_CHECKED_IN: &[(&str, &str)] = &[
    ("queueId", "$request.path.queueId"),
    ("patientId", "$request.body#/patientId"),
];
const PATIENT_CALLED: &[(&str, &str)] = &[
    ("queueId", "$request.path.queueId"),
    ("patientId", "$response.body#/patientId"),
];
const EVENT_FROM_BODY: &[(&str, &str)] = &[("eventId", "$response.body#/eventId")];

const LINKS: &[Link] = &[
    (
        "createQueue",
        "201",
        "GetQueue",
        "getQueue",
        QUEUE_FROM_BODY,
    ),
    ("createQueue", "201", "CheckIn", "checkIn", QUEUE_FROM_BODY),
    (
        "createQueue",
        "201",
        "CallNext",
        "callNext",
        QUEUE_FROM_BODY,
    ),
    (
        "createQueue",
        "201",
        "ListQueueEvents",
        "listQueueEvents",
        QUEUE_FROM_BODY,
    ),
    ("checkIn", "201", "GetQueue", "getQueue", QUEUE_FROM_PATH),
    ("checkIn", "201", "CallNext", "callNext", QUEUE_FROM_PATH),
    (
        "checkIn",
        "201",
        "CancelCheckIn",
        "cancelCheckIn",
        PATIENT_CHECKED_IN,
    ),
    (
        "checkIn",
        "201",
        "GetEventLag",
        "getEventLag",
        EVENT_FROM_BODY,
    ),
    (
        "callNext",
        "200",
        "CompleteConsultation",
        "completeConsultation",
        PATIENT_CALLED,
    ),
    (
        "callNext",
        "200",
        "MarkNoShow",
        "markNoShow",
        PATIENT_CALLED,
    ),
    (
        "callNext",
        "200",
        "CancelCheckIn",
        "cancelCheckIn",
        PATIENT_CALLED,
    ),
    (
        "callNext",
        "200",
        "GetEventLag",
        "getEventLag",
        EVENT_FROM_BODY,
    ),
    ("callNext", "200", "GetQueue", "getQueue", QUEUE_FROM_PATH),
];

/// A JSON value read with duplicate object keys merged: poem-openapi writes a path once per
/// API struct that serves it (`/api/queues` has a command and a query), and a plain
/// `serde_json::Value` would keep only the last.
struct Merged(Value);

impl<'de> serde::Deserialize<'de> for Merged {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Merged;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Merged, A::Error> {
                let mut out = serde_json::Map::new();
                while let Some((key, Merged(value))) = map.next_entry::<String, Merged>()? {
                    match (out.get_mut(&key), value) {
                        (Some(Value::Object(existing)), Value::Object(more)) => {
                            existing.extend(more)
                        }
                        (_, value) => {
                            out.insert(key, value);
                        }
                    }
                }
                Ok(Merged(Value::Object(out)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Merged, A::Error> {
                let mut out = Vec::new();
                while let Some(Merged(v)) = seq.next_element::<Merged>()? {
                    out.push(v);
                }
                Ok(Merged(Value::Array(out)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Merged, E> {
                Ok(Merged(Value::from(v)))
            }
            fn visit_string<E>(self, v: String) -> Result<Merged, E> {
                Ok(Merged(Value::from(v)))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Merged, E> {
                Ok(Merged(Value::from(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Merged, E> {
                Ok(Merged(Value::from(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Merged, E> {
                Ok(Merged(Value::from(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Merged, E> {
                Ok(Merged(Value::from(v)))
            }
            fn visit_unit<E>(self) -> Result<Merged, E> {
                Ok(Merged(Value::Null))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// poem-openapi's document with the additions above, as pretty JSON.
pub fn finish(raw: &str) -> String {
    let Merged(mut doc) = serde_json::from_str(raw).expect("poem-openapi writes valid JSON");
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return raw.to_owned();
    };
    for (path, item) in paths.iter_mut() {
        if auth::is_protected(path)
            && let Some(item) = item.as_object_mut()
        {
            item.values_mut().for_each(require_token);
        }
    }
    for operation in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
    {
        let id = operation["operationId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let Some(responses) = operation
            .get_mut("responses")
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        for (status, response) in responses.iter_mut() {
            if let Some(headers) = response.get_mut("headers").and_then(Value::as_object_mut) {
                for (from, to) in HEADER_NAMES {
                    if let Some(h) = headers.remove(*from) {
                        headers.insert((*to).to_owned(), h);
                    }
                }
            }
            let links: serde_json::Map<String, Value> = LINKS
                .iter()
                .filter(|(op, st, ..)| *op == id && st == status)
                .map(|(_, _, name, target, params)| {
                    let parameters: serde_json::Map<String, Value> = params
                        .iter()
                        .map(|(p, expr)| ((*p).to_owned(), Value::from(*expr)))
                        .collect();
                    (
                        (*name).to_owned(),
                        json!({ "operationId": target, "parameters": parameters }),
                    )
                })
                .collect();
            if !links.is_empty() {
                response["links"] = Value::Object(links);
            }
            if id == "getMetrics"
                && let Some(content) = response.get_mut("content").and_then(Value::as_object_mut)
            {
                for media in content.values_mut() {
                    media["example"] = Value::from(METRICS_EXAMPLE);
                }
            }
        }
    }
    if let Some(components) = doc.get_mut("components").and_then(Value::as_object_mut) {
        components.insert(
            "securitySchemes".into(),
            json!({ BEARER_SCHEME: {
                "type": "http",
                "scheme": "bearer",
                "description": BEARER_DESCRIPTION,
            }}),
        );
    }
    serde_json::to_string_pretty(&doc).expect("a JSON value serialises")
}

/// Declares the bearer scheme on an operation and its 401 answer (problem+json, with the
/// challenge and the correlation id every answer carries).
fn require_token(operation: &mut Value) {
    let Some(operation) = operation.as_object_mut() else {
        return;
    };
    operation.insert("security".into(), json!([{ BEARER_SCHEME: [] }]));
    let Some(responses) = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    // The correlation id's header, as poem-openapi declares it on every other answer.
    let mut headers: serde_json::Map<String, Value> = responses
        .values()
        .filter_map(|r| r.get("headers").and_then(Value::as_object))
        .flat_map(|h| h.iter())
        .find(|(name, _)| name.eq_ignore_ascii_case(super::CORRELATION_HEADER))
        .map(|(name, header)| (name.clone(), header.clone()))
        .into_iter()
        .collect();
    headers.insert(
        "WWW-Authenticate".into(),
        json!({
            "description": format!(
                "The challenge: `{}`, with `error=\"invalid_request\"` or \
                 `error=\"invalid_token\"` when a header was sent (RFC 6750).",
                auth::CHALLENGE
            ),
            "required": true,
            "deprecated": false,
            "schema": { "type": "string" },
        }),
    );
    responses.insert(
        "401".into(),
        json!({
            "description": UNAUTHORIZED_DESCRIPTION,
            "headers": headers,
            "content": { "application/problem+json": {
                "schema": { "$ref": "#/components/schemas/Problem" },
            }},
        }),
    );
}

/// Which methods each route answers, for the `Allow` header of a 405.
pub struct AllowTable {
    routes: Vec<(Vec<Segment>, String)>,
}

enum Segment {
    Literal(String),
    Param,
}

impl AllowTable {
    /// The document's paths (GET also answers HEAD), plus `extra` GET-only routes.
    pub fn new(document: &str, extra: &[&str]) -> Self {
        let doc: Value = serde_json::from_str(document).unwrap_or_default();
        let mut routes = Vec::new();
        if let Some(paths) = doc["paths"].as_object() {
            for (path, item) in paths {
                let mut methods: Vec<String> = item
                    .as_object()
                    .map(|m| m.keys().map(|k| k.to_ascii_uppercase()).collect())
                    .unwrap_or_default();
                if methods.iter().any(|m| m == "GET") {
                    methods.push("HEAD".into());
                }
                methods.sort();
                routes.push((segments(path), methods.join(", ")));
            }
        }
        for path in extra {
            routes.push((segments(path), "GET, HEAD".into()));
        }
        Self { routes }
    }

    /// The `Allow` value for a request path, if a route matches it.
    pub fn allow(&self, path: &str) -> Option<&str> {
        let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        self.routes
            .iter()
            .find(|(segments, _)| {
                segments.len() == parts.len()
                    && segments.iter().zip(&parts).all(|(s, p)| match s {
                        Segment::Literal(l) => l == p,
                        Segment::Param => !p.is_empty(),
                    })
            })
            .map(|(_, methods)| methods.as_str())
    }
}

fn segments(path: &str) -> Vec<Segment> {
    path.trim_end_matches('/')
        .split('/')
        .map(|s| {
            if s.starts_with('{') || s.starts_with(':') {
                Segment::Param
            } else {
                Segment::Literal(s.to_owned())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_written_twice_keeps_both_operations() {
        let raw = r#"{"paths": {"/q": {"get": {"operationId": "a"}}, "/q": {"post": {"operationId": "b"}}}}"#;
        let doc: Value = serde_json::from_str(&finish(raw)).expect("JSON");
        assert_eq!(doc["paths"]["/q"]["get"]["operationId"], "a");
        assert_eq!(doc["paths"]["/q"]["post"]["operationId"], "b");
    }

    #[test]
    fn allow_lists_the_methods_of_the_matching_route() {
        let doc = r#"{"paths": {"/api/queues": {"get": {}, "post": {}},
                      "/api/queues/{queueId}/call-next": {"post": {}}}}"#;
        let table = AllowTable::new(doc, &["/docs"]);
        assert_eq!(table.allow("/api/queues"), Some("GET, HEAD, POST"));
        assert_eq!(table.allow("/api/queues/q1/call-next"), Some("POST"));
        assert_eq!(table.allow("/docs"), Some("GET, HEAD"));
        assert_eq!(table.allow("/api/other"), None);
    }
}
