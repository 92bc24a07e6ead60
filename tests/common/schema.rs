//! The spec's OpenAPI files, read at test time from `../shared/matrix-spec`
//! (or `CORVID_TEST_MATRIX_SPEC`), and the check that every JSON response the
//! integration tests receive matches the response schema the spec gives for
//! its endpoint and status (`check`, called from `TestServer::request`).
//!
//! - Endpoints: every operation of `data/api/client-server/*.yaml` and
//!   `data/api/server-server/*.yaml` (media included), its path prefixed with
//!   the file's `servers` base path.
//! - A request path is matched against the spec's path templates; legacy
//!   `r0` paths count as their `v3` twin. Only endpoints the router serves are
//!   validated: a request to anything else (a 404 test) checks nothing.
//! - The schema for the status is the spec's; an error status the spec does
//!   not list is held to the standard error schema
//!   (`client-server/definitions/errors/error.yaml`); a success status the
//!   spec does not list is a violation.
//! - `$ref`s are resolved by the validator across files: the files a schema
//!   can reach are handed to it as a registry; parsed files and compiled
//!   validators are cached per process.
//! - `format` is an annotation (JSON Schema 2020-12 default): the spec's
//!   formats are mostly its own (`mx-user-id`, …); `pattern`s are checked.
#![allow(dead_code)] // spec_coverage uses the loader, the other tests `check`

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
};

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Overrides where the spec checkout is (default: `../shared/matrix-spec`
/// relative to the repository root).
pub const SPEC_ENV: &str = "CORVID_TEST_MATRIX_SPEC";

/// The spec APIs whose endpoints the map covers (media is part of both).
pub const APIS: &[&str] = &["client-server", "server-server"];

/// The spec's standard error response, for error statuses an endpoint does
/// not list (spec: client-server API, "Standard error response").
const ERROR_SCHEMA: &str = "client-server/definitions/errors/error.yaml";

pub fn spec_root() -> PathBuf {
    match std::env::var_os(SPEC_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/matrix-spec"),
    }
}

/// One operation of the spec.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `client-server` or `server-server`.
    pub api: String,
    /// The OpenAPI file's stem, e.g. `room_send` (the spec renders each file
    /// as one group of endpoints in its section).
    pub file: String,
    /// Uppercase HTTP method.
    pub method: String,
    /// Full path as the spec writes it, base path included,
    /// e.g. `/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`.
    pub path: String,
    /// `path` with every parameter name replaced by `{}`.
    pub key: String,
    pub operation_id: String,
    pub summary: String,
    /// The operation's first tag (the spec's section), if any.
    pub section: String,
    pub deprecated: bool,
    /// The spec version that added it (`x-addedInMatrixVersion`, e.g.
    /// `1.7`), empty when it predates the annotations.
    pub added_in: String,
    file_path: PathBuf,
    /// JSON pointer to the operation object inside `file_path`.
    pointer: String,
}

impl Endpoint {
    pub fn id(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

pub struct Spec {
    pub root: PathBuf,
    pub endpoints: Vec<Endpoint>,
}

/// The parsed spec, or `None` (with a message, once) when the checkout is
/// missing outside CI. In CI a missing spec fails the test.
pub fn spec() -> Option<&'static Spec> {
    static SPEC: OnceLock<Option<Spec>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let root = spec_root();
        let api_dir = root.join("data/api");
        if !api_dir.is_dir() {
            assert!(
                std::env::var_os("CI").is_none(),
                "the Matrix spec is missing at {} (set {SPEC_ENV}); CI needs it for the \
                 spec coverage map and response validation",
                root.display()
            );
            eprintln!(
                "skipping spec checks: no Matrix spec at {} (set {SPEC_ENV})",
                root.display()
            );
            return None;
        }
        let root = root.canonicalize().expect("spec path");
        Some(load(&root))
    })
    .as_ref()
}

