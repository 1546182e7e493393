//! Spec discovery and validation over a corpus of valid and broken files,
//! one for every error and warning kind, each checked for its file, line and
//! field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bc_gitops_core::spec::{
    is_app_name, parse_dir, BuildTool, ErrorKind, HealthType, Isolation, Placement, Rollout,
    SourceType, VmConfig, WarningKind,
};
use bc_gitops_core::term::Term;
use std::fs;
use std::path::Path;

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

const MINIMAL: &str = "#{name => NAME, version => <<\"1.0.0\">>, source => #{type => hex}}.\n";

fn minimal(name: &str) -> String {
    MINIMAL.replace("NAME", name)
}

/// (app dir, file name, content, kind, line, field)
type BrokenCase = (
    &'static str,
    &'static str,
    &'static str,
    ErrorKind,
    Option<u32>,
    &'static str,
);

const BROKEN: &[BrokenCase] = &[
    (
        "syntax",
        "app.config",
        "#{name => syntax,\n version => <<\"1\">>\n source => x}.\n",
        ErrorKind::Syntax,
        Some(3),
        "",
    ),
    (
        "json_syntax",
        "app.json",
        "{\"name\": \"json_syntax\",\n\"version\": }",
        ErrorKind::Syntax,
        Some(2),
        "",
    ),
    (
        "not_a_map",
        "app.config",
        "\n[{name, not_a_map}].\n",
        ErrorKind::NotAMap,
        Some(2),
        "",
    ),
    (
        "json_array",
        "app.json",
        "[1, 2]",
        ErrorKind::NotAMap,
        None,
        "",
    ),
    (
        "no_terms",
        "app.config",
        "% nothing but a comment\n",
        ErrorKind::NotAMap,
        None,
        "",
    ),
    (
        "missing_version",
        "app.config",
        "#{name => missing_version,\n source => #{type => hex}}.\n",
        ErrorKind::MissingField,
        Some(1),
        "version",
    ),
    (
        "missing_source",
        "app.config",
        "#{name => missing_source, version => <<\"1\">>}.\n",
        ErrorKind::MissingField,
        Some(1),
        "source",
    ),
    (
        "missing_type",
        "app.config",
        "#{name => missing_type, version => <<\"1\">>,\n source => #{url => <<\"x\">>}}.\n",
        ErrorKind::MissingField,
        Some(2),
        "source.type",
    ),
    (
        "git_no_url",
        "app.config",
        "#{name => git_no_url, version => <<\"1\">>,\n source => #{type => git}}.\n",
        ErrorKind::MissingField,
        Some(2),
        "source.url",
    ),
    (
        "release_no_sha",
        "app.config",
        "#{name => release_no_sha, version => <<\"1\">>,\n source => #{type => release,\n url => <<\"https://h.test/a.tgz\">>}}.\n",
        ErrorKind::MissingField,
        Some(2),
        "source.sha256",
    ),
    (
        "custom_no_module",
        "app.config",
        "#{name => custom_no_module, version => <<\"1\">>, source => #{type => hex},\n health => #{type => custom}}.\n",
        ErrorKind::MissingField,
        Some(2),
        "health.module",
    ),
    (
        "tcp_no_port",
        "app.config",
        "#{name => tcp_no_port, version => <<\"1\">>, source => #{type => hex},\n health => #{type => tcp}}.\n",
        ErrorKind::MissingField,
        Some(2),
        "health.port",
    ),
    (
        "version_int",
        "app.config",
        "#{name => version_int,\n version => 1, source => #{type => hex}}.\n",
        ErrorKind::WrongType,
        Some(2),
        "version",
    ),
    (
        "name_int",
        "app.config",
        "#{name => 42, version => <<\"1\">>, source => #{type => hex}}.\n",
        ErrorKind::WrongType,
        Some(1),
        "name",
    ),
    (
        "env_list",
        "app.config",
        "#{name => env_list, version => <<\"1\">>, source => #{type => hex},\n env => [{a, 1}]}.\n",
        ErrorKind::WrongType,
        Some(2),
        "env",
    ),
    (
        "env_key",
        "app.config",
        "#{name => env_key, version => <<\"1\">>, source => #{type => hex},\n env => #{<<\"k\">> => 1}}.\n",
        ErrorKind::WrongType,
        Some(2),
        "env",
    ),
    (
        "deps_not_list",
        "app.config",
        "#{name => deps_not_list, version => <<\"1\">>, source => #{type => hex},\n depends_on => other}.\n",
        ErrorKind::WrongType,
        Some(2),
        "depends_on",
    ),
    (
        "port_text",
        "app.config",
        "#{name => port_text, version => <<\"1\">>, source => #{type => hex},\n health => #{type => tcp,\n port => <<\"80\">>}}.\n",
        ErrorKind::WrongType,
        Some(3),
        "health.port",
    ),
    (
        "key_binary",
        "app.config",
        "#{name => key_binary, version => <<\"1\">>, source => #{type => hex},\n <<\"extra\">> => 1}.\n",
        ErrorKind::WrongType,
        Some(2),
        "(key)",
    ),
    (
        "Bad-Name",
        "app.config",
        "#{name => 'Bad-Name', version => <<\"1\">>, source => #{type => hex}}.\n",
        ErrorKind::InvalidValue,
        Some(1),
        "name",
    ),
    (
        "blank_version",
        "app.config",
        "#{name => blank_version, version => <<\"  \">>, source => #{type => hex}}.\n",
        ErrorKind::InvalidValue,
        Some(1),
        "version",
    ),
    (
        "bad_type",
        "app.config",
        "#{name => bad_type, version => <<\"1\">>,\n source => #{type => svn}}.\n",
        ErrorKind::InvalidValue,
        Some(2),
        "source.type",
    ),
    (
        "bad_build",
        "app.config",
        "#{name => bad_build, version => <<\"1\">>,\n source => #{type => hex,\n build => cmake}}.\n",
        ErrorKind::InvalidValue,
        Some(3),
        "source.build",
    ),
    (
        "bad_sha",
        "app.config",
        "#{name => bad_sha, version => <<\"1\">>, source => #{type => release,\n url => <<\"https://h.test/a.tgz\">>,\n sha256 => <<\"zz\">>}}.\n",
        ErrorKind::InvalidValue,
        Some(3),
        "source.sha256",
    ),
    (
        "release_ftp",
        "app.config",
        "#{name => release_ftp, version => <<\"1\">>, source => #{type => release,\n url => <<\"ftp://h.test/a.tgz\">>,\n sha256 => <<\"0000000000000000000000000000000000000000000000000000000000000000\">>}}.\n",
        ErrorKind::InvalidValue,
        Some(2),
        "source.url",
    ),
    (
        "bad_health_type",
        "app.config",
        "#{name => bad_health_type, version => <<\"1\">>, source => #{type => hex},\n health => #{type => ping}}.\n",
        ErrorKind::InvalidValue,
        Some(2),
        "health.type",
    ),
    (
        "port_zero",
        "app.config",
        "#{name => port_zero, version => <<\"1\">>, source => #{type => hex},\n health => #{type => tcp, port => 0}}.\n",
        ErrorKind::InvalidValue,
        Some(2),
        "health.port",
    ),
    (
        "path_relative",
        "app.config",
        "#{name => path_relative, version => <<\"1\">>, source => #{type => hex},\n health => #{type => http, port => 80,\n path => \"health\"}}.\n",
        ErrorKind::InvalidValue,
        Some(3),
        "health.path",
    ),
    (
        "timeout_negative",
        "app.config",
        "#{name => timeout_negative, version => <<\"1\">>, source => #{type => hex},\n health => #{type => tcp, port => 1,\n timeout => -5}}.\n",
        ErrorKind::InvalidValue,
        Some(3),
        "health.timeout",
    ),
    (
        "dep_bad",
        "app.config",
        "#{name => dep_bad, version => <<\"1\">>, source => #{type => hex},\n depends_on => [fine,\n 'Not Fine']}.\n",
        ErrorKind::InvalidValue,
        Some(3),
        "depends_on[1]",
    ),
    (
        "dep_self",
        "app.config",
        "#{name => dep_self, version => <<\"1\">>, source => #{type => hex},\n depends_on => [dep_self]}.\n",
        ErrorKind::InvalidValue,
        Some(2),
        "depends_on[0]",
    ),
    (
        "bad_ref",
        "app.config",
        "#{name => bad_ref, version => <<\"1\">>,\n source => #{type => git, url => <<\"u\">>,\n ref => <<\"v1..2\">>}}.\n",
        ErrorKind::InvalidValue,
        Some(3),
        "source.ref",
    ),
    (
        "mismatch",
        "app.config",
        "#{name => not_mismatch, version => <<\"1\">>, source => #{type => hex}}.\n",
        ErrorKind::NameMismatch,
        Some(1),
        "name",
    ),
    (
        "place_word",
        "app.config",
        "#{name => place_word, version => <<\"1\">>, source => #{type => hex},\n\
           placement => everywhere}.\n",
        ErrorKind::InvalidValue,
        Some(2),
        "placement",
    ),
    (
        "place_empty",
        "app.config",
        "#{name => place_empty, version => <<\"1\">>, source => #{type => hex},\n\
           placement => []}.\n",
        ErrorKind::InvalidValue,
        Some(2),
        "placement",
    ),
    (
        "place_pattern",
        "app.config",
        "#{name => place_pattern, version => <<\"1\">>, source => #{type => hex},\n\
           placement => [<<\"web*@*\">>,\n <<\"bad name\">>]}.\n",
        ErrorKind::InvalidValue,
        Some(3),
        "placement[1]",
    ),
    (
        "roll_zero",
        "app.config",
        "#{name => roll_zero, version => <<\"1\">>, source => #{type => hex},\n\
           rollout => #{max_parallel => 0}}.\n",
        ErrorKind::InvalidValue,
        Some(2),
        "rollout.max_parallel",
    ),
    (
        "roll_pause",
        "app.json",
        "{\"name\": \"roll_pause\", \"version\": \"1\", \"source\": {\"type\": \"hex\"},\n\
           \"rollout\": {\"pause\": \"soon\"}}",
        ErrorKind::WrongType,
        None,
        "rollout.pause",
    ),
    (
        "iso_word",
        "app.config",
        "#{name => iso_word, version => <<\"1\">>, source => #{type => hex},\n\
           isolation => container}.\n",
        ErrorKind::InvalidValue,
        Some(2),
        "isolation",
    ),
    (
        "vm_mem_zero",
        "app.config",
        "#{name => vm_mem_zero, version => <<\"1\">>, source => #{type => hex},\n\
           isolation => vm,\n vm_config => #{memory_limit => 0}}.\n",
        ErrorKind::InvalidValue,
        Some(3),
        "vm_config.memory_limit",
    ),
    (
        "vm_mem_huge",
        "app.config",
        "#{name => vm_mem_huge, version => <<\"1\">>, source => #{type => hex},\n\
           isolation => vm, vm_config => #{memory_limit => 99999999999}}.\n",
        ErrorKind::InvalidValue,
        Some(2),
        "vm_config.memory_limit",
    ),
    (
        "vm_sched",
        "app.json",
        "{\"name\": \"vm_sched\", \"version\": \"1\", \"source\": {\"type\": \"hex\"},\n\
           \"isolation\": \"vm\", \"vm_config\": {\"scheduler_limit\": \"two\"}}",
        ErrorKind::WrongType,
        None,
        "vm_config.scheduler_limit",
    ),
    (
        "vm_sched_max",
        "app.config",
        "#{name => vm_sched_max, version => <<\"1\">>, source => #{type => hex},\n\
           isolation => vm, vm_config => #{scheduler_limit => 1025}}.\n",
        ErrorKind::InvalidValue,
        Some(2),
        "vm_config.scheduler_limit",
    ),
    (
        "vm_prefix",
        "app.config",
        "#{name => vm_prefix, version => <<\"1\">>, source => #{type => hex},\n\
           isolation => vm,\n vm_config => #{node_prefix => <<\"a@b\">>}}.\n",
        ErrorKind::InvalidValue,
        Some(3),
        "vm_config.node_prefix",
    ),
    (
        "vm_args_string",
        "app.config",
        "#{name => vm_args_string, version => <<\"1\">>, source => #{type => hex},\n\
           isolation => vm, vm_config => #{extra_args => \"+A 4\"}}.\n",
        ErrorKind::WrongType,
        Some(2),
        "vm_config.extra_args",
    ),
    (
        "vm_args_item",
        "app.config",
        "#{name => vm_args_item, version => <<\"1\">>, source => #{type => hex},\n\
           isolation => vm, vm_config => #{extra_args => [\"+A\",\n 4]}}.\n",
        ErrorKind::WrongType,
        Some(3),
        "vm_config.extra_args[1]",
    ),
    (
        "vm_config_list",
        "app.config",
        "#{name => vm_config_list, version => <<\"1\">>, source => #{type => hex},\n\
           isolation => vm, vm_config => [{memory_limit, 64}]}.\n",
        ErrorKind::WrongType,
        Some(2),
        "vm_config",
    ),
    (
        "json_mismatch",
        "app.json",
        "{\"name\": \"other\", \"version\": \"1\", \"source\": {\"type\": \"hex\"}}",
        ErrorKind::NameMismatch,
        None,
        "name",
    ),
];

