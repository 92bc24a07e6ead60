//! The spec coverage map in `spec/` (see `spec/README.md`): every endpoint of
//! the spec's client-server and server-server APIs (media included), with
//! our status and the integration tests that call it.
//!
//! - `coverage_map_is_up_to_date` regenerates `spec/coverage.md` and
//!   `spec/coverage.json` in memory and fails when the committed files
//!   differ; `CORVID_TEST_UPDATE_SPEC_MAP=1 cargo test --test spec_coverage`
//!   writes them.
//! - `implemented_endpoints_are_served`: the committed map says
//!   implemented/partial only for routes the router serves.
//! - `served_routes_are_in_the_map`: every route the router serves is a spec
//!   endpoint the committed map lists as served (legacy `r0` routes count as
//!   their `v3` twin) or a non-spec route listed under `[extra]` in
//!   `spec/status.toml`.
//! - `versions_advertised_are_the_maps`: `/versions` lists exactly the spec
//!   versions whose required endpoints the map shows served.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fmt::Write as _,
    path::PathBuf,
};

use common::schema::{self, Endpoint, Spec};
use serde::{Deserialize, Serialize};

const UPDATE_ENV: &str = "CORVID_TEST_UPDATE_SPEC_MAP";
const REGENERATE: &str = "CORVID_TEST_UPDATE_SPEC_MAP=1 cargo test --test spec_coverage";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------- the map

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Map {
    generated_by: String,
    spec: String,
    counts: Vec<Count>,
    /// Per spec version, whether its required endpoints are served.
    versions: Vec<VersionRow>,
    /// Core endpoints no version waits for, with why.
    not_required: BTreeMap<String, String>,
    endpoints: Vec<Entry>,
    extra_routes: Vec<Extra>,
}

/// The required endpoints of a spec version: the client-server API's core
/// (the operations the spec's text outside "Modules" renders, which every
/// feature profile needs) that the version has (`x-addedInMatrixVersion`),
/// minus deprecated ones and those `[not_required]` in `spec/status.toml`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct VersionRow {
    version: String,
    required: usize,
    /// Required endpoints the router does not serve.
    missing: Vec<String>,
    /// This version and every earlier one are fully served.
    advertised: bool,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Default, Clone)]
