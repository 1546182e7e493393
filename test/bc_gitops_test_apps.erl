%%% Helpers of the Common Test suites that deploy real apps from git
%%% (recovery, vm, the HTTP face): small OTP apps in repositories built with
%%% make, specs committed to a gitops repository (`{gitops, Dir}' in the CT
%%% config, beside `{dir, Dir}'), the reconciler started on it, telemetry
%%% events collected, http and health waited for.
-module(bc_gitops_test_apps).

-include("bc_gitops.hrl").

-export([gitops/1, app_repo/2, app_repo/3, spec/5, plain_app/3, web_app/4]).
-export([init_case/2, end_case/2, stop_all/0, make_repo/2, commit_spec/5, start/2, attach_events/2,
         collect_events/0, wait_healthy/2, http_get/1, free_port/0]).

-import(bc_gitops_test_util, [commit/2, write_file/2]).

%% A case's start: the test clock reset, a fresh directory (`dir') with an
%% empty gitops repository (`gitops'), bc_gitops started without a
%% reconciler.
init_case(Prefix, Config) ->
    ok = bc_gitops_test_clock:start(),
    Dir = bc_gitops_test_util:tmp_dir(Prefix),
    Gitops = gitops(Dir),
    {ok, _} = application:ensure_all_started(bc_gitops),
    [{dir, Dir}, {gitops, Gitops} | Config].

%% A case's end: the events handler `Id' detached, every app the default
%% runtime runs removed, bc_gitops stopped (if the case did not), the
%% directory deleted.
end_case(Id, Config) ->
    _ = telemetry:detach(Id),
    ok = stop_all(),
    bc_gitops_test_util:rm_rf(proplists:get_value(dir, Config)).

%% Every app the default runtime runs removed, then bc_gitops stopped (if
%% it runs).
stop_all() ->
    case whereis(bc_gitops_sup) of
        undefined ->
            ok;
        _ ->
            {ok, Apps} = bc_gitops_runtime_default:get_current_state(),
            _ = [bc_gitops_runtime_default:remove(A) || A <- maps:keys(Apps)],
            ok = application:stop(bc_gitops)
    end.

%% A gitops repository Dir/gitops with an empty apps/ (apps/.keep),
%% committed.
gitops(Dir) ->
    Gitops = filename:join(Dir, "gitops"),
    ok = bc_gitops_test_util:init_repo(Gitops),
    write_file(filename:join([Gitops, "apps", ".keep"]), ""),
    _ = commit(Gitops, "empty"),
    Gitops.

%% A git repository Dir/App whose Makefile compiles src/ into ebin/.
app_repo(Dir, App) ->
    app_repo(Dir, App, 0).

%% The same, the build taking at least BuildSeconds (a slow build).
app_repo(Dir, App, BuildSeconds) ->
    Repo = filename:join(Dir, App),
    ok = bc_gitops_test_util:init_repo(Repo),
    write_file(filename:join(Repo, "Makefile"),
               ["all:\n",
                [["\tsleep ", integer_to_list(BuildSeconds), "\n"] || BuildSeconds > 0],
                "\tmkdir -p ebin\n\terlc -o ebin src/*.erl\n"
                "\tcp src/", App, ".app.src ebin/", App, ".app\n"]),
    Repo.

%% Writes and commits Gitops/apps/App/app.config: App at Version from the
%% git repository Repo (branch main); Extra is more of the map's text.
spec(Gitops, App, Version, Repo, Extra) ->
    write_file(filename:join([Gitops, "apps", App, "app.config"]),
               ["#{name => ", App, ", version => <<\"", Version, "\">>,\n",
                "  source => #{type => git, url => <<\"", Repo, "\">>, ref => <<\"main\">>},\n",
                "  ", Extra, "}.\n"]),
    commit(Gitops, "spec " ++ App ++ " " ++ Version).

%% An app whose callback's start/2 is `Start'; rt_die_sup's worker
%% crashes 50 ms after it starts (twice in a row is more than the
%% supervisor's default intensity allows).
plain_app(Repo, App, Start) ->
    W = fun(Name, Text) -> write_file(filename:join([Repo, "src", Name]), Text) end,
    W(App ++ ".app.src", ["{application, ", App, ", [{vsn, \"1.0.0\"}, {mod, {", App, "_app, []}},\n"
                          " {applications, [kernel, stdlib]}, {env, []}]}.\n"]),
    W(App ++ "_app.erl", ["-module(", App, "_app).\n-behaviour(application).\n"
                          "-export([start/2, stop/1]).\n", Start, "stop(_) -> ok.\n"]),
    W("rt_die_sup.erl", "-module(rt_die_sup).\n-behaviour(supervisor).\n"
                        "-export([start_link/0, init/1]).\n"
                        "start_link() -> supervisor:start_link(?MODULE, []).\n"
                        "init([]) -> {ok, {#{}, [#{id => w, start => {rt_die_w, start_link, []}}]}}.\n"),
    W("rt_die_w.erl", "-module(rt_die_w).\n-behaviour(gen_server).\n"
                      "-export([start_link/0, init/1, handle_call/3, handle_cast/2, handle_info/2]).\n"
                      "start_link() -> gen_server:start_link(?MODULE, [], []).\n"
                      "init([]) -> erlang:send_after(50, self(), die), {ok, s}.\n"
                      "handle_call(_, _, S) -> {reply, ok, S}.\n"
                      "handle_cast(_, S) -> {noreply, S}.\n"
                      "handle_info(die, S) -> {stop, died, S}.\n").

%% A web app App: one gen_server, App_srv, listening on 127.0.0.1:<env
%% port>, answering every request with `Status' and the app's version as
%% the body.
web_app(Repo, App, Vsn, Status) ->
    W = fun(Name, Text) -> write_file(filename:join([Repo, "src", Name]), Text) end,
    Mod = fun(Suffix) -> App ++ Suffix end,
    W(App ++ ".app.src", ["{application, ", App, ", [{vsn, \"", Vsn, "\"}, {mod, {", Mod("_app"),
                          ", []}},\n {modules, [", Mod("_app"), ", ", Mod("_srv"), "]},\n"
                          " {applications, [kernel, stdlib]}, {env, []}]}.\n"]),
    W(Mod("_app.erl"),
      ["-module(", Mod("_app"), ").\n-behaviour(application).\n-behaviour(supervisor).\n"
       "-export([start/2, stop/1, init/1]).\n"
       "start(_, _) -> supervisor:start_link({local, ", Mod("_sup"), "}, ?MODULE, []).\n"
       "stop(_) -> ok.\n"
       "init([]) -> {ok, {#{}, [#{id => srv, start => {", Mod("_srv"), ", start_link, []},\n"
       "                          modules => [", Mod("_srv"), "]}]}}.\n"]),
    W(Mod("_srv.erl"), bc_gitops_test_util:web_server_src(
                         Mod("_srv"), "element(2, application:get_env(" ++ App ++ ", port))",
                         Vsn, Status)).

%% app_repo/2 in the case's directory.
make_repo(Config, App) ->
    app_repo(proplists:get_value(dir, Config), App).

%% spec/5 in the case's gitops repository.
commit_spec(Config, App, Version, Repo, Extra) ->
    _ = spec(proplists:get_value(gitops, Config), App, Version, Repo, Extra).

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
