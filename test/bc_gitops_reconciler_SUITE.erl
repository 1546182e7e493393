%%% The bc_gitops application end to end, driven by commits to a real git
%%% repository, with a runtime written for the tests
%%% (bc_gitops_test_runtime) so that the reconciler itself is what is
%%% under test.
-module(bc_gitops_reconciler_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include("bc_gitops.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([commits_drive_the_node/1, broken_spec_next_to_good_ones/1, cycle_is_reported/1,
         idle_without_repo_url/1, bad_config_names_the_option/1,
         wrong_repo_url_then_right/1, status_answers_during_slow_deploy/1,
         telemetry_events/1, state_survives_restart/1, corrupt_state_file_is_ignored/1,
         suspend_and_resume/1, plan_is_a_dry_run/1, triggers_are_coalesced/1,
         failed_app_backs_off/1, manual_actions/1, stopped_app_is_healed/1,
         steady_reconcile_still_sees_drift/1, steady_reconcile_keeps_the_parse_on_error/1,
         without_a_token_the_state_is_read_each_time/1, restarted_health_monitor_is_told_again/1,
         unhealthy_upgrade_is_rolled_back/1, unhealthy_first_deploy_fails/1,
         busy_app_is_left_alone/1, fixed_spec_is_applied_at_once/1,
         repair_backoff_follows_the_clock/1, health_waits_overlap/1,
         new_commit_ends_health_wait/1, gate_keeps_its_deadline/1]).
-export([check/1]).

-import(bc_gitops_test_util, [commit/2, wait_reconciled/1, advance_and_wait/1]).

all() ->
    [commits_drive_the_node, broken_spec_next_to_good_ones, cycle_is_reported,
     idle_without_repo_url, bad_config_names_the_option, wrong_repo_url_then_right,
     status_answers_during_slow_deploy, telemetry_events, state_survives_restart,
     corrupt_state_file_is_ignored, suspend_and_resume, plan_is_a_dry_run,
     triggers_are_coalesced, failed_app_backs_off, manual_actions, stopped_app_is_healed,
     steady_reconcile_still_sees_drift, steady_reconcile_keeps_the_parse_on_error,
     without_a_token_the_state_is_read_each_time, restarted_health_monitor_is_told_again,
     unhealthy_upgrade_is_rolled_back, unhealthy_first_deploy_fails, busy_app_is_left_alone,
     fixed_spec_is_applied_at_once, repair_backoff_follows_the_clock, health_waits_overlap,
     new_commit_ends_health_wait, gate_keeps_its_deadline].

init_per_suite(Config) ->
    ok = bc_gitops_test_runtime:start(),
    ok = bc_gitops_test_clock:start(),
    Config.

end_per_suite(_Config) ->
    ok.

init_per_testcase(_Case, Config) ->
    Dir = bc_gitops_test_util:tmp_dir("ct_reconciler"),
    Origin = filename:join(Dir, "origin"),
    ok = bc_gitops_test_util:init_repo(Origin),
    ok = bc_gitops_test_runtime:forget_apps(),
    bc_gitops_test_runtime:set_token(true),
    ok = bc_gitops_test_clock:start(),
    ok = bc_gitops_test_health:reset(),
    ok = bc_gitops_test_runtime:clear_calls(),
    bc_gitops_test_runtime:set_delay(0),
    {ok, _} = application:ensure_all_started(bc_gitops),
    [{dir, Dir}, {origin, Origin}, {local_path, filename:join(Dir, "state")} | Config].