#[test]
fn every_error_kind_is_located() {
    let root = tempfile::tempdir().unwrap();
    for (app, file, content, ..) in BROKEN {
        write(root.path(), &format!("apps/{app}/{file}"), content);
    }
    write(root.path(), "apps/good/app.config", &minimal("good"));
    let out = parse_dir(root.path(), "apps").unwrap();
    assert_eq!(
        out.specs
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["good"]
    );
    for (app, file, _, kind, line, field) in BROKEN {
        let errors: Vec<_> = out.errors.iter().filter(|e| e.app == *app).collect();
        assert_eq!(errors.len(), 1, "{app}: {errors:?}");
        let e = errors[0];
        assert_eq!(e.file, format!("apps/{app}/{file}"), "{app}");
        assert_eq!(e.kind, *kind, "{app}: {e}");
        assert_eq!(e.line, *line, "{app}: {e}");
        assert_eq!(e.field, *field, "{app}: {e}");
        assert!(!e.message.is_empty());
    }
}

#[test]
fn dir_level_errors() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "apps/both/app.config", &minimal("both"));
    write(
        root.path(),
        "apps/both/app.json",
        "{\"name\":\"both\",\"version\":\"1\",\"source\":{\"type\":\"hex\"}}",
    );
    let big = format!("%{}\n{}", "x".repeat(1024 * 1024), minimal("big"));
    write(root.path(), "apps/big/app.config", &big);
    fs::create_dir_all(root.path().join("apps/latin1")).unwrap();
    let bytes = b"#{name => latin1,\n description => <<\"caf\xe9\">>}.\n";
    fs::write(root.path().join("apps/latin1/app.config"), bytes).unwrap();
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "app.config", &minimal("linked"));
    std::os::unix::fs::symlink(outside.path(), root.path().join("apps/linked")).unwrap();
    write(
        root.path(),
        "apps/filelink/target.config",
        &minimal("filelink"),
    );
    std::os::unix::fs::symlink(
        root.path().join("apps/filelink/target.config"),
        root.path().join("apps/filelink/app.config"),
    )
    .unwrap();

    let out = parse_dir(root.path(), "apps").unwrap();
    let kind = |app: &str| {
        let e = out.errors.iter().find(|e| e.app == app).unwrap();
        (e.kind, e.line)
    };
    assert_eq!(kind("both"), (ErrorKind::DuplicateSpec, None));
    assert_eq!(kind("big"), (ErrorKind::TooLarge, None));
    assert_eq!(kind("latin1"), (ErrorKind::Syntax, Some(2)));
    assert_eq!(kind("linked"), (ErrorKind::Symlink, None));
    assert_eq!(kind("filelink"), (ErrorKind::Symlink, None));
    assert!(out.specs.is_empty());
}