struct Count {
    api: String,
    implemented: usize,
    partial: usize,
    not_yet: usize,
    total: usize,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Entry {
    api: String,
    /// The spec's OpenAPI file (one group of endpoints in the spec).
    module: String,
    /// The spec's section (the operation's tag), if the file has one.
    section: String,
    method: String,
    path: String,
    operation_id: String,
    deprecated: bool,
    /// `implemented`, `partial` or `not yet`.
    status: String,
    note: String,
    /// `test_file::function` of every integration test that calls it.
    tests: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Extra {
    method: String,
    path: String,
    note: String,
}

/// `spec/status.toml`: the hand-kept part.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StatusFile {
    /// `"METHOD /spec/path" = "what is missing"`.
    #[serde(default)]
    partial: BTreeMap<String, String>,
    /// `"METHOD /path" = "why we serve it"`: served routes outside the spec.
    #[serde(default)]
    extra: BTreeMap<String, String>,
    /// `"METHOD /spec/path" = "why"`: core endpoints a version's
    /// advertisement does not wait for.
    #[serde(default)]
    not_required: BTreeMap<String, String>,
}

/// Every spec version `/versions` can name, oldest first.
const KNOWN_VERSIONS: [&str; 22] = [
    "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8",
    "v1.9", "v1.10", "v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16", "v1.17", "v1.18",
    "v1.19",
];

/// The client-server OpenAPI files the spec's core text renders (the
/// `http-api` shortcodes of `client-server-api/_index.md`; modules live in
/// `client-server-api/modules/`).
fn core_files(spec: &Spec) -> BTreeSet<String> {
    let index = spec.root.join("content/client-server-api/_index.md");
    let text = std::fs::read_to_string(&index)
        .unwrap_or_else(|e| panic!("reading {}: {e}", index.display()));
    let marker = "http-api spec=\"client-server\" api=\"";
    text.split(marker)
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

/// `1.7` → (1, 7); `r0.6.1` → (0, 6).
fn version_key(v: &str) -> (u32, u32) {
    let v = v.trim_start_matches(['v', 'r']);
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn version_rows(spec: &Spec, status: &StatusFile, served: &HashSet<String>) -> Vec<VersionRow> {
    let core = core_files(spec);
    let mut problems: Vec<String> = status
        .not_required
        .keys()
        .filter(|id| !spec.endpoints.iter().any(|e| e.id() == **id))
        .map(|id| format!("[not_required] names `{id}`, which is no endpoint of the spec"))
        .collect();
    problems.extend(
        status
            .not_required
            .keys()
            .filter(|id| served.contains(*id))
            .map(|id| format!("[not_required] names `{id}`, which is served: drop the entry")),
    );
    assert!(
        problems.is_empty(),
        "spec/status.toml: {}",
        problems.join("; ")
    );
    let mut still_advertised = true;
    KNOWN_VERSIONS
        .iter()
        .map(|version| {
            let required: Vec<&Endpoint> = spec
                .endpoints
                .iter()
                .filter(|e| e.api == "client-server" && core.contains(&e.file) && !e.deprecated)
                .filter(|e| {
                    e.added_in.is_empty() || version_key(&e.added_in) <= version_key(version)
                })
                .filter(|e| !status.not_required.contains_key(&e.id()))
                .collect();
            let missing: Vec<String> = required
                .iter()
                .filter(|e| !served.contains(&e.id()))
                .map(|e| e.id())
                .collect();
            still_advertised &= missing.is_empty();
            VersionRow {
                version: version.to_string(),
                required: required.len(),
                missing,
                advertised: still_advertised,
            }
        })
        .collect()
}

fn status_file() -> StatusFile {
    let path = repo().join("spec/status.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `(METHOD, path)` of every route the router serves, as it mounts them.
fn routes() -> Vec<(String, String)> {
    corvid::api::route_table()
        .into_iter()
        .map(|(m, p)| (m.as_str().to_owned(), p))
        .collect()
}

fn generate(spec: &Spec) -> Map {
    let status = status_file();
    let served = schema::served_ids(spec, false);
    let routes: HashSet<(String, String)> = routes()
        .into_iter()
        .map(|(m, p)| (m, schema::template_key(&p)))
        .collect();
    let by_id: BTreeMap<String, &Endpoint> = spec.endpoints.iter().map(|e| (e.id(), e)).collect();
    let tests = tests_by_endpoint(spec);

    let mut problems = Vec::new();
    for id in status.partial.keys() {
        match by_id.get(id) {
            None => problems.push(format!(
                "[partial] names `{id}`, which is no endpoint of the spec"
            )),
            Some(e) if !served.contains(&e.id()) => problems.push(format!(
                "[partial] names `{id}`, which the router does not serve"
            )),
            Some(_) => {}
        }
    }
    let mut extra_routes = Vec::new();
    for (id, note) in &status.extra {
        let (method, path) = id
            .split_once(' ')
            .unwrap_or_else(|| panic!("spec/status.toml: `{id}` is not `METHOD /path`"));
        if by_id.contains_key(id) {
            problems.push(format!(
                "[extra] lists `{id}`, which is a spec endpoint: it needs no entry"
            ));
        }
        if !routes.contains(&(method.to_owned(), schema::template_key(path))) {
            problems.push(format!(
                "[extra] lists `{id}`, which the router does not serve"
            ));
        }
        extra_routes.push(Extra {
            method: method.to_owned(),
            path: path.to_owned(),
            note: note.clone(),
        });
    }
    assert!(
        problems.is_empty(),
        "spec/status.toml is out of step:\n  {}",
        problems.join("\n  ")
    );

    let mut endpoints: Vec<Entry> = spec
        .endpoints
        .iter()
        .map(|e| {
            let id = e.id();
            let (status, note) = if !served.contains(&id) {
                ("not yet", String::new())
            } else if let Some(note) = status.partial.get(&id) {
                ("partial", note.clone())
            } else {
                ("implemented", String::new())
            };
            Entry {
                api: e.api.clone(),
                module: e.file.clone(),
                section: e.section.clone(),
                method: e.method.clone(),
                path: e.path.clone(),
                operation_id: e.operation_id.clone(),
                deprecated: e.deprecated,
                status: status.to_owned(),
                note,
                tests: tests.get(&id).into_iter().flatten().cloned().collect(),
            }
        })
        .collect();
    endpoints.sort_by(|a, b| {
        (&a.api, &a.module, &a.path, method_rank(&a.method)).cmp(&(
            &b.api,
            &b.module,
            &b.path,
            method_rank(&b.method),
        ))
    });

    let mut counts: Vec<Count> = schema::APIS
        .iter()
        .map(|api| Count {
            api: api.to_string(),
            ..Count::default()
        })
        .collect();
    counts.push(Count {
        api: "all".into(),
        ..Count::default()
    });
    for e in &endpoints {
        for c in counts
            .iter_mut()
            .filter(|c| c.api == e.api || c.api == "all")
        {
            c.add(&e.status);
        }
    }

    Map {
        generated_by: REGENERATE.into(),
        spec: "../shared/matrix-spec/data/api/{client-server,server-server}".into(),
        counts,
        versions: version_rows(spec, &status, &served),
        not_required: status.not_required.clone(),
        endpoints,
        extra_routes,
    }
}

impl Count {
    fn add(&mut self, status: &str) {
        match status {
            "implemented" => self.implemented += 1,
            "partial" => self.partial += 1,
            _ => self.not_yet += 1,
        }
        self.total += 1;
    }
}

fn method_rank(method: &str) -> usize {
    ["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"]
        .iter()
        .position(|m| *m == method)
        .unwrap_or(99)
}

fn render_json(map: &Map) -> String {
    let mut text = serde_json::to_string_pretty(map).unwrap();
    text.push('\n');
    text
}

fn render_markdown(map: &Map) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Spec coverage\n\n\
         Generated from the Matrix spec (`{}`), Corvid's router and `spec/status.toml` by\n\
         `{}`; do not edit by hand. How it is made and what\n\
         the columns mean: `spec/README.md`. The same data: `spec/coverage.json`.\n",
        map.spec, map.generated_by
    );
    md.push_str("| API | implemented | partial | not yet | total |\n|---|---:|---:|---:|---:|\n");
    for c in &map.counts {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            c.api, c.implemented, c.partial, c.not_yet, c.total
        );
    }
    md.push_str(
        "\n## Spec versions\n\n\
         `/versions` advertises a version when it and every earlier one are served:\n\
         each of its required endpoints (the core of the client-server API that\n\
         the version has, not deprecated, less `[not_required]` in\n\
         `spec/status.toml`) is implemented or partial.\n\n\
         | Version | Required | Advertised | Missing |\n|---|---:|---|---|\n",
    );
    for v in &map.versions {
        let missing: Vec<String> = v.missing.iter().map(|m| format!("`{m}`")).collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            v.version,
            v.required,
            if v.advertised { "yes" } else { "no" },
            escape_cell(&missing.join(", "))
        );
    }
    if !map.not_required.is_empty() {
        md.push_str(
            "\nNot required for a version (`[not_required]`):\n\n| Endpoint | Why |\n|---|---|\n",
        );
        for (id, why) in &map.not_required {
            let _ = writeln!(md, "| `{id}` | {} |", escape_cell(why));
        }
    }
    let mut modules: BTreeMap<(&str, &str), Vec<&Entry>> = BTreeMap::new();
    for e in &map.endpoints {
        modules.entry((&e.api, &e.module)).or_default().push(e);
    }
    let mut current_api = "";
    for ((api, module), entries) in &modules {
        if *api != current_api {
            let _ = writeln!(md, "\n## {api}");
            current_api = api;
        }
        let mut count = Count::default();
        let mut sections = BTreeSet::new();
        for e in entries {
            count.add(&e.status);
            if !e.section.is_empty() {
                sections.insert(e.section.as_str());
            }
        }
        let sections: Vec<&str> = sections.into_iter().collect();
        let _ = writeln!(
            md,
            "\n### {module}{}\n\n{} implemented, {} partial, {} not yet\n\n\
             | Method | Path | Status | Tests |\n|---|---|---|---|",
            if sections.is_empty() {
                String::new()
            } else {
                format!(" ({})", sections.join(", "))
            },
            count.implemented,
            count.partial,
            count.not_yet
        );
        for e in entries {
            let status = if e.note.is_empty() {
                e.status.clone()
            } else {
                format!("{}: {}", e.status, e.note)
            };
            let _ = writeln!(
                md,
                "| {} | `{}`{} | {} | {} |",
                e.method,
                e.path,
                if e.deprecated { " (deprecated)" } else { "" },
                escape_cell(&status),
                e.tests.join(", ")
            );
        }
    }
    md.push_str(
        "\n## Served routes outside the spec\n\n\
         Listed under `[extra]` in `spec/status.toml`. Legacy `r0` routes are not\n\
         listed: each is the same endpoint as its `v3` twin above.\n\n\
         | Method | Path | Why |\n|---|---|---|\n",
    );
    for x in &map.extra_routes {
        let _ = writeln!(
            md,
            "| {} | `{}` | {} |",
            x.method,
            x.path,
            escape_cell(&x.note)
        );
    }
    md
}

fn escape_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

// ------------------------------------------- which tests call which endpoint

/// `METHOD /spec/path` → `test_file::function` of the integration tests
/// whose source sends a request to it, read from `tests/*.rs`:
///
/// - a string literal holding a Matrix path (`/_matrix/…`, `/.well-known/…`)
///   is a request to it; `format!` placeholders match any segment;
/// - its method is the last `Method::X`, `.get(`, `.post(`, `.put(` or
///   `.delete(` before it in the same statement (back to a `;`, `{` or `}`),
///   else the first after it up to the next `;`, else every method the spec
///   has for the path;
/// - a call of a `tests/common` helper that sends a request (`register`,
///   `create_room`, `send_text`, `join`, `sync`, …) counts as the requests in
///   that helper's body.
fn tests_by_endpoint(spec: &Spec) -> BTreeMap<String, BTreeSet<String>> {
    let dir = repo().join("tests");
    let common = std::fs::read_to_string(dir.join("common/mod.rs")).expect("tests/common/mod.rs");
    let helpers = helper_requests(&common);

    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        if stem == "spec_coverage" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let source = Source::new(&text);
        let mut requests: Vec<(String, Request)> = source
            .requests()
            .into_iter()
            .map(|r| (source.enclosing_fn(r.at), r))
            .collect();
        for (name, (arity, calls)) in &helpers {
            for at in source.calls_of(name, *arity) {
                for r in calls {
                    requests.push((
                        source.enclosing_fn(at),
                        Request {
                            at,
                            method: r.method.clone(),
                            path: r.path.clone(),
                        },
                    ));
                }
            }
        }
        for (function, r) in through_local_helpers(&source, requests) {
            for e in endpoints_of(spec, &r) {
                out.entry(e.id())
                    .or_default()
                    .insert(format!("{stem}::{function}"));
            }
        }
    }
    out
}

