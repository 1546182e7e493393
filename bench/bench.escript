#!/usr/bin/env escript
%%! -noshell
%% bc_gitops benchmarks: `make bench' (full) or `make bench-smoke' (tiny
%% sizes, to keep this script from rotting; its numbers mean nothing).
%% Prints one table; docs/benchmarks.md records a run and how to read it.
-mode(compile).

-include("../include/bc_gitops.hrl").

main(Args) ->
    Smoke = Args =:= ["smoke"],
    Root = filename:dirname(filename:dirname(filename:absname(escript:script_name()))),
    true = code:add_patha(filename:join([Root, "_build", "default", "lib", "bc_gitops", "ebin"])),
    logger:set_primary_config(level, error),
    Dir = filename:join(tmp(), "bc_gitops_bench_" ++ os:getpid()),
    try
        Rows = parse_rows(Dir, Smoke) ++ noop_rows(Dir, Smoke),
        io:format("~n~-58s ~12s ~12s ~12s~n", ["benchmark", "p50", "p99", "baseline p50"]),
        [io:format("~-58s ~12s ~12s ~12s~n", [Name, fmt(P50), fmt(P99), fmt(Base)])
         || {Name, P50, P99, Base} <- Rows],
        halt(0)
    catch
        C:R:S -> io:format("bench FAILED: ~p:~p~n~p~n", [C, R, S]), halt(1)
    after
        _ = file:del_dir_r(Dir)
    end.

%% Parse + validate + plan N specs through the NIF, against file:consult/1
%% of the same files (the baseline does less: no validation, no plan).
parse_rows(Dir, Smoke) ->
    Sizes = case Smoke of true -> [20]; false -> [1000, 10000] end,
    lists:append(
      [[parse_row(Dir, N, Format, Smoke) || Format <- [terms, json]] || N <- Sizes]).