#[test]
fn warnings_do_not_stop_a_spec() {
    let root = tempfile::tempdir().unwrap();
    write(
        root.path(),
        "apps/future/app.config",
        "#{name => future, version => <<\"1\">>,\n\
         source => #{type => hex, url => <<\"unused\">>, mirror => x},\n\
         depends_on => [base, base],\n\
         strategy => canary}.\n",
    );
    write(root.path(), "apps/base/app.config", &minimal("base"));
    fs::create_dir_all(root.path().join("apps/empty")).unwrap();
    fs::create_dir_all(root.path().join("apps/.hidden")).unwrap();
    write(root.path(), "apps/README.md", "not an app");

    let out = parse_dir(root.path(), "apps").unwrap();
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let future = out.specs.iter().find(|s| s.name == "future").unwrap();
    assert_eq!(future.depends_on, ["base"]);
    let mut got: Vec<_> = out
        .warnings
        .iter()
        .map(|w| (w.app.as_str(), w.kind, w.line, w.field.as_str()))
        .collect();
    got.sort_by_key(|w| (w.0, w.3));
    assert_eq!(
        got,
        [
            ("empty", WarningKind::NoSpecFile, None, ""),
            (
                "future",
                WarningKind::DuplicateDependency,
                Some(3),
                "depends_on[1]"
            ),
            ("future", WarningKind::UnknownKey, Some(2), "source.mirror"),
            ("future", WarningKind::UnusedField, Some(2), "source.url"),
            ("future", WarningKind::UnknownKey, Some(4), "strategy"),
        ]
    );
}

