%%% Recovery with real apps the tests build and deploy from git: an upgrade
%%% that fails its http check is rolled back while the old version keeps
%%% answering on its port; an app that crashes on start, and one that
%%% keeps dying after each restart, are backed off with growing intervals.
-module(bc_gitops_recovery_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include("bc_gitops.hrl").

-export([all/0, init_per_testcase/2, end_per_testcase/2]).
-export([unhealthy_upgrade_keeps_old_version_serving/1, crash_on_start_backs_off/1,
         app_that_keeps_dying_backs_off/1, stopped_by_hand_comes_back/1]).

-import(bc_gitops_test_util, [commit/2, write_file/2, advance_and_wait/1]).
-import(bc_gitops_test_apps, [make_repo/2, commit_spec/5, start/2, attach_events/2,
                              collect_events/0, wait_healthy/2, http_get/1, free_port/0,
                              plain_app/3]).

all() ->
    [unhealthy_upgrade_keeps_old_version_serving, crash_on_start_backs_off,
     app_that_keeps_dying_backs_off, stopped_by_hand_comes_back].

init_per_testcase(_Case, Config) ->
    bc_gitops_test_apps:init_case("ct_recovery", Config).

end_per_testcase(_Case, Config) ->
    bc_gitops_test_apps:end_case(<<"recovery">>, Config).

%% v1 answers 200 on its port; v2 answers 500, so its http check fails:
%% within health_grace it is rolled back (hot, the same listener), v1
%% answers again, the failure is reported, and the next ticks leave v2
%% alone.
unhealthy_upgrade_keeps_old_version_serving(Config) ->
    Port = free_port(),
    Repo = make_repo(Config, "rt_web"),
    web_app(Repo, "1.0.0", "200 OK"),
    _ = commit(Repo, "v1"),
    Health = ["health => #{type => http, port => ", integer_to_list(Port),
              ", path => <<\"/health\">>, interval => 100, timeout => 1000}"],
    Env = ["env => #{port => ", integer_to_list(Port), "}"],
    commit_spec(Config, "rt_web", "1.0.0", Repo, [Health, ", ", Env]),
    start(Config, #{health_grace => 1500, reconcile_interval => 200, backoff_base => 60000}),
    ?assertEqual({200, <<"1.0.0">>}, http_get(Port)),
    ok = bc_gitops:suspend(),
    Listener = whereis(rt_web_srv),
    attach_events(<<"recovery">>, [[bc_gitops, upgrade, stop], [bc_gitops, rollback, stop]]),

    web_app(Repo, "2.0.0", "500 Internal Server Error"),
    _ = commit(Repo, "v2 answers 500"),
    commit_spec(Config, "rt_web", "2.0.0", Repo, [Health, ", ", Env]),
    ?assertMatch({error, {out_of_sync, #{failed := [{rt_web, {rolled_back, _}}]}}},
                 bc_gitops:reconcile()),
    ?assertEqual({200, <<"1.0.0">>}, http_get(Port)),
    ?assertEqual(Listener, whereis(rt_web_srv)),
    ?assertMatch({_, _, "1.0.0"}, lists:keyfind(rt_web, 1, application:which_applications())),
    ?assertMatch({ok, #app_state{version = <<"1.0.0">>}}, bc_gitops:get_app_status(rt_web)),
    %% Its next check (every 100 ms) finds it healthy again.
    ok = wait_healthy(rt_web, 20),
    {ok, #{app_errors := #{rt_web := #{reason := {rolled_back, _}, version := <<"2.0.0">>}}}} =
        bc_gitops:status(),
    [{[bc_gitops, upgrade, stop], #{to_version := <<"2.0.0">>, path := hot}},
     {[bc_gitops, upgrade, stop], #{to_version := <<"1.0.0">>, path := hot}},
     {[bc_gitops, rollback, stop], #{from_version := <<"2.0.0">>, to_version := <<"1.0.0">>}}] =
        [{E, M} || {_, E, M} <- collect_events()],

    %% The timer's reconciles (every 200 ms) do not try 2.0.0 again.
    ok = bc_gitops:resume(),
    timer:sleep(1000),
    ?assertEqual([], collect_events()),
    ?assertEqual({200, <<"1.0.0">>}, http_get(Port)).

%% An app whose start fails: each attempt is reported, and the time
%% between attempts doubles, to the millisecond of the test clock
%% (backoff_base 400 ms; the interval, an hour, never comes): each retry
%% comes from the retry timer when the backoff runs out.
crash_on_start_backs_off(Config) ->
    Repo = make_repo(Config, "rt_nostart"),
    plain_app(Repo, "rt_nostart", "start(_, _) -> {error, refuses_to_start}.\n"),
    _ = commit(Repo, "v1"),
    commit_spec(Config, "rt_nostart", "1.0.0", Repo, "env => #{}"),
    attach_events(<<"recovery">>, [[bc_gitops, deploy, stop]]),
    start(Config, #{clock => bc_gitops_test_clock, reconcile_interval => 3600000,
                    backoff_base => 400, backoff_max => 60000}),
    Failed = fun() ->
                     [M || {_, _, #{app := rt_nostart, result := {error, _}} = M}
                               <- collect_events()]
             end,
    ?assertMatch([_], Failed()),
    %% Attempt k+1 comes exactly 400 * 2^(k-1) ms after attempt k.
    lists:foreach(
      fun({Attempt, Delay}) ->
              {ok, #{app_errors := #{rt_nostart := #{attempts := Attempt,
                                                     retry_in_ms := Delay,
                                                     reason := {start_failed, _}}}}} =
                  bc_gitops:status(),
              ok = bc_gitops_test_clock:advance(Delay - 1),
              timer:sleep(100),
              ?assertEqual([], Failed()),
              ok = advance_and_wait(1),
              ?assertMatch([_], Failed())
      end, [{1, 400}, {2, 800}, {3, 1600}]),
    {ok, #{app_errors := #{rt_nostart := #{attempts := 4, retry_in_ms := 3200}}}} =
        bc_gitops:status().

%% An app that starts, then dies (its worker crashes twice, its supervisor
%% gives up): each reconcile that finds it down restarts it, but the
%% restarts back off (400, 800, 1600 ms of the test clock) instead of
%% following the 100 ms reconciles.
app_that_keeps_dying_backs_off(Config) ->
    Repo = make_repo(Config, "rt_die"),
    plain_app(Repo, "rt_die", "start(_, _) -> rt_die_sup:start_link().\n"),
    _ = commit(Repo, "v1"),
    commit_spec(Config, "rt_die", "1.0.0", Repo, "env => #{}"),
    attach_events(<<"recovery">>, [[bc_gitops, deploy, stop]]),
    start(Config, #{clock => bc_gitops_test_clock, reconcile_interval => 100,
                    backoff_base => 400, backoff_max => 60000}),
    Repaired = fun() ->
                       [T || {T, _, #{app := rt_die, reason := stopped, result := ok}}
                                 <- collect_events()]
               end,
    [] = Repaired(),
    %% Each round: it dies; the reconciles every 100 ms find it down but
    %% hold it until its repair backoff is over; then it is repaired.
    Times = [begin
                 ok = wait_down(rt_die, 50),
                 repair_after(Repaired, 0)
             end || _ <- lists:seq(1, 4)],
    ct:pal("repairs at clock ms ~p", [Times]),
    %% The first repair comes with the next reconcile; then the gaps double.
    [_, G1, G2, G3] = gaps([hd(Times) - 100 | Times]),
    ?assertEqual([400, 800, 1600], [G1, G2, G3]),
    {ok, #{repairs := #{rt_die := #{count := 4, reason := stopped}}}} = bc_gitops:status().

%% An app stopped by hand is drift: the next reconcile starts it again and
%% reports it. With self_heal => false it stays stopped, drift reported.
stopped_by_hand_comes_back(Config) ->
    Repo = make_repo(Config, "rt_still"),
    plain_app(Repo, "rt_still", "-export([init/1]).\n"
                                "start(_, _) -> supervisor:start_link(rt_still_app, []).\n"
                                "init([]) -> {ok, {#{}, []}}.\n"),
    _ = commit(Repo, "v1"),
    commit_spec(Config, "rt_still", "1.0.0", Repo, "env => #{}"),
    attach_events(<<"recovery">>, [[bc_gitops, drift, detected]]),
    start(Config, #{reconcile_interval => 3600000}),
    {ok, #app_state{pid = Top}} = bc_gitops:get_app_status(rt_still),
    %% A reconcile with nothing to do first: the stop is then seen through
    %% the runtime's state token, by a reconcile not given the state.
    ok = bc_gitops:reconcile(),
    ok = application:stop(rt_still),
    ok = bc_gitops:reconcile(),
    ?assertMatch({_, _, "1.0.0"}, lists:keyfind(rt_still, 1, application:which_applications())),
    {ok, #app_state{status = running, pid = Again}} = bc_gitops:get_app_status(rt_still),
    ?assert(is_pid(Again) andalso Again =/= Top),
    ?assertMatch([{_, _, #{app := rt_still, status := stopped, healed := true}}],
                 collect_events()),

    ok = bc_gitops:stop_reconciler(),
    start(Config, #{reconcile_interval => 3600000, self_heal => false}),
    ok = application:stop(rt_still),
    ?assertMatch({error, {out_of_sync, #{waiting := [{rt_still, {drift, stopped}}]}}},
                 bc_gitops:reconcile()),
    ?assertEqual(false, lists:keyfind(rt_still, 1, application:which_applications())),
    ?assertMatch({ok, #app_state{status = stopped}}, bc_gitops:get_app_status(rt_still)),
    ?assertMatch([{_, _, #{app := rt_still, status := stopped, healed := false}} | _],
                 collect_events()).

%%% Helpers

%% Moves the test clock on 100 ms at a time (a reconcile each) until a
%% repair happens; the clock time of that repair.
repair_after(Repaired, Tries) when Tries > 100 ->
    ct:fail({no_repair, Repaired()});
repair_after(Repaired, Tries) ->
    ok = advance_and_wait(100),
    case Repaired() of
        [_] -> bc_gitops_test_clock:now_ms();
        [] -> repair_after(Repaired, Tries + 1)
    end.

wait_down(App, 0) ->
    ct:fail({still_running, App});
wait_down(App, N) ->
    case lists:keymember(App, 1, application:which_applications()) of
        true -> timer:sleep(50), wait_down(App, N - 1);
        false -> ok
    end.

gaps([A, B | Rest]) -> [B - A | gaps([B | Rest])];
gaps(_) -> [].

web_app(Repo, Vsn, Status) ->
    bc_gitops_test_apps:web_app(Repo, "rt_web", Vsn, Status).