parse_row(Dir, N, Format, Smoke) ->
    Repo = filename:join(Dir, io_lib:format("specs_~p_~p", [N, Format])),
    Files = [write_spec(Repo, I, Format, true) || I <- lists:seq(1, N)],
    Runs = case Smoke of true -> 3; false -> 20 end,
    Ours = samples(Runs, fun() ->
                                 {ok, #{specs := Specs, errors := []}} =
                                     bc_gitops_specs:parse_dir(Repo, "apps"),
                                 {ok, _} = bc_gitops_plan:plan(Specs, [], []),
                                 N = length(Specs)
                         end),
    Base = case Format of
               terms -> samples(Runs, fun() -> [{ok, [_]} = file:consult(F) || F <- Files] end);
               json -> undefined
           end,
    {io_lib:format("parse+validate+plan ~p specs (~p)", [N, Format]),
     pct(Ours, 50), pct(Ours, 99), case Base of undefined -> undefined; _ -> pct(Base, 50) end}.

write_spec(Repo, I, Format, Health) ->
    Name = "app" ++ integer_to_list(I),
    Deps = case I > 1 of true -> ["app" ++ integer_to_list(I div 2)]; false -> [] end,
    {File, Text} =
        case Format of
            terms ->
                {"app.config",
                 ["#{name => ", Name, ", version => <<\"1.0.", integer_to_list(I), "\">>,\n",
                  "  source => #{type => git, url => <<\"https://git.example.com/", Name,
                  ".git\">>, ref => <<\"main\">>},\n",
                  "  env => #{port => ", integer_to_list(8000 + I), ", mode => fast, ",
                  "tags => [<<\"a\">>, \"b\", {c, 1.5}]},\n",
                  [["  health => #{type => http, port => ", integer_to_list(8000 + I),
                    ", path => <<\"/health\">>},\n"] || Health],
                  "  depends_on => [", lists:join(", ", Deps), "]}.\n"]};
            json ->
                {"app.json",
                 ["{\"name\": \"", Name, "\", \"version\": \"1.0.", integer_to_list(I), "\",\n",
                  " \"source\": {\"type\": \"git\", \"url\": \"https://git.example.com/", Name,
                  ".git\", \"ref\": \"main\"},\n",
                  " \"env\": {\"port\": ", integer_to_list(8000 + I),
                  ", \"mode\": \"fast\", \"tags\": [\"a\", \"b\", 1.5]},\n",
                  [[" \"health\": {\"type\": \"http\", \"port\": ", integer_to_list(8000 + I),
                    ", \"path\": \"/health\"},\n"] || Health],
                  " \"depends_on\": [", lists:join(", ", ["\"" ++ D ++ "\"" || D <- Deps]), "]}\n"]}
        end,
    Path = filename:join([Repo, "apps", Name, File]),
    ok = filelib:ensure_dir(Path),
    ok = file:write_file(Path, Text),
    Path.

%% A no-op reconcile: the commit is unchanged and all N apps run at their
%% desired version (a runtime that only reports them), so a reconcile is a
%% git fetch, a cached parse, the runtime's state and a plan.
noop_rows(Dir, Smoke) ->
    N = case Smoke of true -> 20; false -> 1000 end,
    Repo = filename:join(Dir, "noop"),
    %% No health checks here: they would run (and fail: nothing listens)
    %% alongside the reconciles being measured.
    [write_spec(Repo, I, terms, false) || I <- lists:seq(1, N)],
    ok = git(Repo, ["init", "-q", "-b", "main"]),
    ok = git(Repo, ["add", "-A"]),
    ok = git(Repo, ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "specs"]),
    ok = load_runtime(Dir),
    {ok, _} = application:ensure_all_started(bc_gitops),
    {ok, _} = bc_gitops:start_reconciler(#{repo_url => Repo,
                                           local_path => filename:join(Dir, "noop_state"),
                                           runtime_module => bench_runtime,
                                           reconcile_interval => 3600000}),
    ok = bc_gitops:reconcile(),
    {ok, #{status := synced, app_count := N}} = bc_gitops:status(),
    Runs = case Smoke of true -> 5; false -> 200 end,
    Samples = samples(Runs, fun() -> ok = bc_gitops:reconcile() end),
    ok = application:stop(bc_gitops),
    [{io_lib:format("no-op reconcile, ~p apps in sync", [N]), pct(Samples, 50), pct(Samples, 99),
      undefined}].

%% A runtime that "runs" whatever it is asked to, in an ETS table.
load_runtime(Dir) ->
    Src = filename:join(Dir, "bench_runtime.erl"),
    ok = file:write_file(Src, [
        "-module(bench_runtime).\n",
        "-export([deploy/1, remove/1, upgrade/2, reconfigure/1, get_current_state/0]).\n",
        "-record(app_spec, {name, version, description, source, env, health, depends_on}).\n",
        "-record(app_state, {name, version, status, path, pid, started_at, health = unknown,\n",
        "                    env = #{}, depends_on = []}).\n",
        "t() -> case ets:whereis(?MODULE) of undefined -> ets:new(?MODULE, [named_table, public,\n",
        "        {heir, whereis(init), none}]); _ -> ?MODULE end.\n",
        "deploy(#app_spec{name = N, version = V, env = E, depends_on = D}) ->\n",
        "    S = #app_state{name = N, version = V, status = running, env = E, depends_on = D},\n",
        "    ets:insert(t(), {N, S}), {ok, S}.\n",
        "upgrade(S, _) -> deploy(S).\nreconfigure(S) -> deploy(S).\n",
        "remove(N) -> ets:delete(t(), N), ok.\n",
        "get_current_state() -> {ok, maps:from_list(ets:tab2list(t()))}.\n"]),
    {ok, bench_runtime, Bin} = compile:file(Src, [binary, report]),
    {module, bench_runtime} = code:load_binary(bench_runtime, Src, Bin),
    ok.

samples(Runs, Fun) ->
    _ = Fun(),
    lists:sort([begin
                    T0 = erlang:monotonic_time(microsecond),
                    _ = Fun(),
                    erlang:monotonic_time(microsecond) - T0
                end || _ <- lists:seq(1, Runs)]).

pct(Sorted, P) ->
    lists:nth(max(1, min(length(Sorted), round(P / 100 * length(Sorted)))), Sorted).

fmt(undefined) -> "-";
fmt(Us) when Us >= 1000 -> io_lib:format("~.2f ms", [Us / 1000]);
fmt(Us) -> io_lib:format("~p us", [Us]).

git(Repo, Args) ->
    Env = [{"GIT_CONFIG_GLOBAL", "/dev/null"}, {"GIT_CONFIG_NOSYSTEM", "1"}],
    Port = open_port({spawn_executable, os:find_executable("git")},
                     [{args, Args}, {cd, Repo}, {env, Env}, exit_status, stderr_to_stdout]),
    receive {Port, {exit_status, 0}} -> ok; {Port, {exit_status, S}} -> {error, S} end.

tmp() ->
    case os:getenv("TMPDIR") of
        false -> "/tmp";
        "" -> "/tmp";
        T -> T
    end.