/// A request sent from a helper function of the test file itself counts
/// for the functions that call the helper (followed a few levels up).
fn through_local_helpers(
    source: &Source,
    requests: Vec<(String, Request)>,
) -> Vec<(String, Request)> {
    let mut resolved = Vec::new();
    let mut pending = requests;
    for _ in 0..4 {
        let mut next = Vec::new();
        for (function, r) in pending {
            let callers = source.plain_calls_of(&function);
            if callers.is_empty() {
                resolved.push((function, r));
            } else {
                next.extend(
                    callers
                        .into_iter()
                        .map(|at| (source.enclosing_fn(at), r.clone())),
                );
            }
        }
        pending = next;
    }
    resolved.extend(pending);
    resolved
}

fn endpoints_of<'s>(spec: &'s Spec, r: &Request) -> Vec<&'s Endpoint> {
    schema::best_matches(spec, &schema::current_version(&r.path))
        .into_iter()
        .filter(|e| r.method.as_ref().is_none_or(|m| *m == e.method))
        .collect()
}

/// The requests each helper of `tests/common/mod.rs` sends through
/// `TestServer::request` (directly or via `get`/`post`/`put`), and those
/// of a helper built on such helpers (`alice_and_bob_in_a_room`).
/// Keyed by name, with the helper's number of arguments.
fn helper_requests(common: &str) -> BTreeMap<String, (usize, Vec<Request>)> {
    let source = Source::new(common);
    let mut out: BTreeMap<String, (usize, Vec<Request>)> = BTreeMap::new();
    for r in source.requests() {
        let (name, body) = source.enclosing_fn_body(r.at);
        let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let sends = ["self.request(", "self.get(", "self.post(", "self.put("]
            .iter()
            .any(|s| body.contains(s));
        if sends && !matches!(name.as_str(), "request" | "get" | "post" | "put") {
            let arity = source.arity_of(&name).expect("helper signature");
            out.entry(name)
                .or_insert_with(|| (arity, Vec::new()))
                .1
                .push(r);
        }
    }
    let direct = out.clone();
    for (name, (arity, requests)) in &direct {
        for at in source.calls_of(name, *arity) {
            let caller = source.enclosing_fn(at);
            if direct.contains_key(&caller) {
                continue;
            }
            let Some(caller_arity) = source.arity_of(&caller) else {
                continue;
            };
            let entry = out
                .entry(caller)
                .or_insert_with(|| (caller_arity, Vec::new()));
            entry.1.extend(requests.iter().cloned());
        }
    }
    out
}

