#!/usr/bin/env escript
%%! -noshell
%% The demo behind `make demo`: a real local gitops repository and a real
%% example app repository, reconciled by bc_gitops with its default runtime
%% on this node: the app is fetched from git, built, started, upgraded when
%% a commit says so, and a broken spec is reported without stopping
%% anything. Then a cluster of three peer nodes driven by one repository:
%% a rolling hot upgrade, one node at a time behind its health gate, and a
%% bad version halted at the canary. Exits 0 only when everything it shows
%% is as expected.
-mode(compile).

-include("../include/bc_gitops.hrl").

main(_) ->
    Ebin = filename:join([root(), "_build", "default", "lib", "bc_gitops", "ebin"]),
    true = code:add_patha(Ebin),
    Dir = filename:join(tmp(), "bc_gitops_demo_" ++ os:getpid()),
    logger:set_primary_config(level, error),
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
    Gitops = filename:join(Dir, "gitops"),
    AppRepo = filename:join(Dir, "hello"),
    [init_repo(R) || R <- [Gitops, AppRepo]],

    step("1. an app repository (hello, v1.0.0) and a gitops repository that asks for it"),
    hello(AppRepo, "1.0.0", "Hello"),
    commit(AppRepo, "hello 1.0.0"),
    git(AppRepo, ["tag", "v1.0.0"]),
    spec(Gitops, AppRepo, "1.0.0", "#{greeting => <<\"world\">>}"),
    write(Gitops, "apps/.keep", ""),
    commit(Gitops, "deploy hello 1.0.0"),

    step("2. bc_gitops reconciles: fetch from git, build with rebar3, start"),
    {ok, _} = application:ensure_all_started(bc_gitops),
    {ok, _} = bc_gitops:start_reconciler(#{repo_url => Gitops,
                                           local_path => filename:join(Dir, "state"),
                                           reconcile_interval => 3600000}),
    ok = timed(fun bc_gitops:reconcile/0),
    <<"Hello, world! (1.0.0)">> = show_greeting(),
    show_status(),

    step("3. a commit asks for hello 1.1.0: new code whose code_change/3 turns the state into a map"),
    hello(AppRepo, "1.1.0", "Bonjour"),
    commit(AppRepo, "hello 1.1.0"),
    git(AppRepo, ["tag", "v1.1.0"]),
    spec(Gitops, AppRepo, "1.1.0", "#{greeting => <<\"le monde\">>}"),
    commit(Gitops, "upgrade hello to 1.1.0"),
    {ok, #{actions := [{upgrade, #app_spec{name = hello}, <<"1.0.0">>}]}} = bc_gitops:plan(),
    io:format("   plan   upgrade hello 1.0.0 -> 1.1.0~n"),
    PidBefore = whereis(hello_server),
    StateBefore = sys:get_state(hello_server),
    Self = self(),
    Handler = fun(_, _, Meta, _) -> Self ! {upgrade_stop, Meta} end,
    attach_telemetry(Handler),
    ok = timed(fun bc_gitops:reconcile/0),
    <<"Bonjour, le monde! (1.1.0)">> = show_greeting(),
    PidBefore = whereis(hello_server),
    StateAfter = sys:get_state(hello_server),
    io:format("   same process ~p; state ~p became ~p~n", [PidBefore, StateBefore, StateAfter]),
    #{greetings := 2, since := <<"1.0.0">>} = StateAfter,
    receive
        {upgrade_stop, #{path := hot, modules := Mods, suspended_us := Us}} ->
            io:format("   the upgrade was hot: modules ~p reloaded, processes suspended ~p us~n",
                      [Mods, Us])
    after 0 ->
        error(upgrade_was_not_hot)
    end,
    step("4. a broken spec is reported with file, line and field; hello keeps running"),
    write(Gitops, "apps/mailer/app.config",
          "#{name => mailer,\n  version => <<\"0.1.0\">>,\n  source => #{type => svn}}.\n"),
    commit(Gitops, "add a broken spec"),
    {error, {out_of_sync, #{spec_errors := [Error]}}} = bc_gitops:reconcile(),
    io:format("   error  ~s~n", [bc_gitops_specs:format_diagnostic(Error)]),
    <<"Bonjour, le monde! (1.1.0)">> = show_greeting(),
    show_status(),

    step("5. the app is removed from git: bc_gitops stops and unloads it"),
    ok = file:del_dir_r(filename:join([Gitops, "apps", "hello"])),
    ok = file:del_dir_r(filename:join([Gitops, "apps", "mailer"])),
    commit(Gitops, "remove hello"),
    ok = bc_gitops:reconcile(),
    false = lists:keyfind(hello, 1, application:which_applications()),
    false = code:is_loaded(hello_server),
    io:format("   hello is gone: not running, no module loaded~n"),
    ok = application:stop(bc_gitops),
    cluster(Dir).

%%% The cluster act

cluster(Dir) ->
    step("6. three nodes, one gitops repository: counter 1.0.0 rolls out one node at a time"),
    Out = filename:join(Dir, "peers"),
    ok = filelib:ensure_path(Out),
    {ok, _} = compile:file(filename:join([root(), "test", "bc_gitops_peers.erl"]),
                           [{outdir, Out}, report]),
    true = code:add_patha(Out),
    ok = bc_gitops_peers:compile(root(), Out),
    Ebin = filename:join([root(), "_build", "default", "lib", "bc_gitops", "ebin"]),
    Id = os:getpid(),
    Peers = bc_gitops_peers:start(["demo_" ++ L ++ "_" ++ Id || L <- ["a", "b", "c"]], [Ebin, Out]),
    try cluster(Dir, Peers)
    after bc_gitops_peers:stop(Peers)
    end.

cluster(Dir, Peers) ->
    Members = [N || {N, _} <- Peers],
    Gitops = filename:join(Dir, "cluster_gitops"),
    Repo = filename:join(Dir, "counter"),
    [init_repo(R) || R <- [Gitops, Repo]],
    write(Repo, "Makefile", "all:\n\tmkdir -p ebin\n\terlc -o ebin src/*.erl\n"
                            "\tcp src/counter.app.src ebin/counter.app\n"),
    counter(Repo, Gitops, "1.0.0"),
    Events = [[bc_gitops, upgrade, start], [bc_gitops, upgrade, stop], [bc_gitops, gate, stop],
              [bc_gitops, deploy, start], [bc_gitops, rollout, step], [bc_gitops, rollout, stop]],
    [ok = bc_gitops_peers:call(P, bc_gitops_peers, boot,
                          [#{repo_url => Gitops, reconcile_interval => 3600000,
                             local_path => filename:join(Dir, "node_" ++ atom_to_list(N)),
                             health_grace => 3000, cluster => #{members => Members}},
                           Events])
     || {N, _} = P <- Peers],
    Last = lists:last(Peers),
    ok = one_coordinator(Peers, 100),
    T0 = erlang:system_time(microsecond),
    ok = bc_gitops_peers:call(Last, bc_gitops, reconcile, []),
    timeline(Peers, T0),
    [1 = bc_gitops_peers:call(P, counter_server, bump, []) || P <- Peers],
    Pids = [bc_gitops_peers:call(P, erlang, whereis, [counter_server]) || P <- Peers],
    {ok, #{coordinator := Coordinator}} = bc_gitops_peers:call(hd(Peers), bc_gitops, cluster_status, []),
    io:format("   coordinator: ~s~n", [Coordinator]),

    step("7. counter 1.1.0: a rolling hot upgrade; each node's health gate passes before the next starts"),
    counter(Repo, Gitops, "1.1.0"),
    T1 = erlang:system_time(microsecond),
    ok = bc_gitops_peers:call(Last, bc_gitops, reconcile, []),
    timeline(Peers, T1),
    Pids = [bc_gitops_peers:call(P, erlang, whereis, [counter_server]) || P <- Peers],
    [2 = bc_gitops_peers:call(P, counter_server, bump, []) || P <- Peers],
    io:format("   every node: the same counter_server process, its count kept (now 2)~n"),

    step("8. counter 1.2.0 fails its health check: halted and rolled back at the canary"),
    counter(Repo, Gitops, "1.2.0"),
    T2 = erlang:system_time(microsecond),
    {error, {out_of_sync, #{waiting := [{counter, {rolled_back, <<"1.2.0">>}}]}}} =
        bc_gitops_peers:call(hd(Peers), bc_gitops, reconcile, []),
    timeline(Peers, T2),
    [[{_, _, "1.1.0"}] = [A || {counter, _, _} = A <- bc_gitops_peers:call(P, application,
                                                                         which_applications, [])]
     || P <- Peers],
    {ok, #{rollouts := [#{state := halted, reason := Why}]}} =
        bc_gitops_peers:call(Last, bc_gitops, cluster_status, []),
    ok = all_hold(Peers, 50),
    io:format("   rollout halted: ~p~n   1.2.0 never reached the other nodes; every node runs 1.1.0 "
              "and waits with {rolled_back, <<\"1.2.0\">>}~n", [Why]),
    ok.

%% Every node shows the halted version in `waiting' (the coordinator's
%% word reaches them in a moment).
all_hold(_Peers, 0) ->
    error(not_held_everywhere);
all_hold(Peers, Tries) ->
    Held = [W || P <- Peers, {ok, #{waiting := W}} <- [bc_gitops_peers:call(P, bc_gitops, status, [])]],
    case lists:usort(Held) of
        [[{counter, {rolled_back, <<"1.2.0">>}}]] -> ok;
        _ -> timer:sleep(100), all_hold(Peers, Tries - 1)
    end.

one_coordinator(_Peers, 0) ->
    error(no_single_coordinator);
one_coordinator(Peers, Tries) ->
    Known = [bc_gitops_peers:call(P, bc_gitops_cluster, info, []) || P <- Peers],
    case lists:usort([C || #{coordinator := C} <- Known]) of
        [C] when C =/= undefined -> ok;
        _ -> timer:sleep(100), one_coordinator(Peers, Tries - 1)
    end.

%% The events of every node since T0, in one timeline.
timeline(Peers, T0) ->
    All = lists:keysort(1, [E || P <- Peers, {T, _, _, _} = E <- bc_gitops_peers:call(P, bc_gitops_peers,
                                                                                 events, []),
                                 T >= T0]),
    [io:format("   ~6.1f ms  ~-22s ~s~n", [(T - T0) / 1000, short(Node), describe(Event, Meta)])
     || {T, Node, Event, Meta} <- All, describe(Event, Meta) =/= skip],
    ok.

short(Node) -> hd(string:split(atom_to_list(Node), "_")) ++ "_" ++
                   lists:nth(2, string:split(atom_to_list(Node), "_", all)).

describe([bc_gitops, rollout, step], #{app := App, result := started, nodes := [N]}) ->
    io_lib:format("coordinator: batch for ~s starts on ~s", [App, short(N)]);
describe([bc_gitops, rollout, step], _) -> skip;
describe([bc_gitops, rollout, stop], #{app := App, result := R}) ->
    io_lib:format("coordinator: rollout of ~s ~p", [App, R]);
describe([bc_gitops, deploy, start], #{app := App, version := V}) ->
    io_lib:format("deploy ~s ~s", [App, V]);
describe([bc_gitops, upgrade, start], #{app := App, from_version := F, to_version := T}) ->
    io_lib:format("upgrade ~s ~s -> ~s", [App, F, T]);
describe([bc_gitops, upgrade, stop], #{path := Path, result := ok}) ->
    io_lib:format("  upgraded (~p)", [Path]);
describe([bc_gitops, upgrade, stop], _) -> skip;
describe([bc_gitops, gate, stop], #{app := App, version := V, result := R}) ->
    io_lib:format("  health gate of ~s ~s: ~p", [App, V, R]).

%% counter at Vsn: a gen_server counter and a custom health check that
%% fails in 1.2.0; committed, with its spec in the gitops repository.
counter(Repo, Gitops, Vsn) ->
    write(Repo, "src/counter.app.src",
          ["{application, counter, [{vsn, \"", Vsn, "\"}, {mod, {counter_app, []}},\n"
           " {modules, [counter_app, counter_server, counter_health]},\n"
           " {applications, [kernel, stdlib]}, {env, []}]}.\n"]),
    write(Repo, "src/counter_app.erl",
          "-module(counter_app).\n-behaviour(application).\n-behaviour(supervisor).\n"
          "-export([start/2, stop/1, init/1]).\n"
          "start(_, _) -> supervisor:start_link({local, counter_sup}, ?MODULE, []).\n"
          "stop(_) -> ok.\n"
          "init([]) -> {ok, {#{}, [#{id => s, start => {counter_server, start_link, []}}]}}.\n"),
    write(Repo, "src/counter_server.erl",
          "-module(counter_server).\n-behaviour(gen_server).\n"
          "-export([start_link/0, bump/0, init/1, handle_call/3, handle_cast/2, code_change/3]).\n"
          "start_link() -> gen_server:start_link({local, ?MODULE}, ?MODULE, 0, []).\n"
          "bump() -> gen_server:call(?MODULE, bump).\n"
          "init(N) -> {ok, N}.\n"
          "handle_call(bump, _, N) -> {reply, N + 1, N + 1}.\n"
          "handle_cast(_, N) -> {noreply, N}.\n"
          "code_change(_, N, _) -> {ok, N}.\n"),
    Health = case Vsn of
                 "1.2.0" -> "{error, {broken, <<\"" ++ Vsn ++ "\">>}}";
                 _ -> "ok"
             end,
    write(Repo, "src/counter_health.erl",
          ["-module(counter_health).\n-export([check/1]).\n"
           "check(counter) -> ", Health, ".\n"]),
    commit(Repo, "counter " ++ Vsn),
    git(Repo, ["tag", "v" ++ Vsn]),
    write(Gitops, "apps/counter/app.config",
          ["#{name => counter, version => <<\"", Vsn, "\">>,\n"
           "  source => #{type => git, url => <<\"", Repo, "\">>, ref => <<\"v", Vsn, "\">>},\n"
           "  health => #{type => custom, module => counter_health, interval => 200}}.\n"]),
    commit(Gitops, "counter " ++ Vsn).

%% Telemetry's API, when the real package is not there: a stand-in that
%% calls one handler, so the demo can show the upgrade's stop event.
attach_telemetry(Handler) ->
    Src = ["-module(telemetry).\n-export([execute/3]).\n",
           "execute(E, M, Meta) -> (persistent_term:get(demo_handler))(E, M, Meta, none).\n"],
    persistent_term:put(demo_handler, fun([bc_gitops, upgrade, stop] = E, M, Meta, C) ->
                                              Handler(E, M, Meta, C);
                                         (_, _, _, _) -> ok
                                      end),
    case code:is_loaded(telemetry) of
        false ->
            File = filename:join(tmp(), "telemetry.erl"),
            ok = file:write_file(File, Src),
            {ok, telemetry, Bin} = compile:file(File, [binary]),
            ok = file:delete(File),
            {module, telemetry} = code:load_binary(telemetry, File, Bin),
            ok;
        _ ->
            ok
    end.

timed(Fun) ->
    T0 = erlang:monotonic_time(millisecond),
    Result = Fun(),
    io:format("   reconcile -> ~p in ~p ms~n", [Result, erlang:monotonic_time(millisecond) - T0]),
    Result.

show_greeting() ->
    Greeting = hello_server:greet(),
    {ok, #app_state{version = V, pid = Pid}} = bc_gitops:get_app_status(hello),
    io:format("   hello ~s runs (top supervisor ~p): ~s~n", [V, Pid, Greeting]),
    Greeting.

show_status() ->
    {ok, S} = bc_gitops:status(),
    io:format("   status ~p, commit ~s, ~p app(s), ~p healthy~n",
              [maps:get(status, S), binary:part(maps:get(last_commit, S), 0, 7),
               maps:get(app_count, S), maps:get(healthy_count, S)]).

step(Text) -> io:format("~n~s~n", [Text]).

%% The example app: a supervisor and a gen_server that greets with the
%% `greeting' env the gitops repository sets.
hello(Repo, Vsn, Word) ->
    write(Repo, "rebar.config", "{erl_opts, [debug_info]}.\n"),
    write(Repo, "src/hello.app.src",
          ["{application, hello, [{vsn, \"", Vsn, "\"}, {mod, {hello_app, []}},\n"
           "  {applications, [kernel, stdlib]}, {env, []}]}.\n"]),
    write(Repo, "src/hello_app.erl",
          "-module(hello_app).\n-behaviour(application).\n-export([start/2, stop/1]).\n"
          "start(_, _) -> hello_sup:start_link().\nstop(_) -> ok.\n"),
    write(Repo, "src/hello_sup.erl",
          "-module(hello_sup).\n-behaviour(supervisor).\n-export([start_link/0, init/1]).\n"
          "start_link() -> supervisor:start_link({local, ?MODULE}, ?MODULE, []).\n"
          "init([]) -> {ok, {#{}, [#{id => s, start => {hello_server, start_link, []}}]}}.\n"),
    State = case Vsn of
                "1.0.0" ->
                    "init([]) -> {ok, 0}.\n"
                    "handle_call(greet, _, N) -> {reply, greeting(), N + 1}.\n"
                    "code_change(_, S, _) -> {ok, S}.\n";
                _ ->
                    "init([]) -> {ok, #{greetings => 0, since => <<\"new\">>}}.\n"
                    "handle_call(greet, _, #{greetings := N} = S) ->\n"
                    "    {reply, greeting(), S#{greetings := N + 1}}.\n"
                    "%% 1.0.0 kept a bare count; 1.1.0 keeps a map.\n"
                    "code_change(_, N, _) when is_integer(N) ->\n"
                    "    {ok, #{greetings => N, since => <<\"1.0.0\">>}}.\n"
            end,
    write(Repo, "src/hello_server.erl",
          ["-module(hello_server).\n-behaviour(gen_server).\n"
           "-export([start_link/0, greet/0, init/1, handle_call/3, handle_cast/2,\n"
           "         code_change/3]).\n"
           "start_link() -> gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).\n"
           "greet() -> gen_server:call(?MODULE, greet).\n",
           State,
           "greeting() ->\n"
           "    {ok, Who} = application:get_env(hello, greeting),\n"
           "    iolist_to_binary([<<\"", Word, ", \">>, Who, <<\"! (", Vsn, ")\">>]).\n"
           "handle_cast(_, S) -> {noreply, S}.\n"]).

spec(Gitops, AppRepo, Vsn, Env) ->
    write(Gitops, "apps/hello/app.config",
          ["#{name => hello,\n  version => <<\"", Vsn, "\">>,\n",
           "  source => #{type => git, url => <<\"", AppRepo, "\">>, ref => <<\"v", Vsn, "\">>},\n",
           "  env => ", Env, "}.\n"]).

write(Repo, Rel, Content) ->
    Path = filename:join(Repo, Rel),
    ok = filelib:ensure_dir(Path),
    ok = file:write_file(Path, Content).

init_repo(Dir) ->
    ok = filelib:ensure_path(Dir),
    git(Dir, ["init", "-q", "-b", "main"]).

commit(Repo, Msg) ->
    git(Repo, ["add", "-A"]),
    git(Repo, ["-c", "user.name=demo", "-c", "user.email=demo@localhost",
               "commit", "-q", "-m", Msg]).

%% git without a shell, ignoring the machine's git config; any failure
%% stops the demo with git's output.
git(Repo, Args) ->
    Env = [{"GIT_CONFIG_GLOBAL", "/dev/null"}, {"GIT_CONFIG_NOSYSTEM", "1"}],
    Port = open_port({spawn_executable, os:find_executable("git")},
                     [{args, Args}, {cd, Repo}, {env, Env}, exit_status, stderr_to_stdout]),
    collect(Port, Args, []).

collect(Port, Args, Acc) ->
    receive
        {Port, {data, D}} -> collect(Port, Args, [Acc, D]);
        {Port, {exit_status, 0}} -> ok;
        {Port, {exit_status, N}} -> error({git_failed, Args, N, lists:flatten(Acc)})
    after 30000 -> error({git_timeout, Args})
    end.

root() -> filename:dirname(filename:dirname(filename:absname(escript:script_name()))).

tmp() ->
    case os:getenv("TMPDIR") of
        false -> "/tmp";
        "" -> "/tmp";
        T -> T
    end.
