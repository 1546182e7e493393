%%% Encrypted env values end to end, on a real peer node with the default
%%% runtime and apps built from git: canary secrets in specs, then a
%%% deploy, failures, a value encrypted again, a new value, drift, a
%%% crash of the reconcile worker, a crash of the reconciler and a node
%%% restart; then every output (the API, history, the HTTP face's page,
%%% JSON and metrics included) and every file is searched for the
%%% canaries.
-module(bc_gitops_secrets_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include("bc_gitops.hrl").

-export([all/0, suite/0, init_per_testcase/2, end_per_testcase/2]).
-export([canaries_never_leave_the_app_env/1]).

-import(bc_gitops_test_util, [commit/2, write_file/2]).

all() -> [canaries_never_leave_the_app_env].

suite() -> [{timetrap, {minutes, 10}}].

-define(EVENTS, [[bc_gitops, E, P] || {E, P} <- [{reconcile, start}, {reconcile, stop},
                                                   {reconcile, error}, {parse, stop},
                                                   {deploy, start}, {deploy, stop},
                                                   {upgrade, start}, {upgrade, stop},
                                                   {reconfigure, start}, {reconfigure, stop},
                                                   {remove, start}, {remove, stop},
                                                   {drift, detected}]]
                ++ [[bc_gitops, git, pull]]).

init_per_testcase(_Case, Config) ->
    Dir = bc_gitops_test_util:tmp_dir("ct_secrets"),
    Gitops = filename:join(Dir, "gitops"),
    ok = bc_gitops_test_util:init_repo(Gitops),
    write_file(filename:join([Gitops, "apps", ".keep"]), ""),
    {Key, Recipient} = bc_gitops_test_keys:age_key(Dir, "node.key"),
    {_, Other} = bc_gitops_test_keys:age_key(Dir, "other.key"),
    Canaries = [iolist_to_binary(["canary-", Tag, "-", binary:encode_hex(crypto:strong_rand_bytes(8))])
                || Tag <- ["one", "two", "db"]],
    [{dir, Dir}, {gitops, Gitops}, {key, Key}, {recipient, Recipient}, {other, Other},
     {canaries, Canaries}, {log, filename:join(Dir, "node.log")},
     {state, filename:join(Dir, "state")} | Config].

end_per_testcase(_Case, Config) ->
    _ = [catch peer:stop(P) || P <- [get(peer)], is_pid(P)],
    bc_gitops_test_util:rm_rf(?config(dir, Config)).

canaries_never_leave_the_app_env(Config) ->
    [One, Two, Db] = ?config(canaries, Config),
    Enc = fun(Plain) -> encrypt(Config, ?config(recipient, Config), Plain) end,
    DbTerm = [{user, "svc"}, {password, Db}],
    DbText = io_lib:format("~p.", [DbTerm]),
    app(Config, "sc_app", normal),
    app(Config, "sc_wrong", normal),
    app(Config, "sc_refuse", refuse),
    app(Config, "sc_slow", slow),
    spec(Config, "sc_app", #{password => Enc(One), db => Enc(DbText)}),
    spec(Config, "sc_wrong", #{password => encrypt(Config, ?config(other, Config), One)}),
    spec(Config, "sc_refuse", #{password => Enc(One)}),
    _ = commit(?config(gitops, Config), "apps with secrets"),
    Peer = boot(Config),
    Out = fun(Tag, Value) -> put(outputs, [{Tag, Value} | get_or(outputs)]), Value end,
    Call = fun(M, F, A) -> Out({M, F}, peer:call(get(peer), M, F, A, 300000)) end,
    %% The HTTP face: the status page, the JSON API and the metrics.
    Http = fun() ->
                   {ok, Port} = Call(bc_gitops, http_port, []),
                   Paths = ["/", "/api/status", "/api/plan", "/metrics"]
                       ++ ["/api/apps/" ++ A || A <- ["sc_app", "sc_wrong", "sc_refuse", "sc_slow"]],
                   _ = [begin
                            {Status, _, Body} = bc_gitops_http_client:request(Port, "GET", P, []),
                            ?assert(Status =:= 200 orelse (Status =:= 404 andalso P =:= "/api/apps/sc_slow")),
                            Out({http, P}, Body)
                        end || P <- Paths],
                   ok
           end,

    %% Deploy (the reconcile at boot): sc_app gets the plaintexts, the
    %% other two fail, each alone, and wait for their backoff.
    {error, {out_of_sync, #{waiting := [{sc_refuse, {backoff, 1, _}}, {sc_wrong, {backoff, 1, _}}]}}} =
        Call(bc_gitops, reconcile, []),
    {ok, #{app_errors := Errors}} = Call(bc_gitops, status, []),
    Failed = [{A, R} || {A, #{reason := R}} <- maps:to_list(Errors)],
    ok = Http(),
    ?assertEqual({ok, One}, peer:call(Peer, application, get_env, [sc_app, password])),
    ?assertEqual({ok, DbTerm}, peer:call(Peer, application, get_env, [sc_app, db])),
    ?assertMatch({secret, #{app := sc_wrong, key := password, kind := no_matching_identity,
                            file := <<"apps/sc_wrong/app.config">>}},
                 proplists:get_value(sc_wrong, Failed)),
    {secret, #{identity := Identity, message := Message}} = proplists:get_value(sc_wrong, Failed),
    ?assertEqual(unicode:characters_to_binary(?config(key, Config)), Identity),
    ?assertNotEqual(nomatch, binary:match(Message, Identity)),
    %% sc_refuse refused to start with its secret in its reason: scrubbed.
    Refused = proplists:get_value(sc_refuse, Failed),
    ?assertMatch({start_failed, _}, Refused),
    ?assertNotEqual(nomatch, string:find(io_lib:format("~p", [Refused]), "{refused,'*secret*'}")),
    ?assertMatch({_, _, "1.0.0"}, lists:keyfind(sc_app, 1, peer:call(Peer, application,
                                                                      which_applications, []))),

    %% The same plaintext encrypted again is not a change.
    spec(Config, "sc_app", #{password => Enc(One), db => Enc(DbText)}),
    _ = commit(?config(gitops, Config), "sc_app: values encrypted again"),
    Events = fun() -> [E || {_, _, [bc_gitops, reconfigure, start] = E, #{app := sc_app}}
                                <- peer:call(Peer, bc_gitops_peers, events, [])] end,
    _ = Call(bc_gitops, reconcile, []),
    ?assertEqual([], Events()),
    ?assertEqual(0, peer:call(Peer, persistent_term, get, [{sc_app, changes}, 0])),
    _ = Call(bc_gitops, plan, []),

    %% A new plaintext is a reconfigure.
    spec(Config, "sc_app", #{password => Enc(Two), db => Enc(DbText)}),
    _ = commit(?config(gitops, Config), "sc_app: new password"),
    _ = Call(bc_gitops, reconcile, []),
    ?assertEqual({ok, Two}, peer:call(Peer, application, get_env, [sc_app, password])),
    ?assertEqual(1, length(Events())),
    ?assertEqual(1, peer:call(Peer, persistent_term, get, [{sc_app, changes}, 0])),

    %% Drift: a value changed by hand is seen (not shown) and put back. The
    %% runtime's state token (what a steady reconcile looks at) names the
    %% app, with the value as the state shows it.
    ok = peer:call(Peer, application, set_env, [sc_app, password, <<"by hand">>]),
    {_, Drifted} = Call(bc_gitops_runtime_default, state_token, []),
    ?assertMatch([{sc_app, _, #{password := {age, changed}}}], Drifted),
    {ok, #{sc_app := #app_state{env = #{password := {age, changed}}}}} =
        Call(bc_gitops, get_current_state, []),
    _ = Call(bc_gitops, reconcile, []),
    ?assertEqual({ok, Two}, peer:call(Peer, application, get_env, [sc_app, password])),

    %% The reconcile worker dies while it holds sc_slow's plaintext (its
    %% start takes 3 s); meanwhile the processes are looked at.
    spec(Config, "sc_slow", #{password => Enc(Two)}),
    _ = commit(?config(gitops, Config), "sc_slow"),
    ok = peer:cast(Peer, bc_gitops, reconcile, []),
    Worker = worker(Peer, 100),
    %% sc_slow is loaded right before its env is set and it starts.
    wait(fun() -> lists:keymember(sc_slow, 1, peer:call(Peer, application, loaded_applications, []))
         end, 300),
    timer:sleep(300),
    _ = [Call(sys, get_status, [P]) || P <- [bc_gitops_reconciler, bc_gitops_health_monitor]],
    true = peer:call(Peer, erlang, exit, [Worker, kill]),
    wait(fun() -> case peer:call(Peer, bc_gitops, status, []) of
                      {ok, #{status := reconciling}} -> false;
                      {ok, _} -> true
                  end
         end, 200),
    {ok, #{last_error := {crashed, killed}}} = Call(bc_gitops, status, []),

    %% The reconciler itself crashes: its crash report goes through
    %% format_status/1; the supervisor starts it again.
    Old = peer:call(Peer, erlang, whereis, [bc_gitops_reconciler]),
    ok = peer:call(Peer, sys, terminate, [bc_gitops_reconciler, canary_test_crash]),
    wait(fun() -> case peer:call(Peer, erlang, whereis, [bc_gitops_reconciler]) of
                      New when is_pid(New), New =/= Old -> true;
                      _ -> false
                  end
         end, 200),
    reconciled(Peer),
    _ = Call(bc_gitops, reconcile, []),
    _ = Call(bc_gitops, get_desired_state, []),
    _ = Call(bc_gitops, get_current_state, []),
    _ = Call(bc_gitops, status, []),
    Before = keep_events(Peer, []),

    %% A node restart: the apps come back with their secrets.
    ok = peer:stop(Peer),
    Peer2 = boot(Config),
    _ = Call(bc_gitops, reconcile, []),
    ?assertEqual({ok, Two}, peer:call(Peer2, application, get_env, [sc_app, password])),
    ?assertEqual({ok, DbTerm}, peer:call(Peer2, application, get_env, [sc_app, db])),
    _ = [Call(M, F, []) || {M, F} <- [{bc_gitops, status}, {bc_gitops, plan},
                                      {bc_gitops, get_current_state}, {bc_gitops, history}]],
    _ = Call(bc_gitops, history, [sc_app]),
    _ = Call(sys, get_status, [bc_gitops_reconciler]),
    ok = Http(),
    AllEvents = keep_events(Peer2, Before),
    ok = peer:call(Peer2, logger_std_h, filesync, [canary_log]),

    %% The search works: it finds the canaries where they are meant to be.
    AppEnv = peer:call(Peer2, application, get_all_env, [sc_app]),
    [?assertNotEqual(nomatch, binary:match(render(AppEnv), C)) || C <- [Two, Db]],
    %% And finds them nowhere else.
    Files = files(?config(state, Config)) ++ [?config(log, Config)],
    ?assert(lists:any(fun(F) -> filename:basename(F) =:= "state.bin" end, Files)),
    {ok, Log} = file:read_file(?config(log, Config)),
    ?assertNotEqual(nomatch, binary:match(Log, <<"canary_test_crash">>)),
    %% The reconciler's crash report shows its state through format_status/1.
    ?assertNotEqual(nomatch, binary:match(Log, <<"(encrypted)">>)),
    ?assertNotEqual(nomatch, binary:match(Log, <<"reconcile worker crashed">>)),
    %% sc_refuse puts its password in its own exit reason: OTP logs it, in
    %% the application master's crash report and the application
    %% controller's "Exited" notice, both of which name the app's start
    %% call. That is the app's doing, and the only entries left out;
    %% bc_gitops scrubbed what came back to it (app_errors above).
    AppsOwn = fun(Entry) -> binary:match(Entry, <<"{sc_refuse,start,[normal,[]]}">>) =/= nomatch end,
    LogEntries = [E || E <- re:split(Log, "\n(?=\\d{4}-\\d\\d-\\d\\dT)"), not AppsOwn(E)],
    ?assert(length(LogEntries) < length(re:split(Log, "\n(?=\\d{4}-\\d\\d-\\d\\dT)"))),
    Sources = [{file, F, element(2, file:read_file(F))} || F <- Files, F =/= ?config(log, Config)]
        ++ [{log, N, E} || {N, E} <- lists:enumerate(LogEntries)]
        ++ [{output, Tag, render(V)} || {Tag, V} <- get(outputs)]
        ++ [{telemetry, E, render(Meta)} || {_, _, E, Meta} <- AllEvents],
    ct:pal("searched ~b files, ~b outputs, ~b telemetry events",
           [length(Files), length(get(outputs)), length(AllEvents)]),
    Leaks = [{Where, What, around(Data, At)} || {Where, What, Data} <- Sources, C <- [One, Two, Db],
                                                {At, _} <- [binary:match(Data, C)]],
    ?assertEqual([], Leaks).

%%% Helpers

%% A peer node running bc_gitops on the test's state directory, with a log
%% file and its telemetry events kept.
boot(Config) ->
    Paths = [P || P <- code:get_path(), string:find(P, "_build") =/= nomatch],
    {ok, Peer, _Node} = peer:start(#{name => peer:random_name("secrets"), host => "127.0.0.1",
                                     longnames => true, connection => standard_io,
                                     args => lists:append([["-pa", P] || P <- Paths]),
                                     wait_boot => 30000}),
    put(peer, Peer),
    ok = peer:call(Peer, logger, add_handler,
                   [canary_log, logger_std_h, #{config => #{file => ?config(log, Config)}}]),
    Options = #{repo_url => ?config(gitops, Config), local_path => ?config(state, Config),
                age_identity => ?config(key, Config), reconcile_interval => 3600000,
                http => #{port => 0}},
    ok = peer:call(Peer, bc_gitops_peers, boot, [Options, ?EVENTS]),
    ok = reconciled(Peer),
    Peer.

%% Waits for the reconcile a new reconciler starts with to end.
reconciled(Peer) ->
    wait(fun() -> case peer:call(Peer, bc_gitops, status, []) of
                      {ok, #{last_reconcile := At, status := S}} ->
                          At =/= undefined andalso S =/= reconciling;
                      _ -> false
                  end
         end, 1500).

keep_events(Peer, Acc) ->
    Acc ++ peer:call(Peer, bc_gitops_peers, events, []).

%% The reconcile worker: the process the reconciler monitors.
worker(_Peer, 0) ->
    ct:fail(no_worker);
worker(Peer, N) ->
    Reconciler = peer:call(Peer, erlang, whereis, [bc_gitops_reconciler]),
    case peer:call(Peer, erlang, process_info, [Reconciler, monitors]) of
        {monitors, [{process, Pid} | _]} -> Pid;
        _ -> timer:sleep(20), worker(Peer, N - 1)
    end.

wait(_Fun, 0) ->
    ct:fail(condition_not_met);
wait(Fun, N) ->
    case Fun() of
        true -> ok;
        false -> timer:sleep(100), wait(Fun, N - 1)
    end.

get_or(Key) ->
    case get(Key) of
        undefined -> [];
        V -> V
    end.

%% How a term can be seen: printed, and in the external format (as the
%% state file holds it).
render(Term) ->
    iolist_to_binary([io_lib:format("~tp", [Term]), term_to_binary(Term)]).

%% What is around a leak, to tell where it came from.
around(Data, At) ->
    From = max(0, At - 300),
    binary:part(Data, From, min(byte_size(Data) - From, 400)).

files(Dir) ->
    filelib:fold_files(Dir, ".*", true, fun(F, Acc) -> [F | Acc] end, []).

encrypt(Config, Recipient, Plain) ->
    bc_gitops_test_keys:age_encrypt(?config(dir, Config), Recipient, Plain).

spec(Config, App, Secrets) ->
    Repo = filename:join(?config(dir, Config), App),
    Env = [[atom_to_list(K), " => {age, <<\"", V, "\">>}, "] || {K, V} <- maps:to_list(Secrets)],
    write_file(filename:join([?config(gitops, Config), "apps", App, "app.config"]),
               ["#{name => ", App, ", version => <<\"1.0.0\">>,\n",
                "  source => #{type => git, url => <<\"", Repo, "\">>, ref => <<\"main\">>},\n",
                "  env => #{", Env, "port => 5432}}.\n"]).

%% An app built by make, in a git repository of its own: its start/2 is
%% `normal' (a supervisor), `refuse' (fails, giving its password as the
%% reason) or `slow' (takes 3 s); config_change/3 counts its calls.
app(Config, App, Start) ->
    Repo = filename:join(?config(dir, Config), App),
    ok = bc_gitops_test_util:init_repo(Repo),
    Body = case Start of
               normal -> "supervisor:start_link(?MODULE, [])";
               refuse -> "{ok, P} = application:get_env(?MODULE, password), {error, {refused, P}}";
               slow -> "timer:sleep(3000), supervisor:start_link(?MODULE, [])"
           end,
    write_file(filename:join(Repo, "Makefile"),
               ["all:\n\tmkdir -p ebin\n\terlc -o ebin src/*.erl\n"
                "\tcp src/", App, ".app.src ebin/", App, ".app\n"]),
    write_file(filename:join([Repo, "src", App ++ ".app.src"]),
               ["{application, ", App, ", [{vsn, \"1.0.0\"}, {mod, {", App, ", []}},\n"
                " {modules, [", App, "]}, {applications, [kernel, stdlib]}, {env, []}]}.\n"]),
    write_file(filename:join([Repo, "src", App ++ ".erl"]),
               ["-module(", App, ").\n-behaviour(application).\n-behaviour(supervisor).\n"
                "-export([start/2, stop/1, init/1, config_change/3]).\n"
                "start(_, _) -> ", Body, ".\nstop(_) -> ok.\n"
                "init([]) -> {ok, {#{}, []}}.\n"
                "config_change(_, _, _) ->\n"
                "    persistent_term:put({?MODULE, changes},\n"
                "                        persistent_term:get({?MODULE, changes}, 0) + 1).\n"]),
    _ = commit(Repo, "v1").
