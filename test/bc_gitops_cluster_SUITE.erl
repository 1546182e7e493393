%%% Cluster mode end to end: real BEAM nodes (OTP peer nodes, each in a
%%% network namespace of its own, see bc_gitops_test_cluster), one gitops
%%% repository, and a real app built from git with make on every node: a
%%% counter server (state kept across hot upgrades) and an HTTP listener
%%% on the same port on every node, which the specs' http health check
%%% asks.
-module(bc_gitops_cluster_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include("bc_gitops.hrl").

-export([all/0, init_per_testcase/2, end_per_testcase/2]).
-export([rolls_out_one_node_at_a_time/1, bad_version_stops_at_the_canary/1,
         member_killed_mid_rollout_comes_back/1, coordinator_killed_mid_rollout/1,
         late_joiner_converges/1, partition_minority_starts_no_batch/1,
         non_member_is_ignored/1, placement_follows_node_names/1,
         rollback_pins_the_cluster/1]).

-import(bc_gitops_test_util, [commit/2, write_file/2]).

-define(PORT, 8089).
-define(APP, cl_web).
-define(EVENTS, [[bc_gitops, upgrade, start], [bc_gitops, upgrade, stop],
                 [bc_gitops, deploy, start], [bc_gitops, remove, stop],
                 [bc_gitops, gate, stop], [bc_gitops, rollout, start],
                 [bc_gitops, rollout, step], [bc_gitops, rollout, stop]]).

all() ->
    [rolls_out_one_node_at_a_time, bad_version_stops_at_the_canary,
     member_killed_mid_rollout_comes_back, coordinator_killed_mid_rollout,
     late_joiner_converges, partition_minority_starts_no_batch, non_member_is_ignored,
     placement_follows_node_names, rollback_pins_the_cluster].

init_per_testcase(Case, Config) ->
    Dir = bc_gitops_test_util:tmp_dir("ct_cluster"),
    Gitops = filename:join(Dir, "gitops"),
    ok = bc_gitops_test_util:init_repo(Gitops),
    write_file(filename:join([Gitops, "apps", ".keep"]), ""),
    AppRepo = filename:join(Dir, "cl_web"),
    ok = bc_gitops_test_util:init_repo(AppRepo),
    write_file(filename:join(AppRepo, "Makefile"),
               "all:\n\tmkdir -p ebin\n\terlc -o ebin src/*.erl\n"
               "\tcp src/cl_web.app.src ebin/cl_web.app\n"),
    Prefixes = case Case of
                   non_member_is_ignored -> ["n", "n", "n", "x"];
                   placement_follows_node_names -> ["web", "web", "db"];
                   _ -> ["n", "n", "n"]
               end,
    Cluster = bc_gitops_test_cluster:start(Prefixes, "c"),
    [{dir, Dir}, {gitops, Gitops}, {app_repo, AppRepo}, {cluster, Cluster} | Config].

end_per_testcase(_Case, Config) ->
    Cluster = case get(cluster) of
                  undefined -> ?config(cluster, Config);
                  C -> C
              end,
    ok = bc_gitops_test_cluster:stop(Cluster),
    erase(cluster),
    bc_gitops_test_util:rm_rf(?config(dir, Config)).

%%% Cases

%% v1 then v2 roll out in the order of `members', one node at a time: a
%% node's upgrade starts only after the previous node's health gate
%% passed; at no sampled moment is more than one node in change; each
%% upgrade is hot (the same server, its count kept).
rolls_out_one_node_at_a_time(Config) ->
    C = ?config(cluster, Config),
    app_version(Config, "1.0.0", "200 OK"),
    gitops_spec(Config, "1.0.0", ""),
    boot_all(Config, C, [1, 2, 3], #{}),
    ok = bc_gitops_test_cluster:call(C, 3, bc_gitops, reconcile, []),
    [?assertEqual(<<"1.0.0">>, running_version(C, I)) || I <- [1, 2, 3]],
    Servers = [{I, srv(C, I), bump(C, I), bump(C, I)} || I <- [1, 2, 3]],

    app_version(Config, "2.0.0", "200 OK"),
    gitops_spec(Config, "2.0.0", ""),
    %% A member's plan: its own part, from the coordinator's parse.
    ?assertMatch({ok, #{actions := [{upgrade, #app_spec{name = cl_web, version = <<"2.0.0">>},
                                     <<"1.0.0">>}]}},
                 bc_gitops_test_cluster:call(C, 2, bc_gitops, plan, [])),
    ?assertEqual(<<"1.0.0">>, running_version(C, 2)),
    Sampler = sample_in_change(C),
    ok = bc_gitops_test_cluster:call(C, 3, bc_gitops, reconcile, []),
    Samples = stop_sampler(Sampler),
    ct:pal("in change at each sample: ~w", [Samples]),
    ?assert(lists:max(Samples) =< 1),
    ?assert(lists:member(1, Samples)),
    %% Hot everywhere: the same server, its count kept (2 bumps before).
    [begin
         ?assertEqual(<<"2.0.0">>, running_version(C, I)),
         ?assertEqual(Pid, srv(C, I)),
         ?assertEqual(3, bump(C, I))
     end || {I, Pid, 1, 2} <- Servers],
    %% The gates in order: node k's upgrade starts after node k-1's gate
    %% passed.
    Windows = [upgrade_window(C, I, <<"2.0.0">>) || I <- [1, 2, 3]],
    ct:pal("upgrade windows (start, gate passed): ~p", [Windows]),
    ok = in_sequence(Windows),
    {ok, #{rollouts := [#{app := cl_web, state := done, done := Done, from := <<"1.0.0">>,
                          to := <<"2.0.0">>}]}} =
        bc_gitops_test_cluster:call(C, 1, bc_gitops, cluster_status, []),
    ?assertEqual(bc_gitops_test_cluster:nodes(C), lists:sort(Done)),
    [Coordinator] = lists:usort([coordinator(C, I) || I <- [1, 2, 3]]),
    [?assertMatch({ok, #{status := synced,
                         cluster := #{coordinator := Coordinator, role := Role}}}
                    when Role =:= coordinator orelse Role =:= member,
                  bc_gitops_test_cluster:call(C, I, bc_gitops, status, [])) || I <- [1, 2, 3]],
    %% The coordinator told the rollout's steps.
    Steps = [{R, Nodes} || {_, _, [bc_gitops, rollout, step],
                            #{app := cl_web, to := <<"2.0.0">>, result := R, nodes := Nodes}}
                               <- coordinator_events(C)],
    [N1, N2, N3] = bc_gitops_test_cluster:nodes(C),
    ?assertEqual([{started, [N1]}, {done, [N1]}, {started, [N2]}, {done, [N2]},
                  {started, [N3]}, {done, [N3]}], Steps),

    %% The command, as an operator runs it against a member from this host.
    Cli = cli(Config, C, 2),
    {0, Table} = Cli(["cluster"]),
    [?assertNotEqual(nomatch, string:find(Table, atom_to_list(N))) || N <- [N1, N2, N3]],
    ?assertNotEqual(nomatch, string:find(Table, "cl_web 2.0.0 running")),
    [?assert(string:length(L) =< 100) || L <- string:lexemes(Table, "\n")],
    {0, Json} = Cli(["cluster", "--json"]),
    {ok, #{<<"members">> := Members, <<"coordinator">> := CoordinatorText,
           <<"rollouts">> := [#{<<"app">> := <<"cl_web">>, <<"state">> := <<"done">>,
                                <<"to">> := <<"2.0.0">>}]}} =
        bc_gitops_json:decode(unicode:characters_to_binary(Json)),
    ?assertEqual(atom_to_binary(Coordinator), CoordinatorText),
    ?assertEqual(lists:sort([atom_to_binary(N) || N <- [N1, N2, N3]]),
                 lists:sort(maps:keys(Members))).

%% v2 answers 500 on its port, so the canary's http check fails: the
%% canary goes back to v1 (hot: the same server, its count kept), v2 never
%% reaches the other nodes, and every member waits with
%% {rolled_back, <<"2.0.0">>} until the spec changes.
bad_version_stops_at_the_canary(Config) ->
    C = ?config(cluster, Config),
    app_version(Config, "1.0.0", "200 OK"),
    gitops_spec(Config, "1.0.0", ""),
    boot_all(Config, C, [1, 2, 3], #{health_grace => 2500}),
    ok = bc_gitops_test_cluster:call(C, 3, bc_gitops, reconcile, []),
    Canary = srv(C, 1),
    1 = bump(C, 1),
    app_version(Config, "2.0.0", "500 Internal Server Error"),
    gitops_spec(Config, "2.0.0", ""),
    ?assertMatch({error, {out_of_sync, #{waiting := [{cl_web, {rolled_back, <<"2.0.0">>}}]}}},
                 bc_gitops_test_cluster:call(C, 1, bc_gitops, reconcile, [])),
    ?assertEqual(<<"1.0.0">>, running_version(C, 1)),
    ?assertEqual(Canary, srv(C, 1)),
    ?assertEqual(2, bump(C, 1)),
    ?assertEqual({200, <<"1.0.0">>}, http_get(C, 1)),
    %% The canary's gate said why.
    ?assertMatch([{_, _, [bc_gitops, gate, stop],
                   #{app := cl_web, version := <<"2.0.0">>,
                     result := {unhealthy, {http_status, 500}}}}],
                 [E || {_, _, [bc_gitops, gate, stop], #{version := <<"2.0.0">>}} = E
                           <- events(C, 1)]),
    %% The others never ran it, and every member holds it.
    [begin
         ?assertEqual(<<"1.0.0">>, running_version(C, I)),
         ?assertEqual([], [E || {_, _, [bc_gitops, upgrade, start],
                                 #{to_version := <<"2.0.0">>}} = E <- events(C, I)]),
         ok = wait_until(fun() ->
                                 {ok, #{waiting := W}} =
                                     bc_gitops_test_cluster:call(C, I, bc_gitops, status, []),
                                 W =:= [{cl_web, {rolled_back, <<"2.0.0">>}}]
                         end, 10000)
     end || I <- [2, 3]],
    {ok, #{rollouts := [#{app := cl_web, state := halted,
                          reason := {rolled_back, {http_status, 500}}}]}} =
        bc_gitops_test_cluster:call(C, 2, bc_gitops, cluster_status, []),
    %% A member's status page shows the members and the halted rollout.
    Page = iolist_to_binary(bc_gitops_test_cluster:call(
                              C, 2, bc_gitops_status_page, render,
                              [bc_gitops_test_cluster:call(C, 2, bc_gitops_http_api, facts, [])])),
    [?assertNotEqual(nomatch, binary:match(Page, Part), Part)
     || Part <- [<<"<h2>Cluster</h2>">>, <<"Coordinator: <b>">>,
                 <<"<td>cl_web</td><td>1.0.0 &rarr; 2.0.0</td>">>, <<"o-halted">>,
                 <<"{rolled_back,{http_status,500}}">>]
            ++ [<<"<td>", (atom_to_binary(N, utf8))/binary, "</td><td><span class=\"badge m-up\">">>
                || N <- bc_gitops_test_cluster:nodes(C)]],
    %% A fixed v3 goes ahead.
    app_version(Config, "3.0.0", "200 OK"),
    gitops_spec(Config, "3.0.0", ""),
    ok = bc_gitops_test_cluster:call(C, 3, bc_gitops, reconcile, []),
    [?assertEqual(<<"3.0.0">>, running_version(C, I)) || I <- [1, 2, 3]].

%% A member killed while the rollout pauses after the canary is skipped:
%% the rollout goes on to the next member. Started again, the killed
%% member converges to v2 by itself.
member_killed_mid_rollout_comes_back(Config) ->
    C0 = ?config(cluster, Config),
    ok = v1_then_v2(Config, C0, "rollout => #{pause => 3000}"),
    Coordinator = coordinator(C0),
    %% The member to kill: not the canary, not the coordinator.
    [Victim | _] = [I || I <- [2, 3], bc_gitops_test_cluster:node(C0, I) =/= Coordinator],
    Other = hd([2, 3] -- [Victim]),
    Caller = reconcile_async(C0, 1),
    ok = wait_until(fun() -> rollout_done(C0, 1) =:= [bc_gitops_test_cluster:node(C0, 1)] end,
                    30000),
    C1 = bc_gitops_test_cluster:kill(C0, Victim),
    put(cluster, C1),
    ok = wait_until(fun() -> running_version(C1, Other) =:= <<"2.0.0">> end, 30000),
    ?assertEqual(ok, await(Caller)),
    C2 = bc_gitops_test_cluster:restart(C1, Victim),
    put(cluster, C2),
    ok = bc_gitops_test_cluster:call(C2, Victim, bc_gitops_peers, boot,
                                     [member_config(Config, C2, Victim, #{}), ?EVENTS]),
    ok = wait_until(fun() -> running_version(C2, Victim) =:= <<"2.0.0">> end, 30000),
    ?assertEqual(ok, bc_gitops_test_cluster:call(C2, Victim, bc_gitops, reconcile, [])).

%% The coordinator dies after the canary's batch: another member takes
%% over within seconds and finishes the rollout from where it stood; no
%% node is upgraded twice, and no gate is skipped.
coordinator_killed_mid_rollout(Config) ->
    C0 = ?config(cluster, Config),
    ok = v1_then_v2(Config, C0, "rollout => #{pause => 2000}"),
    Old = coordinator(C0),
    [Dead] = [I || I <- [1, 2, 3], bc_gitops_test_cluster:node(C0, I) =:= Old],
    [Asker | _] = [1, 2, 3] -- [Dead],
    Caller = reconcile_async(C0, Asker),
    ok = wait_until(fun() -> rollout_done(C0, Asker) =/= [] end, 30000),
    T0 = erlang:monotonic_time(millisecond),
    C1 = bc_gitops_test_cluster:kill(C0, Dead),
    put(cluster, C1),
    ok = new_coordinator(C1, Asker, Old),
    Takeover = erlang:monotonic_time(millisecond) - T0,
    ct:pal("a new coordinator after ~p ms", [Takeover]),
    ?assert(Takeover < 5000),
    ?assertEqual(ok, await(Caller)),
    Alive = [1, 2, 3] -- [Dead],
    ok = wait_until(fun() -> [<<"2.0.0">>] =:= lists:usort([running_version(C1, I) || I <- Alive])
                    end, 30000),
    [begin
         ?assertEqual(1, length([E || {_, _, [bc_gitops, upgrade, start],
                                       #{to_version := <<"2.0.0">>}} = E <- events(C1, I)]))
     end || I <- Alive],
    ok = in_sequence(lists:sort([upgrade_window(C1, I, <<"2.0.0">>) || I <- Alive])),
    %% The dead one comes back and converges.
    C2 = bc_gitops_test_cluster:restart(C1, Dead),
    put(cluster, C2),
    ok = bc_gitops_test_cluster:call(C2, Dead, bc_gitops_peers, boot,
                                     [member_config(Config, C2, Dead, #{}), ?EVENTS]),
    ok = wait_until(fun() -> running_version(C2, Dead) =:= <<"2.0.0">> end, 30000).

%% A rollback from any member (here through the command): the spec that
%% ran before goes back on every member, one at a time and hot, and is
%% pinned there: every member's status says so, a coordinator that takes
%% over keeps it, and it ends when git changes the spec. Then pin/1 and
%% unpin/1 on the cluster.
rollback_pins_the_cluster(Config) ->
    C0 = ?config(cluster, Config),
    ok = v1_then_v2(Config, C0, ""),
    ok = bc_gitops_test_cluster:call(C0, 3, bc_gitops, reconcile, []),
    ok = rollout_over(C0, 3, <<"2.0.0">>),
    [?assertEqual(<<"2.0.0">>, running_version(C0, I)) || I <- [1, 2, 3]],
    Servers = [{I, srv(C0, I)} || I <- [1, 2, 3]],
    {0, Out} = (cli(Config, C0, 2))(["rollback", "cl_web"]),
    ?assertNotEqual(nomatch, string:find(words(Out), "rolled back cl_web from 2.0.0 to 1.0.0 "
                                         "(rolling out, batch by batch); pinned at 1.0.0")),
    ok = bc_gitops_test_cluster:call(C0, 3, bc_gitops, reconcile, []),
    [begin
         ?assertEqual(<<"1.0.0">>, running_version(C0, I)),
         ?assertEqual(Pid, srv(C0, I))
     end || {I, Pid} <- Servers],
    ok = in_sequence([upgrade_window(C0, I, <<"1.0.0">>) || I <- [1, 2, 3]]),
    Pinned = fun(C, I) ->
                     {ok, S} = bc_gitops_test_cluster:call(C, I, bc_gitops, status, []),
                     {maps:get(pins, S), [W || {cl_web, _} = W <- maps:get(waiting, S)]}
             end,
    [?assertMatch({#{cl_web := #{version := <<"1.0.0">>, reason := rollback}},
                   [{cl_web, {pinned, <<"1.0.0">>}}]}, Pinned(C0, I)) || I <- [1, 2, 3]],
    ?assertEqual({error, {already_rolled_back, cl_web}},
                 bc_gitops_test_cluster:call(C0, 1, bc_gitops, rollback, [cl_web])),
    ?assertEqual({error, {already_pinned, cl_web}},
                 bc_gitops_test_cluster:call(C0, 1, bc_gitops, pin, [cl_web])),
    {0, Table} = (cli(Config, C0, 1))(["cluster"]),
    ?assertNotEqual(nomatch, string:find(Table, "pinned: cl_web at 1.0.0 (rollback)")),

    %% The coordinator dies: the next one learns the pin from the members.
    Old = coordinator(C0),
    [Dead] = [I || I <- [1, 2, 3], bc_gitops_test_cluster:node(C0, I) =:= Old],
    [Asker | _] = Alive = [1, 2, 3] -- [Dead],
    C1 = bc_gitops_test_cluster:kill(C0, Dead),
    put(cluster, C1),
    ok = new_coordinator(C1, Asker, Old),
    ok = bc_gitops_test_cluster:call(C1, Asker, bc_gitops, reconcile, []),
    ?assertMatch({ok, #{pins := #{cl_web := #{version := <<"1.0.0">>}}}},
                 bc_gitops_test_cluster:call(C1, Asker, bc_gitops, cluster_status, [])),
    [?assertEqual(<<"1.0.0">>, running_version(C1, I)) || I <- Alive],
    C2 = bc_gitops_test_cluster:restart(C1, Dead),
    put(cluster, C2),
    ok = bc_gitops_test_cluster:call(C2, Dead, bc_gitops_peers, boot,
                                     [member_config(Config, C2, Dead, #{}), ?EVENTS]),
    ok = wait_until(fun() -> running_version(C2, Dead) =:= <<"1.0.0">> end, 30000),

    %% The new coordinator drops the pin it learned: git's 2.0.0 again,
    %% on every member, the restarted one included; then a second rollback.
    ?assertEqual(ok, bc_gitops_test_cluster:call(C2, Dead, bc_gitops, unpin, [cl_web])),
    ok = bc_gitops_test_cluster:call(C2, Asker, bc_gitops, reconcile, []),
    ok = rollout_over(C2, Asker, <<"2.0.0">>),
    [?assertEqual(<<"2.0.0">>, running_version(C2, I)) || I <- [1, 2, 3]],
    [?assertEqual({#{}, []}, Pinned(C2, I)) || I <- [1, 2, 3]],
    ?assertMatch({ok, #{from := <<"2.0.0">>, to := <<"1.0.0">>}},
                 bc_gitops_test_cluster:call(C2, Dead, bc_gitops, rollback, [cl_web])),
    ok = bc_gitops_test_cluster:call(C2, Asker, bc_gitops, reconcile, []),
    ok = wait_until(fun() -> [<<"1.0.0">>] =:= lists:usort([running_version(C2, I) || I <- [1, 2, 3]])
                    end, 30000),

    %% Git moves on: the pin ends and the new version rolls out, one node
    %% at a time with a pause; while it runs, neither a rollback nor a pin
    %% is taken.
    app_version(Config, "3.0.0", "200 OK"),
    _ = gitops_spec(Config, "3.0.0", "rollout => #{pause => 2000}"),
    Caller = reconcile_async(C2, Asker),
    ok = wait_until(fun() ->
                            {ok, #{rollouts := Rs}} = bc_gitops_test_cluster:call(
                                                        C2, Asker, bc_gitops, cluster_status, []),
                            [running] =:= [St || #{to := <<"3.0.0">>, state := St,
                                                   done := [_ | _]} <- Rs]
                    end, 30000),
    ?assertEqual({error, {rollout_in_progress, cl_web}},
                 bc_gitops_test_cluster:call(C2, Asker, bc_gitops, rollback, [cl_web])),
    ?assertEqual({error, {rollout_in_progress, cl_web}},
                 bc_gitops_test_cluster:call(C2, Asker, bc_gitops, pin, [cl_web])),
    ?assertEqual({1, "bc_gitops: cannot pin cl_web: a rollout of cl_web is under way (see "
                     "bc_gitops cluster); try once it is done\n"},
                 (cli(Config, C2, Asker))(["pin", "cl_web"])),
    ?assertEqual(ok, await(Caller)),
    ok = rollout_over(C2, Asker, <<"3.0.0">>),
    [?assertEqual(<<"3.0.0">>, running_version(C2, I)) || I <- [1, 2, 3]],
    [?assertEqual({#{}, []}, Pinned(C2, I)) || I <- Alive],

    %% pin/1 holds it at what runs; unpin/1 lets go, once.
    ?assertEqual({ok, <<"3.0.0">>}, bc_gitops_test_cluster:call(C2, 1, bc_gitops, pin, [cl_web])),
    ok = wait_until(fun() -> lists:all(fun(I) -> element(2, Pinned(C2, I)) =/= [] end, [1, 2, 3])
                    end, 10000),
    ?assertMatch({#{cl_web := #{version := <<"3.0.0">>, reason := pin}}, _}, Pinned(C2, 3)),
    ?assertEqual(ok, bc_gitops_test_cluster:call(C2, 2, bc_gitops, unpin, [cl_web])),
    ?assertEqual({error, {not_pinned, cl_web}},
                 bc_gitops_test_cluster:call(C2, 3, bc_gitops, unpin, [cl_web])),
    ok = wait_until(fun() -> lists:all(fun(I) -> Pinned(C2, I) =:= {#{}, []} end, [1, 2, 3])
                    end, 10000).

%% Two members run; the third starts later and converges by itself.
late_joiner_converges(Config) ->
    C = ?config(cluster, Config),
    app_version(Config, "1.0.0", "200 OK"),
    gitops_spec(Config, "1.0.0", ""),
    boot_all(Config, C, [1, 2], #{}),
    ok = bc_gitops_test_cluster:call(C, 2, bc_gitops, reconcile, []),
    [?assertEqual(<<"1.0.0">>, running_version(C, I)) || I <- [1, 2]],
    boot_all(Config, C, [3], #{}),
    ok = wait_until(fun() -> running_version(C, 3) =:= <<"1.0.0">> end, 30000),
    %% The coordinator's view catches up with the report that follows.
    ok = wait_until(
           fun() ->
                   {ok, #{members := Members}} =
                       bc_gitops_test_cluster:call(C, 3, bc_gitops, cluster_status, []),
                   lists:all(fun(#{state := up, apps := #{cl_web := #{version := V}}}) ->
                                     V =:= <<"1.0.0">>;
                                (_) -> false
                             end, maps:values(Members))
           end, 10000),
    ?assertEqual(ok, bc_gitops_test_cluster:call(C, 3, bc_gitops, reconcile, [])).

%% The coordinator is cut off: alone, it has no majority and starts no
%% batch (its node stays at v1); the two others elect a coordinator of
%% their own and roll v2 out. Healed, the cut node converges too.
partition_minority_starts_no_batch(Config) ->
    C = ?config(cluster, Config),
    app_version(Config, "1.0.0", "200 OK"),
    gitops_spec(Config, "1.0.0", ""),
    boot_all(Config, C, [1, 2, 3], #{}),
    ok = bc_gitops_test_cluster:call(C, 3, bc_gitops, reconcile, []),
    Old = coordinator(C),
    [Cut] = [I || I <- [1, 2, 3], bc_gitops_test_cluster:node(C, I) =:= Old],
    ok = bc_gitops_test_cluster:cut(C, Cut),
    app_version(Config, "2.0.0", "200 OK"),
    gitops_spec(Config, "2.0.0", ""),
    ?assertMatch({error, {no_quorum, [Old], _}},
                 bc_gitops_test_cluster:call(C, Cut, bc_gitops, reconcile, [])),
    Majority = [1, 2, 3] -- [Cut],
    %% The last in line returns once both have converged.
    ok = bc_gitops_test_cluster:call(C, lists:last(Majority), bc_gitops, reconcile, []),
    [?assertEqual(<<"2.0.0">>, running_version(C, I)) || I <- Majority],
    ?assertEqual(<<"1.0.0">>, running_version(C, Cut)),
    ?assertEqual([], [E || {_, _, [bc_gitops, upgrade, start], _} = E <- events(C, Cut)]),
    ok = bc_gitops_test_cluster:heal(C, Cut),
    ok = wait_until(fun() -> running_version(C, Cut) =:= <<"2.0.0">> end, 60000),
    %% One coordinator again, the same for everyone.
    ok = wait_until(fun() -> length(lists:usort([coordinator(C, I) || I <- [1, 2, 3]])) =:= 1
                    end, 30000).

%% A fourth node that lists itself as a member (the three others do not)
%% is ignored: it never gets an app, and the cluster shows three members.
non_member_is_ignored(Config) ->
    C = ?config(cluster, Config),
    app_version(Config, "1.0.0", "200 OK"),
    gitops_spec(Config, "1.0.0", ""),
    Three = [bc_gitops_test_cluster:node(C, I) || I <- [1, 2, 3]],
    Stranger = bc_gitops_test_cluster:node(C, 4),
    boot_all(Config, C, [1, 2, 3], #{}),
    ok = bc_gitops_test_cluster:call(C, 4, bc_gitops_peers, boot,
                                     [(member_config(Config, C, 4, #{}))#{
                                        cluster => #{members => Three ++ [Stranger]}}, ?EVENTS]),
    ok = bc_gitops_test_cluster:call(C, 1, bc_gitops, reconcile, []),
    [true = bc_gitops_test_cluster:call(C, 4, net_kernel, connect_node, [N]) || N <- Three],
    ok = bc_gitops_test_cluster:call(C, 3, bc_gitops, reconcile, []),
    {ok, #{members := Members}} = bc_gitops_test_cluster:call(C, 2, bc_gitops, cluster_status, []),
    ?assertEqual(lists:sort(Three), lists:sort(maps:keys(Members))),
    ?assertEqual(undefined, running_version(C, 4)),
    ?assertEqual([], events(C, 4) -- [E || {_, _, [bc_gitops, rollout, _], _} = E <- events(C, 4)]),
    %% Its own view: four members, one reachable with it: no quorum.
    ?assertMatch({error, {no_quorum, _, _}},
                 bc_gitops_test_cluster:call(C, 4, bc_gitops, reconcile, [])).

%% placement: the app runs on the web nodes only, and leaves web2 when the
%% pattern no longer matches it.
placement_follows_node_names(Config) ->
    C = ?config(cluster, Config),
    app_version(Config, "1.0.0", "200 OK"),
    gitops_spec(Config, "1.0.0", "placement => [<<\"web*@*\">>]"),
    boot_all(Config, C, [1, 2, 3], #{}),
    %% db3 runs nothing of it: its reconcile returns at once. web2 is the
    %% last web node in line.
    ok = bc_gitops_test_cluster:call(C, 2, bc_gitops, reconcile, []),
    ?assertEqual([<<"1.0.0">>, <<"1.0.0">>, undefined], [running_version(C, I) || I <- [1, 2, 3]]),
    gitops_spec(Config, "1.0.0", "placement => [<<\"web1*\">>]"),
    ok = bc_gitops_test_cluster:call(C, 2, bc_gitops, reconcile, []),
    ?assertEqual([<<"1.0.0">>, undefined, undefined], [running_version(C, I) || I <- [1, 2, 3]]),
    ?assertMatch([_], [E || {_, _, [bc_gitops, remove, stop], #{app := cl_web, result := ok}} = E
                            <- events(C, 2)]).

%%% Helpers

%% v1 on the three nodes, then v2 committed (with `Extra' in its spec),
%% not reconciled yet.
v1_then_v2(Config, C, Extra) ->
    app_version(Config, "1.0.0", "200 OK"),
    gitops_spec(Config, "1.0.0", ""),
    boot_all(Config, C, [1, 2, 3], #{}),
    ok = bc_gitops_test_cluster:call(C, 3, bc_gitops, reconcile, []),
    app_version(Config, "2.0.0", "200 OK"),
    _ = gitops_spec(Config, "2.0.0", Extra),
    ok.

%% Boots bc_gitops on the nodes, and waits until the members that run
%% agree on one coordinator.
boot_all(Config, C, Indices, Extra) ->
    [ok = bc_gitops_test_cluster:call(C, I, bc_gitops_peers, boot,
                                      [member_config(Config, C, I, Extra), ?EVENTS])
     || I <- Indices],
    Running = lists:usort(Indices ++ [I || I <- [1, 2, 3], booted(C, I)]),
    wait_until(fun() ->
                       Known = [bc_gitops_test_cluster:call(C, I, bc_gitops_cluster, info, [])
                                || I <- Running],
                       case lists:usort([N || #{coordinator := N} <- Known]) of
                           [N] -> N =/= undefined;
                           _ -> false
                       end
               end, 20000).

booted(C, I) ->
    is_pid(bc_gitops_test_cluster:call(C, I, erlang, whereis, [bc_gitops_cluster])).

member_config(Config, C, I, Extra) ->
    Members = [bc_gitops_test_cluster:node(C, J) || J <- [1, 2, 3]],
    maps:merge(#{repo_url => ?config(gitops, Config),
                 local_path => filename:join(?config(dir, Config), "node" ++ integer_to_list(I)),
                 reconcile_interval => 3600000, health_grace => 10000,
                 cluster => #{members => Members}}, Extra).

%% The app's source at Vsn, answering Status on its port; committed.
app_version(Config, Vsn, Status) ->
    Repo = ?config(app_repo, Config),
    W = fun(Name, Text) -> write_file(filename:join([Repo, "src", Name]), Text) end,
    W("cl_web.app.src", ["{application, cl_web, [{vsn, \"", Vsn, "\"}, {mod, {cl_web_app, []}},\n"
                         " {modules, [cl_web_app, cl_web_srv, cl_web_http]},\n"
                         " {applications, [kernel, stdlib]}, {env, []}]}.\n"]),
    W("cl_web_app.erl",
      "-module(cl_web_app).\n-behaviour(application).\n-behaviour(supervisor).\n"
      "-export([start/2, stop/1, init/1]).\n"
      "start(_, _) -> supervisor:start_link({local, cl_web_sup}, ?MODULE, []).\nstop(_) -> ok.\n"
      "init([]) -> {ok, {#{}, [#{id => srv, start => {cl_web_srv, start_link, []},\n"
      "                          modules => [cl_web_srv]},\n"
      "                        #{id => http, start => {cl_web_http, start_link, []},\n"
      "                          modules => [cl_web_http]}]}}.\n"),
    W("cl_web_srv.erl",
      "-module(cl_web_srv).\n-behaviour(gen_server).\n"
      "-export([start_link/0, bump/0, init/1, handle_call/3, handle_cast/2, code_change/3]).\n"
      "start_link() -> gen_server:start_link({local, ?MODULE}, ?MODULE, 0, []).\n"
      "bump() -> gen_server:call(?MODULE, bump).\n"
      "init(N) -> {ok, N}.\n"
      "handle_call(bump, _, N) -> {reply, N + 1, N + 1}.\n"
      "handle_cast(_, N) -> {noreply, N}.\n"
      "code_change(_, N, _) -> {ok, N}.\n"),
    W("cl_web_http.erl", bc_gitops_test_util:web_server_src("cl_web_http",
                                                            integer_to_list(?PORT), Vsn, Status)),
    Sha = commit(Repo, "cl_web " ++ Vsn),
    put({sha, Vsn}, Sha),
    Sha.

%% The spec of cl_web at Vsn (its commit in the app repository), with an
%% http check on its port.
gitops_spec(Config, Vsn, Extra) ->
    Gitops = ?config(gitops, Config),
    write_file(filename:join([Gitops, "apps", "cl_web", "app.config"]),
               ["#{name => cl_web, version => <<\"", Vsn, "\">>,\n",
                "  source => #{type => git, url => <<\"", ?config(app_repo, Config), "\">>,\n",
                "              ref => <<\"", get({sha, Vsn}), "\">>},\n",
                "  health => #{type => http, port => ", integer_to_list(?PORT),
                ", interval => 200, timeout => 1000}",
                [[",\n  ", Extra] || Extra =/= ""], "}.\n"]),
    commit(Gitops, "cl_web " ++ Vsn).

running_version(C, I) ->
    case lists:keyfind(?APP, 1, bc_gitops_test_cluster:call(C, I, application,
                                                            which_applications, [])) of
        {_, _, V} -> list_to_binary(V);
        false -> undefined
    end.

srv(C, I) -> bc_gitops_test_cluster:call(C, I, erlang, whereis, [cl_web_srv]).
bump(C, I) -> bc_gitops_test_cluster:call(C, I, cl_web_srv, bump, []).

http_get(C, I) ->
    {ok, _} = bc_gitops_test_cluster:call(C, I, application, ensure_all_started, [inets]),
    {ok, {{_, Code, _}, _, Body}} =
        bc_gitops_test_cluster:call(C, I, httpc, request,
                                    [get, {"http://127.0.0.1:" ++ integer_to_list(?PORT) ++ "/", []},
                                     [{timeout, 3000}], [{body_format, binary}]]),
    {Code, Body}.

events(C, I) -> bc_gitops_test_cluster:call(C, I, bc_gitops_peers, events, []).

coordinator(C) -> coordinator(C, 1).
coordinator(C, I) ->
    {ok, #{coordinator := Node}} = bc_gitops_test_cluster:call(C, I, bc_gitops, cluster_status, []),
    Node.

%% Waits (30 s at most) until the rollout to Vsn is done, as member I's
%% coordinator says: the last node's gate passed, which comes after every
%% node runs Vsn (until then a rollback or pin is refused).
rollout_over(C, I, Vsn) ->
    wait_until(fun() ->
                       {ok, #{rollouts := Rs}} =
                           bc_gitops_test_cluster:call(C, I, bc_gitops, cluster_status, []),
                       [done] =:= [St || #{to := To, state := St} <- Rs, To =:= Vsn]
               end, 30000).

%% Waits (10 s at most) until member I names a coordinator other than Old.
new_coordinator(C, I, Old) ->
    wait_until(fun() ->
                       case catch coordinator(C, I) of
                           N when is_atom(N), N =/= Old, N =/= undefined -> true;
                           _ -> false
                       end
               end, 10000).

coordinator_events(C) ->
    Node = coordinator(C),
    [I] = [J || J <- [1, 2, 3], bc_gitops_test_cluster:node(C, J) =:= Node],
    events(C, I).

rollout_done(C, I) ->
    case catch bc_gitops_test_cluster:call(C, I, bc_gitops, cluster_status, []) of
        {ok, #{rollouts := [#{done := Done}]}} -> Done;
        _ -> []
    end.

%% The time node I started its upgrade to V, and the time its gate passed.
upgrade_window(C, I, V) ->
    Events = events(C, I),
    [Start] = [T || {T, _, [bc_gitops, upgrade, start], #{to_version := To}} <- Events, To =:= V],
    %% The first gate of V passed after that start (a deploy of V may have
    %% passed one before).
    [Passed | _] = lists:sort([T || {T, _, [bc_gitops, gate, stop],
                                     #{version := To, result := healthy}} <- Events,
                                    To =:= V, T >= Start]),
    {Start, Passed}.

%% Each window starts after the one before it ended.
in_sequence([{_, End} | [{Start, _} | _] = Rest]) ->
    ?assert(Start >= End, {overlap, End, Start}),
    in_sequence(Rest);
in_sequence(_) ->
    ok.

%% Counts, every 20 ms, the nodes in change for cl_web (the
%% coordinator's view), until stopped.
sample_in_change(C) ->
    Self = self(),
    spawn_link(fun() -> sample_loop(C, Self, []) end).

sample_loop(C, Parent, Acc) ->
    receive
        stop -> Parent ! {samples, lists:reverse(Acc)}
    after 20 ->
        N = case catch bc_gitops_test_cluster:call(C, 1, bc_gitops, cluster_status, []) of
                {ok, #{rollouts := Rollouts}} ->
                    lists:sum([length(Cur) || #{app := cl_web, current := Cur} <- Rollouts]);
                _ -> 0
            end,
        sample_loop(C, Parent, [N | Acc])
    end.

stop_sampler(Pid) ->
    Pid ! stop,
    receive {samples, S} -> S after 10000 -> ct:fail(no_samples) end.

reconcile_async(C, I) ->
    Self = self(),
    spawn_link(fun() -> Self ! {self(), bc_gitops_test_cluster:call(C, I, bc_gitops, reconcile, [])}
               end).

await(Pid) ->
    receive {Pid, R} -> R after 120000 -> ct:fail(no_reconcile_result) end.

wait_until(Fun, Ms) when Ms =< 0 ->
    ct:fail({condition_not_met, Fun});
wait_until(Fun, Ms) ->
    case catch Fun() of
        true -> ok;
        _ -> timer:sleep(100), wait_until(Fun, Ms - 100)
    end.

%% The command against member I, installed under the case's directory:
%% fun(Args) -> {Exit, Output (stdout and stderr)}.
cli(Config, C, I) ->
    Dir = ?config(dir, Config),
    Script = bc_gitops_test_util:install_cli(
               filename:join(Dir, "cli_" ++ integer_to_list(erlang:unique_integer([positive])))),
    Node = atom_to_list(bc_gitops_test_cluster:node(C, I)),
    Cookie = atom_to_list(maps:get(cookie, C)),
    fun(Args) ->
            {Exit, Out} = bc_gitops_test_util:run_cli(Script, ["--node", Node, "--cookie", Cookie
                                                               | Args], Dir, [stderr_to_stdout]),
            ct:log("bc_gitops ~ts -> ~B~n~ts", [lists:join(" ", Args), Exit, Out]),
            {Exit, Out}
    end.

%% Text with its line breaks and runs of blanks made single spaces (the
%% command wraps long lines).
words(Text) ->
    lists:flatten(lists:join(" ", string:lexemes(Text, " \n"))).
