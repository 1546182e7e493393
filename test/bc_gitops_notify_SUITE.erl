%%% Outgoing notifications, delivered to real HTTP servers on loopback:
%%% each kind of event, signed; once per change; bounded retries on the
%%% test clock; and an endpoint that never answers never slows a
%%% reconcile. The reconciler runs bc_gitops_test_runtime, so that what
%%% is under test is when and what bc_gitops notifies.
-module(bc_gitops_notify_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include("bc_gitops.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([deploys_and_upgrades_are_signed/1, failures_notify_once_per_change/1,
         rollback_degraded_recovered/1, sync_error_once/1, retries_are_bounded/1,
         dead_endpoint_never_slows_a_reconcile/1, https_target_trusts_ca_file/1]).

-import(bc_gitops_test_util, [commit/2, write_file/2, wait_reconciled/1, write_spec/3]).
-import(bc_gitops_http_client, [receiver/1, receiver/2, received/2, stop_receiver/1]).

-define(SECRET, <<"notify-secret-42">>).

all() ->
    [deploys_and_upgrades_are_signed, failures_notify_once_per_change, rollback_degraded_recovered,
     sync_error_once, retries_are_bounded, dead_endpoint_never_slows_a_reconcile,
     https_target_trusts_ca_file].

init_per_suite(Config) ->
    ok = bc_gitops_test_runtime:start(),
    Config.

end_per_suite(_Config) ->
    ok.

