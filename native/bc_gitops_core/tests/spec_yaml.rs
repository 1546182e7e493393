//! YAML specs beside term and JSON specs: one spec in the three formats is
//! one model; YAML errors carry their file, line and field; hostile YAML is
//! refused quickly, never expanded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bc_gitops_core::spec::{
    parse_dir, parse_file, parse_json, parse_yaml, AppSpec, ErrorKind, FileResult, Isolation,
    VmConfig, WarningKind,
};
use bc_gitops_core::term::{Spanned, Term};
use proptest::prelude::*;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// The only spec of an apps dir holding `file` for app `web`.
fn only_spec(file: &str, content: &str) -> AppSpec {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), &format!("apps/web/{file}"), content);
    let out = parse_dir(root.path(), "apps").unwrap();
    assert!(out.errors.is_empty(), "{file}: {:?}", out.errors);
    assert!(out.warnings.is_empty(), "{file}: {:?}", out.warnings);
    assert_eq!(out.specs.len(), 1);
    out.specs.into_iter().next().unwrap()
}

// Keys are in sorted order in all three, so that JSON (whose objects
// serde_json sorts) gives the same order as the others.
const TERMS: &str = r#"#{name => web,
  version => <<"3.0.0">>,
  description => <<"One spec, three formats">>,
  source => #{type => git, url => <<"https://git.example.test/web.git">>,
              ref => <<"v3.0.0">>, build => rebar3},
  env => #{count => -3, list => [1, <<"a">>, 2.5, false], missing => null,
           nested => #{<<"k">> => <<"v">>, <<"deeper">> => #{<<"x">> => [] }},
           on => true, port => 8080, ratio => 0.5, title => <<"caf", 233/utf8, " \"q\"">>},
  health => #{type => http, port => 8080, path => <<"/health">>,
              interval => 1000, timeout => 200},
  placement => [<<"web@*">>], rollout => #{max_parallel => 2, pause => 500},
  depends_on => [base, db]}.
"#;

const JSON: &str = r#"{"name": "web", "version": "3.0.0",
 "description": "One spec, three formats",
 "source": {"type": "git", "url": "https://git.example.test/web.git",
            "ref": "v3.0.0", "build": "rebar3"},
 "env": {"count": -3, "list": [1, "a", 2.5, false], "missing": null,
         "nested": {"deeper": {"x": []}, "k": "v"},
         "on": true, "port": 8080, "ratio": 0.5, "title": "café \"q\""},
 "health": {"type": "http", "port": 8080, "path": "/health",
            "interval": 1000, "timeout": 200},
 "placement": ["web@*"], "rollout": {"max_parallel": 2, "pause": 500},
 "depends_on": ["base", "db"]}
"#;

const YAML: &str = r#"# apps/web/app.yaml
name: web
version: "3.0.0"
description: One spec, three formats
source:
  type: git
  url: https://git.example.test/web.git
  ref: v3.0.0
  build: rebar3
env:
  count: -3
  list: [1, a, 2.5, false]
  missing: ~
  nested:
    deeper: {x: []}
    k: v
  "on": true
  port: 8080
  ratio: 0.5
  title: 'café "q"'
health:
  type: http
  port: 8080
  path: /health
  interval: 1000
  timeout: 200
placement:
  - web@*
rollout: {max_parallel: 2, pause: 500}
depends_on:
  - base
  - db
"#;