#[derive(Debug, Clone)]
struct Request {
    at: usize,
    method: Option<String>,
    path: String,
}

/// A Rust source file with its string literals and comments blanked out
/// (`code`), so searches for calls and `;` see only code.
struct Source<'a> {
    text: &'a str,
    code: String,
    literals: Vec<(usize, String)>,
}

impl<'a> Source<'a> {
    fn new(text: &'a str) -> Self {
        let bytes = text.as_bytes();
        let mut code = bytes.to_vec();
        let mut literals = Vec::new();
        let mut i = 0;
        let blank = |code: &mut Vec<u8>, from: usize, to: usize| {
            for b in &mut code[from..to] {
                if *b != b'\n' {
                    *b = b' ';
                }
            }
        };
        while i < bytes.len() {
            match bytes[i] {
                b'/' if bytes.get(i + 1) == Some(&b'/') => {
                    let end = text[i..].find('\n').map_or(bytes.len(), |n| i + n);
                    blank(&mut code, i, end);
                    i = end;
                }
                b'/' if bytes.get(i + 1) == Some(&b'*') => {
                    let end = text[i + 2..].find("*/").map_or(bytes.len(), |n| i + n + 4);
                    blank(&mut code, i, end);
                    i = end;
                }
                b'\'' => {
                    // A char literal ('x', '\n', '"'); otherwise a lifetime.
                    if bytes.get(i + 1) == Some(&b'\\') {
                        let end = text[i + 2..].find('\'').map_or(bytes.len(), |n| i + n + 3);
                        blank(&mut code, i + 1, end - 1);
                        i = end;
                    } else if bytes.get(i + 2) == Some(&b'\'') {
                        blank(&mut code, i + 1, i + 2);
                        i += 3;
                    } else {
                        i += 1;
                    }
                }
                b'r' if matches!(bytes.get(i + 1), Some(b'"' | b'#'))
                    && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) =>
                {
                    let hashes = bytes[i + 1..].iter().take_while(|b| **b == b'#').count();
                    let open = i + 1 + hashes;
                    if bytes.get(open) != Some(&b'"') {
                        i += 1;
                        continue;
                    }
                    let close = format!("\"{}", "#".repeat(hashes));
                    let end = text[open + 1..]
                        .find(&close)
                        .map_or(bytes.len(), |n| open + 1 + n);
                    literals.push((open, text[open + 1..end].to_owned()));
                    blank(&mut code, open + 1, end);
                    i = end + close.len();
                }
                b'"' => {
                    let mut j = i + 1;
                    while j < bytes.len() && bytes[j] != b'"' {
                        j += if bytes[j] == b'\\' { 2 } else { 1 };
                    }
                    let end = j.min(bytes.len());
                    literals.push((i, text[i + 1..end].to_owned()));
                    blank(&mut code, i + 1, end);
                    i = end + 1;
                }
                _ => i += 1,
            }
        }
        Self {
            text,
            code: String::from_utf8(code).expect("blanking keeps UTF-8"),
            literals,
        }
    }

    /// Every literal holding a Matrix path, with the method it is sent with.
    fn requests(&self) -> Vec<Request> {
        let mut out = Vec::new();
        for (at, literal) in &self.literals {
            let Some(start) = ["/_matrix/", "/.well-known/", "/_synapse/"]
                .iter()
                .filter_map(|p| literal.find(p))
                .min()
            else {
                continue;
            };
            let path = literal[start..]
                .split(['?', ' ', '"'])
                .next()
                .unwrap()
                .to_owned();
            out.push(Request {
                at: *at,
                method: self.method_near(*at),
                path,
            });
        }
        out
    }

    fn method_near(&self, at: usize) -> Option<String> {
        let before_start = self.code[..at].rfind([';', '{', '}']).map_or(0, |i| i + 1);
        let after_end = self.code[at..]
            .find(';')
            .map_or(self.code.len(), |i| at + i);
        let found = |window: &str| -> Vec<(usize, String)> {
            let mut hits = Vec::new();
            for m in ["GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH"] {
                for needle in [format!("Method::{m}"), format!(".{}(", m.to_lowercase())] {
                    if matches!(m, "OPTIONS" | "HEAD" | "PATCH") && needle.starts_with('.') {
                        continue;
                    }
                    hits.extend(
                        window
                            .match_indices(&needle)
                            .map(|(i, _)| (i, m.to_owned())),
                    );
                }
            }
            hits.sort();
            hits
        };
        found(&self.code[before_start..at])
            .pop()
            .or_else(|| found(&self.code[at..after_end]).into_iter().next())
            .map(|(_, m)| m)
    }

    /// Positions of `.name(` calls with `arity` arguments (so `Vec::join`
    /// is not the `join` helper).
    fn calls_of(&self, name: &str, arity: usize) -> Vec<usize> {
        let needle = format!(".{name}(");
        self.code
            .match_indices(&needle)
            .filter(|(i, _)| count_args(&self.code[i + needle.len()..]) == arity)
            .map(|(i, _)| i)
            .collect()
    }

    /// Positions of plain calls `name(` of a free function (not `fn name(`,
    /// not a method `.name(`, not a longer identifier ending in `name`).
    fn plain_calls_of(&self, name: &str) -> Vec<usize> {
        let needle = format!("{name}(");
        self.code
            .match_indices(&needle)
            .filter(|(i, _)| {
                let before = self.code[..*i].chars().next_back();
                !before.is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | ':'))
                    && !self.code[..*i].ends_with("fn ")
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// The number of parameters of `fn name(` besides `self`.
    fn arity_of(&self, name: &str) -> Option<usize> {
        let needle = format!("fn {name}(");
        let i = self.code.find(&needle)?;
        let args = &self.code[i + needle.len()..];
        let n = count_args(args);
        let has_self = args
            .trim_start()
            .trim_start_matches('&')
            .trim_start()
            .starts_with("self")
            || args.trim_start().starts_with("&mut self");
        Some(n - usize::from(has_self))
    }

    fn fn_start(&self, at: usize) -> Option<(usize, String)> {
        let head = &self.code[..at];
        let mut search = head.len();
        while let Some(i) = head[..search].rfind("fn ") {
            let is_word = i == 0 || !head.as_bytes()[i - 1].is_ascii_alphanumeric();
            let name: String = head[i + 3..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if is_word && !name.is_empty() {
                return Some((i, name));
            }
            search = i;
        }
        None
    }

    fn enclosing_fn(&self, at: usize) -> String {
        self.fn_start(at).map_or_else(|| "?".into(), |(_, n)| n)
    }

    /// The enclosing function's name and its text up to the next `fn`.
    fn enclosing_fn_body(&self, at: usize) -> (String, &str) {
        let (start, name) = self.fn_start(at).unwrap_or((0, "?".into()));
        let end = self.code[at..]
            .find("fn ")
            .map_or(self.code.len(), |i| at + i);
        (name, &self.text[start..end])
    }
}

/// The number of top-level arguments in `text`, which starts just after
/// an opening parenthesis (string literals already blanked).
fn count_args(text: &str) -> usize {
    let mut depth = 0usize;
    let mut args = 0;
    let mut empty = true;
    for c in text.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth == 0 => break,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                args += 1;
                empty = true;
                continue;
            }
            c if c.is_whitespace() => continue,
            _ => {}
        }
        empty = false;
    }
    // A trailing comma adds no argument.
    if empty { args } else { args + 1 }
}