#[test]
fn full_spec_is_typed() {
    let root = tempfile::tempdir().unwrap();
    write(
        root.path(),
        "apps/web/app.config",
        "%% A web app\n\
         #{name => web,\n\
           version => \"2.0.0\",\n\
           description => <<\"Front end\">>,\n\
           source => #{type => git, url => <<\"git@example.test:org/web.git\">>,\n\
                       ref => <<\"v2.0.0\">>, build => rebar3},\n\
           env => #{port => 8080, port => 9090, name => \"w\"},\n\
           health => #{type => http, port => 9090, path => <<\"/health\">>,\n\
                       interval => 1000},\n\
           depends_on => [db]}.\n",
    );
    let out = parse_dir(root.path(), "apps").unwrap();
    let web = &out.specs[0];
    assert_eq!(web.name, "web");
    assert_eq!(web.version, "2.0.0");
    assert_eq!(web.description.as_deref(), Some("Front end"));
    assert_eq!(web.file, "apps/web/app.config");
    assert_eq!(web.source.source_type, SourceType::Git);
    assert_eq!(
        web.source.url.as_deref(),
        Some("git@example.test:org/web.git")
    );
    assert_eq!(web.source.git_ref.as_deref(), Some("v2.0.0"));
    assert_eq!(web.source.build, Some(BuildTool::Rebar3));
    // A later duplicate key wins, as in an Erlang map literal.
    let env: Vec<_> = web.env.iter().map(|(k, v)| (k.as_str(), &v.term)).collect();
    assert_eq!(env[0], ("port", &Term::Int(9090)));
    assert_eq!(env[1].0, "name");
    assert_eq!(env[1].1.as_text().as_deref(), Some("w"));
    let health = web.health.as_ref().unwrap();
    assert_eq!(health.health_type, HealthType::Http);
    assert_eq!(
        (health.port, health.interval_ms, health.timeout_ms),
        (Some(9090), 1000, 5000)
    );
    assert_eq!(web.depends_on, ["db"]);
}

