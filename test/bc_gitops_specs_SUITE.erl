%%% Specs read from real git checkouts, then planned: the path one
%%% reconcile takes from a commit to the actions it will run.
-module(bc_gitops_specs_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include("bc_gitops.hrl").

-export([all/0, init_per_testcase/2, end_per_testcase/2]).
-export([commits_drive_the_plan/1, broken_commit_keeps_running_app/1,
         mixed_formats_drive_the_plan/1]).

all() -> [commits_drive_the_plan, broken_commit_keeps_running_app, mixed_formats_drive_the_plan].

init_per_testcase(_Case, Config) ->
    Dir = bc_gitops_test_util:tmp_dir("ct_git"),
    Origin = filename:join(Dir, "origin"),
    ok = filelib:ensure_path(Origin),
    git(Origin, ["init", "-q", "-b", "main"]),
    [{origin, Origin}, {clone, filename:join(Dir, "clone")}, {dir, Dir} | Config].

end_per_testcase(_Case, Config) ->
    bc_gitops_test_util:rm_rf(?config(dir, Config)).

%% v1 of two apps is deployed in dependency order; the next commit upgrades
%% one, reconfigures the other and adds a third.
commits_drive_the_plan(Config) ->
    Origin = ?config(origin, Config),
    Clone = ?config(clone, Config),
    spec(Origin, "db", "1.0.0", [], "#{pool => 5}"),
    spec(Origin, "web", "1.0.0", ["db"], "#{port => 8080}"),
    commit(Origin, "v1"),
    git(filename:dirname(Clone), ["clone", "-q", Origin, Clone]),

    {ok, #{specs := V1, errors := []}} = bc_gitops_specs:parse_dir(Clone, "apps"),
    {ok, #{actions := A1, blocked := []}} = bc_gitops_plan:plan(V1, [], []),
    ?assertEqual([{deploy, db}, {deploy, web}], [{K, S#app_spec.name} || {K, S} <- A1]),
    Running = [#app_state{name = S#app_spec.name, version = S#app_spec.version,
                          status = running, env = S#app_spec.env,
                          depends_on = S#app_spec.depends_on} || S <- V1],
    {ok, #{actions := []}} = bc_gitops_plan:plan(V1, Running, []),

    spec(Origin, "web", "1.1.0", ["db"], "#{port => 8080}"),
    spec(Origin, "db", "1.0.0", [], "#{pool => 10}"),
    spec(Origin, "cache", "0.1.0", [], "#{}"),
    commit(Origin, "v2"),
    git(Clone, ["pull", "-q", "--ff-only"]),

    {ok, #{specs := V2, errors := []}} = bc_gitops_specs:parse_dir(Clone, "apps"),
    {ok, #{actions := A2}} = bc_gitops_plan:plan(V2, Running, []),
    ?assertMatch([{deploy, #app_spec{name = cache}},
                  {reconfigure, #app_spec{name = db, env = #{pool := 10}}},
                  {upgrade, #app_spec{name = web, version = <<"1.1.0">>}, <<"1.0.0">>}],
                 A2).

%% A commit that breaks a running app's spec holds that app where it is and
%% blocks its dependents; the other apps still converge.
broken_commit_keeps_running_app(Config) ->
    Origin = ?config(origin, Config),
    Clone = ?config(clone, Config),
    spec(Origin, "db", "1.0.0", [], "#{}"),
    spec(Origin, "web", "1.0.0", ["db"], "#{}"),
    spec(Origin, "mail", "1.0.0", [], "#{}"),
    commit(Origin, "v1"),
    git(filename:dirname(Clone), ["clone", "-q", Origin, Clone]),
    {ok, #{specs := V1}} = bc_gitops_specs:parse_dir(Clone, "apps"),
    Running = [#app_state{name = S#app_spec.name, version = S#app_spec.version,
                          status = running, env = #{}, depends_on = S#app_spec.depends_on}
               || S <- V1],

    write(Origin, "apps/db/app.config", "#{name => db, version => <<\"2.0.0\">>,\n"
                                        "  source => #{type => hex}\n"),
    spec(Origin, "web", "1.1.0", ["db"], "#{}"),
    spec(Origin, "mail", "1.1.0", [], "#{}"),
    commit(Origin, "break db"),
    git(Clone, ["pull", "-q", "--ff-only"]),

    {ok, #{specs := V2, errors := [Error]}} = bc_gitops_specs:parse_dir(Clone, "apps"),
    ?assertMatch(#{app := <<"db">>, kind := syntax, file := <<"apps/db/app.config">>}, Error),
    Invalid = [A || #{app := A} <- [Error]],
    {ok, #{actions := Actions, blocked := Blocked}} = bc_gitops_plan:plan(V2, Running, Invalid),
    ?assertMatch([{upgrade, #app_spec{name = mail}, <<"1.0.0">>}], Actions),
    ?assertEqual([{db, invalid_spec}, {web, {invalid_dependency, db}}], Blocked).

%% Term, JSON and YAML specs side by side in one repository plan as one; a
%% YAML commit upgrades its app, and a YAML spec that breaks holds its app
%% and names its line.
mixed_formats_drive_the_plan(Config) ->
    Origin = ?config(origin, Config),
    Clone = ?config(clone, Config),
    spec(Origin, "db", "1.0.0", [], "#{pool => 5}"),
    write(Origin, "apps/mail/app.json",
          "{\"name\": \"mail\", \"version\": \"1.0.0\", \"source\": {\"type\": \"hex\"}}\n"),
    write(Origin, "apps/web/app.yaml", web_yaml("1.0.0")),
    commit(Origin, "v1"),
    git(filename:dirname(Clone), ["clone", "-q", Origin, Clone]),

    {ok, #{specs := V1, errors := [], warnings := []}} = bc_gitops_specs:parse_dir(Clone, "apps"),
    ?assertMatch([#app_spec{name = db}, #app_spec{name = mail},
                  #app_spec{name = web, version = <<"1.0.0">>, depends_on = [db],
                            env = #{port := 8080, hosts := [<<"a">>, <<"b">>]},
                            source = #source_spec{type = git, ref = <<"main">>}}], V1),
    {ok, #{actions := A1, blocked := []}} = bc_gitops_plan:plan(V1, [], []),
    Order = [S#app_spec.name || {deploy, S} <- A1],
    ?assertEqual([db, mail, web], lists:sort(Order)),
    ?assert(index(db, Order) < index(web, Order)),
    Running = [#app_state{name = S#app_spec.name, version = S#app_spec.version,
                          status = running, env = S#app_spec.env,
                          depends_on = S#app_spec.depends_on} || S <- V1],

    write(Origin, "apps/web/app.yaml", web_yaml("1.1.0")),
    commit(Origin, "web 1.1.0"),
    git(Clone, ["pull", "-q", "--ff-only"]),
    {ok, #{specs := V2, errors := []}} = bc_gitops_specs:parse_dir(Clone, "apps"),
    ?assertMatch({ok, #{actions := [{upgrade, #app_spec{name = web, version = <<"1.1.0">>},
                                     <<"1.0.0">>}]}},
                 bc_gitops_plan:plan(V2, Running, [])),

    %% Line 4 is indented under a scalar: not YAML.
    write(Origin, "apps/web/app.yaml", "name: web\nversion: \"1.2.0\"\nsource: {type: hex}\n  env: {}\n"),
    commit(Origin, "break web"),
    git(Clone, ["pull", "-q", "--ff-only"]),
    {ok, #{specs := V3, errors := [Error]}} = bc_gitops_specs:parse_dir(Clone, "apps"),
    ?assertMatch(#{app := <<"web">>, kind := syntax, line := 4,
                   file := <<"apps/web/app.yaml">>}, Error),
    ?assertEqual({ok, #{actions => [], blocked => [{web, invalid_spec}]}},
                 bc_gitops_plan:plan(V3, Running, [<<"web">>])).

web_yaml(Version) ->
    ["# the web front end\n"
     "name: web\n"
     "version: \"", Version, "\"\n"
     "source:\n"
     "  type: git\n"
     "  url: file:///srv/web.git\n"
     "  ref: main\n"
     "env:\n"
     "  port: 8080\n"
     "  hosts: [a, b]\n"
     "depends_on:\n"
     "  - db\n"].

index(X, List) -> length(lists:takewhile(fun(Y) -> Y =/= X end, List)).

%% Helpers

spec(Repo, App, Version, Deps, Env) ->
    write(Repo, filename:join(["apps", App, "app.config"]),
          ["#{name => ", App, ",\n",
           "  version => <<\"", Version, "\">>,\n",
           "  source => #{type => git, url => <<\"file:///srv/", App, ".git\">>},\n",
           "  env => ", Env, ",\n",
           "  depends_on => [", lists:join(", ", Deps), "]}.\n"]).

write(Repo, Rel, Content) ->
    bc_gitops_test_util:write_file(filename:join(Repo, Rel), Content).

commit(Repo, Message) -> bc_gitops_test_util:commit(Repo, Message).

git(Dir, Args) -> bc_gitops_test_util:git(Dir, Args).