// ------------------------------------------------------------------ tests

/// The committed map (while it is being rewritten: the new one).
fn committed_map() -> Map {
    if std::env::var_os(UPDATE_ENV).is_some() {
        return generate(schema::spec().expect("the spec, to regenerate the map"));
    }
    let path = repo().join("spec/coverage.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e}\nregenerate the map: {REGENERATE}",
            path.display()
        )
    });
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: {e}\nregenerate the map: {REGENERATE}", path.display()))
}

#[test]
fn coverage_map_is_up_to_date() {
    let Some(spec) = schema::spec() else { return };
    let map = generate(spec);
    let files = [
        ("spec/coverage.json", render_json(&map)),
        ("spec/coverage.md", render_markdown(&map)),
    ];
    if std::env::var_os(UPDATE_ENV).is_some() {
        for (name, text) in &files {
            std::fs::write(repo().join(name), text).unwrap();
            eprintln!("wrote {name}");
        }
        return;
    }
    let mut stale = Vec::new();
    for (name, text) in &files {
        let committed = std::fs::read_to_string(repo().join(name)).unwrap_or_default();
        if committed != *text {
            stale.push(format!("{name}: {}", first_difference(&committed, text)));
        }
    }
    assert!(
        stale.is_empty(),
        "the spec coverage map is out of date:\n  {}\nregenerate it with `{REGENERATE}` and commit \
         the result",
        stale.join("\n  ")
    );
}