#[test]
fn placement_and_rollout_are_typed() {
    let root = tempfile::tempdir().unwrap();
    write(
        root.path(),
        "apps/web/app.config",
        "#{name => web, version => <<\"1\">>, source => #{type => hex},\n\
           placement => [<<\"web*@*\">>, \"edge@host-1\"],\n\
           rollout => #{max_parallel => 2, pause => 0}}.\n",
    );
    write(
        root.path(),
        "apps/db/app.json",
        "{\"name\": \"db\", \"version\": \"1\", \"source\": {\"type\": \"hex\"},\n\
          \"placement\": \"all\", \"rollout\": {\"pause\": 5000}}",
    );
    write(root.path(), "apps/plain/app.config", &minimal("plain"));
    let out = parse_dir(root.path(), "apps").unwrap();
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let by_name = |n: &str| out.specs.iter().find(|s| s.name == n).unwrap();
    assert_eq!(
        by_name("web").placement,
        Placement::Nodes(vec!["web*@*".to_string(), "edge@host-1".to_string()])
    );
    assert_eq!(
        by_name("web").rollout,
        Some(Rollout {
            max_parallel: Some(2),
            pause_ms: Some(0)
        })
    );
    assert_eq!(by_name("db").placement, Placement::All);
    assert_eq!(
        by_name("db").rollout,
        Some(Rollout {
            max_parallel: None,
            pause_ms: Some(5000)
        })
    );
    assert_eq!(by_name("plain").placement, Placement::All);
    assert_eq!(by_name("plain").rollout, None);
}

