%%% Helpers of the Common Test suites that deploy real apps from git:
%%% repositories built with make, specs committed to the suite's gitops
%%% repository (`{gitops, Dir}' in the CT config, beside `{dir, Dir}'), the
%%% reconciler started on it, telemetry events collected, http and health
%%% waited for.
-module(bc_gitops_test_apps).

-include("bc_gitops.hrl").

-export([init_case/2, end_case/2, make_repo/2, commit_spec/5, start/2, attach_events/2, collect_events/0,
         wait_healthy/2, http_get/1, free_port/0]).

%% A case's start: the test clock reset, a fresh directory (`dir') with an
%% empty gitops repository (`gitops'), bc_gitops started without a
%% reconciler.
init_case(Prefix, Config) ->
    ok = bc_gitops_test_clock:start(),
    Dir = bc_gitops_test_util:tmp_dir(Prefix),
    Gitops = filename:join(Dir, "gitops"),
    ok = bc_gitops_test_util:init_repo(Gitops),
    bc_gitops_test_util:write_file(filename:join([Gitops, "apps", ".keep"]), ""),
    {ok, _} = application:ensure_all_started(bc_gitops),
    [{dir, Dir}, {gitops, Gitops} | Config].

%% A case's end: the events handler `Id' detached, every app the default
%% runtime runs removed, bc_gitops stopped (if the case did not), the
%% directory deleted.
end_case(Id, Config) ->
    _ = telemetry:detach(Id),
    case whereis(bc_gitops_sup) of
        undefined ->
            ok;
        _ ->
            {ok, Apps} = bc_gitops_runtime_default:get_current_state(),
            _ = [bc_gitops_runtime_default:remove(A) || A <- maps:keys(Apps)],
            ok = application:stop(bc_gitops)
    end,
    bc_gitops_test_util:rm_rf(proplists:get_value(dir, Config)).

%% A new git repository `Dir/App' whose Makefile compiles src/*.erl into
%% ebin/ and copies src/App.app.src as its .app.
make_repo(Config, App) ->
    Repo = filename:join(proplists:get_value(dir, Config), App),
    ok = bc_gitops_test_util:init_repo(Repo),
    bc_gitops_test_util:write_file(filename:join(Repo, "Makefile"),
                                   ["all:\n\tmkdir -p ebin\n\terlc -o ebin src/*.erl\n"
                                    "\tcp src/", App, ".app.src ebin/", App, ".app\n"]),
    Repo.

%% Commits to the gitops repository the spec of App at Version, built from
%% Repo's main branch; Extra is more of the map's fields (source text).
commit_spec(Config, App, Version, Repo, Extra) ->
    Gitops = proplists:get_value(gitops, Config),
    bc_gitops_test_util:write_file(
      filename:join([Gitops, "apps", App, "app.config"]),
      ["#{name => ", App, ", version => <<\"", Version, "\">>,\n",
       "  source => #{type => git, url => <<\"", Repo, "\">>, ref => <<\"main\">>},\n",
       "  ", Extra, "}.\n"]),
    _ = bc_gitops_test_util:commit(Gitops, "spec " ++ App ++ " " ++ Version).

%% Starts the reconciler on the gitops repository (state under Dir/state),
%% with the options of Extra, and waits for its first reconcile to end.
start(Config, Extra) ->
    {ok, _} = bc_gitops:start_reconciler(
                maps:merge(#{repo_url => proplists:get_value(gitops, Config),
                             local_path => filename:join(proplists:get_value(dir, Config),
                                                         "state")},
                           Extra)),
    bc_gitops_test_util:wait_reconciled(60000).

%% Telemetry events `Names', with the time they came at, sent to this
%% process (handler `Id': detach it at the end of the case).
attach_events(Id, Names) ->
    Self = self(),
    ok = telemetry:attach_many(Id, Names,
                               fun(E, _, Meta, _) ->
                                       Self ! {event, erlang:monotonic_time(millisecond), E, Meta}
                               end, none).

%% The events received so far: [{Ms, Event, Metadata}].
collect_events() ->
    receive {event, T, E, M} -> [{T, E, M} | collect_events()]
    after 0 -> []
    end.

%% Waits for get_app_status/1 to say App is healthy, N times 100 ms.
wait_healthy(App, 0) ->
    ct:fail({not_healthy, bc_gitops:get_app_status(App)});
wait_healthy(App, N) ->
    case bc_gitops:get_app_status(App) of
        {ok, #app_state{health = healthy}} -> ok;
        _ -> timer:sleep(100), wait_healthy(App, N - 1)
    end.

%% GET http://127.0.0.1:Port/: {Status, Body}.
http_get(Port) ->
    Url = "http://127.0.0.1:" ++ integer_to_list(Port) ++ "/",
    {ok, {{_, Code, _}, _, Body}} = httpc:request(get, {Url, []}, [{timeout, 5000}],
                                                   [{body_format, binary}]),
    {Code, Body}.

%% A TCP port free on 127.0.0.1 now.
free_port() ->
    {ok, S} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(S),
    ok = gen_tcp:close(S),
    Port.