fn first_difference(old: &str, new: &str) -> String {
    let old_lines: Vec<&str> = old.lines().collect();
    for (n, line) in new.lines().enumerate() {
        if old_lines.get(n) != Some(&line) {
            return format!(
                "line {}: committed {:?}, generated {:?}",
                n + 1,
                old_lines.get(n).copied().unwrap_or("<end of file>"),
                line
            );
        }
    }
    format!(
        "the committed file has {} lines more",
        old_lines.len().saturating_sub(new.lines().count())
    )
}

/// `(METHOD, template key)` of the committed map's served endpoints.
fn committed_served(map: &Map) -> Vec<(String, String)> {
    map.endpoints
        .iter()
        .filter(|e| e.status != "not yet")
        .map(|e| (e.method.clone(), schema::template_key(&e.path)))
        .collect()
}

/// Does the router serve the endpoint `(method, key)`? A route serves the
/// endpoints of its method that it fits best among `all` (so ruma's
/// `/profile/{user_id}/displayname` serves the spec's
/// `/profile/{userId}/{keyName}`).
fn route_serves(all: &[(String, String)], method: &str, key: &str) -> bool {
    routes().into_iter().any(|(m, path)| {
        m == method
            && schema::best_fit(all, |(_, k)| k, &path)
                .iter()
                .any(|(em, ek)| *em == m && ek == key)
    })
}