#[test]
fn isolation_and_vm_config_are_typed() {
    let root = tempfile::tempdir().unwrap();
    write(
        root.path(),
        "apps/guest/app.config",
        "#{name => guest, version => <<\"1\">>, source => #{type => hex},\n\
           isolation => vm,\n\
           vm_config => #{memory_limit => 256, scheduler_limit => 2,\n\
                          node_prefix => <<\"guest-web\">>, extra_args => [\"+A\", <<\"4\">>],\n\
                          swap => none}}.\n",
    );
    write(
        root.path(),
        "apps/jguest/app.json",
        "{\"name\": \"jguest\", \"version\": \"1\", \"source\": {\"type\": \"hex\"},\n\
          \"isolation\": \"vm\", \"vm_config\": {\"memory_limit\": 128, \"extra_args\": []}}",
    );
    write(
        root.path(),
        "apps/bare/app.config",
        "#{name => bare, version => <<\"1\">>, source => #{type => hex}, isolation => vm}.\n",
    );
    write(
        root.path(),
        "apps/inside/app.config",
        "#{name => inside, version => <<\"1\">>, source => #{type => hex},\n\
           isolation => embedded,\n vm_config => #{memory_limit => 64}}.\n",
    );
    write(root.path(), "apps/plain/app.config", &minimal("plain"));
    let out = parse_dir(root.path(), "apps").unwrap();
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let by_name = |n: &str| out.specs.iter().find(|s| s.name == n).unwrap();
    assert_eq!(by_name("guest").isolation, Isolation::Vm);
    assert_eq!(
        by_name("guest").vm_config,
        Some(VmConfig {
            memory_limit: Some(256),
            scheduler_limit: Some(2),
            node_prefix: Some("guest-web".to_string()),
            extra_args: Some(vec!["+A".to_string(), "4".to_string()]),
        })
    );
    assert_eq!(
        by_name("jguest").vm_config,
        Some(VmConfig {
            memory_limit: Some(128),
            extra_args: Some(vec![]),
            ..VmConfig::default()
        })
    );
    assert_eq!(by_name("bare").isolation, Isolation::Vm);
    assert_eq!(by_name("bare").vm_config, None);
    // vm_config without isolation => vm is dropped, with a warning.
    assert_eq!(by_name("inside").isolation, Isolation::Embedded);
    assert_eq!(by_name("inside").vm_config, None);
    assert_eq!(by_name("plain").isolation, Isolation::Embedded);
    let mut got: Vec<_> = out
        .warnings
        .iter()
        .map(|w| (w.app.as_str(), w.kind, w.line, w.field.as_str()))
        .collect();
    got.sort_by_key(|w| (w.0, w.3));
    assert_eq!(
        got,
        [
            ("guest", WarningKind::UnknownKey, Some(5), "vm_config.swap"),
            ("inside", WarningKind::UnusedField, Some(3), "vm_config"),
        ]
    );
}

#[test]
fn apps_dir_must_stay_inside() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("apps")).unwrap();
    for bad in ["", "..", "../apps", "/etc", "apps/../.."] {
        assert!(
            matches!(
                parse_dir(root.path(), bad),
                Err(bc_gitops_core::spec::DirError::AppsDirOutside(_))
            ),
            "{bad:?}"
        );
    }
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
    assert!(matches!(
        parse_dir(root.path(), "escape"),
        Err(bc_gitops_core::spec::DirError::AppsDirOutside(_))
    ));
    assert!(matches!(
        parse_dir(root.path(), "nope"),
        Err(bc_gitops_core::spec::DirError::AppsDirMissing(_))
    ));
    assert!(parse_dir(root.path(), "./apps").unwrap().specs.is_empty());
}

#[test]
fn app_names() {
    for good in ["a", "my_app", "a1_b2", &"a".repeat(255)] {
        assert!(is_app_name(good), "{good}");
    }
    for bad in [
        "",
        "A",
        "1a",
        "_a",
        "my-app",
        "my app",
        "caf\u{e9}",
        &"a".repeat(256),
    ] {
        assert!(!is_app_name(bad), "{bad}");
    }
}

#[test]
fn atoms_beyond_latin1_are_refused_with_their_line() {
    let root = tempfile::tempdir().unwrap();
    write(
        root.path(),
        "apps/wide/app.config",
        "#{name => wide, version => <<\"1\">>, source => #{type => hex},\n\
         env => #{ok => 'caf\u{e9}',\n\
         nested => [{x, 'λ'}]}}.\n",
    );
    write(
        root.path(),
        "apps/widekey/app.json",
        "{\"name\": \"widekey\", \"version\": \"1\", \"source\": {\"type\": \"hex\"}, \"env\": {\"λ\": 1}}",
    );
    write(
        root.path(),
        "apps/widemod/app.config",
        "#{name => widemod, version => <<\"1\">>, source => #{type => hex},\n\
         health => #{type => custom, module => 'λmod'}}.\n",
    );
    write(
        root.path(),
        "apps/latin/app.config",
        "#{name => latin, version => <<\"1\">>, source => #{type => hex},\n\
         env => #{'caf\u{e9}' => '\u{ff}'}}.\n",
    );
    let out = parse_dir(root.path(), "apps").unwrap();
    let find = |app: &str| {
        out.errors
            .iter()
            .find(|e| e.app == app)
            .unwrap_or_else(|| panic!("{app}: {:?}", out))
    };
    let wide = find("wide");
    assert_eq!(
        (wide.kind, wide.line, wide.field.as_str()),
        (ErrorKind::InvalidValue, Some(3), "env.nested")
    );
    assert!(wide.message.contains("U+00FF"), "{}", wide.message);
    assert_eq!(find("widekey").kind, ErrorKind::InvalidValue);
    assert_eq!(find("widemod").field, "health.module");
    // Latin-1 atoms are fine.
    assert_eq!(
        out.specs
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["latin"]
    );
}

