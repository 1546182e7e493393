#!/usr/bin/env escript
%%! -noshell
%% The demo behind `make demo`: makes a real local gitops repository with
%% git, reads it the way a reconcile does, and prints what bc_gitops sees
%% and would do. Exits 0 only when everything it shows is as expected.
-mode(compile).

-include("../include/bc_gitops.hrl").

main(_) ->
    Ebin = filename:join([root(), "_build", "default", "lib", "bc_gitops", "ebin"]),
    true = code:add_patha(Ebin),
    ok = bc_gitops_nif:load_error(),
    Dir = filename:join(tmp(), "bc_gitops_demo_" ++ os:getpid()),
    try run(Dir) of
        ok -> io:format("~ndemo: ok~n"), halt(0)
    catch
        Class:Reason:Stack ->
            io:format("~ndemo FAILED: ~p:~p~n~p~n", [Class, Reason, Stack]),
            halt(1)
    after
        _ = file:del_dir_r(Dir)
    end.

run(Dir) ->
    Repo = filename:join(Dir, "gitops"),
    ok = filelib:ensure_path(Repo),
    git(Repo, ["init", "-q", "-b", "main"]),
    step("1. a gitops repository with two apps: web depends on db"),
    spec(Repo, "db", "1.0.0", "[]", "#{pool_size => 5}"),
    spec(Repo, "web", "1.0.0", "[db]", "#{port => 8080}"),
    commit(Repo, "v1"),
    {ok, #{specs := V1}} = show(Repo),
    {ok, #{actions := [{deploy, #app_spec{name = db}}, {deploy, #app_spec{name = web}}]}} =
        show_plan(V1, []),

    step("2. after v1 is running, a commit upgrades web, retunes db, and breaks a new app"),
    Running = [#app_state{name = S#app_spec.name, version = S#app_spec.version,
                          status = running, env = S#app_spec.env,
                          depends_on = S#app_spec.depends_on} || S <- V1],
    spec(Repo, "web", "1.1.0", "[db]", "#{port => 8080}"),
    spec(Repo, "db", "1.0.0", "[]", "#{pool_size => 10}"),
    write(Repo, "apps/mailer/app.config",
          "#{name => mailer,\n  version => <<\"0.1.0\">>,\n  source => #{type => svn}}.\n"),
    commit(Repo, "v2"),
    {ok, #{specs := V2, errors := [_]}} = show(Repo),
    {ok, #{actions := [{reconfigure, #app_spec{name = db}},
                       {upgrade, #app_spec{name = web}, <<"1.0.0">>}]}} =
        show_plan(V2, Running),
    ok.

show(Repo) ->
    {ok, #{specs := Specs, errors := Errors, warnings := Warnings}} = R =
        bc_gitops_specs:parse_dir(Repo, "apps"),
    io:format("   commit ~s~n", [string:trim(git_out(Repo, ["rev-parse", "--short", "HEAD"]))]),
    [io:format("   spec   ~p ~s depends_on ~p env ~p~n",
               [N, V, D, E]) || #app_spec{name = N, version = V, depends_on = D, env = E} <- Specs],
    [io:format("   error  ~s~n", [bc_gitops_specs:format_diagnostic(X)]) || X <- Errors],
    [io:format("   warn   ~s~n", [bc_gitops_specs:format_diagnostic(X)]) || X <- Warnings],
    R.

show_plan(Specs, Running) ->
    {ok, #{actions := Actions, blocked := Blocked}} = R = bc_gitops_plan:plan(Specs, Running, []),
    [io:format("   plan   ~s~n", [describe(A)]) || A <- Actions],
    [io:format("   block  ~p: ~p~n", [N, Why]) || {N, Why} <- Blocked],
    R.

describe({remove, N}) -> io_lib:format("remove ~p", [N]);
describe({deploy, S}) -> io_lib:format("deploy ~p ~s", [S#app_spec.name, S#app_spec.version]);
describe({upgrade, S, From}) ->
    io_lib:format("upgrade ~p ~s -> ~s", [S#app_spec.name, From, S#app_spec.version]);
describe({redeploy, S, Why}) -> io_lib:format("redeploy ~p (~p)", [S#app_spec.name, Why]);
describe({reconfigure, S}) ->
    io_lib:format("reconfigure ~p env ~p", [S#app_spec.name, S#app_spec.env]).

step(Text) -> io:format("~n~s~n", [Text]).

spec(Repo, App, Version, Deps, Env) ->
    write(Repo, filename:join(["apps", App, "app.config"]),
          ["#{name => ", App, ",\n  version => <<\"", Version, "\">>,\n",
           "  source => #{type => hex},\n  env => ", Env, ",\n  depends_on => ", Deps, "}.\n"]).

write(Repo, Rel, Content) ->
    Path = filename:join(Repo, Rel),
    ok = filelib:ensure_dir(Path),
    ok = file:write_file(Path, Content).

commit(Repo, Msg) ->
    git(Repo, ["add", "-A"]),
    git(Repo, ["-c", "user.name=demo", "-c", "user.email=demo@localhost",
               "commit", "-q", "-m", Msg]).

git(Repo, Args) -> _ = git_out(Repo, Args), ok.

%% git without a shell; any failure stops the demo with git's output.
git_out(Repo, Args) ->
    Env = [{"GIT_CONFIG_GLOBAL", "/dev/null"}, {"GIT_CONFIG_NOSYSTEM", "1"}],
    Port = open_port({spawn_executable, os:find_executable("git")},
                     [{args, Args}, {cd, Repo}, {env, Env}, exit_status, stderr_to_stdout]),
    collect(Port, Args, []).

collect(Port, Args, Acc) ->
    receive
        {Port, {data, D}} -> collect(Port, Args, [Acc, D]);
        {Port, {exit_status, 0}} -> lists:flatten(Acc);
        {Port, {exit_status, N}} -> error({git_failed, Args, N, lists:flatten(Acc)})
    after 30000 -> error({git_timeout, Args})
    end.

root() -> filename:dirname(filename:dirname(filename:absname(escript:script_name()))).

tmp() ->
    case os:getenv("TMPDIR") of
        false -> "/tmp";
        T -> T
    end.