#[test]
fn versions_advertised_are_the_maps() {
    if schema::spec().is_none() {
        return;
    }
    let map = committed_map();
    let from_map: Vec<&str> = map
        .versions
        .iter()
        .filter(|v| v.advertised)
        .map(|v| v.version.as_str())
        .collect();
    assert_eq!(
        corvid::api::client::SPEC_VERSIONS.as_slice(),
        from_map.as_slice(),
        "/versions (SPEC_VERSIONS in src/api/client/discovery.rs) must list exactly the \
         versions spec/coverage.md shows advertised"
    );
}

#[test]
fn implemented_endpoints_are_served() {
    let map = committed_map();
    let all: Vec<(String, String)> = map
        .endpoints
        .iter()
        .map(|e| (e.method.clone(), schema::template_key(&e.path)))
        .collect();
    let missing: Vec<String> = map
        .endpoints
        .iter()
        .filter(|e| e.status != "not yet")
        .filter(|e| !route_serves(&all, &e.method, &schema::template_key(&e.path)))
        .map(|e| format!("{} {} ({})", e.method, e.path, e.status))
        .collect();
    assert!(
        missing.is_empty(),
        "spec/coverage.json says these are served, but the router does not serve them:\n  {}\n\
         regenerate the map with `{REGENERATE}` (or mount the routes)",
        missing.join("\n  ")
    );
}

#[test]
fn served_routes_are_in_the_map() {
    let map = committed_map();
    let all: Vec<(String, String)> = map
        .endpoints
        .iter()
        .map(|e| (e.method.clone(), schema::template_key(&e.path)))
        .collect();
    let served = committed_served(&map);
    let extra: HashSet<(String, String)> = map
        .extra_routes
        .iter()
        .map(|x| (x.method.clone(), schema::template_key(&x.path)))
        .collect();
    let unlisted: Vec<String> = routes()
        .into_iter()
        .filter(|(m, p)| {
            if extra.contains(&(m.clone(), schema::template_key(p))) {
                return false;
            }
            // spec: the map is about the current spec; `r0` is `v3`'s old name.
            let current = schema::current_version(p);
            let fits = schema::best_fit(&all, |(_, k)| k, &current);
            !fits
                .iter()
                .any(|(em, ek)| em == m && served.contains(&(em.clone(), ek.clone())))
        })
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert!(
        unlisted.is_empty(),
        "the router serves routes spec/coverage.json does not list as served:\n  {}\n\
         a spec endpoint: regenerate the map with `{REGENERATE}`; a route outside the spec: list \
         it under [extra] in spec/status.toml with the reason, then regenerate",
        unlisted.join("\n  ")
    );
}