#[test]
fn refs_follow_git_rules() {
    let root = tempfile::tempdir().unwrap();
    let spec = |name: &str, git_ref: &str| {
        format!(
            "#{{name => {name}, version => <<\"1\">>,\n source => #{{type => git, url => <<\"u\">>, ref => <<\"{git_ref}\">>}}}}.\n"
        )
    };
    let good = [
        ("branch", "main"),
        ("nested", "release/1.x"),
        ("tag", "v1.2.3"),
        ("sha", "0123456789abcdef0123456789abcdef01234567"),
        ("short", "abc1234"),
    ];
    let bad = [
        ("space", "my branch"),
        ("colon", "a:b"),
        ("star", "v*"),
        ("dots", "a..b"),
        ("dash", "-x"),
        ("lock", "main.lock"),
        ("hidden", "a/.b"),
    ];
    for (app, git_ref) in good.iter().chain(bad.iter()) {
        write(
            root.path(),
            &format!("apps/{app}/app.config"),
            &spec(app, git_ref),
        );
    }
    let out = parse_dir(root.path(), "apps").unwrap();
    let mut valid: Vec<&str> = out.specs.iter().map(|s| s.name.as_str()).collect();
    valid.sort_unstable();
    assert_eq!(valid, ["branch", "nested", "sha", "short", "tag"]);
    for (app, _) in bad {
        let e = out.errors.iter().find(|e| e.app == app).unwrap();
        assert_eq!(
            (e.kind, e.field.as_str()),
            (ErrorKind::InvalidValue, "source.ref"),
            "{app}"
        );
    }
    let w = out.warnings.iter().find(|w| w.app == "short").unwrap();
    assert_eq!(w.kind, WarningKind::AbbreviatedCommit);
}

#[test]
fn links_to_files_are_ignored_like_files() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "apps/real/app.config", &minimal("real"));
    write(root.path(), "notes.md", "x");
    std::os::unix::fs::symlink(root.path().join("notes.md"), root.path().join("apps/notes"))
        .unwrap();
    let out = parse_dir(root.path(), "apps").unwrap();
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(out.specs.len(), 1);
}

#[test]
fn many_apps_read_in_parallel_come_back_in_order() {
    // Enough apps for several reader threads, with a broken spec, a
    // directory without a spec and a linked directory spread among them.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut expected_errors = Vec::new();
    let mut expected_warnings = Vec::new();
    for i in 0..700 {
        let name = format!("app{i:04}");
        match i % 97 {
            13 => {
                write(root, &format!("apps/{name}/app.config"), "#{name => .\n");
                expected_errors.push(name);
            }
            41 => {
                fs::create_dir_all(root.join(format!("apps/{name}"))).unwrap();
                expected_warnings.push(name);
            }
            _ => write(root, &format!("apps/{name}/app.config"), &minimal(&name)),
        }
    }
    std::os::unix::fs::symlink(root.join("apps/app0000"), root.join("apps/linked")).unwrap();
    expected_errors.push("linked".to_string());
    let out = parse_dir(root, "apps").unwrap();
    let names: Vec<&str> = out.specs.iter().map(|s| s.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    assert_eq!(
        names.len(),
        700 - expected_errors.len() + 1 - expected_warnings.len()
    );
    let errors: Vec<&str> = out.errors.iter().map(|e| e.app.as_str()).collect();
    let warnings: Vec<&str> = out.warnings.iter().map(|w| w.app.as_str()).collect();
    assert_eq!(errors, expected_errors);
    assert_eq!(warnings, expected_warnings);
}