fn load(root: &Path) -> Spec {
    let mut endpoints = Vec::new();
    for api in APIS {
        let dir = root.join("data/api").join(api);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        for file_path in files {
            let doc = document(&file_path);
            let file = file_path
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let base = doc
                .pointer("/servers/0/variables/basePath/default")
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{}: no servers basePath", file_path.display()));
            let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
                continue;
            };
            for (path, item) in paths {
                for (method, op) in item.as_object().into_iter().flatten() {
                    if !matches!(
                        method.as_str(),
                        "get" | "put" | "post" | "delete" | "patch" | "head" | "options"
                    ) {
                        continue;
                    }
                    let full = format!("{base}{path}");
                    endpoints.push(Endpoint {
                        api: api.to_string(),
                        file: file.clone(),
                        method: method.to_uppercase(),
                        key: template_key(&full),
                        path: full,
                        operation_id: str_at(op, "/operationId"),
                        summary: str_at(op, "/summary"),
                        section: str_at(op, "/tags/0"),
                        deprecated: op.get("deprecated").and_then(Value::as_bool) == Some(true),
                        added_in: str_at(op, "/x-addedInMatrixVersion"),
                        file_path: file_path.clone(),
                        pointer: format!("/paths/{}/{method}", escape_pointer(path)),
                    });
                }
            }
        }
    }
    Spec {
        root: root.to_owned(),
        endpoints,
    }
}

fn str_at(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// A path template with every parameter replaced by `{}`, so the spec's
/// `{roomId}` and ruma's `{room_id}` compare equal.
pub fn template_key(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

/// The map is about the current spec: a legacy `r0` route is the same
/// endpoint as its `v3` twin.
pub fn current_version(path: &str) -> String {
    for (old, new) in [
        ("/_matrix/client/r0/", "/_matrix/client/v3/"),
        ("/_matrix/media/r0/", "/_matrix/media/v3/"),
    ] {
        if let Some(rest) = path.strip_prefix(old) {
            return format!("{new}{rest}");
        }
    }
    path.to_owned()
}

/// How well a request path (query stripped, segments as sent) fits a
/// template key: `None` when it does not, else the number of literal
/// segments it matched (more is a better fit). A segment containing `{` in
/// `path` is a wildcard (the test-source scan passes `format!` strings).
/// A state-event template also matches without its trailing `{stateKey}`:
/// clients leave an empty state key out.
pub fn match_score(key: &str, path: &str) -> Option<usize> {
    let t: Vec<&str> = key.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    let t = if p.len() + 1 == t.len() && key.ends_with("/state/{}/{}") {
        &t[..t.len() - 1]
    } else {
        &t[..]
    };
    if t.len() != p.len() {
        return None;
    }
    let mut literal = 0;
    for (t, p) in t.iter().zip(&p) {
        if *t == "{}" {
            continue;
        }
        if p.contains('{') {
            continue;
        }
        if t != p {
            return None;
        }
        literal += 1;
    }
    Some(literal)
}

/// The items whose template key a request path fits best. `path` is taken
/// as it is (no `r0` rewriting); a query is ignored.
pub fn best_fit<'a, T>(items: &'a [T], key: impl Fn(&T) -> &str, path: &str) -> Vec<&'a T> {
    let path = path.split('?').next().unwrap_or(path);
    let mut best: Vec<(&T, usize)> = Vec::new();
    for item in items {
        if let Some(score) = match_score(key(item), path) {
            match best.first() {
                Some((_, b)) if *b > score => {}
                Some((_, b)) if *b < score => best = vec![(item, score)],
                _ => best.push((item, score)),
            }
        }
    }
    best.into_iter().map(|(item, _)| item).collect()
}

/// The spec endpoints (all methods) a request path fits best.
pub fn best_matches<'s>(spec: &'s Spec, path: &str) -> Vec<&'s Endpoint> {
    best_fit(&spec.endpoints, |e| &e.key, path)
}

/// Ids (`METHOD /spec/path`) of the spec endpoints the router serves: a
/// route serves the endpoints of its method it fits best. With
/// `legacy_as_current`, `r0` routes count as their `v3` twin.
pub fn served_ids(spec: &Spec, legacy_as_current: bool) -> HashSet<String> {
    let mut ids = HashSet::new();
    for (method, path) in corvid::api::route_table() {
        let path = if legacy_as_current {
            current_version(&path)
        } else {
            path
        };
        for e in best_matches(spec, &path) {
            if e.method == method.as_str() {
                ids.insert(e.id());
            }
        }
    }
    ids
}

/// Validates one response against the spec; panics with the endpoint, the
/// status and the JSON pointer of every offending field.
pub fn check(method: &Method, path: &str, status: StatusCode, body: &Value) {
    if let Err(report) = violations(method, path, status, body) {
        fail(report);
    }
}