/// The test-source scan finds the requests of a known test.
#[test]
fn source_scan_attributes_methods() {
    let text = r#"
async fn sample(s: TestServer) {
    let alice = s.register("alice").await;
    let (status, _) = s
        .request(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            None,
        )
        .await;
    s.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"), &t).await;
    for path in ["/_matrix/client/v3/rooms/x/send/m.room.message/t1"] {
        client.put(format!("{}{path}", s.base)).send().await;
    }
    let words = ["a", "b"].join("/");
    s.join(&alice, &room).await;
}
"#;
    let source = Source::new(text);
    let found: Vec<(Option<String>, String)> = source
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect();
    assert_eq!(
        found,
        vec![
            (Some("POST".into()), "/_matrix/client/v3/login".into()),
            (
                Some("GET".into()),
                "/_matrix/client/v3/rooms/{room}/state/m.room.name/".into()
            ),
            (
                Some("PUT".into()),
                "/_matrix/client/v3/rooms/x/send/m.room.message/t1".into()
            ),
        ]
    );
    assert_eq!(source.calls_of("register", 1).len(), 1);
    assert_eq!(source.calls_of("join", 2).len(), 1);
    assert_eq!(
        source.enclosing_fn(source.calls_of("register", 1)[0]),
        "sample"
    );
    assert_eq!(count_args("a, f(b, c), [d, e],\n)"), 3);
    assert_eq!(count_args(")"), 0);
    let common = Source::new(
        "impl T { pub async fn join(&self, user: &User, room: &str) -> (S, V) { unreachable!() } }",
    );
    assert_eq!(common.arity_of("join"), Some(2));
}

/// The response validator is not vacuous: it resolves `$ref`s across files
/// (event schemas included) and rejects wrong types, missing fields and
/// undocumented statuses, with the offending field's pointer.
#[test]
fn validator_rejects_bad_responses() {
    use reqwest::{Method, StatusCode};
    use serde_json::json;
    if schema::spec().is_none() {
        return;
    }
    let bad = |method: Method, path: &str, status: u16, body: serde_json::Value, field: &str| {
        let status = StatusCode::from_u16(status).unwrap();
        let report = schema::violations(&method, path, status, &body).expect_err(&format!(
            "{method} {path} {status} {body} should be rejected"
        ));
        assert!(report.contains(field), "{report}\nshould name {field}");
    };
    let good = |method: Method, path: &str, status: u16, body: serde_json::Value| {
        let status = StatusCode::from_u16(status).unwrap();
        if let Err(report) = schema::violations(&method, path, status, &body) {
            panic!("{report}");
        }
    };
    let whoami = "/_matrix/client/v3/account/whoami";
    good(Method::GET, whoami, 200, json!({"user_id": "@a:x"}));
    bad(
        Method::GET,
        whoami,
        200,
        json!({"device_id": "D"}),
        "at `/`",
    );
    bad(
        Method::GET,
        whoami,
        200,
        json!({"user_id": 5}),
        "at `/user_id`",
    );
    // An error status the endpoint does not list: the standard error schema.
    good(
        Method::GET,
        whoami,
        418,
        json!({"errcode": "M_UNKNOWN", "error": "x"}),
    );
    bad(Method::GET, whoami, 418, json!({"error": "x"}), "errcode");
    // A success status the spec does not list.
    bad(Method::GET, whoami, 204, json!({}), "no status 204");
    // Legacy r0 paths are held to the v3 endpoint's schema.
    bad(
        Method::GET,
        "/_matrix/client/r0/account/whoami",
        200,
        json!({}),
        "user_id",
    );
    // Deep: a sync timeline event without `sender` (client_event.yaml).
    let event = json!({"type": "m.room.message", "event_id": "$e", "origin_server_ts": 1,
        "content": {}, "sender": "@a:x"});
    let mut broken = event.clone();
    broken.as_object_mut().unwrap().remove("sender");
    let sync = |event: serde_json::Value| json!({"next_batch": "s1", "rooms": {"join": {"!r:x": {"timeline": {"events": [event]}}}}});
    good(
        Method::GET,
        "/_matrix/client/v3/sync?since=s0",
        200,
        sync(event),
    );
    bad(
        Method::GET,
        "/_matrix/client/v3/sync",
        200,
        sync(broken),
        "at `/rooms/join/!r:x/timeline/events/0`",
    );
    // Paths the router does not serve (and unknown paths) validate nothing.
    good(Method::GET, "/_matrix/client/v3/nonexistent", 200, json!(5));
}