/// Map entries in key order, at every level: maps are unordered.
fn sorted(term: &Term) -> Term {
    match term {
        Term::Map(entries) => {
            let mut entries: Vec<(Spanned, Spanned)> = entries
                .iter()
                .map(|(k, v)| (k.clone(), Spanned::new(v.line, sorted(&v.term))))
                .collect();
            entries.sort_by(|a, b| format!("{:?}", a.0.term).cmp(&format!("{:?}", b.0.term)));
            Term::Map(entries)
        }
        Term::List { items, tail: None } => Term::list(
            items
                .iter()
                .map(|i| Spanned::new(i.line, sorted(&i.term)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn normalised(mut spec: AppSpec) -> AppSpec {
    spec.file = String::new();
    spec.env.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, value) in &mut spec.env {
        value.term = sorted(&value.term);
    }
    spec
}

#[test]
fn one_spec_in_three_formats_is_one_model() {
    let terms = only_spec("app.config", TERMS);
    let json = only_spec("app.json", JSON);
    let yaml = only_spec("app.yaml", YAML);
    let yml = only_spec("app.yml", YAML);
    assert_eq!(yaml.file, "apps/web/app.yaml");
    assert_eq!(yml.file, "apps/web/app.yml");
    let terms = normalised(terms);
    assert_eq!(normalised(json), terms);
    assert_eq!(normalised(yaml), terms);
    assert_eq!(normalised(yml), terms);
    // The model is not trivially equal: it holds what was written.
    assert_eq!(terms.env.len(), 8);
    assert_eq!(terms.health.as_ref().unwrap().timeout_ms, 200);
}

/// `isolation` and `vm_config` read the same from the three formats.
#[test]
fn isolation_and_vm_config_in_three_formats() {
    let terms = only_spec(
        "app.config",
        "#{name => web, version => <<\"1\">>, source => #{type => hex}, isolation => vm,\n\
           vm_config => #{memory_limit => 256, scheduler_limit => 2, node_prefix => <<\"w\">>,\n\
                          extra_args => [\"+A\", \"4\"]}}.\n",
    );
    let json = only_spec(
        "app.json",
        "{\"name\": \"web\", \"version\": \"1\", \"source\": {\"type\": \"hex\"},\n\
          \"isolation\": \"vm\", \"vm_config\": {\"memory_limit\": 256, \"scheduler_limit\": 2,\n\
          \"node_prefix\": \"w\", \"extra_args\": [\"+A\", \"4\"]}}",
    );
    let yaml = only_spec(
        "app.yaml",
        concat!(
            "name: web\nversion: '1'\nsource: {type: hex}\nisolation: vm\nvm_config:\n",
            "  memory_limit: 256\n  scheduler_limit: 2\n  node_prefix: w\n",
            "  extra_args: [\"+A\", \"4\"]\n",
        ),
    );
    assert_eq!(terms.isolation, Isolation::Vm);
    assert_eq!(
        terms.vm_config,
        Some(VmConfig {
            memory_limit: Some(256),
            scheduler_limit: Some(2),
            node_prefix: Some("w".to_string()),
            extra_args: Some(vec!["+A".to_string(), "4".to_string()]),
        })
    );
    for other in [json, yaml] {
        assert_eq!(other.isolation, terms.isolation);
        assert_eq!(other.vm_config, terms.vm_config);
    }
}

/// (app dir, content, kind, line, field)
type Case = (
    &'static str,
    &'static str,
    ErrorKind,
    Option<u32>,
    &'static str,
);

const BROKEN: &[Case] = &[
    (
        "syntax",
        "name: syntax\nversion: \"1\"\n  source: x\n",
        ErrorKind::Syntax,
        Some(3),
        "",
    ),
    (
        "tab",
        "name: tab\nsource:\n\ttype: hex\n",
        ErrorKind::Syntax,
        Some(3),
        "",
    ),
    ("list", "- name: list\n", ErrorKind::NotAMap, Some(1), ""),
    ("empty", "# nothing\n", ErrorKind::NotAMap, None, ""),
    (
        "two_docs",
        "name: two_docs\n---\nname: again\n",
        ErrorKind::NotAMap,
        Some(2),
        "",
    ),
    (
        "missing_version",
        "name: missing_version\nsource:\n  type: hex\n",
        ErrorKind::MissingField,
        Some(1),
        "version",
    ),
    (
        "git_no_url",
        "name: git_no_url\nversion: '1'\nsource:\n  type: git\n",
        ErrorKind::MissingField,
        Some(4),
        "source.url",
    ),
    (
        "version_float",
        "name: version_float\nversion: 1.0\nsource: {type: hex}\n",
        ErrorKind::WrongType,
        Some(2),
        "version",
    ),
    (
        "env_list",
        "name: env_list\nversion: '1'\nsource: {type: hex}\nenv:\n  - a\n",
        ErrorKind::WrongType,
        Some(5),
        "env",
    ),
    (
        "complex_key",
        "name: complex_key\nversion: '1'\nsource: {type: hex}\n? [a, b]\n: 1\n",
        ErrorKind::WrongType,
        Some(4),
        "(key)",
    ),
    (
        "port_text",
        "name: port_text\nversion: '1'\nsource: {type: hex}\nhealth:\n  type: tcp\n  port: '80'\n",
        ErrorKind::WrongType,
        Some(6),
        "health.port",
    ),
    (
        "bad_type",
        "name: bad_type\nversion: '1'\nsource:\n  type: svn\n",
        ErrorKind::InvalidValue,
        Some(4),
        "source.type",
    ),
    (
        "bad_sha",
        "name: bad_sha\nversion: '1'\nsource:\n  type: release\n  url: https://h.test/a.tgz\n  sha256: zz\n",
        ErrorKind::InvalidValue,
        Some(6),
        "source.sha256",
    ),
    (
        "dep_bad",
        "name: dep_bad\nversion: '1'\nsource: {type: hex}\ndepends_on:\n  - fine\n  - Not Fine\n",
        ErrorKind::InvalidValue,
        Some(6),
        "depends_on[1]",
    ),
    (
        "wide_atom_key",
        "name: wide_atom_key\nversion: '1'\nsource: {type: hex}\nenv:\n  ok: 1\n  λ: 2\n",
        ErrorKind::InvalidValue,
        Some(6),
        "env",
    ),
    (
        "vm_mem_text",
        "name: vm_mem_text\nversion: '1'\nsource: {type: hex}\nisolation: vm\nvm_config:\n  memory_limit: '512'\n",
        ErrorKind::WrongType,
        Some(6),
        "vm_config.memory_limit",
    ),
    (
        "vm_args_text",
        "name: vm_args_text\nversion: '1'\nsource: {type: hex}\nisolation: vm\nvm_config: {extra_args: +A 4}\n",
        ErrorKind::WrongType,
        Some(5),
        "vm_config.extra_args",
    ),
    (
        "mismatch",
        "\nname: other\nversion: '1'\nsource: {type: hex}\n",
        ErrorKind::NameMismatch,
        Some(2),
        "name",
    ),
    (
        "alias",
        "name: alias\nversion: &v '1'\nsource: {type: hex}\ndescription: *v\n",
        ErrorKind::Syntax,
        Some(4),
        "",
    ),
    (
        "tag",
        "name: tag\nversion: '1'\nsource: {type: hex}\nenv:\n  when: !!timestamp 2001-12-14\n",
        ErrorKind::Syntax,
        Some(5),
        "",
    ),
    (
        "inf",
        "name: inf\nversion: '1'\nsource: {type: hex}\nenv:\n  limit: .inf\n",
        ErrorKind::Syntax,
        Some(5),
        "",
    ),
];

#[test]
fn every_yaml_error_is_located() {
    let root = tempfile::tempdir().unwrap();
    for (app, content, ..) in BROKEN {
        write(root.path(), &format!("apps/{app}/app.yaml"), content);
    }
    fs::create_dir_all(root.path().join("apps/latin1")).unwrap();
    fs::write(
        root.path().join("apps/latin1/app.yml"),
        b"name: latin1\ndescription: caf\xe9\n",
    )
    .unwrap();
    write(
        root.path(),
        "apps/good/app.yml",
        "name: good\nversion: 1.0.0\nsource: {type: hex}\n",
    );
    let out = parse_dir(root.path(), "apps").unwrap();
    assert_eq!(out.specs.len(), 1, "{:?}", out.errors);
    assert_eq!(out.specs[0].version, "1.0.0");
    let cases = BROKEN
        .iter()
        .copied()
        .chain([("latin1", "", ErrorKind::Syntax, Some(2), "")]);
    for (app, _, kind, line, field) in cases {
        let errors: Vec<_> = out.errors.iter().filter(|e| e.app == app).collect();
        assert_eq!(errors.len(), 1, "{app}: {errors:?}");
        let e = errors[0];
        assert!(e.file.starts_with(&format!("apps/{app}/app.y")), "{e}");
        assert_eq!(
            (e.kind, e.line, e.field.as_str()),
            (kind, line, field),
            "{app}: {e}"
        );
        assert!(!e.message.is_empty());
    }
}

#[test]
fn yaml_warnings_carry_lines() {
    let root = tempfile::tempdir().unwrap();
    write(
        root.path(),
        "apps/future/app.yaml",
        "name: future\nversion: '1'\nsource:\n  type: hex\n  url: unused\ndepends_on: [base, base]\nsidecar: canary\n",
    );
    let out = parse_dir(root.path(), "apps").unwrap();
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let mut got: Vec<_> = out
        .warnings
        .iter()
        .map(|w| (w.kind, w.line, w.field.as_str()))
        .collect();
    got.sort_by_key(|w| w.2);
    assert_eq!(
        got,
        [
            (WarningKind::DuplicateDependency, Some(6), "depends_on[1]"),
            (WarningKind::UnknownKey, Some(7), "sidecar"),
            (WarningKind::UnusedField, Some(5), "source.url"),
        ]
    );
}

#[test]
fn two_spec_files_in_one_dir_are_an_error() {
    let root = tempfile::tempdir().unwrap();
    let yaml = |name: &str| format!("name: {name}\nversion: '1'\nsource: {{type: hex}}\n");
    write(root.path(), "apps/a/app.config", &bc_minimal("a"));
    write(root.path(), "apps/a/app.yaml", &yaml("a"));
    write(root.path(), "apps/b/app.yaml", &yaml("b"));
    write(root.path(), "apps/b/app.yml", &yaml("b"));
    write(root.path(), "apps/c/app.json", "{}");
    write(root.path(), "apps/c/app.yml", &yaml("c"));
    write(root.path(), "apps/c/app.config", &bc_minimal("c"));
    write(root.path(), "apps/d/app.yml", &yaml("d"));
    fs::create_dir_all(root.path().join("apps/e")).unwrap();
    let out = parse_dir(root.path(), "apps").unwrap();
    let message = |app: &str| {
        let e = out.errors.iter().find(|e| e.app == app).unwrap();
        assert_eq!(e.kind, ErrorKind::DuplicateSpec);
        e.message.as_str()
    };
    assert_eq!(message("a"), "app.config and app.yaml exist: keep one");
    assert_eq!(message("b"), "app.yaml and app.yml exist: keep one");
    assert_eq!(
        message("c"),
        "app.config, app.json and app.yml exist: keep one"
    );
    assert_eq!(out.specs.len(), 1);
    assert_eq!(out.specs[0].file, "apps/d/app.yml");
    assert_eq!(out.warnings.len(), 1);
    assert_eq!(
        out.warnings[0].message,
        "no app.config, app.json, app.yaml or app.yml: directory ignored"
    );
}

fn bc_minimal(name: &str) -> String {
    format!("#{{name => {name}, version => <<\"1\">>, source => #{{type => hex}}}}.\n")
}

#[test]
fn parse_file_takes_the_format_from_the_extension() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.yml");
    fs::write(&path, "name: x\nversion: '1'\nsource: {type: hex}\n").unwrap();
    match parse_file("x", &path, "x/spec.yml") {
        FileResult::Spec(spec, _) => assert_eq!(spec.name, "x"),
        other => panic!("{other:?}"),
    }
    // The same text read as terms is a syntax error.
    match parse_file("x", &path, "x/spec.config") {
        FileResult::Invalid(errors, _) => assert_eq!(errors[0].kind, ErrorKind::Syntax),
        other => panic!("{other:?}"),
    }
}

/// How long `src` takes to be refused, with the refusal.
fn refused(src: &str) -> (Duration, bc_gitops_core::spec::ReadError) {
    let start = Instant::now();
    let e = parse_yaml(src).unwrap_err();
    (start.elapsed(), e)
}

/// Well under a second even in a debug build on a loaded 2-core machine;
/// an expanded bomb would take minutes and gigabytes.
const FAST: Duration = Duration::from_millis(250);

#[test]
fn billion_laughs_is_refused_at_its_first_alias() {
    let mut bomb = String::from("name: lol\nlol0: &lol0 \"lol\"\n");
    for i in 1..=9 {
        let refs: Vec<String> = (0..10).map(|_| format!("*lol{}", i - 1)).collect();
        bomb.push_str(&format!("lol{i}: &lol{i} [{}]\n", refs.join(", ")));
    }
    let (took, e) = refused(&bomb);
    assert_eq!((e.kind, e.line), (ErrorKind::Syntax, Some(3)), "{e:?}");
    assert!(e.message.contains("aliases"), "{e:?}");
    assert!(took < FAST, "{took:?}");

    // The same through parse_dir, inside a spec file that fills the size
    // limit with anchors and aliases.
    let mut big = String::from("name: big\nversion: '1'\nsource: {type: hex}\nenv:\n");
    big.push_str("  a0: &a0 [x, x, x, x, x, x, x, x]\n");
    let mut i = 1;
    while big.len() < 1_000_000 {
        let prev = i - 1;
        big.push_str(&format!(
            "  a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
        ));
        i += 1;
    }
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "apps/big/app.yaml", &big);
    let start = Instant::now();
    let out = parse_dir(root.path(), "apps").unwrap();
    let took = start.elapsed();
    let e = &out.errors[0];
    assert_eq!((e.kind, e.line), (ErrorKind::Syntax, Some(6)), "{e}");
    assert!(took < FAST, "{took:?}");
}

#[test]
fn deep_nesting_is_refused_fast() {
    let cases = [
        // A megabyte of open brackets.
        "[".repeat(1_000_000),
        "{a: ".repeat(200_000),
        // A block sequence of sequences: `- - - - ...`.
        "- ".repeat(400_000),
        // Indented block mappings, one level a line.
        (0..1000)
            .map(|i| format!("{}k:\n", " ".repeat(i)))
            .collect(),
    ];
    for src in cases {
        let (took, e) = refused(&src);
        assert!(e.message.contains("nested too deeply"), "{e:?}");
        assert!(took < FAST, "{took:?} for {}", &src[..20]);
    }
}

#[test]
fn large_flat_yaml_reads_in_time() {
    // Near the 1 MiB limit, no trick: many keys and long strings.
    let mut src = String::from("name: flat\nversion: '1'\nsource: {type: hex}\nenv:\n");
    let mut i = 0;
    while src.len() < 1_000_000 {
        src.push_str(&format!("  key{i}: \"{}\"\n", "v".repeat(i % 200)));
        i += 1;
    }
    let start = Instant::now();
    let root = parse_yaml(&src).unwrap();
    let took = start.elapsed();
    let env = root.term.as_text();
    assert!(env.is_none());
    // Debug builds parse this in ~0.3 s; the release NIF in a tenth of that.
    assert!(took < Duration::from_secs(3), "{took:?}");
}

/// Every JSON value written out by serde_json is YAML that reads into the
/// same tree as the JSON reader gives: the two formats share their
/// conversions.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC*".prop_map(Value::String),
        "[ -~\\t\\n\\r\"\\\\]*".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("\\PC*", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn json_text_reads_the_same_as_yaml(value in json_value(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_string_pretty(&value).unwrap()
        } else {
            serde_json::to_string(&value).unwrap()
        };
        let json = parse_json(&text);
        let yaml = parse_yaml(&text);
        prop_assert!(json.is_ok(), "{text}: {json:?}");
        prop_assert!(yaml.is_ok(), "{text}: {yaml:?}");
        prop_assert_eq!(yaml.unwrap().term, json.unwrap().term, "{}", text);
    }
}