/// What `check` checks, as a result: `Err` holds the report.
pub fn violations(
    method: &Method,
    path: &str,
    status: StatusCode,
    body: &Value,
) -> Result<(), String> {
    let Some(spec) = spec() else { return Ok(()) };
    let Some(endpoint) = best_matches(spec, &current_version(path))
        .into_iter()
        .find(|e| e.method == method.as_str())
    else {
        return Ok(());
    };
    static SERVED: OnceLock<HashSet<String>> = OnceLock::new();
    if !SERVED
        .get_or_init(|| served_ids(spec, true))
        .contains(&endpoint.id())
    {
        return Ok(());
    }
    let schema_uri = match response_schema(endpoint, status.as_u16()) {
        Ok(Some(uri)) => uri,
        Ok(None) => return Ok(()),
        Err(problem) => {
            return Err(format!(
                "spec violation: {} (spec {}/{}.yaml) answered {method} {path} with status \
                 {status}: {problem}\nbody: {body}",
                endpoint.id(),
                endpoint.api,
                endpoint.file
            ));
        }
    };
    let validator = validator(&schema_uri);
    let mut report = String::new();
    for error in validator.iter_errors(body) {
        let at = error.instance_path().to_string();
        let _ = writeln!(
            report,
            "  at `{}`: {} (schema {})",
            if at.is_empty() { "/" } else { &at },
            truncate(&error.to_string(), 300),
            error.schema_path()
        );
    }
    if report.is_empty() {
        return Ok(());
    }
    Err(format!(
        "schema violation: {} (spec {}/{}.yaml) answered {method} {path} with status {status}:\n\
         {report}body: {}",
        endpoint.id(),
        endpoint.api,
        endpoint.file,
        truncate(&body.to_string(), 2000)
    ))
}

/// Diagnosis only, never in CI: with `CORVID_TEST_SPEC_VIOLATIONS_LOG=FILE` a
/// violation is appended to FILE and the test goes on, so one run lists
/// them all.
pub const VIOLATIONS_LOG_ENV: &str = "CORVID_TEST_SPEC_VIOLATIONS_LOG";