end_per_testcase(_Case, Config) ->
    ok = application:stop(bc_gitops),
    [application:unset_env(bc_gitops, K) || {K, _} <- application:get_all_env(bc_gitops)],
    persistent_term:put({bc_gitops_test_runtime, fail}, #{}),
    bc_gitops_test_util:rm_rf(?config(dir, Config)).

%%% Cases

commits_drive_the_node(Config) ->
    Origin = ?config(origin, Config),
    spec(Origin, "db", "1.0.0", [], "#{pool => 5}"),
    spec(Origin, "web", "1.0.0", ["db"], "#{port => 8080}"),
    C1 = commit(Origin, "v1"),
    start(Config),
    ok = bc_gitops:reconcile(),
    ?assertEqual([{deploy, db, <<"1.0.0">>}, {deploy, web, <<"1.0.0">>}], calls()),
    {ok, S1} = bc_gitops:status(),
    ?assertMatch(#{status := synced, last_commit := C1, app_count := 2, healthy_count := 2,
                   spec_errors := [], blocked := []}, S1),
    ?assertMatch({ok, #app_state{name = web, version = <<"1.0.0">>}},
                 bc_gitops:get_app_status(web)),
    ?assertMatch({ok, #{db := #app_spec{}, web := #app_spec{}}}, bc_gitops:get_desired_state()),

    spec(Origin, "db", "1.0.0", [], "#{pool => 10}"),
    spec(Origin, "web", "1.1.0", ["db"], "#{port => 8080}"),
    _ = commit(Origin, "v2"),
    ok = bc_gitops:reconcile(),
    ?assertEqual([{reconfigure, db, #{pool => 10}}, {upgrade, web, <<"1.0.0">>, <<"1.1.0">>}],
                 calls()),

    ok = file:del_dir_r(filename:join([Origin, "apps", "web"])),
    C3 = commit(Origin, "drop web"),
    ok = bc_gitops:reconcile(),
    ?assertEqual([{remove, web}], calls()),
    ?assertMatch({ok, #{status := synced, last_commit := C3, app_count := 1}},
                 bc_gitops:status()),
    %% Nothing changed: nothing to do, and nothing is redeployed.
    ok = bc_gitops:reconcile(),
    ?assertEqual([], calls()).

broken_spec_next_to_good_ones(Config) ->
    Origin = ?config(origin, Config),
    spec(Origin, "good", "1.0.0", [], "#{}"),
    write(Origin, "apps/bad/app.config",
          "#{name => bad,\n  version => <<\"1\">>,\n  source => #{type => svn}}.\n"),
    _ = commit(Origin, "one good, one bad"),
    start(Config),
    ?assertMatch({error, {out_of_sync, #{spec_errors := [#{app := <<"bad">>}]}}},
                 bc_gitops:reconcile()),
    ?assertEqual([{deploy, good, <<"1.0.0">>}], calls()),
    {ok, #{status := out_of_sync, spec_errors := [E]}} = bc_gitops:status(),
    ?assertMatch(#{app := <<"bad">>, file := <<"apps/bad/app.config">>, line := 3,
                   field := <<"source.type">>}, E).

cycle_is_reported(Config) ->
    Origin = ?config(origin, Config),
    spec(Origin, "a", "1", ["b"], "#{}"),
    spec(Origin, "b", "1", ["a"], "#{}"),
    spec(Origin, "c", "1", [], "#{}"),
    _ = commit(Origin, "cycle"),
    start(Config),
    ?assertMatch({error, {out_of_sync, #{blocked := [{a, _}, {b, _}]}}}, bc_gitops:reconcile()),
    ?assertEqual([{deploy, c, <<"1">>}], calls()),
    ?assertMatch({ok, #{status := out_of_sync,
                        blocked := [{a, {cycle, [a, b]}}, {b, {cycle, [a, b]}}]}},
                 bc_gitops:status()).

idle_without_repo_url(_Config) ->
    ?assertMatch({ok, #{status := idle, repo := undefined}}, bc_gitops:status()),
    ?assertEqual({error, not_configured}, bc_gitops:reconcile()),
    ?assertEqual({error, not_configured}, bc_gitops:plan()).

bad_config_names_the_option(Config) ->
    Base = #{repo_url => "file:///x", local_path => ?config(local_path, Config),
             runtime_module => bc_gitops_test_runtime},
    ?assertMatch({error, {bad_config, reconcile_interval, _}},
                 bc_gitops:start_reconciler(Base#{reconcile_interval => -1})),
    ?assertMatch({error, {bad_config, runtime_module, _}},
                 bc_gitops:start_reconciler(Base#{runtime_module => no_such_module})),
    ?assertMatch({error, {bad_config, branch, _}},
                 bc_gitops:start_reconciler(Base#{branch => <<>>})),
    %% Nothing half-configured was left running: still the idle one.
    ?assertMatch({ok, #{status := idle}}, bc_gitops:status()),
    %% A relative local_path is made absolute once, against the directory
    %% the node runs in now.
    {ok, Cwd} = file:get_cwd(),
    {ok, #{local_path := Abs}} = bc_gitops_config:from_map(Base#{local_path => "rel/state"}),
    ?assertEqual(filename:join(Cwd, "rel/state"), Abs),
    %% The same check at boot: the application refuses to start.
    ok = application:stop(bc_gitops),
    ok = application:set_env(bc_gitops, repo_url, "file:///x"),
    ok = application:set_env(bc_gitops, git_timeout, zero),
    ?assertMatch({error, {{bad_config, git_timeout, _}, _}}, application:start(bc_gitops)),
    ok = application:unset_env(bc_gitops, git_timeout),
    ok = application:unset_env(bc_gitops, repo_url),
    {ok, _} = application:ensure_all_started(bc_gitops).

wrong_repo_url_then_right(Config) ->
    Later = filename:join(?config(dir, Config), "later"),
    start(Config, #{repo_url => "file://" ++ Later}),
    ?assertMatch({error, {git, {unreachable, _}}}, bc_gitops:reconcile()),
    ?assertMatch({ok, #{status := error, last_error := {git, {unreachable, _}}}},
                 bc_gitops:status()),
    ok = bc_gitops_test_util:init_repo(Later),
    spec(Later, "app", "1", [], "#{}"),
    _ = commit(Later, "now it exists"),
    ok = bc_gitops:reconcile(),
    ?assertMatch({ok, #{status := synced, last_error := undefined}}, bc_gitops:status()).

status_answers_during_slow_deploy(Config) ->
    Origin = ?config(origin, Config),
    spec(Origin, "slow", "1", [], "#{}"),
    _ = commit(Origin, "slow"),
    bc_gitops_test_runtime:set_delay(10000),
    ok = start_nowait(Config, #{}),
    Self = self(),
    spawn_link(fun() -> Self ! {reconciled, bc_gitops:reconcile()} end),
    ok = wait_for(fun() -> logged() =:= [{deploy, slow, <<"1">>}] end, 5000),
    Latencies = [begin
                     timer:sleep(50),
                     T0 = erlang:monotonic_time(microsecond),
                     {ok, #{status := reconciling}} = bc_gitops:status(),
                     erlang:monotonic_time(microsecond) - T0
                 end || _ <- lists:seq(1, 20)],
    ct:pal("status latencies during a 10 s deploy (us): ~p", [Latencies]),
    ?assert(lists:max(Latencies) < 100000),
    receive {reconciled, R} -> ?assertEqual(ok, R) after 20000 -> ct:fail(no_result) end.

telemetry_events(Config) ->
    Origin = ?config(origin, Config),
    start(Config, #{reconcile_interval => 3600000}),
    spec(Origin, "db", "1", [], "#{}"),
    C1 = commit(Origin, "one"),
    Self = self(),
    Events = [[bc_gitops, reconcile, start], [bc_gitops, reconcile, stop],
              [bc_gitops, reconcile, error], [bc_gitops, git, pull], [bc_gitops, parse, stop],
              [bc_gitops, deploy, start], [bc_gitops, deploy, stop],
              [bc_gitops, upgrade, start], [bc_gitops, upgrade, stop],
              [bc_gitops, remove, start], [bc_gitops, remove, stop]],
    ok = telemetry:attach_many(<<"ct">>, Events,
                               fun(E, M, Meta, _) -> Self ! {event, E, M, Meta} end, none),
    try
        ok = bc_gitops:reconcile(),
        Got = drain(),
        ?assertMatch([{[bc_gitops, reconcile, start], _, #{repo := _}},
                      {[bc_gitops, git, pull], #{duration := _},
                       #{commit := C1, changed := true, branch := <<"main">>}},
                      {[bc_gitops, parse, stop], #{duration := _, spec_count := 1,
                                                   error_count := 0}, _},
                      {[bc_gitops, deploy, start], _, #{app := db}},
                      {[bc_gitops, deploy, stop], #{duration := _}, #{app := db, result := ok}},
                      {[bc_gitops, reconcile, stop], #{duration := _}, #{status := synced}}
                      | _],
                     Got),
        [{_, #{duration := D}, _}] = [X || {[_, reconcile, stop], _, _} = X <- Got],
        ?assert(is_integer(D) andalso D > 0),
        %% Manual actions emit the same events.
        ok = bc_gitops:remove(db),
        ?assertMatch([{[bc_gitops, remove, start], _, #{app := db}},
                      {[bc_gitops, remove, stop], _, #{app := db, result := ok}}],
                     drain()),
        %% A failed reconcile emits the error event.
        ok = file:del_dir_r(Origin),
        {error, _} = bc_gitops:reconcile(),
        ?assertMatch([{[bc_gitops, reconcile, start], _, _},
                      {[bc_gitops, reconcile, error], #{duration := _},
                       #{error := {git, {unreachable, _}}}}],
                     drain())
    after
        telemetry:detach(<<"ct">>)
    end.

state_survives_restart(Config) ->
    Origin = ?config(origin, Config),
    spec(Origin, "db", "1", [], "#{}"),
    C1 = commit(Origin, "one"),
    start(Config),
    ok = bc_gitops:reconcile(),
    ?assertEqual([{deploy, db, <<"1">>}], calls()),
    ok = application:stop(bc_gitops),
    {ok, _} = application:ensure_all_started(bc_gitops),
    %% A fresh reconciler knows the last applied commit before it reconciles...
    start(Config, #{reconcile_interval => 3600000}),
    ?assertMatch({ok, #{last_commit := C1}}, bc_gitops:status()),
    %% ...and does not redeploy what already runs.
    ok = bc_gitops:reconcile(),
    ?assertEqual([], calls()).

corrupt_state_file_is_ignored(Config) ->
    Origin = ?config(origin, Config),
    spec(Origin, "db", "1", [], "#{}"),
    C1 = commit(Origin, "one"),
    start(Config),
    ok = bc_gitops:reconcile(),
    StateFile = filename:join(?config(local_path, Config), "state.bin"),
    {ok, Bin} = file:read_file(StateFile),
    %% Torn (the first half only), then garbage: detected and ignored; the
    %% reconciler starts, reconciles, and writes a good file again.
    [begin
         ok = bc_gitops:stop_reconciler(),
         ok = file:write_file(StateFile, Bad),
         ?assertEqual(#{last_commit => undefined, apps => #{}}, bc_gitops_store:load(StateFile)),
         start(Config, #{reconcile_interval => 3600000}),
         ok = bc_gitops:reconcile(),
         ?assertMatch(#{last_commit := C1, apps := #{db := #{version := <<"1">>}}},
                      bc_gitops_store:load(StateFile))
     end || Bad <- [binary:part(Bin, 0, byte_size(Bin) div 2), <<"garbage">>]].

suspend_and_resume(Config) ->
    Origin = ?config(origin, Config),
    spec(Origin, "one", "1", [], "#{}"),
    _ = commit(Origin, "one"),
    start(Config, #{reconcile_interval => 100}),
    %% The interval timer reconciles by itself, from the end of the last one.
    spec(Origin, "zero", "1", [], "#{}"),
    _ = commit(Origin, "zero"),
    ok = wait_for(fun() -> lists:member({deploy, zero, <<"1">>}, logged()) end, 5000),
    ?assertEqual([{deploy, one, <<"1">>}, {deploy, zero, <<"1">>}], calls()),
    ok = bc_gitops:suspend(),
    ?assertMatch({ok, #{suspended := true}}, bc_gitops:status()),
    spec(Origin, "two", "1", [], "#{}"),
    _ = commit(Origin, "two"),
    timer:sleep(600),
    ?assertEqual([], calls()),
    %% A manual reconcile still works while suspended.
    ok = bc_gitops:reconcile(),
    ?assertEqual([{deploy, two, <<"1">>}], calls()),
    spec(Origin, "three", "1", [], "#{}"),
    _ = commit(Origin, "three"),
    timer:sleep(300),
    ?assertEqual([], calls()),
    ok = bc_gitops:resume(),
    ?assertMatch({ok, #{suspended := false}}, bc_gitops:status()),
    ok = wait_for(fun() -> lists:member({deploy, three, <<"1">>}, logged()) end, 5000).

plan_is_a_dry_run(Config) ->
    Origin = ?config(origin, Config),
    spec(Origin, "db", "1", [], "#{}"),
    _ = commit(Origin, "one"),
    start(Config, #{reconcile_interval => 3600000}),
    ok = bc_gitops:reconcile(),
    ok = bc_gitops_test_runtime:clear_calls(),
    spec(Origin, "db", "2", [], "#{}"),
    spec(Origin, "web", "1", ["db"], "#{}"),
    _ = commit(Origin, "two"),
    {ok, #{actions := Actions, blocked := []}} = bc_gitops:plan(),
    ?assertMatch([{upgrade, #app_spec{name = db, version = <<"2">>}, <<"1">>},
                  {deploy, #app_spec{name = web}}], Actions),
    ?assertEqual([], calls()),
    ?assertMatch({ok, #app_state{version = <<"1">>}}, bc_gitops:get_app_status(db)).

triggers_are_coalesced(Config) ->
    Origin = ?config(origin, Config),
    spec(Origin, "db", "1", [], "#{}"),
    _ = commit(Origin, "one"),
    Self = self(),
    ok = telemetry:attach(<<"count">>, [bc_gitops, reconcile, start],
                          fun(_, _, _, _) -> Self ! reconcile_started end, none),
    try
        bc_gitops_test_runtime:set_delay(500),
        ok = start_nowait(Config, #{}),
        ok = wait_for(fun() -> logged() =/= [] end, 5000),
        %% The first reconcile is running (it started with the reconciler).
        Callers = [spawn_link(fun() -> Self ! {done, bc_gitops:reconcile()} end)
                   || _ <- lists:seq(1, 5)],
        Results = [receive {done, R} -> R after 20000 -> timeout end || _ <- Callers],
        ?assertEqual(lists:duplicate(5, ok), Results),
        timer:sleep(200),
        %% One running, then one follow-up for all five triggers.
        ?assertEqual(2, count(reconcile_started))
    after
        telemetry:detach(<<"count">>)
    end.

%% The backoff, to the millisecond on the test clock: a failed app is
%% retried when its backoff runs out (not at the next interval, an hour
%% away), the delay doubles, and the app that depends on it follows as
%% soon as it starts.
failed_app_backs_off(Config) ->
    Origin = ?config(origin, Config),
    spec(Origin, "flaky", "1", [], "#{}"),
    spec(Origin, "needs_flaky", "1", ["flaky"], "#{}"),
    spec(Origin, "fine", "1", [], "#{}"),
    _ = commit(Origin, "one"),
    bc_gitops_test_runtime:fail(flaky, true),
    %% The first reconcile (at start) fails flaky and holds its dependent.
    start(Config, #{clock => bc_gitops_test_clock, backoff_base => 1000, backoff_max => 60000}),
    ?assertEqual([{deploy, fine, <<"1">>}, {deploy, flaky, <<"1">>}], calls()),
    {ok, #{status := out_of_sync, app_errors := #{flaky := #{attempts := 1, retry_in_ms := 1000}},
           waiting := Waiting1}} = bc_gitops:status(),
    ?assertEqual([{needs_flaky, {dependency_not_ready, flaky}}], Waiting1),
    ?assertEqual([{1000, retry}, {3600000, tick}], pending_timers()),
    %% Within the backoff: not retried, however often asked.
    ?assertMatch({error, {out_of_sync, #{waiting := [{flaky, {backoff, 1, 1000}},
                                                     {needs_flaky, _}]}}},
                 bc_gitops:reconcile()),
    ?assertEqual([], calls()),
    ok = bc_gitops_test_clock:advance(999),
    ?assertEqual([], calls()),
    %% When it runs out, the retry timer retries it; the next delay doubles.
    ok = advance_and_wait(1),
    ?assertEqual([{deploy, flaky, <<"1">>}], calls()),
    {ok, #{app_errors := #{flaky := #{attempts := 2, retry_in_ms := 2000}}}} = bc_gitops:status(),
    ?assertEqual([{2000, retry}, {3600000, tick}], pending_timers()),
    %% It starts at the next retry, and its dependent follows in the same
    %% reconcile.
    bc_gitops_test_runtime:fail(flaky, false),
    ok = advance_and_wait(2000),
    ?assertEqual([{deploy, flaky, <<"1">>}, {deploy, needs_flaky, <<"1">>}], calls()),
    ?assertMatch({ok, #{status := synced, app_errors := #{}, waiting := []}}, bc_gitops:status()),
    ?assertEqual([{3600000, tick}], pending_timers()).

%% A backoff belongs to the spec that failed: a commit that changes the
%% spec (not its version: here the release's sha256) is acted on at once,
%% while a commit that leaves the spec alone does not end the backoff.
fixed_spec_is_applied_at_once(Config) ->
    Origin = ?config(origin, Config),
    Release = fun(Sha) ->
                      write(Origin, "apps/rel/app.config",
                            ["#{name => rel, version => <<\"1.0.0\">>,\n"
                             "  source => #{type => release, url => <<\"https://x/rel.tar.gz\">>,\n"
                             "              sha256 => <<\"", Sha, "\">>}}.\n"])
              end,
    Release(lists:duplicate(64, $a)),
    spec(Origin, "web", "1", ["rel"], "#{}"),
    _ = commit(Origin, "wrong sha256"),
    bc_gitops_test_runtime:fail(rel, true),
    start(Config, #{clock => bc_gitops_test_clock, backoff_base => 8000}),
    ?assertEqual([{deploy, rel, <<"1.0.0">>}], calls()),
    %% Another app's commit: rel's spec is the same, it stays backed off.
    spec(Origin, "other", "1", [], "#{}"),
    _ = commit(Origin, "unrelated"),
    ?assertMatch({error, {out_of_sync, #{waiting := [{rel, {backoff, 1, 8000}},
                                                     {web, {dependency_not_ready, rel}}]}}},
                 bc_gitops:reconcile()),
    ?assertEqual([{deploy, other, <<"1">>}], calls()),
    %% The fix: the same version, another sha256. No time has passed.
    bc_gitops_test_runtime:fail(rel, false),
    Release(lists:duplicate(64, $b)),
    _ = commit(Origin, "right sha256"),
    ok = bc_gitops:reconcile(),
    ?assertEqual([{deploy, rel, <<"1.0.0">>}, {deploy, web, <<"1">>}], calls()),
    ?assertMatch({ok, #{status := synced, app_errors := #{}}}, bc_gitops:status()).

%% Drift repairs of an app that keeps dying back off, and the retry
%% comes when the backoff runs out, with its dependent; a new spec ends
%% the repair backoff at once.
repair_backoff_follows_the_clock(Config) ->
    Origin = ?config(origin, Config),
    spec(Origin, "db", "1", [], "#{}"),
    spec(Origin, "web", "1", ["db"], "#{}"),
    _ = commit(Origin, "one"),
    start(Config, #{clock => bc_gitops_test_clock, backoff_base => 5000}),
    ?assertEqual([{deploy, db, <<"1">>}, {deploy, web, <<"1">>}], calls()),
    %% Dies; repaired at once (the first repair does not wait).
    ok = bc_gitops_test_runtime:stop_app(db),
    ok = bc_gitops:reconcile(),
    ?assertEqual([{deploy, db, <<"1">>}], calls()),
    %% Dies again, and so does web: both wait, db for its repair backoff
    %% (5 s from the repair), web behind db.
    ok = bc_gitops_test_runtime:stop_app(db),
    ok = bc_gitops_test_runtime:stop_app(web),
    ?assertMatch({error, {out_of_sync, #{waiting := [{db, {backoff, 1, 5000}},
                                                     {web, {dependency_not_ready, db}}]}}},
                 bc_gitops:reconcile()),
    ?assertEqual([], calls()),
    ?assertEqual([{5000, retry}, {3600000, tick}], pending_timers()),
    ok = advance_and_wait(5000),
    ?assertEqual([{deploy, db, <<"1">>}, {deploy, web, <<"1">>}], calls()),
    {ok, #{repairs := #{db := #{count := 2, retry_in_ms := 10000}}}} = bc_gitops:status(),
    %% Down again within the doubled backoff, but a commit changes its
    %% env: acted on at once.
    ok = bc_gitops_test_runtime:stop_app(db),
    spec(Origin, "db", "1", [], "#{pool => 2}"),
    _ = commit(Origin, "db pool"),
    ok = bc_gitops:reconcile(),
    ?assertMatch([{deploy, db, <<"1">>}], calls()),
    ?assertMatch({ok, #app_state{status = running, env = #{pool := 2}}},
                 bc_gitops:get_app_status(db)).

manual_actions(Config) ->
    Origin = ?config(origin, Config),
    spec(Origin, "db", "1", [], "#{}"),
    _ = commit(Origin, "one"),
    start(Config, #{reconcile_interval => 3600000}),
    ok = bc_gitops:reconcile(),
    ok = bc_gitops:upgrade(db, <<"9">>),
    ?assertMatch({ok, #app_state{version = <<"9">>}}, bc_gitops:get_app_status(db)),
    ?assertEqual({error, not_found}, bc_gitops:upgrade(nope, <<"1">>)),
    %% Git wins at the next reconcile.
    ok = bc_gitops:reconcile(),
    ?assertMatch({ok, #app_state{version = <<"1">>}}, bc_gitops:get_app_status(db)),
    Spec = #app_spec{name = extra, version = <<"1">>, source = #source_spec{type = hex}},
    ok = bc_gitops:deploy(Spec),
    ?assertMatch({ok, #app_state{}}, bc_gitops:get_app_status(extra)),
    ok = bc_gitops:remove(extra),
    ?assertEqual({error, not_found}, bc_gitops:get_app_status(extra)).

%% An app stopped by hand is drift: the next reconcile restarts it. With
%% self_heal => false it stays stopped, and the drift is reported.
stopped_app_is_healed(Config) ->
    Origin = ?config(origin, Config),
    spec(Origin, "db", "1", [], "#{}"),
    _ = commit(Origin, "one"),
    Self = self(),
    ok = telemetry:attach(<<"drift">>, [bc_gitops, drift, detected],
                          fun(_, _, Meta, _) -> Self ! {drift, Meta} end, none),
    try
        start(Config, #{}),
        ?assertEqual([{deploy, db, <<"1">>}], calls()),
        ok = bc_gitops_test_runtime:stop_app(db),
        ok = bc_gitops:reconcile(),
        ?assertEqual([{deploy, db, <<"1">>}], calls()),
        ?assertMatch({ok, #app_state{status = running}}, bc_gitops:get_app_status(db)),
        receive {drift, #{app := db, status := stopped, healed := true}} -> ok
        after 1000 -> ct:fail(no_drift_event)
        end,

        start(Config, #{self_heal => false}),
        ok = bc_gitops_test_runtime:stop_app(db),
        ?assertMatch({error, {out_of_sync, #{waiting := [{db, {drift, stopped}}]}}},
                     bc_gitops:reconcile()),
        ?assertEqual([], calls()),
        ?assertMatch({ok, #app_state{status = stopped}}, bc_gitops:get_app_status(db)),
        ?assertMatch({ok, #{status := out_of_sync, waiting := [{db, {drift, stopped}}]}},
                     bc_gitops:status())
    after
        telemetry:detach(<<"drift">>)
    end.

%% After a reconcile that changed nothing, the next ones read neither the
%% parse nor the runtime's state while the commit and the runtime's state
%% token stay the same. What moves is still seen by the next reconcile: a
%% file of the checkout edited, added or removed right after such a
%% reconcile (the checkout is made exact again), an app stopped, a new
%% commit.
steady_reconcile_still_sees_drift(Config) ->
    Origin = ?config(origin, Config),
    spec(Origin, "db", "1", [], "#{}"),
    spec(Origin, "web", "1", ["db"], "#{}"),
    _ = commit(Origin, "one"),
    start(Config, #{clock => bc_gitops_test_clock}),
    ?assertEqual([{deploy, db, <<"1">>}, {deploy, web, <<"1">>}], calls()),
    %% Applies nothing: the reconciles after it are steady.
    ok = bc_gitops:reconcile(),
    Reads = bc_gitops_test_runtime:state_reads(),
    [ok = bc_gitops:reconcile() || _ <- lists:seq(1, 3)],
    ?assertEqual(Reads, bc_gitops_test_runtime:state_reads()),

    Checkout = filename:join(?config(local_path, Config), "repo"),
    Db = filename:join([Checkout, "apps", "db", "app.config"]),
    Web = filename:join([Checkout, "apps", "web", "app.config"]),
    {ok, DbSpec} = file:read_file(Db),
    {ok, WebSpec} = file:read_file(Web),
    Stray = filename:join([Checkout, "apps", "stray", "app.config"]),
    Edits = [{edited, fun() -> ok = file:write_file(Db, binary:replace(DbSpec, <<"1">>, <<"7">>))
                       end},
             {added, fun() -> write(Checkout, "apps/stray/app.config", "#{name => stray}.\n") end},
             {removed, fun() -> ok = file:delete(Web) end}],
    [begin
         ok = Edit(),
         ?assertEqual({What, ok}, {What, bc_gitops:reconcile()}),
         ?assertEqual({What, {ok, DbSpec}, {ok, WebSpec}, false},
                      {What, file:read_file(Db), file:read_file(Web), filelib:is_file(Stray)}),
         ?assertEqual({What, []}, {What, calls()})
     end || {What, Edit} <- Edits],
    ?assertEqual(Reads, bc_gitops_test_runtime:state_reads()),

    %% A change of the runtime's state that needs nothing: read once.
    ok = bc_gitops_test_runtime:set_status(db, running),
    ok = bc_gitops:reconcile(),
    ok = bc_gitops:reconcile(),
    ?assertEqual(Reads + 1, bc_gitops_test_runtime:state_reads()),

    %% An app stopped right after a steady reconcile.
    ok = bc_gitops_test_runtime:stop_app(db),
    ok = bc_gitops:reconcile(),
    ?assertEqual([{deploy, db, <<"1">>}], calls()),
    ?assertMatch({ok, #app_state{status = running}}, bc_gitops:get_app_status(db)),

    %% A new commit (the repair is forgotten first: a steady run needs none).
    ok = bc_gitops_test_clock:advance(600000),
    ok = bc_gitops:reconcile(),
    ok = bc_gitops:reconcile(),
    Reads2 = bc_gitops_test_runtime:state_reads(),
    ok = bc_gitops:reconcile(),
    ?assertEqual(Reads2, bc_gitops_test_runtime:state_reads()),
    spec(Origin, "web", "2", ["db"], "#{}"),
    _ = commit(Origin, "two"),
    ok = bc_gitops:reconcile(),
    ?assertEqual([{upgrade, web, <<"1">>, <<"2">>}], calls()).

%% A steady reconcile whose pull fails keeps the parse it was not given.
steady_reconcile_keeps_the_parse_on_error(Config) ->
    Origin = ?config(origin, Config),
    spec(Origin, "db", "1", [], "#{}"),
    _ = commit(Origin, "one"),
    start(Config),
    ok = bc_gitops:reconcile(),
    Away = Origin ++ ".away",
    ok = file:rename(Origin, Away),
    ?assertMatch({error, {git, _}}, bc_gitops:reconcile()),
    ?assertMatch({ok, #{status := error, app_count := 1}}, bc_gitops:status()),
    ?assertMatch({ok, #{db := #app_spec{}}}, bc_gitops:get_desired_state()),
    ok = file:rename(Away, Origin),
    ok = bc_gitops:reconcile(),
    ?assertMatch({ok, #{status := synced, app_count := 1}}, bc_gitops:status()).

%% A runtime without a state token has its state read at every reconcile.
without_a_token_the_state_is_read_each_time(Config) ->
    bc_gitops_test_runtime:set_token(false),
    Origin = ?config(origin, Config),
    spec(Origin, "db", "1", [], "#{}"),
    _ = commit(Origin, "one"),
    start(Config),
    ok = bc_gitops:reconcile(),
    Reads = bc_gitops_test_runtime:state_reads(),
    [ok = bc_gitops:reconcile() || _ <- lists:seq(1, 3)],
    ?assertEqual(Reads + 3, bc_gitops_test_runtime:state_reads()),
    ok = bc_gitops_test_runtime:stop_app(db),
    ok = bc_gitops:reconcile(),
    ?assertEqual([{deploy, db, <<"1">>}, {deploy, db, <<"1">>}], calls()).

%% No reconcile is steady after the health monitor restarted: it is told
%% the specs again.
restarted_health_monitor_is_told_again(Config) ->
    Origin = ?config(origin, Config),
    bc_gitops_test_health:healthy(db, <<"1">>),
    health_spec(Origin, "db", "1", []),
    _ = commit(Origin, "one"),
    start(Config),
    ok = bc_gitops:reconcile(),
    ?assertNotEqual(no_check, bc_gitops_health_monitor:health(db)),
    Old = whereis(bc_gitops_health_monitor),
    exit(Old, kill),
    wait_for(fun() -> not lists:member(whereis(bc_gitops_health_monitor), [undefined, Old]) end,
             5000),
    ?assertEqual(no_check, bc_gitops_health_monitor:health(db)),
    Reads = bc_gitops_test_runtime:state_reads(),
    ok = bc_gitops:reconcile(),
    ?assertEqual(Reads + 1, bc_gitops_test_runtime:state_reads()),
    ?assertNotEqual(no_check, bc_gitops_health_monitor:health(db)).

%% The health check of unhealthy_upgrade_is_rolled_back: version 2 of an
%% app is broken.
check(App) ->
    {ok, #{App := #app_state{version = V}}} = bc_gitops_test_runtime:get_current_state(),
    case V of
        <<"2">> -> {error, {broken_version, V}};
        _ -> ok
    end.

%% Version 2 never becomes healthy: it is rolled back to 1, reported, and
%% not tried again by the timer nor by a reconcile within the backoff;
%% version 3 (a spec change) goes ahead.
unhealthy_upgrade_is_rolled_back(Config) ->
    Origin = ?config(origin, Config),
    Health = "#{type => custom, module => " ++ atom_to_list(?MODULE) ++ ", interval => 100}",
    HealthSpec = fun(V) ->
                         write(Origin, "apps/db/app.config",
                               ["#{name => db, version => <<\"", V, "\">>,\n",
                                "  source => #{type => hex}, health => ", Health, "}.\n"])
                 end,
    HealthSpec("1"),
    _ = commit(Origin, "one"),
    start(Config, #{health_grace => 500, reconcile_interval => 200, backoff_base => 60000}),
    ?assertEqual([{deploy, db, <<"1">>}], calls()),
    ok = bc_gitops:suspend(),
    HealthSpec("2"),
    _ = commit(Origin, "two"),
    ?assertMatch({error, {out_of_sync, #{failed := [{db, {rolled_back, {broken_version, _}}}]}}},
                 bc_gitops:reconcile()),
    ?assertEqual([{upgrade, db, <<"1">>, <<"2">>}, {upgrade, db, <<"2">>, <<"1">>}], calls()),
    ?assertMatch({ok, #app_state{version = <<"1">>}}, bc_gitops:get_app_status(db)),
    ?assertMatch({ok, #{app_errors := #{db := #{reason := {rolled_back, _}, version := <<"2">>}}}},
                 bc_gitops:status()),
    %% The timer does not try version 2 again...
    ok = bc_gitops:resume(),
    timer:sleep(800),
    ?assertEqual([], calls()),
    %% ...nor does a reconcile within the backoff.
    ?assertMatch({error, {out_of_sync, #{waiting := [{db, {rolled_back, <<"2">>}}]}}},
                 bc_gitops:reconcile()),
    ?assertEqual([], calls()),
    HealthSpec("3"),
    _ = commit(Origin, "three"),
    ok = bc_gitops:reconcile(),
    ?assertEqual([{upgrade, db, <<"1">>, <<"3">>}], calls()).

%% A first deploy that never becomes healthy fails, is retried with
%% backoff, and the app that depends on it waits.
unhealthy_first_deploy_fails(Config) ->
    Origin = ?config(origin, Config),
    write(Origin, "apps/db/app.config",
          ["#{name => db, version => <<\"2\">>, source => #{type => hex},\n"
           "  health => #{type => custom, module => ", atom_to_list(?MODULE), "}}.\n"]),
    spec(Origin, "web", "1", ["db"], "#{}"),
    _ = commit(Origin, "broken db first"),
    start(Config, #{health_grace => 300, backoff_base => 60000}),
    ?assertEqual([{deploy, db, <<"2">>}], calls()),
    {ok, #{status := out_of_sync, waiting := Waiting,
           app_errors := #{db := #{reason := {unhealthy, {broken_version, <<"2">>}},
                                   attempts := 1}}}} = bc_gitops:status(),
    ?assertEqual([{web, {dependency_not_ready, db}}], Waiting),
    ?assertMatch({error, {out_of_sync, #{waiting := [{db, {backoff, 1, _}}, {web, _}]}}},
                 bc_gitops:reconcile()),
    ?assertEqual([], calls()).

%% Health gates run side by side: five apps whose checks never pass are
%% all deployed before any gate closes, an app without a health spec does
%% not wait for them, and only web (which depends on db) waits for db's
%% gate. On the test clock nothing closes a gate but health, until the
%% grace period is made to pass.
health_waits_overlap(Config) ->
    Origin = ?config(origin, Config),
    Never = ["a1", "a2", "a3", "a4", "a5"],
    [health_spec(Origin, A, "1", []) || A <- Never],
    health_spec(Origin, "db", "1", []),
    spec(Origin, "solo", "1", [], "#{}"),
    health_spec(Origin, "web", "1", ["db"]),
    bc_gitops_test_health:healthy(web, <<"1">>),
    _ = commit(Origin, "apps with checks"),
    ok = start_nowait(Config, #{clock => bc_gitops_test_clock, health_grace => 30000}),
    Opened = [{deploy, list_to_atom(A), <<"1">>} || A <- Never]
        ++ [{deploy, db, <<"1">>}, {deploy, solo, <<"1">>}],
    ok = wait_for(fun() -> logged() =:= Opened end, 10000),
    timer:sleep(500),
    %% db is not healthy yet: web waits, the reconcile goes on.
    ?assertEqual(Opened, logged()),
    ?assertMatch({ok, #{status := reconciling}}, bc_gitops:status()),
    bc_gitops_test_health:healthy(db, <<"1">>),
    ok = wait_for(fun() -> lists:member({deploy, web, <<"1">>}, logged()) end, 5000),
    ?assertMatch({ok, #{status := reconciling}}, bc_gitops:status()),
    %% One grace period closes every gate still open.
    ok = advance_and_wait(30000),
    {ok, #{app_errors := Errors, waiting := []}} = bc_gitops:status(),
    ?assertEqual([a1, a2, a3, a4, a5], lists:sort(maps:keys(Errors))),
    ?assertMatch(#{a1 := #{reason := {unhealthy, {not_healthy_at, <<"1">>}}}}, Errors),
    %% A reconcile now retries nothing (backoff) and deploys nothing.
    ?assertMatch({error, {out_of_sync, #{waiting := [_, _, _, _, _]}}}, bc_gitops:reconcile()),
    ?assertEqual(Opened ++ [{deploy, web, <<"1">>}], calls()).

%% A new commit that arrives while a reconcile waits for a health gate is
%% not stuck behind it: the trigger makes the reconcile look at git, it
%% ends, and the new commit's reconcile upgrades the app at once. Both
%% callers get the result of that one. The clock never moves: no grace
%% period was waited out.
new_commit_ends_health_wait(Config) ->
    Origin = ?config(origin, Config),
    health_spec(Origin, "slow", "1", []),
    _ = commit(Origin, "v1 never healthy"),
    ok = start_nowait(Config, #{clock => bc_gitops_test_clock, health_grace => 600000}),
    ok = wait_for(fun() -> logged() =:= [{deploy, slow, <<"1">>}] end, 10000),
    Self = self(),
    %% A trigger with nothing new: the wait goes on.
    spawn_link(fun() -> Self ! {first, bc_gitops:reconcile()} end),
    timer:sleep(500),
    ?assertMatch({ok, #{status := reconciling}}, bc_gitops:status()),
    bc_gitops_test_health:healthy(slow, <<"2">>),
    health_spec(Origin, "slow", "2", []),
    C2 = commit(Origin, "v2"),
    spawn_link(fun() -> Self ! {second, bc_gitops:reconcile()} end),
    [receive {Who, R} -> ?assertEqual(ok, R) after 10000 -> ct:fail({no_result, Who}) end
     || Who <- [first, second]],
    ?assertEqual([{deploy, slow, <<"1">>}, {upgrade, slow, <<"1">>, <<"2">>}], calls()),
    ?assertMatch({ok, #{status := synced, last_commit := C2}}, bc_gitops:status()).

%% A gate is handed over with its deadline: a new commit about another app
%% ends the wait, the other app is deployed at once, and the gate of the
%% first closes when its grace period, counted from its deploy, is over.
gate_keeps_its_deadline(Config) ->
    Origin = ?config(origin, Config),
    health_spec(Origin, "slow", "1", []),
    _ = commit(Origin, "v1 never healthy"),
    ok = start_nowait(Config, #{clock => bc_gitops_test_clock, health_grace => 10000}),
    ok = wait_for(fun() -> logged() =:= [{deploy, slow, <<"1">>}] end, 10000),
    ok = bc_gitops_test_clock:advance(4000),
    spec(Origin, "extra", "1", [], "#{}"),
    _ = commit(Origin, "extra"),
    Self = self(),
    spawn_link(fun() -> Self ! {reconciled, bc_gitops:reconcile()} end),
    ok = wait_for(fun() -> lists:member({deploy, extra, <<"1">>}, logged()) end, 10000),
    ok = bc_gitops_test_clock:advance(5999),
    timer:sleep(500),
    ?assertMatch({ok, #{status := reconciling}}, bc_gitops:status()),
    ok = bc_gitops_test_clock:advance(1),
    receive
        {reconciled, R} ->
            ?assertMatch({error, {out_of_sync, #{failed := [{slow, {unhealthy, _}}]}}}, R)
    after 10000 ->
        ct:fail(no_result)
    end,
    ?assertEqual([{deploy, slow, <<"1">>}, {deploy, extra, <<"1">>}], calls()).

%% An app the runtime reports as on its way (`upgrading') gets nothing
%% more until it gets there: the new version waits, and goes ahead once
%% the app is reported running.
busy_app_is_left_alone(Config) ->
    Origin = ?config(origin, Config),
    spec(Origin, "db", "1", [], "#{}"),
    _ = commit(Origin, "one"),
    start(Config, #{}),
    ?assertEqual([{deploy, db, <<"1">>}], calls()),
    ok = bc_gitops_test_runtime:set_status(db, upgrading),
    spec(Origin, "db", "2", [], "#{}"),
    spec(Origin, "web", "1", ["db"], "#{}"),
    _ = commit(Origin, "two, and web on top of it"),
    ?assertMatch({error, {out_of_sync, #{waiting := [{db, {in_progress, upgrading}},
                                                     {web, {dependency_not_ready, db}}]}}},
                 bc_gitops:reconcile()),
    ?assertEqual([], calls()),
    ok = bc_gitops_test_runtime:set_status(db, running),
    ok = bc_gitops:reconcile(),
    ?assertEqual([{upgrade, db, <<"1">>, <<"2">>}, {deploy, web, <<"1">>}], calls()).

%%% Helpers

%% The reconciler's timers on the test clock: [{InMs, tick | retry}].
pending_timers() ->
    lists:sort([{Ms, Kind} || {Ms, {Kind, _Token}} <- bc_gitops_test_clock:timers()]).

start(Config) ->
    start(Config, #{}).

%% Starts a reconciler and waits for its first reconcile to end.
start(Config, Extra) ->
    ok = start_nowait(Config, Extra),
    wait_for(fun() -> case bc_gitops:status() of
                          {ok, #{last_reconcile := undefined}} -> false;
                          {ok, #{status := reconciling}} -> false;
                          {ok, _} -> true
                      end
             end, 30000).

start_nowait(Config, Extra) ->
    Opts = maps:merge(#{repo_url => "file://" ++ ?config(origin, Config),
                        local_path => ?config(local_path, Config),
                        runtime_module => bc_gitops_test_runtime,
                        reconcile_interval => 3600000}, Extra),
    {ok, _} = bc_gitops:start_reconciler(Opts),
    ok.

%% The runtime's calls so far, leaving them for calls/0.
logged() ->
    bc_gitops_test_runtime:calls().

%% The runtime's calls since the last look.
calls() ->
    Calls = bc_gitops_test_runtime:calls(),
    ok = bc_gitops_test_runtime:clear_calls(),
    Calls.

spec(Repo, App, Version, Deps, Env) ->
    write(Repo, filename:join(["apps", App, "app.config"]),
          ["#{name => ", App, ",\n  version => <<\"", Version, "\">>,\n",
           "  source => #{type => hex},\n  env => ", Env, ",\n",
           "  depends_on => [", lists:join(", ", Deps), "]}.\n"]).

%% A spec whose custom check is bc_gitops_test_health's.
health_spec(Repo, App, Version, Deps) ->
    write(Repo, filename:join(["apps", App, "app.config"]),
          ["#{name => ", App, ",\n  version => <<\"", Version, "\">>,\n",
           "  source => #{type => hex},\n",
           "  health => #{type => custom, module => bc_gitops_test_health, interval => 100},\n",
           "  depends_on => [", lists:join(", ", Deps), "]}.\n"]).

write(Repo, Rel, Content) ->
    bc_gitops_test_util:write_file(filename:join(Repo, Rel), Content).

wait_for(Fun, Timeout) when Timeout =< 0 ->
    ct:fail({condition_not_met, Fun});
wait_for(Fun, Timeout) ->
    case Fun() of
        true -> ok;
        false -> timer:sleep(20), wait_for(Fun, Timeout - 20)
    end.

drain() ->
    receive {event, E, M, Meta} -> [{E, M, Meta} | drain()]
    after 100 -> []
    end.

count(Msg) ->
    receive Msg -> 1 + count(Msg) after 0 -> 0 end.