init_per_testcase(_Case, Config) ->
    Dir = bc_gitops_test_util:tmp_dir("ct_notify"),
    Gitops = bc_gitops_test_apps:gitops(Dir),
    ok = bc_gitops_test_runtime:start(),
    ok = bc_gitops_test_health:reset(),
    ok = bc_gitops_test_clock:start(),
    persistent_term:put({bc_gitops_test_runtime, fail}, #{}),
    {ok, _} = application:ensure_all_started(bc_gitops),
    [{dir, Dir}, {gitops, Gitops} | Config].

end_per_testcase(_Case, Config) ->
    ok = bc_gitops_test_logs:stop(),
    ok = application:stop(bc_gitops),
    persistent_term:put({bc_gitops_test_runtime, fail}, #{}),
    bc_gitops_test_util:rm_rf(?config(dir, Config)).

%%% Cases

%% A deploy and an upgrade: each target that wants them gets one POST of
%% JSON naming the app, the versions, the commit and the node, signed
%% when the target has a secret.
deploys_and_upgrades_are_signed(Config) ->
    Gitops = ?config(gitops, Config),
    {All, AllPort} = receiver(ok),
    {Few, FewPort} = receiver(ok),
    start(Config, #{notify => [#{url => url(AllPort, "/all"), secret => ?SECRET},
                               #{url => url(FewPort, "/few"), events => [upgraded]}]}),
    write_spec(Gitops, "n_app", bc_gitops_test_util:minimal_spec("n_app")),
    C1 = commit(Gitops, "n_app 1"),
    ok = bc_gitops:reconcile(),
    [{H1, B1}] = received(All, 1000),
    ?assertEqual([], received(Few, 200)),
    ?assertEqual(<<"sha256=", (bc_gitops_webhook:signature(?SECRET, B1))/binary>>,
                 maps:get(<<"x-bc-gitops-signature">>, H1)),
    ?assertEqual(<<"deployed">>, maps:get(<<"x-bc-gitops-event">>, H1)),
    ?assertEqual(<<"application/json">>, maps:get(<<"content-type">>, H1)),
    Node = atom_to_binary(node(), utf8),
    ?assertMatch({ok, #{<<"event">> := <<"deployed">>, <<"app">> := <<"n_app">>,
                        <<"version">> := <<"1.0.0">>, <<"commit">> := C1, <<"node">> := Node,
                        <<"branch">> := <<"main">>, <<"reason">> := null}},
                 bc_gitops_json:decode(B1)),

    write_spec(Gitops, "n_app", "#{name => n_app, version => <<\"1.1.0\">>, source => #{type => hex}}.\n"),
    C2 = commit(Gitops, "n_app 1.1"),
    ok = bc_gitops:reconcile(),
    [{_, B2}] = received(All, 1000),
    [{H3, B3}] = received(Few, 1000),
    ?assertEqual(B2, B3),
    ?assertEqual(false, maps:is_key(<<"x-bc-gitops-signature">>, H3)),
    ?assertMatch({ok, #{<<"event">> := <<"upgraded">>, <<"from_version">> := <<"1.0.0">>,
                        <<"to_version">> := <<"1.1.0">>, <<"commit">> := C2}},
                 bc_gitops_json:decode(B2)),
    %% No change, no notification.
    ok = bc_gitops:reconcile(),
    ?assertEqual([], received(All, 300)).

%% An app that fails at every retry notifies once; again when the commit
%% changes; a target that wants only `failed' gets only those.
failures_notify_once_per_change(Config) ->
    Gitops = ?config(gitops, Config),
    {R, Port} = receiver(ok),
    start(Config, #{notify => [#{url => url(Port, "/"), events => [failed]}],
                    clock => bc_gitops_test_clock}),
    bc_gitops_test_runtime:fail(n_bad, true),
    write_spec(Gitops, "n_bad", bc_gitops_test_util:minimal_spec("n_bad")),
    write_spec(Gitops, "n_good", bc_gitops_test_util:minimal_spec("n_good")),
    C1 = commit(Gitops, "n_bad"),
    [?assertMatch({error, {out_of_sync, _}}, reconcile_after_backoff()) || _ <- lists:seq(1, 4)],
    {ok, #{app_errors := #{n_bad := #{attempts := Attempts}}}} = bc_gitops:status(),
    ?assert(Attempts >= 4),
    [{_, B1}] = received(R, 1000),
    ?assertMatch({ok, #{<<"event">> := <<"failed">>, <<"app">> := <<"n_bad">>, <<"commit">> := C1,
                        <<"reason">> := <<"{start_failed,n_bad}">>}}, bc_gitops_json:decode(B1)),
    write_file(filename:join([Gitops, "README"]), "another commit\n"),
    C2 = commit(Gitops, "readme"),
    [?assertMatch({error, {out_of_sync, _}}, reconcile_after_backoff()) || _ <- lists:seq(1, 3)],
    [{_, B2}] = received(R, 1000),
    ?assertMatch({ok, #{<<"event">> := <<"failed">>, <<"commit">> := C2}}, bc_gitops_json:decode(B2)),
    %% Fixed: nothing for `failed' targets (the deploy is another event).
    bc_gitops_test_runtime:fail(n_bad, false),
    ok = reconcile_after_backoff(),
    ?assertEqual([], received(R, 300)).

%% An upgrade whose health gate fails: `rolled_back'. Then the health
%% monitor sees the app fail its checks (`degraded') and pass again
%% (`recovered'), once each however many checks.
rollback_degraded_recovered(Config) ->
    Gitops = ?config(gitops, Config),
    {R, Port} = receiver(ok),
    Spec = fun(V) ->
                   write_spec(Gitops, "n_web",
                              ["#{name => n_web, version => <<\"", V, "\">>, source => #{type => hex},\n"
                               "  health => #{type => custom, module => bc_gitops_test_health,"
                               " interval => 50}}.\n"]),
                   commit(Gitops, "n_web " ++ V)
           end,
    start(Config, #{notify => [#{url => url(Port, "/")}], health_grace => 400}),
    bc_gitops_test_health:healthy(n_web, <<"1.0.0">>),
    _ = Spec("1.0.0"),
    ok = bc_gitops:reconcile(),
    ?assertMatch([{_, _}], received(R, 1000)),
    C2 = Spec("2.0.0"),
    ?assertMatch({error, {out_of_sync, #{failed := [{n_web, {rolled_back, _}}]}}}, bc_gitops:reconcile()),
    Events = [decode(B) || {_, B} <- received(R, 1000)],
    ?assertMatch([#{<<"event">> := <<"rolled_back">>, <<"app">> := <<"n_web">>, <<"commit">> := C2,
                    <<"version">> := <<"2.0.0">>, <<"to_version">> := <<"2.0.0">>}],
                 [E || #{<<"event">> := Ev} = E <- Events, Ev =/= <<"degraded">>, Ev =/= <<"recovered">>]),
    %% The monitor checks every 50 ms: 1.0.0 stops being healthy, then is again.
    _ = received(R, 500),
    ok = bc_gitops_test_health:reset(),
    [{_, Degraded}] = received(R, 1500),
    ?assertMatch(#{<<"event">> := <<"degraded">>, <<"app">> := <<"n_web">>,
                   <<"reason">> := <<"{not_healthy_at,<<\"1.0.0\">>}">>}, decode(Degraded)),
    bc_gitops_test_health:healthy(n_web, <<"1.0.0">>),
    [{_, Recovered}] = received(R, 1500),
    ?assertMatch(#{<<"event">> := <<"recovered">>, <<"app">> := <<"n_web">>}, decode(Recovered)).

%% A reconcile that cannot run: `sync_error' once while it repeats, and
%% again after a reconcile that ran.
sync_error_once(Config) ->
    Gitops = ?config(gitops, Config),
    {R, Port} = receiver(ok),
    start(Config, #{notify => [#{url => url(Port, "/"), events => [sync_error]}]}),
    Broken = filename:join(?config(dir, Config), "gitops_moved"),
    ok = file:rename(Gitops, Broken),
    [?assertMatch({error, {git, _}}, bc_gitops:reconcile()) || _ <- lists:seq(1, 3)],
    [{_, B}] = received(R, 1000),
    ?assertMatch(#{<<"event">> := <<"sync_error">>, <<"app">> := null,
                   <<"reason">> := <<"{git,", _/binary>>}, decode(B)),
    ok = file:rename(Broken, Gitops),
    ok = bc_gitops:reconcile(),
    ok = file:rename(Gitops, Broken),
    {error, _} = bc_gitops:reconcile(),
    ?assertMatch([_], received(R, 1000)).

%% An endpoint that answers 500: 5 attempts, 1, 2, 4 and 8 s apart on
%% the test clock, then the notification is dropped with a log line that
%% shows neither the URL's credentials nor its path.
retries_are_bounded(Config) ->
    Gitops = ?config(gitops, Config),
    ok = bc_gitops_test_logs:capture(),
    {R, Port} = receiver(error),
    Url = "http://bob:pw-in-url-9@127.0.0.1:" ++ integer_to_list(Port) ++ "/secret-path-7",
    start(Config, #{notify => [#{url => Url, secret => ?SECRET}], clock => bc_gitops_test_clock}),
    write_spec(Gitops, "n_app", bc_gitops_test_util:minimal_spec("n_app")),
    _ = commit(Gitops, "n_app"),
    ok = bc_gitops:reconcile(),
    ?assertMatch([_], received(R, 1000)),
    lists:foreach(fun(Wait) ->
                          ok = bc_gitops_test_clock:advance(Wait - 1),
                          ?assertEqual([], received(R, 200)),
                          ok = bc_gitops_test_clock:advance(1),
                          ?assertMatch([_], received(R, 1000))
                  end, [1000, 2000, 4000, 8000]),
    ok = bc_gitops_test_clock:advance(60000),
    ?assertEqual([], received(R, 500)),
    Dropped = [L || L <- bc_gitops_test_logs:lines(), binary:match(L, <<"dropped">>) =/= nomatch],
    ct:pal("~p", [Dropped]),
    Label = iolist_to_binary(["bc_gitops: notification deployed to notify target 1 (http://127.0.0.1:",
                              integer_to_list(Port), ") dropped: 5 attempts, the last: {http_status,500}"]),
    ?assertEqual([Label], Dropped),
    ?assertEqual([], [L || L <- bc_gitops_test_logs:lines(), S <- [<<"pw-in-url-9">>, <<"secret-path-7">>, ?SECRET],
                           binary:match(L, S) =/= nomatch]).

%% An endpoint that accepts and never answers: reconciles with changes
%% (each a notification) take as long as without notifications, while
%% the sender waits on it.
dead_endpoint_never_slows_a_reconcile(Config) ->
    Gitops = ?config(gitops, Config),
    {Dead, Port} = receiver(silent),
    Deploy = fun(I) ->
                     App = "n_dead" ++ integer_to_list(I),
                     write_spec(Gitops, App, bc_gitops_test_util:minimal_spec(App)),
                     _ = commit(Gitops, App),
                     {Us, ok} = timer:tc(bc_gitops, reconcile, []),
                     Us div 1000
             end,
    start(Config, #{}),
    Without = [Deploy(I) || I <- lists:seq(1, 5)],
    ok = bc_gitops:stop_reconciler(),
    start(Config, #{notify => [#{url => url(Port, "/hook")}, #{url => url(Port, "/again")}]}),
    With = [Deploy(I) || I <- lists:seq(6, 10)],
    ct:pal("reconciles without notify ~p ms, with a dead endpoint ~p ms", [Without, With]),
    %% The endpoint got the first POST of each target and answers none.
    ?assertMatch([_, _], received(Dead, 1000)),
    ?assert(lists:max(With) < 1000),
    ?assert(lists:sum(With) < 2 * lists:sum(Without) + 500),
    {ok, #{status := synced, app_count := 10}} = bc_gitops:status(),
    stop_receiver(Dead).

%%% Helpers

%% An https target whose certificate a private CA signed: refused (the
%% handshake fails, nothing is posted) until that CA is `ca_file'; then
%% the notification arrives over TLS.
https_target_trusts_ca_file(Config) ->
    Gitops = ?config(gitops, Config),
    {CaFile, ServerOpts} = bc_gitops_test_keys:tls_server(?config(dir, Config)),
    {R, Port} = receiver(ok, {tls, ServerOpts}),
    Url = "https://localhost:" ++ integer_to_list(Port) ++ "/tls",
    start(Config, #{notify => [#{url => Url}], clock => bc_gitops_test_clock}),
    write_spec(Gitops, "n_app", bc_gitops_test_util:minimal_spec("n_app")),
    _ = commit(Gitops, "n_app 1"),
    ok = bc_gitops:reconcile(),
    receive {refused, R, _Why} -> ok after 10000 -> ct:fail(not_refused) end,
    ?assertEqual([], received(R, 300)),

    ok = bc_gitops:stop_reconciler(),
    start(Config, #{notify => [#{url => Url}], clock => bc_gitops_test_clock,
                    ca_file => list_to_binary(CaFile)}),
    write_spec(Gitops, "n_app", "#{name => n_app, version => <<\"1.1.0\">>, source => #{type => hex}}.\n"),
    _ = commit(Gitops, "n_app 1.1"),
    ok = bc_gitops:reconcile(),
    [{Headers, Body}] = received(R, 10000),
    ?assertEqual(<<"upgraded">>, maps:get(<<"x-bc-gitops-event">>, Headers)),
    ?assertMatch(#{<<"app">> := <<"n_app">>, <<"to_version">> := <<"1.1.0">>}, decode(Body)).

start(Config, Extra) ->
    {ok, _} = bc_gitops:start_reconciler(
                maps:merge(#{repo_url => ?config(gitops, Config),
                             local_path => filename:join(?config(dir, Config), "state"),
                             runtime_module => bc_gitops_test_runtime,
                             reconcile_interval => 3600000}, Extra)),
    wait_reconciled(20000).

url(Port, Path) ->
    "http://127.0.0.1:" ++ integer_to_list(Port) ++ Path.

decode(Body) ->
    {ok, Term} = bc_gitops_json:decode(Body),
    Term.

%% A reconcile once the backoff of the last failure is over (the test
%% clock moved past it: its retry timer starts one, this call joins it).
reconcile_after_backoff() ->
    ok = bc_gitops_test_clock:advance(600000),
    bc_gitops:reconcile().