fn fail(message: String) {
    match std::env::var_os(VIOLATIONS_LOG_ENV) {
        Some(log) if std::env::var_os("CI").is_none() => {
            use std::io::Write as _;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .expect("violations log");
            file.write_all(format!("{message}\n\n").as_bytes())
                .expect("violations log");
        }
        _ => panic!("{message}"),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The URI (file + JSON pointer) of the JSON schema for `status`, `None`
/// when the spec gives no JSON body for it, `Err` for an undocumented
/// success status.
fn response_schema(endpoint: &Endpoint, status: u16) -> Result<Option<String>, String> {
    let doc = document(&endpoint.file_path);
    let op = doc.pointer(&endpoint.pointer).expect("operation");
    let responses = op.get("responses").and_then(Value::as_object);
    let documented = responses.and_then(|r| r.get(&status.to_string()).map(|_| status.to_string()));
    let Some(status_key) = documented else {
        // `/keys/device_signing/upload` uses user-interactive auth (its
        // text says so) but its OpenAPI lists no 401: UIA's 401 has the
        // shape of `auth_response.yaml` wherever it is documented.
        if status == 401 && endpoint.key.ends_with("/keys/device_signing/upload") {
            return Ok(Some(file_uri(
                &spec_api_dir().join("client-server/definitions/auth_response.yaml"),
                "",
            )));
        }
        if status >= 400 {
            return Ok(Some(file_uri(&spec_api_dir().join(ERROR_SCHEMA), "")));
        }
        let listed: Vec<&String> = responses.into_iter().flat_map(|r| r.keys()).collect();
        return Err(format!(
            "the spec lists no status {status} for this endpoint (it lists {listed:?})"
        ));
    };
    let (file, pointer) = follow_refs(
        endpoint.file_path.clone(),
        format!("{}/responses/{status_key}", endpoint.pointer),
    );
    let response_doc = document(&file);
    let response = response_doc.pointer(&pointer).expect("response");
    if response
        .pointer("/content/application~1json/schema")
        .is_none()
    {
        return Ok(None);
    }
    Ok(Some(file_uri(
        &file,
        &format!("{pointer}/content/application~1json/schema"),
    )))
}

fn spec_api_dir() -> PathBuf {
    spec().expect("spec loaded").root.join("data/api")
}

/// Follows an OpenAPI-level `$ref` chain (responses are not JSON schemas, so
/// the validator does not see these).
fn follow_refs(mut file: PathBuf, mut pointer: String) -> (PathBuf, String) {
    for _ in 0..16 {
        let doc = document(&file);
        let value = doc
            .pointer(&pointer)
            .unwrap_or_else(|| panic!("{}#{pointer} not found", file.display()));
        let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
            return (file, pointer);
        };
        let (target, fragment) = reference.split_once('#').unwrap_or((reference, ""));
        if !target.is_empty() {
            file = file.parent().unwrap().join(target);
        }
        pointer = fragment.to_owned();
    }
    panic!("$ref loop at {}#{pointer}", file.display())
}

pub fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn file_uri(file: &Path, pointer: &str) -> String {
    let mut uri = format!("file://{}", normalise(file).display());
    if !pointer.is_empty() {
        uri.push('#');
        for b in pointer.bytes() {
            if b.is_ascii_alphanumeric() || b"/~-._".contains(&b) {
                uri.push(b as char);
            } else {
                let _ = write!(uri, "%{b:02X}");
            }
        }
    }
    uri
}

/// `a/b/../c` → `a/c` without touching the file system.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A spec file (YAML or JSON) as JSON, parsed once per process.
fn document(path: &Path) -> Arc<Value> {
    static DOCS: OnceLock<Mutex<HashMap<PathBuf, Arc<Value>>>> = OnceLock::new();
    let path = normalise(path);
    let docs = DOCS.get_or_init(Default::default);
    if let Some(doc) = docs.lock().unwrap().get(&path) {
        return doc.clone();
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading spec file {}: {e}", path.display()));
    let yaml: serde_norway::Value = serde_norway::from_str(&text)
        .unwrap_or_else(|e| panic!("parsing spec file {}: {e}", path.display()));
    let doc = Arc::new(yaml_to_json(yaml));
    docs.lock().unwrap().insert(path, doc.clone());
    doc
}

fn yaml_to_json(v: serde_norway::Value) -> Value {
    use serde_norway::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into()
            } else if let Some(u) = n.as_u64() {
                u.into()
            } else {
                serde_json::Number::from_f64(n.as_f64().unwrap_or(f64::NAN))
                    .map_or(Value::Null, Value::Number)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(yaml_to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s,
                        other => serde_norway::to_string(&other)
                            .unwrap_or_default()
                            .trim()
                            .to_owned(),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => yaml_to_json(tagged.value),
    }
}

/// The spec files a schema can reach: `file` and, transitively, every file
/// a `$ref` in them names (schemas refer across files, event schemas
/// included).
fn reachable_files(file: &Path) -> Vec<(PathBuf, Arc<Value>)> {
    let mut found: HashMap<PathBuf, Arc<Value>> = HashMap::new();
    let mut queue = vec![normalise(file)];
    while let Some(file) = queue.pop() {
        if found.contains_key(&file) {
            continue;
        }
        let doc = document(&file);
        collect_refs(&doc, file.parent().unwrap(), &mut queue);
        found.insert(file, doc);
    }
    let mut files: Vec<_> = found.into_iter().collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

fn collect_refs(value: &Value, dir: &Path, queue: &mut Vec<PathBuf>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                let target = reference.split('#').next().unwrap_or_default();
                if !target.is_empty() {
                    queue.push(normalise(&dir.join(target)));
                }
            }
            for v in map.values() {
                collect_refs(v, dir, queue);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, dir, queue)),
        _ => {}
    }
}

/// The compiled validator for the schema at `schema_uri` (a spec file's
/// URI with a JSON pointer), built once per process.
fn validator(schema_uri: &str) -> Arc<jsonschema::Validator> {
    static VALIDATORS: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> =
        OnceLock::new();
    let cache = VALIDATORS.get_or_init(Default::default);
    if let Some(v) = cache.lock().unwrap().get(schema_uri) {
        return v.clone();
    }
    let file = schema_uri
        .strip_prefix("file://")
        .and_then(|u| u.split('#').next())
        .expect("a file URI");
    let files = reachable_files(Path::new(file));
    let registry = jsonschema::Registry::new()
        .draft(jsonschema::Draft::Draft202012)
        .extend(
            files
                .iter()
                .map(|(path, doc)| (file_uri(path, ""), doc.as_ref())),
        )
        .and_then(|builder| builder.prepare())
        .unwrap_or_else(|e| panic!("loading the spec schemas for {schema_uri}: {e}"));
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .with_registry(&registry)
        .build(&serde_json::json!({ "$ref": schema_uri }))
        .unwrap_or_else(|e| panic!("compiling the spec schema {schema_uri}: {e}"));
    let validator = Arc::new(validator);
    cache
        .lock()
        .unwrap()
        .insert(schema_uri.to_owned(), validator.clone());
    validator
}
